"""Runs a real search loop with the fake trainer (used by tests as a subprocess).

Usage: python -m tests.fake_search_main CONFIG_JSON EVALUATOR_ARGS_JSON

EVALUATOR_ARGS_JSON holds ``FakeEvaluator``'s faults and delay.
"""
import json
import sys

from autodl_design.config import Config
from autodl_design.search import driver, searchers
from autodl_design.search.local_pool import LocalPool
from tests.fake_trainer import FakeEvaluator


def main(argv):
    config = Config.from_dict(json.loads(argv[1]))
    evaluator = FakeEvaluator(config.to_dict(), **json.loads(argv[2]))
    pool = LocalPool(config.devices.trainer_devices, 1, evaluator,
                     log=lambda s: print(s, flush=True))
    space = searchers.make_space(config)
    return driver.execute(config, space, searchers.make_searcher(config, space), pool,
                          lambda s: print(s, flush=True))


if __name__ == "__main__":
    sys.exit(main(sys.argv))
