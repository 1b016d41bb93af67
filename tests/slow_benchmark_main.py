"""main.py for a --benchmark run, with the in-process pool waiting DELAY seconds per evaluation.

Usage: ``python -m tests.slow_benchmark_main DELAY MAIN_PY_FLAGS...``. The same
flags build the same config as main.py, so ``main.py --resume`` continues a
run of this script; the delay only lets a test kill the run half-way.
"""
import sys

from absl import app

import flags  # noqa: F401  (defines every flag)
from autodl_design import cli

DELAY = float(sys.argv.pop(1))


def main(argv):
    if len(argv) > 1:
        raise app.UsageError("unexpected arguments: %s" % " ".join(argv[1:]))
    from autodl_design.search import driver
    return driver.run_benchmark(flags.build_config(), pool_delay=DELAY)


if __name__ == "__main__":
    cli.run(main)
