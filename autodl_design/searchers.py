"""Searchers: who proposes the next architectures and learns from their rewards.

Every searcher has the same small interface, used by ``autodl_design.search``:

* ``step``: learning steps taken so far (restored with the checkpoint);
* ``propose(n) -> list[Architecture]``;
* ``observe(archs, rewards)``: rewards in the same order, None for a failed
  candidate (never learned from); increments ``step``;
* ``save(folder)`` / ``restore(folder)``: everything needed to continue
  exactly (weights, optimiser, baseline, random state), written atomically.
"""
import os
from typing import List, Optional, Sequence

import numpy as np

from autodl_design import records
from autodl_design.arch import Architecture, Cell
from autodl_design.config import AgentConfig, Config


def random_architecture(rng: np.random.Generator, num_nodes: int,
                        ops: Sequence[str]) -> Architecture:
    """Uniform ops and fair-coin edges, drawn in the controller's vector order."""
    cells = []
    for _ in range(2):
        names = [ops[int(i)] for i in rng.integers(0, len(ops), num_nodes)]
        m = np.zeros((num_nodes, num_nodes), np.int8)
        for j in range(1, num_nodes):
            m[:j, j] = rng.integers(0, 2, j)
        cells.append(Cell(names, m))
    return Architecture(*cells)


class RandomSearcher:
    """Random search: every architecture of the space equally likely."""

    STATE_FILE = "random_searcher.json"

    def __init__(self, agent: AgentConfig, seed: int):
        self.agent = agent
        self.rng = np.random.default_rng(seed)
        self.step = 0

    def propose(self, n: int) -> List[Architecture]:
        return [random_architecture(self.rng, self.agent.num_nodes, self.agent.ops)
                for _ in range(n)]

    def observe(self, archs: Sequence[Architecture], rewards: Sequence[Optional[float]]):
        self.step += 1

    def save(self, folder: str):
        os.makedirs(folder, exist_ok=True)
        records.atomic_write_json(os.path.join(folder, self.STATE_FILE), {
            "step": self.step, "rng": self.rng.bit_generator.state})

    def restore(self, folder: str):
        import json
        with open(os.path.join(folder, self.STATE_FILE)) as f:
            state = json.load(f)
        self.step = state["step"]
        self.rng.bit_generator.state = state["rng"]


class RLSearcher:
    """AutoDL Design's searcher: the PARL LSTM controller trained by REINFORCE.

    Failed candidates (reward None) are left out of the update; a batch in
    which every candidate failed still counts as a step, without learning.
    """

    def __init__(self, agent: AgentConfig, seed: int):
        from agent.agent import ControllerAgent  # imports Paddle and PARL
        self.agent = ControllerAgent.create(agent, seed)
        self.losses: List[float] = []

    @property
    def step(self) -> int:
        return self.agent.step

    def propose(self, n: int) -> List[Architecture]:
        return self.agent.sample(n).archs

    def observe(self, archs: Sequence[Architecture], rewards: Sequence[Optional[float]]):
        keep = [k for k, r in enumerate(rewards) if r is not None]
        if not keep:
            self.agent.step += 1
            return
        vectors = [archs[k].to_vectors(self.agent.ops) for k in keep]
        tokens = np.stack([v[0] for v in vectors])
        adjvec = np.stack([v[1] for v in vectors])
        self.losses.append(self.agent.learn_from_rewards(
            tokens, adjvec, np.asarray([rewards[k] for k in keep], np.float64)))

    def save(self, folder: str):
        self.agent.save(folder)

    def restore(self, folder: str):
        self.agent.restore(folder)


def make_searcher(config: Config):
    """The searcher named by ``config.search.searcher``."""
    kind = config.search.searcher
    if kind == "random":
        return RandomSearcher(config.agent, config.search.seed)
    if kind == "rl":
        return RLSearcher(config.agent, config.search.seed)
    raise ValueError("unknown searcher %r: use rl or random" % kind)
