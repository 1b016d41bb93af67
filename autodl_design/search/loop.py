"""The search loop: propose a batch, evaluate it on a pool of workers, reward, learn, repeat.

Records go to ``log_dir`` as they happen (``autodl_design.search.run_records``):
``trials.jsonl`` (one line per finished evaluation), ``best.json``,
``config.json``, ``pending.json`` (the batches being evaluated,
``autodl_design.search.pending``) and ``checkpoint/`` (the searcher after its
last learning step). A run killed at any moment continues with ``--resume``:
the open batches are re-created from ``pending.json``, evaluations already
recorded are not repeated, and the searcher continues from its checkpoint.

``Search`` only schedules: it fills the open batches, dispatches candidates to
free workers, collects results (judged by ``outcome.judge``, the critic's
verdict) and learns from completed batches.
"""
import dataclasses
import time
from typing import Callable, Dict, List, Optional, Tuple

from autodl_design import critic
from autodl_design.config import Config
from autodl_design.interfaces import Candidate, Pool, Searcher, SearchSpace
from autodl_design.records import TrialRecord
from autodl_design.search import early_termination, outcome
from autodl_design.search.clock import make_clock
from autodl_design.search.pending import Batch, PendingFile
from autodl_design.search.progress import Progress, SearchResult
from autodl_design.search.run_records import RunRecords
from autodl_design.search.schedulers import make_scheduler


def candidate_seed(seed: int, index: int) -> int:
    """Training seed of evaluation ``index``: the same whichever worker runs it."""
    return (seed * 1_000_003 + index * 7919 + 17) % (2 ** 31 - 1)


@dataclasses.dataclass
class InFlight:
    """A candidate being evaluated by a worker.

    Attributes:
      candidate: what is evaluated.
      hash: ``candidate.hash()``.
      step: its batch's controller step.
      rung: the record's ``rung`` (with an epoch-budget scheduler), else None.
    """
    candidate: Candidate
    hash: str
    step: int
    rung: Optional[Dict] = None


