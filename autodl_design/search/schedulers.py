"""Successive halving and Hyperband: brackets of epoch budgets over any searcher's candidates.

A bracket starts ``n`` candidates the searcher proposes (one batch, the
searcher learns from it as from any batch, with its rewards at the first
rung's epochs) and promotes the best ``1/eta`` of each rung (by reward, or
with ``--objective pareto`` by non-dominated rank then crowding distance;
trained candidates only) to the next rung, ``eta`` times the epochs, up to
``max_epochs`` (``trainer.early_stop``); on NAS-Bench-201 the rungs are the
table's 12 and 200 epochs instead (``config_rung_epochs``). A promoted
candidate is a new evaluation (a new index and record) that continues from
the weights and optimizer state its previous rung saved in
``log_dir/rungs/<index>.state`` (the trainer writes them atomically; with Ray
the workers must share the log folder's file system; the table evaluator
writes none and charges a promoted cell its extra epochs only). Records
carry ``rung``: ``{"bracket", "rung", "epochs", "continues"}``.

* ``successive_halving``: every bracket starts ``eta ** s`` candidates at
  ``min_epochs`` and has ``s + 1`` rungs (``rung_epochs``).
* ``hyperband``: brackets cycle from that most aggressive one to plain
  evaluation at ``max_epochs`` (Li et al. 2018), bracket ``s`` starting
  ``ceil((s_max + 1) / (s + 1) * eta ** s)`` candidates.

Everything the scheduler knows is rebuilt from the records and the open
batches (``restore``), so a killed run resumes its rungs; promotions are
decided when a rung's batch is learned, in batch order, so a seed gives the
same search whatever the timing.
"""
import math
import os
from typing import Dict, List, Optional, Sequence, Set, Tuple

from autodl_design import critic, nb201
from autodl_design.config import SCHEDULERS, Config, ConstraintConfig
from autodl_design.interfaces import Searcher, SearchSpace
from autodl_design.search.outcome import learning_reward
from autodl_design.search.pending import Batch
from autodl_design.search.run_records import REUSABLE

STATE_DIR = "rungs"


def rung_epochs(min_epochs: int, max_epochs: int, eta: int) -> List[int]:
    """Epochs of each rung: min_epochs, eta x, eta^2 x, ... and max_epochs last.

    E.g. (1, 8, 3) -> [1, 3, 8]; (1, 9, 3) -> [1, 3, 9]; (8, 8, 3) -> [8].
    """
    out = [min_epochs]
    while out[-1] * eta < max_epochs:
        out.append(out[-1] * eta)
    if out[-1] != max_epochs:
        out.append(max_epochs)
    return out


def config_rung_epochs(config: Config) -> List[int]:
    """The rung epochs of ``config``'s run (the one rule).

    With ``--benchmark nb201`` they are the table's fidelities
    (``nb201.FIDELITIES``: 12 and 200 epochs); else ``rung_epochs(min_epochs,
    max_epochs = trainer.early_stop, eta)``.
    """
    if config.search.benchmark == "nb201":
        return list(nb201.FIDELITIES)
    return rung_epochs(config.search.min_epochs, config.trainer.early_stop, config.search.eta)


