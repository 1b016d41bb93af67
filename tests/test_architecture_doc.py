"""The worked example of docs/architecture.md runs: a new search space plugs into the searchers."""
import os
import re

import numpy as np

from autodl_design.interfaces import Candidate, SearchSpace
from autodl_design.search.searchers import EvolutionSearcher, RandomSearcher

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def example_namespace():
    with open(os.path.join(ROOT, "docs", "architecture.md")) as f:
        blocks = re.findall(r"```python\n(.*?)```", f.read(), re.S)
    assert len(blocks) == 1
    namespace = {}
    exec(compile(blocks[0], "docs/architecture.md", "exec"), namespace)  # our own doc's code
    return namespace


def test_the_example_space_meets_the_protocol_and_round_trips():
    ns = example_namespace()
    space = ns["ChainSpace"](5)
    assert isinstance(space, SearchSpace)
    rng = np.random.default_rng(0)
    c = space.sample(rng)
    assert isinstance(c, Candidate)
    assert space.from_dict(c.to_dict()).hash() == c.hash()
    tokens, adjvec = space.encode(c)
    assert space.decode(tokens, adjvec).hash() == c.hash() and adjvec.size == 0
    m = space.mutate(c, rng)
    assert sum(a != b for a, b in zip(c.ops, m.ops)) == 1
    assert len(space.decisions()) == 5


def test_random_search_and_evolution_run_on_the_example_space():
    ns = example_namespace()
    space = ns["ChainSpace"](3)
    best_op = "conv_3x3"

    def reward(c):
        return sum(op == best_op for op in c.ops) / len(c.ops)

    for searcher in (RandomSearcher(space, 0), EvolutionSearcher(space, 0, 8, 3)):
        best = 0.0
        for _ in range(30):
            batch = searcher.propose(4)
            rewards = [reward(c) for c in batch]
            searcher.observe(batch, rewards)
            best = max(best, max(rewards))
        assert best == 1.0, type(searcher).__name__  # 27 candidates, 120 draws
