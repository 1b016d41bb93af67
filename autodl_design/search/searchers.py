"""Searchers: who proposes the next candidates and learns from their rewards.

Every searcher implements ``autodl_design.interfaces.Searcher``:

* ``step``: learning steps taken so far (restored with the checkpoint);
* ``propose(n) -> list[Candidate]``;
* ``observe(candidates, rewards)``: rewards in the same order, None for a
  failed candidate (never learned from); increments ``step``;
* ``save(folder)`` / ``restore(folder)``: everything needed to continue
  exactly (weights, optimiser, baseline, random state), written atomically.

Random search and evolution work on any ``SearchSpace``; the RL searcher's
controller emits the cell space's vectors. On NAS-Bench-201 (``--benchmark
nb201``) the space is ``nb201.NB201Space`` and rl is
``agent.space_searcher.SpaceRLSearcher`` with ``NB201_RL_SETTINGS``.
"""
import os
from typing import List, Optional, Sequence

import numpy as np

from autodl_design import nb201, recipe, records
from autodl_design.config import AgentConfig, Config
from autodl_design.interfaces import Candidate, Searcher, SearchSpace
from autodl_design.search import outcome
from autodl_design.spaces import CellSpace, encode_batch


class RandomSearcher:
    """Random search: every architecture of the space equally likely."""

    STATE_FILE = "random_searcher.json"

    def __init__(self, space: SearchSpace, seed: int):
        self.space = space
        self.rng = np.random.default_rng(seed)
        self.step = 0

    def propose(self, n: int) -> List[Candidate]:
        return [self.space.sample(self.rng) for _ in range(n)]

    def observe(self, archs: Sequence[Candidate], rewards: Sequence[Optional[float]]):
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


class EvolutionSearcher:
    """Regularized evolution (Real et al. 2019): tournament selection with aging.

    The first ``population`` proposals are random; after that each child is
    one mutation of the best of ``sample_size`` members drawn from the
    population, which holds the ``population`` most recently observed
    candidates (the oldest one dies when a new one arrives). Failed
    candidates never join the population.
    """

    STATE_FILE = "evolution_searcher.json"

    def __init__(self, space: SearchSpace, seed: int, population: int, sample_size: int):
        if not 1 <= sample_size <= population:
            raise ValueError("--sample_size must be between 1 and --population (%d), got %d"
                             % (population, sample_size))
        self.space = space
        self.population_size = population
        self.sample_size = sample_size
        self.rng = np.random.default_rng(seed)
        self.step = 0
        self.proposed = 0
        self.population: List[tuple] = []  # (Candidate, reward), oldest first

    def propose(self, n: int) -> List[Candidate]:
        out = []
        for _ in range(n):
            if self.proposed < self.population_size or not self.population:
                out.append(self.space.sample(self.rng))
            else:
                picks = self.rng.choice(len(self.population),
                                        size=min(self.sample_size, len(self.population)),
                                        replace=False)
                parent = max(picks, key=lambda k: (self.population[k][1], -k))
                out.append(self.space.mutate(self.population[parent][0], self.rng))
            self.proposed += 1
        return out

    def observe(self, archs: Sequence[Candidate], rewards: Sequence[Optional[float]]):
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
        self.population = [(self.space.from_dict(p["arch"]), p["reward"])
                           for p in state["population"]]


class RLSearcher:
    """AutoDL Design's searcher: the PARL LSTM controller trained by REINFORCE.

    Failed candidates (reward None) are left out of the update; a batch in
    which every candidate failed still counts as a step, without learning.

    Args:
      space: encodes candidates into the controller's vectors.
      agent: the controller's settings (its ops and nodes match ``space``).
      seed: the controller's seed.
      device: where the controller runs ('cpu' or 'gpu:N').
    """

    def __init__(self, space: SearchSpace, agent: AgentConfig, seed: int, device: str):
        from agent.agent import ControllerAgent  # imports Paddle and PARL
        self.space = space
        self.agent = ControllerAgent.create(agent, seed, device)
        self.losses: List[float] = []

    @property
    def step(self) -> int:
        return self.agent.step

    def propose(self, n: int) -> List[Candidate]:
        return self.agent.sample(n).archs

    def observe(self, archs: Sequence[Candidate], rewards: Sequence[Optional[float]]):
        keep = [k for k, r in enumerate(rewards) if r is not None]
        if not keep:
            self.agent.step += 1
            return
        tokens, adjvec = encode_batch(self.space, [archs[k] for k in keep])
        self.losses.append(self.agent.learn_from_rewards(
            tokens, adjvec, np.asarray([rewards[k] for k in keep], np.float64)))

    def save(self, folder: str):
        self.agent.save(folder)

    def restore(self, folder: str):
        self.agent.restore(folder)


