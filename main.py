"""Entry point: run an architecture search (python main.py --helpfull for all flags)."""
from absl import app

import flags  # noqa: F401  (defines every flag)
from autodl_design import cli


def main(argv):
    if len(argv) > 1:
        raise app.UsageError("unexpected arguments: %s" % " ".join(argv[1:]))
    config = flags.build_config()
    from autodl_design.search import driver  # heavy imports only after flag parsing
    return driver.run_from_config(config)


if __name__ == "__main__":
    cli.run(main)
