"""A search's records in its log_dir: opening or resuming it, trial records, best.json, TensorBoard.

``RunRecords`` owns everything the loop writes except ``pending.json``
(``autodl_design.search.pending``): ``config.json`` (checked on resume),
``trials.jsonl`` (one line per finished evaluation), ``best.json``, the
searcher's ``checkpoint/``, ``search_space.json`` (the ``--search_space``
content, for ``--resume``) and the optional TensorBoard scalars.
"""
import json
import os
import shutil
from typing import Callable, Dict, Optional

from autodl_design import critic, records
from autodl_design.config import Config
from autodl_design.interfaces import Searcher
from autodl_design.search.errors import SearchError

PENDING_FILE = "pending.json"
SEARCH_SPACE_FILE = "search_space.json"  # the --search_space content a run started with
CHECKPOINT_DIR = "checkpoint"
REUSABLE = ("ok", "infeasible")


def disk_error(what: str, path: str, e: OSError) -> SearchError:
    """The one-line error for a write the file system refused (disk full, permissions)."""
    return SearchError("cannot write %s to %s: %s; free disk space (or fix permissions) and "
                       "continue with --resume" % (what, path, e.strerror or e))


def check_log_dir(log_dir: str, resume: bool) -> None:
    """Checks that ``log_dir`` can hold a run, creating nothing.

    Raises:
      SearchError: log_dir is a file or lies under one; with ``resume``, it
        holds no search (no config.json).
    """
    probe = os.path.abspath(log_dir)
    while not os.path.exists(probe):
        probe = os.path.dirname(probe)
    if not os.path.isdir(probe):
        raise SearchError("--log_dir %s: %s is a file, not a folder; choose another --log_dir"
                          % (log_dir, probe))
    if resume and not os.path.exists(os.path.join(log_dir, records.CONFIG_FILE)):
        raise SearchError("--resume: %s holds no search (no %s); run without --resume"
                          % (log_dir, records.CONFIG_FILE))