# The controller's settings on NAS-Bench-201 (the flags' controller settings
# are the cell space's): the tuned ones of docs/nb201.md.
NB201_RL_SETTINGS = nb201.NB201_CONTROLLER


def make_space(config: Config) -> SearchSpace:
    """The search space of ``config``: NAS-Bench-201's for ``--benchmark nb201``, the
    ``RecipeSpace`` of ``--search_space`` when given, else the cell space of ``config.agent``.

    Raises:
      ValueError: an unknown benchmark.
    """
    if config.search.benchmark == "nb201":
        return nb201.NB201Space()
    if config.search.benchmark:
        raise ValueError("unknown benchmark %r: use nb201" % config.search.benchmark)
    if config.search.search_space:
        return recipe_space(config)
    return CellSpace(config.agent.num_nodes, config.agent.ops)


def recipe_space(config: Config) -> recipe.RecipeSpace:
    """The ``RecipeSpace`` of ``config.search.search_space`` (``--search_space``): the cell
    space of ``config.agent`` (or the file's fixed cell) with the file's recipe decisions."""
    raw = config.search.search_space
    cell = recipe.parse_cell(raw)
    cells = CellSpace(config.agent.num_nodes, config.agent.ops) if cell is None else None
    return recipe.RecipeSpace(cells, recipe.parse_decisions(raw), cell)


def nb201_rl_searcher(space: SearchSpace, seed: int, device: str,
                      settings=NB201_RL_SETTINGS) -> Searcher:
    """The controller on NAS-Bench-201: ``SpaceRLSearcher`` with ``settings`` (ControllerSettings);
    with ``settings.skip_infeasible`` it learns from feasible cells only (``FeasibleOnly``)."""
    from agent.space_searcher import SpaceRLSearcher  # imports Paddle and PARL
    searcher = SpaceRLSearcher(space, settings.agent_config(), seed, device=device,
                               **settings.searcher_options())
    return FeasibleOnly(searcher) if settings.skip_infeasible else searcher


class FeasibleOnly:
    """A searcher that learns only from feasible candidates: a candidate over a hard bound
    (or a repeat of one) gets reward None, as a failed one, instead of the infeasible reward.

    The loop hands it the records (``observe_records``); everything else is the
    wrapped searcher's.
    """

    def __init__(self, searcher: Searcher):
        self.searcher = searcher

    @property
    def step(self) -> int:
        return self.searcher.step

    def propose(self, n: int) -> List[Candidate]:
        return self.searcher.propose(n)

    def observe(self, candidates: Sequence[Candidate], rewards: Sequence[Optional[float]]):
        self.searcher.observe(candidates, rewards)

    def observe_records(self, candidates: Sequence[Candidate], recs: Sequence[dict]):
        self.searcher.observe(candidates, [None if r["feasible"] is False
                                           else outcome.learning_reward(r) for r in recs])

    def save(self, folder: str):
        self.searcher.save(folder)

    def restore(self, folder: str):
        self.searcher.restore(folder)


def make_searcher(config: Config, space: Optional[SearchSpace] = None) -> Searcher:
    """The searcher named by ``config.search.searcher``, over ``space`` (default ``make_space``)."""
    if space is None:
        space = make_space(config)
    kind = config.search.searcher
    if kind == "random":
        return RandomSearcher(space, config.search.seed)
    if kind == "rl" and config.search.benchmark:
        # Under a hard bound the controller learns from feasible cells only (docs/nb201.md).
        bounded = config.constraints.mode == "hard" and config.constraints.bounds()
        return nb201_rl_searcher(space, config.search.seed, config.devices.agent_device,
                                 nb201.NB201_CONSTRAINED_CONTROLLER if bounded
                                 else NB201_RL_SETTINGS)
    if kind == "rl":
        if isinstance(space, recipe.RecipeSpace):
            # The controller over the space's own layout (recipe tokens after the
            # cells), with the cell space's settings; its defaults update as RLSearcher.
            from agent.space_searcher import SpaceRLSearcher  # imports Paddle and PARL
            return SpaceRLSearcher(space, config.agent, config.search.seed,
                                   device=config.devices.agent_device)
        return RLSearcher(space, config.agent, config.search.seed, config.devices.agent_device)
    if kind == "evolution":
        return EvolutionSearcher(space, config.search.seed, config.search.population,
                                 config.search.sample_size)
    if kind in ("tpe", "nsga2"):  # Optuna's samplers (imported only for these two)
        from autodl_design.search.optuna_searchers import make_optuna_searcher
        return make_optuna_searcher(config, space)
    raise ValueError("unknown searcher %r: use rl, random, evolution, tpe or nsga2" % kind)
