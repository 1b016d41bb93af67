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


def mutate(arch: Architecture, rng: np.random.Generator, ops: Sequence[str]) -> Architecture:
    """One mutation: change one node's op, or flip one edge, in one of the two cells."""
    cells = [arch.normal, arch.reduction]
    c = int(rng.integers(2))
    cell = cells[c]
    n = cell.num_nodes
    if len(ops) > 1 and rng.random() < 0.5:
        node = int(rng.integers(n))
        choices = [op for op in ops if op != cell.ops[node]]
        new_ops = list(cell.ops)
        new_ops[node] = choices[int(rng.integers(len(choices)))]
        cells[c] = Cell(new_ops, cell.matrix)
    else:
        j = int(rng.integers(1, n))
        i = int(rng.integers(j))
        m = cell.matrix.copy()
        m[i, j] = 1 - m[i, j]
        cells[c] = Cell(cell.ops, m)
    return Architecture(*cells)


class EvolutionSearcher:
    """Regularized evolution (Real et al. 2019): tournament selection with aging.

    The first ``population`` proposals are random; after that each child is
    one mutation of the best of ``sample_size`` members drawn from the
    population, which holds the ``population`` most recently observed
    candidates (the oldest one dies when a new one arrives). Failed
    candidates never join the population.
    """

    STATE_FILE = "evolution_searcher.json"

    def __init__(self, agent: AgentConfig, seed: int, population: int, sample_size: int):
        if not 1 <= sample_size <= population:
            raise ValueError("--sample_size must be between 1 and --population (%d), got %d"
                             % (population, sample_size))
        self.agent = agent
        self.population_size = population
        self.sample_size = sample_size
        self.rng = np.random.default_rng(seed)
        self.step = 0
        self.proposed = 0
        self.population: List[tuple] = []  # (Architecture, reward), oldest first

    def propose(self, n: int) -> List[Architecture]:
        out = []
        for _ in range(n):
            if self.proposed < self.population_size or not self.population:
                out.append(random_architecture(self.rng, self.agent.num_nodes, self.agent.ops))
            else:
                picks = self.rng.choice(len(self.population),
                                        size=min(self.sample_size, len(self.population)),
                                        replace=False)
                parent = max(picks, key=lambda k: (self.population[k][1], -k))
                out.append(mutate(self.population[parent][0], self.rng, self.agent.ops))
            self.proposed += 1
        return out

    def observe(self, archs: Sequence[Architecture], rewards: Sequence[Optional[float]]):
        for arch, r in zip(archs, rewards):
            if r is None:
                continue
            self.population.append((arch, float(r)))
            if len(self.population) > self.population_size:
                self.population.pop(0)
        self.step += 1

    def save(self, folder: str):
        os.makedirs(folder, exist_ok=True)
        records.atomic_write_json(os.path.join(folder, self.STATE_FILE), {
            "step": self.step, "proposed": self.proposed, "rng": self.rng.bit_generator.state,
            "population": [{"arch": a.to_dict(), "reward": r} for a, r in self.population]})

    def restore(self, folder: str):
        import json
        with open(os.path.join(folder, self.STATE_FILE)) as f:
            state = json.load(f)
        self.step = state["step"]
        self.proposed = state["proposed"]
        self.rng.bit_generator.state = state["rng"]
        self.population = [(Architecture.from_dict(p["arch"]), p["reward"])
                           for p in state["population"]]


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
    if kind == "evolution":
        return EvolutionSearcher(config.agent, config.search.seed, config.search.population,
                                 config.search.sample_size)
    raise ValueError("unknown searcher %r: use rl, random or evolution" % kind)