class RunRecords:
    """The records of one run.

    Attributes:
      state: what the run has recorded (``records.RunState``; record dicts).
      reusable: arch_hash -> first 'ok' or 'infeasible' record of it, whose
        result a duplicate candidate reuses.
      done_at_start: evaluations recorded before this process started.

    Args:
      config: the resolved configuration (log_dir, resume, tensorboard_dir).
      log: callable for progress lines.
    """

    def __init__(self, config: Config, log: Callable[[str], None]):
        self.config = config
        self.log_dir = config.search.log_dir
        self.log = log
        self.state = records.RunState()
        self.reusable: Dict[str, Dict] = {}
        self.done_at_start = 0
        self._trials: Optional[records.TrialLog] = None
        self._tb = None  # tensorboardX writer when --tensorboard_dir is set

    @property
    def checkpoint_dir(self) -> str:
        return os.path.join(self.log_dir, CHECKPOINT_DIR)

    def open(self, searcher: Searcher) -> None:
        """Prepares log_dir for a new run, or checks it and restores ``searcher`` for --resume.

        Creates nothing when the folder cannot be used.

        Raises:
          SearchError: log_dir is (under) a file or cannot be created; a new
            run's log_dir already holds a search; --resume finds no search or
            other settings; trials.jsonl is damaged.
        """
        self._check_folder()
        if self.config.search.resume:
            self._check_resume()
            ckpt = self.checkpoint_dir
            # The agent swaps checkpoint folders with two renames; a kill between
            # them leaves only checkpoint.old, which its restore() falls back to.
            if os.path.isdir(ckpt) or os.path.isdir(ckpt + ".old"):
                searcher.restore(ckpt)
        else:
            self._clear_for_new_run()
        records.write_config(self.log_dir, self.config.to_dict())
        if self.config.search.search_space:
            records.atomic_write_json(os.path.join(self.log_dir, SEARCH_SPACE_FILE),
                                      self.config.search.search_space)
        try:
            self._trials = records.TrialLog(os.path.join(self.log_dir, records.TRIALS_FILE))
            self.state = records.RunState(list(self._trials.records))
        except ValueError as e:
            raise SearchError(str(e)) from None
        for r in self.state.records:
            self._remember(r)
        self.done_at_start = self.state.num_done
        if self.config.search.tensorboard_dir:
            from tensorboardX import SummaryWriter
            self._tb = SummaryWriter(self.config.search.tensorboard_dir)
        if self.config.search.resume:
            self.log("Resuming %s: %d evaluations recorded, controller step %d"
                     % (self.log_dir, self.state.num_done, searcher.step))

    def _check_folder(self) -> None:
        check_log_dir(self.log_dir, self.config.search.resume)
        if self.config.search.resume:
            return
        try:
            os.makedirs(self.log_dir, exist_ok=True)
        except OSError as e:
            raise SearchError("cannot create --log_dir %s (%s); choose another --log_dir"
                              % (self.log_dir, e.strerror)) from None

    def _check_resume(self) -> None:
        self._check_resume_space()
        # The search space is checked above (a run started before --search_space
        # has none); settings added later are accepted at their defaults.
        ignore = records.RESUME_IGNORE + ("search.search_space",)
        try:
            records.check_resume_config(self.log_dir, self.config.to_dict(), ignore)
        except ValueError as e:
            raise SearchError("--resume: %s" % e) from None

    def _check_resume_space(self) -> Dict:
        """Refuses a --resume whose --search_space differs from the one the run started with.

        Returns:
          The saved config's ``search`` section ({} if config.json is unreadable:
          ``records.check_resume_config`` then names the problem).
        """
        path = os.path.join(self.log_dir, records.CONFIG_FILE)
        try:
            with open(path, encoding="utf-8") as f:
                saved = json.load(f)["search"]
            space = saved.get("search_space", {})
        except (OSError, ValueError, KeyError, TypeError, AttributeError):
            return {}
        if space == self.config.search.search_space:
            return saved
        if space:
            fix = "pass --search_space %s" % os.path.join(self.log_dir, SEARCH_SPACE_FILE)
        else:
            fix = "it searched only the cell: remove --search_space"
        raise SearchError("--resume: %s was started with another search space; %s"
                          % (self.log_dir, fix))

    def _clear_for_new_run(self) -> None:
        path = os.path.join(self.log_dir, records.TRIALS_FILE)
        if os.path.exists(path) and os.path.getsize(path) > 0:
            raise SearchError("%s already holds a search (%s); pass --resume to continue it "
                              "or choose another --log_dir" % (self.log_dir, path))
        for stale in (PENDING_FILE, records.BEST_FILE, SEARCH_SPACE_FILE):
            if os.path.exists(os.path.join(self.log_dir, stale)):
                os.remove(os.path.join(self.log_dir, stale))
        for stale in (CHECKPOINT_DIR, CHECKPOINT_DIR + ".old"):
            shutil.rmtree(os.path.join(self.log_dir, stale), ignore_errors=True)

    def _remember(self, record: Dict) -> None:
        if record["status"] in REUSABLE and record["arch_hash"] not in self.reusable:
            self.reusable[record["arch_hash"]] = record

    def write(self, record: records.TrialRecord) -> Dict:
        """Appends one finished evaluation (fsync'ed) and updates state, best.json, TensorBoard.

        Returns:
          The record as a dict, as held in ``state.records``.

        Raises:
          SearchError: the file system refused the write (disk full).
        """
        d = record.to_dict()
        try:
            self._trials.append(d)
        except OSError as e:
            raise disk_error("a trial record", self._trials.path, e) from None
        self.state.add(d)
        self._remember(d)
        pareto = self.config.constraints.objective == "pareto"
        if self.state.best is d or (pareto and self.state.best is not None):
            try:
                records.write_best(self.log_dir, self._best_json())
            except OSError as e:
                raise disk_error("the best record", os.path.join(self.log_dir, records.BEST_FILE),
                                 e) from None
        if self._tb is not None:
            self._scalars(d)
        return d

    def _best_json(self) -> Dict:
        """best.json: the best record; with ``--objective pareto`` also ``pareto_front``,
        the non-dominated feasible records (``critic.pareto_front``), by cost."""
        best = self.state.best
        if self.config.constraints.objective != "pareto":
            return best
        front = critic.pareto_front(self.state.records, self.config.constraints)
        cost = critic.COST_METRICS[self.config.constraints.pareto_cost]
        return dict(best, pareto_front=[
            {"index": r["index"], "arch_hash": r["arch_hash"], "arch": r["arch"],
             "val_accuracy": r["metrics"]["val_accuracy"], cost: r["metrics"][cost]}
            for r in front])

    def _scalars(self, record: Dict) -> None:
        i = record["index"]
        acc = record["metrics"].get("val_accuracy")
        if isinstance(acc, (int, float)):
            self._tb.add_scalar("search/val_accuracy", acc, i)
        if record["reward"] is not None:
            self._tb.add_scalar("search/reward", record["reward"], i)
        if self.state.best is not None:
            self._tb.add_scalar("search/best_reward", self.state.best["reward"], i)
        self._tb.flush()

    def save_checkpoint(self, searcher: Searcher) -> None:
        """Writes the searcher's state to ``checkpoint/``.

        Raises:
          SearchError: the file system refused (disk full, permissions); the
            trial records stay intact and --resume continues from the
            previous checkpoint.
        """
        try:
            searcher.save(self.checkpoint_dir)
        except OSError as e:
            raise disk_error("the controller checkpoint", self.checkpoint_dir, e) from None

    def close(self) -> None:
        """Closes trials.jsonl and the TensorBoard writer (idempotent)."""
        if self._trials is not None:
            self._trials.close()
        if self._tb is not None:
            self._tb.close()
            self._tb = None
