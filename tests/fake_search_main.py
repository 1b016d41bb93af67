"""Runs a real search loop with the fake trainer (used by tests as a subprocess).

Usage: python -m tests.fake_search_main CONFIG_JSON SETUP_ARGS_JSON
"""
import json
import sys

from autodl_design.search import driver as search, searchers
from autodl_design.config import Config
from autodl_design.search.local_pool import LocalPool


def main(argv):
    config = Config.from_dict(json.loads(argv[1]))
    setup_args = json.loads(argv[2])
    setup_args["config_dict"] = config.to_dict()
    pool = LocalPool(config.devices.trainer_devices, 1, "tests.fake_trainer:setup",
                     "tests.fake_trainer:evaluate", setup_args,
                     log=lambda s: print(s, flush=True))
    return search.execute(config, searchers.make_searcher(config), pool,
                          lambda s: print(s, flush=True))


if __name__ == "__main__":
    sys.exit(main(sys.argv))
