"""``python -m autodl_design.report [--log_dir] DIR | --compare DIR DIR ...``: the report command.

An entry point only: the same command as ``python -m autodl_design.search.report``,
whose module holds the code (the report belongs to the search layer).
"""
import sys

from autodl_design.search.report import main

if __name__ == "__main__":
    sys.exit(main())
