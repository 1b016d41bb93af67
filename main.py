"""Entry point: run an architecture search (python main.py --helpfull for all flags)."""
import os
import sys

from absl import app

import flags  # noqa: F401  (defines every flag)
from autodl_design import cli


def main(argv):
    if len(argv) > 1:
        raise app.UsageError("unexpected arguments: %s" % " ".join(argv[1:]))
    config = flags.build_config()
    from autodl_design.search import driver  # heavy imports only after flag parsing
    from autodl_design.search.export_best import FinalExport
    final = None
    if flags.FLAGS.export_best:
        final = FinalExport(os.path.abspath(flags.FLAGS.export_best), flags.FLAGS.final_epochs)
        problem = final.check()
        if problem:
            print("error: %s" % problem, file=sys.stderr)
            return 2
    return driver.run_from_config(config, final_export=final)


if __name__ == "__main__":
    cli.run(main)