def bracket_plan(kind: str, bracket: int, epochs: Sequence[int], eta: int
                 ) -> List[Tuple[int, int]]:
    """(candidates, epochs) of each rung of bracket number ``bracket`` (0, 1, ...).

    Args:
      kind: "successive_halving" or "hyperband".
      epochs: ``rung_epochs`` of the run.
      eta: the reduction factor.
    """
    s_max = len(epochs) - 1
    if kind == "successive_halving":
        s, n = s_max, eta ** s_max
    else:
        s = s_max - bracket % (s_max + 1)
        n = int(math.ceil((s_max + 1) / (s + 1) * eta ** s))
    return [(max(1, n // eta ** i), epochs[s_max - s + i]) for i in range(s + 1)]


def cycle_cost(kind: str, epochs: Sequence[int], eta: int) -> Tuple[int, int]:
    """(candidates, epochs trained) of one cycle of brackets, promotions continuing.

    A cycle is one bracket for successive halving, ``s_max + 1`` for Hyperband;
    a promoted candidate trains only its extra epochs. Plain evaluation trains
    ``epochs[-1]`` per candidate, so ``epochs[-1] * candidates / trained`` is
    how many times plain's candidates the scheduler can evaluate in the same
    time (before the per-candidate overheads). E.g. hyperband over (1, 3, 8)
    with eta 3 -> (17, 64), about 2.1x; successive halving -> (9, 20), 3.6x.
    """
    brackets = 1 if kind == "successive_halving" else len(epochs)
    candidates = trained = 0
    for b in range(brackets):
        plan = bracket_plan(kind, b, epochs, eta)
        candidates += plan[0][0]
        trained += sum(n * (e - (plan[k - 1][1] if k else 0)) for k, (n, e) in enumerate(plan))
    return candidates, trained


def state_path(log_dir: str, index: int) -> str:
    """Where evaluation ``index`` saves its weights and optimizer state for a promotion."""
    return os.path.join(log_dir, STATE_DIR, "%d.state" % index)


def promoted(records: Sequence[Dict], n: int,
             constraints: Optional[ConstraintConfig] = None) -> List[Dict]:
    """The ``n`` best trained records of a rung; fewer if fewer trained.

    Best: by reward, then index; with ``constraints.objective`` pareto by
    non-dominated rank of (accuracy, cost), then crowding distance, then
    index (``critic.pareto_order``: multi-objective early stopping).
    """
    trained = sorted((r for r in records
                      if r["status"] == "ok" and learning_reward(r) is not None),
                     key=lambda r: r["index"])
    if constraints is not None and constraints.objective == "pareto":
        order = critic.pareto_order([critic.objective_vector(r, constraints) for r in trained])
        return [trained[i] for i in order[:n]]
    return sorted(trained, key=lambda r: (-r["reward"], r["index"]))[:n]


class BracketScheduler:
    """Successive halving or Hyperband over the searcher's batches (see the module docstring).

    Args:
      config: the run's configuration (scheduler, min_epochs, eta, early_stop, log_dir).
      space: turns recorded candidates back into candidates.
    """

    def __init__(self, config: Config, space: SearchSpace):
        self.kind = config.search.scheduler
        self.eta = config.search.eta
        self.epochs = config_rung_epochs(config)
        self.log_dir = os.path.abspath(config.search.log_dir)  # workers may have another cwd
        self.constraints = config.constraints  # how a rung's best are told (promoted)
        self.space = space
        self.next_bracket = 0
        self.known: Set[Tuple[int, int]] = set()  # (bracket, rung) opened or queued
        self.queue: List[Batch] = []  # promotions waiting for a free batch slot

    def plan(self, bracket: int) -> List[Tuple[int, int]]:
        return bracket_plan(self.kind, bracket, self.epochs, self.eta)

    def rung(self, bracket: int, k: int) -> Dict:
        """The ``rung`` of a batch: bracket, rung number, its epochs, whether it is the last."""
        plan = self.plan(bracket)
        return {"bracket": bracket, "rung": k, "epochs": plan[k][1], "last": k == len(plan) - 1}

    def restore(self, trials: Sequence[Dict], batches: Sequence[Batch]) -> None:
        """Rebuilds the brackets from the records and the open batches (after ``--resume``).

        A rung with records whose batch is no longer open was learned: its
        promotion is queued again unless the next rung exists.
        """
        by_rung: Dict[Tuple[int, int], List[Dict]] = {}
        for t in trials:
            if t.get("rung") is not None:
                by_rung.setdefault((t["rung"]["bracket"], t["rung"]["rung"]), []).append(t)
        open_rungs = {(b.rung["bracket"], b.rung["rung"]) for b in batches if b.rung}
        self.known = set(by_rung) | open_rungs
        self.next_bracket = 1 + max((b for b, _ in self.known), default=-1)
        learned = sorted((key for key in by_rung if key not in open_rungs),
                         key=lambda key: min(t["index"] for t in by_rung[key]))
        for bracket, k in learned:
            self._promote(bracket, k, sorted(by_rung[(bracket, k)], key=lambda t: t["index"]))

    def next_batch(self, searcher: Searcher, batches: Sequence[Batch], first: int,
                   budget: int) -> Batch:
        """The next batch: a queued promotion, else a new bracket's first rung.

        Args:
          searcher: proposes a new bracket's candidates.
          batches: the open batches (a new bracket's step follows the
            searcher's step and the open first rungs).
          first: the new batch's first evaluation index.
          budget: evaluations left (> 0); the batch is cut to it.
        """
        if self.queue:
            b = self.queue.pop(0)
            n = min(budget, len(b.candidates))
            return Batch.open(b.step, first, b.candidates[:n], b.proposed_at, b.rung,
                              b.parents[:n])
        bracket = self.next_bracket
        self.next_bracket += 1
        self.known.add((bracket, 0))
        n = min(budget, self.plan(bracket)[0][0])
        step = searcher.step + sum(1 for b in batches if b.parents is None)
        return Batch.open(step, first, searcher.propose(n), searcher.step,
                          self.rung(bracket, 0), None)

    def learned(self, batch: Batch, done: Sequence[Dict]) -> bool:
        """Takes a finished rung into account; True if the searcher learns from it.

        Queues the rung's promotion (once), and removes the saved states no
        promotion will need (the rung's losers, the previous rung's).
        """
        if batch.rung is None:
            return True
        self._promote(batch.rung["bracket"], batch.rung["rung"], done)
        for parent in batch.parents or ():
            _remove(state_path(self.log_dir, parent))
        return batch.parents is None

    def _promote(self, bracket: int, k: int, done: Sequence[Dict]) -> None:
        """Queues the promotion of rung ``k`` of ``bracket`` from its records ``done``."""
        plan = self.plan(bracket)
        if k + 1 >= len(plan) or (bracket, k + 1) in self.known:
            return
        best = promoted(done, plan[k + 1][0], self.constraints)
        keep = {r["index"] for r in best}
        for r in done:
            if r["index"] not in keep:
                _remove(state_path(self.log_dir, r["index"]))
        if not best:
            return
        self.known.add((bracket, k + 1))
        self.queue.append(Batch.open(done[0]["step"], 0, [self.space.from_dict(r["arch"])
                                                          for r in best],
                                     0, self.rung(bracket, k + 1),
                                     [r["index"] for r in best]))

    def options(self, batch: Batch, k: int) -> Dict:
        """The evaluator's options for candidate ``k`` of ``batch``: its epochs and states.

        Returns:
          ``{"epochs": int, "save_state": path or "", "continue_from": path or ""}``.
        """
        if batch.rung is None:
            return {}
        return {"epochs": batch.rung["epochs"],
                "save_state": ("" if batch.rung["last"]
                               else state_path(self.log_dir, batch.indices[k])),
                "continue_from": ("" if batch.parents is None
                                  else state_path(self.log_dir, batch.parents[k]))}

    @staticmethod
    def twin(records: Sequence[Dict], batch: Batch, arch_hash: str) -> Optional[Dict]:
        """The first evaluated ('ok' or 'infeasible') record of ``arch_hash`` trained for the
        epochs of ``batch``'s rung, whose result a twin reuses; None if there is none."""
        epochs = batch.rung["epochs"]
        return next((r for r in records if r["arch_hash"] == arch_hash
                     and r["status"] in REUSABLE and r["rung"]["epochs"] == epochs), None)

    @staticmethod
    def record_rung(batch: Batch, k: int) -> Optional[Dict]:
        """The record's ``rung`` field for candidate ``k`` of ``batch`` (None without one)."""
        if batch.rung is None:
            return None
        return {"bracket": batch.rung["bracket"], "rung": batch.rung["rung"],
                "epochs": batch.rung["epochs"],
                "continues": None if batch.parents is None else batch.parents[k]}


def _remove(path: str) -> None:
    try:
        os.remove(path)
    except FileNotFoundError:
        pass


def make_scheduler(config: Config, space: SearchSpace) -> Optional[BracketScheduler]:
    """The scheduler ``config.search.scheduler`` names; None for "none"."""
    if config.search.scheduler == "none":
        return None
    if config.search.scheduler not in SCHEDULERS:
        raise ValueError("unknown scheduler %r: use %s" % (config.search.scheduler,
                                                            ", ".join(SCHEDULERS)))
    return BracketScheduler(config, space)