class Search:
    """One search run.

    Args:
      config: the resolved configuration.
      space: the search space of the candidates (reads saved candidates back).
      searcher: proposes candidates and learns from rewards
        (``autodl_design.search.searchers``).
      pool: the workers (``interfaces.Pool``); started by the caller.
      log: callable for progress lines.

    With ``config.search.scheduler`` set, a ``schedulers.BracketScheduler``
    decides the batches (a bracket's first rung from the searcher, then its
    promotions) and each candidate's epochs; the searcher learns only from
    the batches it proposed.
    """

    def __init__(self, config: Config, space: SearchSpace, searcher: Searcher, pool: Pool,
                 log: Callable[[str], None] = print):
        self.config = config
        self.space = space
        self.searcher = searcher
        self.pool = pool
        self.log = log
        self.records = RunRecords(config, log)
        self.clock = make_clock(config, self.records)  # wall time, or simulated (benchmark)
        self.pending = PendingFile(config.search.log_dir, space)
        self.scheduler = make_scheduler(config, space)  # None: every batch from the searcher
        self.progress = Progress(config, self.records, log, self.clock)
        self.batches: List[Batch] = []
        self.in_flight: Dict[int, InFlight] = {}
        self.waiting: Dict[str, List[Tuple[Batch, int]]] = {}  # hash -> twins of an in-flight one
        self.interrupted = False
        self.searcher_seconds = 0.0  # proposing, learning and checkpointing
        self.opened = False

    def open(self) -> None:
        """Opens (or resumes) the records and re-creates the batches open when the run stopped.

        Raises:
          SearchError: log_dir does not fit (see ``RunRecords.open``).
        """
        self.records.open(self.searcher)
        self.opened = True
        if self.config.search.resume:
            self.batches = self.pending.restore(self.searcher, self.log)
        if self.scheduler is not None:
            self.scheduler.restore(self.records.state.records, self.batches)

    def close(self) -> None:
        """Closes the records (idempotent)."""
        self.records.close()

    def run(self) -> SearchResult:
        """Runs until the budget is spent; records are written as results arrive.

        Batches are pipelined: up to ``1 + lookahead`` batches are open at once,
        so workers never wait for the slowest candidate of a batch. Batch s is
        learned from as soon as all its results are in, and the next batch is
        proposed right after, so batch s + 1 + lookahead is sampled from the
        policy that has learned from batches 0..s: the order of events that
        matter to the searcher does not depend on timing, and a seed gives the
        same search whatever the number of workers.

        Raises:
          SearchError: bad log_dir, or the checkpoint cannot be written.
          WorkerBug: an evaluator raised (its traceback is in the message).
        """
        if not self.opened:
            self.open()
        try:
            self._fill()
            while self.batches and not self._out_of_time():
                self._dispatch()
                self._collect()
                self._learn_completed()
        except KeyboardInterrupt:
            self.interrupted = True
        finally:
            self.close()
        return self.result()

    def _out_of_time(self) -> bool:
        mt = self.config.search.max_time
        return mt > 0 and self.clock.elapsed() >= mt

    def _fill(self) -> None:
        """Proposes batches until 1 + lookahead are open or the budget is spent."""
        changed = False
        while len(self.batches) < 1 + self.config.search.lookahead:
            if self.batches:
                step = self.batches[-1].step + 1
                first = self.batches[-1].indices[-1] + 1
            else:
                step, first = self.searcher.step, self.records.state.num_done
            n = min(self.config.agent.batch_size, self.config.search.num_models - first)
            if n <= 0:
                break
            t0 = time.perf_counter()
            if self.scheduler is None:
                batch = Batch.open(step, first, self.searcher.propose(n), self.searcher.step)
            else:
                batch = self.scheduler.next_batch(self.searcher, self.batches, first,
                                                  self.config.search.num_models - first)
            self.searcher_seconds += time.perf_counter() - t0
            self.batches.append(batch)
            changed = True
        if changed:
            self.pending.save(self.batches)

    def _dispatch(self) -> None:
        """Sends queued candidates (earliest batch first) to free workers.

        A candidate already recorded is skipped; one whose twin was evaluated
        is recorded as a duplicate; one whose twin is in flight waits for it.
        """
        for b in self.batches:
            while b.queue:
                k = b.queue[0]
                index, candidate = b.indices[k], b.candidates[k]
                h = candidate.hash()
                if index in self.records.state.finished:
                    b.queue.pop(0)
                elif b.parents is not None:  # a promotion continues its own earlier rung
                    if not self._submit(b, k, h):
                        return
                elif self._twin(b, h) is not None:
                    b.queue.pop(0)
                    self._record(outcome.duplicate(b.step, index, candidate, self._twin(b, h),
                                                   self._rung(b, k)))
                elif any(f.hash == h for f in self.in_flight.values()):
                    b.queue.pop(0)
                    self.waiting.setdefault(h, []).append((b, k))
                elif not self._submit(b, k, h):
                    return

    def _twin(self, b: Batch, h: str) -> Optional[Dict]:
        """The evaluated record whose result a twin in ``b`` reuses (same epochs), or None."""
        if self.scheduler is None:
            return self.records.reusable.get(h)
        return self.scheduler.twin(self.records.state.records, b, h)

    def _rung(self, b: Batch, k: int) -> Optional[Dict]:
        return None if self.scheduler is None else self.scheduler.record_rung(b, k)

    def _submit(self, b: Batch, k: int, h: str) -> bool:
        """Sends candidate ``k`` of ``b`` (first in its queue) to a free worker; False if none."""
        free = self.pool.free_workers()
        if not free:
            return False
        b.queue.pop(0)
        index, candidate = b.indices[k], b.candidates[k]
        options = early_termination.task_options(self.config, self.records.state.records, b.step)
        if self.scheduler is not None:
            options.update(self.scheduler.options(b, k))
        self.pool.submit(free[0], index, candidate.to_dict(),
                         candidate_seed(self.config.search.seed, index), options)
        self.in_flight[index] = InFlight(candidate, h, b.step, self._rung(b, k))
        return True

    def _collect(self) -> None:
        """Records one finished evaluation, if one arrives within a second."""
        got = self.pool.next_result(timeout=1.0)
        if got is None:
            return
        worker, index, metrics = got
        flight = self.in_flight.pop(index)
        self._record(outcome.judge(self.config, flight.step, index, flight.candidate, metrics,
                                   worker, self.pool.devices[worker], flight.rung))
        # Twins that waited for this one: reuse its result or run them.
        for b, k in self.waiting.pop(flight.hash, []):
            b.queue.insert(0, k)

    def _record(self, record: TrialRecord) -> None:
        self.progress.trial(self.records.write(record))

    def _learn_completed(self) -> None:
        """Learns from the oldest batches whose results are all in, then proposes more."""
        while self.batches and all(i in self.records.state.finished
                                   for i in self.batches[0].indices):
            batch = self.batches.pop(0)
            by_index = {r["index"]: r for r in self.records.state.records}
            done = [by_index[i] for i in batch.indices]
            t0 = time.perf_counter()
            if self.scheduler is None or self.scheduler.learned(batch, done):
                # A searcher that learns from more than the reward (constraint values, a
                # Pareto vector: the Optuna searchers) takes the records themselves.
                observe_records = getattr(self.searcher, "observe_records", None)
                if observe_records is not None:
                    observe_records(batch.candidates, done)
                else:
                    self.searcher.observe(batch.candidates,
                                          [outcome.learning_reward(r) for r in done])
                self.records.save_checkpoint(self.searcher)
            self.searcher_seconds += time.perf_counter() - t0
            self.progress.step(batch.step, done)
            self._fill()

    def result(self) -> SearchResult:
        """The run's outcome so far (best, or closest when nothing was feasible)."""
        state = self.records.state
        closest = (critic.closest(state.records, self.config.constraints)
                   if state.best is None else None)
        return SearchResult(state=state, best=state.best, closest=closest,
                            seconds=self.clock.elapsed(),
                            interrupted=self.interrupted, steps=self.searcher.step,
                            restarts=self.pool.restarts, searcher_seconds=self.searcher_seconds)
