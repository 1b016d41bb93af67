"""The declared contracts of the search: search spaces, evaluators, searchers and pools.

Every algorithm of ``autodl_design.search`` is written against these
protocols and nothing more specific, so that a new search space (e.g.
NAS-Bench-201's cell), a new evaluator (a table look-up instead of training),
a new searcher (TPE through Optuna) or a new pool (Ray actors) plugs into the
same loop without editing it. See docs/architecture.md for a worked example.

Candidates are what a search space produces: immutable objects with
``hash()`` (equal for equivalent candidates, e.g. isomorphic cells),
``to_dict()`` (plain JSON data; never ``eval``-ed) and ``describe()``.
Records, pending batches and checkpoints store ``to_dict()``; the space turns
them back with ``from_dict``.
"""
import dataclasses
from typing import (Any, Dict, List, Optional, Protocol, Sequence, Tuple,
                    runtime_checkable)

import numpy as np


@dataclasses.dataclass(frozen=True)
class Decision:
    """One categorical decision of a search space.

    Attributes:
      name: unique within the space, e.g. ``"normal.op.3"`` or ``"edge.1.3"``.
      choices: the values it can take, in the order the controller indexes them.
    """
    name: str
    choices: Tuple[Any, ...]


@runtime_checkable
class Candidate(Protocol):
    """What a search space proposes (an architecture, possibly with a recipe)."""

    def hash(self) -> str:
        """A hex digest, equal for candidates that build the same network."""

    def to_dict(self) -> Dict:
        """Plain JSON data that ``SearchSpace.from_dict`` turns back into the candidate."""

    def describe(self) -> str:
        """A few human-readable lines."""


@runtime_checkable
class SearchSpace(Protocol):
    """A set of candidates: how to sample, mutate, encode and read them back.

    ``encode``/``decode`` give the controller's vectors: ``tokens`` (int32
    [T], an op index per op decision) and ``adjvec`` (int32 [A], one 0/1 bit
    per edge decision), in the order the controller emits them.
    """

    name: str

    def decisions(self) -> Sequence[Decision]:
        """Every decision, in controller order (tokens first, then edge bits)."""

    def sample(self, rng: np.random.Generator) -> Candidate:
        """A candidate drawn uniformly over the decisions, using only ``rng``."""

    def mutate(self, candidate: Candidate, rng: np.random.Generator) -> Candidate:
        """A copy with exactly one decision changed, using only ``rng``."""

    def encode(self, candidate: Candidate) -> Tuple[np.ndarray, np.ndarray]:
        """(tokens int32 [T], adjvec int32 [A]) of ``candidate``."""

    def decode(self, tokens: np.ndarray, adjvec: np.ndarray) -> Candidate:
        """Inverse of ``encode``; raises ValueError for vectors outside the space."""

    def from_dict(self, d: Dict) -> Candidate:
        """A candidate from its ``to_dict()``; raises ValueError naming the problem."""


@runtime_checkable
class Evaluator(Protocol):
    """Evaluates candidates inside one worker (a process or a Ray actor).

    An evaluator object is built in the driver, pickled to each worker, set up
    once there (load data, pin the device) and then asked for one candidate
    at a time. Its own failures (a bug of the project) raise; a candidate's
    legitimate failures (NaN loss, an error inside the candidate's own ops)
    come back as ``{"status": "failed", "reason": ...}``, running out of
    memory as ``{"status": "infeasible", "reason": "out of memory on ..."}``
    (``autodl_design.evaluation.device_failures``). A device fault (a CUDA or
    cuDNN error) raises ``autodl_design.evaluation.DeviceFault``: the pool
    records the candidate failed and replaces the worker.
    """

    def setup(self, device: str, threads: int) -> None:
        """Pins the worker to ``device`` ('cpu' or 'gpu:N') and loads what it needs.

        Pools pin GPU workers with ``CUDA_VISIBLE_DEVICES`` before the worker
        imports anything, so a GPU worker is always given ``gpu:0``;
        ``autodl_design.devices.device_label()`` names its physical GPU.
        """

    def evaluate(self, candidate: Dict, index: int, seed: int, options: Dict) -> Dict:
        """Metrics of one candidate (``candidate`` is its ``to_dict()``).

        Args:
          candidate: the candidate's JSON form.
          index: its evaluation index in the search.
          seed: the training seed of this evaluation.
          options: per-candidate settings from the loop, e.g. ``cull`` and
            ``cull_start_epoch`` for median early termination.

        Returns:
          dict with ``status`` ('ok', 'failed' or 'infeasible'), ``reason``
          for the last two, and the metrics (val_accuracy, params, flops,
          latency_ms, memory_mb, ...).
        """


@runtime_checkable
class Searcher(Protocol):
    """Proposes candidates and learns from their rewards.

    ``step`` counts learning steps (``observe`` calls); ``save``/``restore``
    hold everything needed to continue exactly (weights, optimiser,
    baseline, random state), written atomically. A searcher may also define
    ``observe_records(candidates, records)`` (the finished trial records, same
    order); the loop then calls it instead of ``observe`` (the Optuna searchers
    read constraint values and Pareto costs from the records' metrics).
    """

    step: int

    def propose(self, n: int) -> List[Candidate]:
        """The next ``n`` candidates."""

    def observe(self, candidates: Sequence[Candidate],
                rewards: Sequence[Optional[float]]) -> None:
        """Rewards in the order of ``candidates``; None for a failed one (not learned from)."""

    def save(self, folder: str) -> None:
        """Writes the searcher's state into ``folder``."""

    def restore(self, folder: str) -> None:
        """Reads the state written by ``save``."""


@runtime_checkable
class Pool(Protocol):
    """Workers that evaluate candidates in parallel (local processes or Ray actors).

    Attributes:
      devices: the device of each worker, by worker number.
      restarts: workers restarted so far.
    """

    devices: List[str]
    restarts: int

    def start(self) -> None:
        """Starts every worker and waits until each is set up."""

    def free_workers(self) -> List[int]:
        """Workers ready for a candidate."""

    def submit(self, worker: int, index: int, candidate: Dict, seed: int,
               options: Dict) -> None:
        """Sends one candidate (its ``to_dict()``) to a free worker."""

    def next_result(self, timeout: float = 1.0) -> Optional[Tuple[int, int, Dict]]:
        """(worker, index, metrics) of one finished candidate, or None after ``timeout``.

        A worker lost while holding a candidate yields that candidate as
        failed (or retries it elsewhere) and is replaced.
        """

    def busy(self) -> int:
        """Candidates being evaluated."""

    def terminate(self) -> None:
        """Stops every worker at once."""
