"""The search loop: propose a batch, evaluate it on trainer workers, reward, learn, repeat.

Records go to ``log_dir`` as they happen (see ``autodl_design/records.py``):
``trials.jsonl`` (one line per finished evaluation), ``best.json``,
``config.json``, ``pending.json`` (the batch being evaluated) and
``checkpoint/`` (the searcher after its last learning step). A run killed at
any moment continues with ``--resume``: the pending batch is re-created from
``pending.json``, evaluations already recorded are not repeated, and the
searcher continues from its checkpoint.
"""
import dataclasses
import json
import math
import os
import shutil
import time
from typing import Callable, Dict, List, Optional

from autodl_design import critic, evaluation, records
from autodl_design.arch import Architecture
from autodl_design.config import Config

PENDING_FILE = "pending.json"
CHECKPOINT_DIR = "checkpoint"
REAL_SETUP = "trainer.evaluate:setup_worker"
REAL_EVALUATE = "trainer.evaluate:evaluate_candidate"
REUSABLE = ("ok", "infeasible")


class SearchError(Exception):
    """A problem with the user's input that stops the search (exit code 2)."""


@dataclasses.dataclass
class SearchResult:
    state: records.RunState
    best: Optional[Dict]
    closest: Optional[Dict]
    seconds: float
    interrupted: bool
    steps: int
    restarts: int
    searcher_seconds: float = 0.0


def candidate_seed(seed: int, index: int) -> int:
    """Training seed of evaluation ``index``: the same whichever worker runs it."""
    return (seed * 1_000_003 + index * 7919 + 17) % (2 ** 31 - 1)


class Search:
    """One search run.

    Args:
      config: the resolved configuration.
      searcher: proposes architectures and learns from rewards (see
        ``autodl_design.search.searchers``).
      pool: started trainer pool (``autodl_design.search.local_pool.LocalPool`` or
        compatible): ``free_workers()``, ``submit()``, ``next_result()``,
        ``busy()``, ``devices``.
      log: callable for progress lines.
    """

    def __init__(self, config: Config, searcher, pool, log: Callable[[str], None] = print):
        self.config = config
        self.searcher = searcher
        self.pool = pool
        self.log = log
        self.log_dir = config.search.log_dir
        self.trials = None
        self.state = records.RunState()
        self.reusable: Dict[str, Dict] = {}
        self.start_time = time.time()
        self.interrupted = False
        self.searcher_seconds = 0.0  # proposing, learning and checkpointing
        self.done_at_start = 0
        self.tb = None  # tensorboardX writer when --tensorboard_dir is set

    # ----- records -----
    def open(self):
        os.makedirs(self.log_dir, exist_ok=True)
        path = os.path.join(self.log_dir, records.TRIALS_FILE)
        cfg_dict = self.config.to_dict()
        if self.config.search.resume:
            if not os.path.exists(os.path.join(self.log_dir, records.CONFIG_FILE)):
                raise SearchError("--resume: %s holds no search (no %s); run without --resume"
                                  % (self.log_dir, records.CONFIG_FILE))
            try:
                records.check_resume_config(self.log_dir, cfg_dict)
            except ValueError as e:
                raise SearchError("--resume: %s" % e) from None
            ckpt = os.path.join(self.log_dir, CHECKPOINT_DIR)
            # The agent swaps checkpoint folders with two renames; a kill between
            # them leaves only checkpoint.old, which its restore() falls back to.
            if os.path.isdir(ckpt) or os.path.isdir(ckpt + ".old"):
                self.searcher.restore(ckpt)
        else:
            if os.path.exists(path) and os.path.getsize(path) > 0:
                raise SearchError("%s already holds a search (%s); pass --resume to continue it "
                                  "or choose another --log_dir" % (self.log_dir, path))
            for stale in (PENDING_FILE, records.BEST_FILE):
                if os.path.exists(os.path.join(self.log_dir, stale)):
                    os.remove(os.path.join(self.log_dir, stale))
            for stale in (CHECKPOINT_DIR, CHECKPOINT_DIR + ".old"):
                shutil.rmtree(os.path.join(self.log_dir, stale), ignore_errors=True)
        records.write_config(self.log_dir, cfg_dict)
        self.trials = records.TrialLog(path)
        try:
            self.state = records.RunState(records.read_trials(path))
        except ValueError as e:
            raise SearchError(str(e)) from None
        for r in self.state.records:
            self._remember(r)
        self.done_at_start = self.state.num_done
        if self.config.search.tensorboard_dir:
            from tensorboardX import SummaryWriter
            self.tb = SummaryWriter(self.config.search.tensorboard_dir)
        if self.config.search.resume:
            self.log("Resuming %s: %d evaluations recorded, controller step %d"
                     % (self.log_dir, self.state.num_done, self.searcher.step))

    def _remember(self, record: Dict):
        if record["status"] in REUSABLE and record["arch_hash"] not in self.reusable:
            self.reusable[record["arch_hash"]] = record

    def _write(self, record: Dict):
        self.trials.append(record)
        self.state.add(record)
        self._remember(record)
        if self.state.best is record:
            records.write_best(self.log_dir, record)
        if self.tb is not None:
            i = record["index"]
            acc = record["metrics"].get("val_accuracy")
            if isinstance(acc, (int, float)):
                self.tb.add_scalar("search/val_accuracy", acc, i)
            if record["reward"] is not None:
                self.tb.add_scalar("search/reward", record["reward"], i)
            if self.state.best is not None:
                self.tb.add_scalar("search/best_reward", self.state.best["reward"], i)
            self.tb.flush()

    # ----- budget -----
    @property
    def total(self) -> int:
        return self.config.search.num_models

    def out_of_time(self) -> bool:
        mt = self.config.search.max_time
        return mt > 0 and time.time() - self.start_time >= mt

    # ----- main loop -----
    def run(self) -> SearchResult:
        """Runs until the budget is spent; records are written as results arrive.

        Batches are pipelined: up to ``1 + lookahead`` batches are open at once,
        so workers never wait for the slowest candidate of a batch. Batch s is
        learned from as soon as all its results are in, and the next batch is
        proposed right after, so batch s + 1 + lookahead is sampled from the
        policy that has learned from batches 0..s: the order of events that
        matter to the searcher does not depend on timing, and a seed gives the
        same search whatever the number of workers.
        """
        self.open()
        try:
            self._restore_open_batches()
            self._fill()
            while self.batches and not self.out_of_time():
                self._dispatch()
                got = self.pool.next_result(timeout=1.0)
                if got is not None:
                    w, index, metrics = got
                    arch, h = self.in_flight.pop(index)
                    self._finish(self._step_of(index), index, arch, metrics, w,
                                 self.pool.devices[w])
                    self._release_twins(h)
                while self.batches and all(i in self.state.finished
                                           for i in self.batches[0]["indices"]):
                    self._learn(self.batches.pop(0))
                    self._fill()
        except KeyboardInterrupt:
            self.interrupted = True
        finally:
            if self.trials is not None:
                self.trials.close()
            if self.tb is not None:
                self.tb.close()
        return self.result()

    def _step_of(self, index: int) -> int:
        for b in self.batches:
            if index in b["indices"]:
                return b["step"]
        raise KeyError(index)

    def _save_pending(self):
        records.atomic_write_json(os.path.join(self.log_dir, PENDING_FILE), {"batches": [
            {"step": b["step"], "first_index": b["indices"][0], "proposed_at": b["proposed_at"],
             "archs": [a.to_dict() for a in b["archs"]]} for b in self.batches]})

    def _restore_open_batches(self):
        """Re-creates the batches that were open when the run stopped.

        Batches proposed before the restored checkpoint are read back from
        pending.json; batches proposed after it are proposed again (which
        advances the searcher's random state exactly as the stopped run did)
        and checked against what was recorded.
        """
        self.batches = []
        self.in_flight: Dict[int, tuple] = {}
        self.waiting: Dict[str, List] = {}
        path = os.path.join(self.log_dir, PENDING_FILE)
        if not (self.config.search.resume and os.path.exists(path)):
            return
        with open(path) as f:
            saved = json.load(f)["batches"]
        step = self.searcher.step
        for b in saved:
            if b["step"] < step:
                continue  # learned from before the checkpoint
            recorded = [Architecture.from_dict(d) for d in b["archs"]]
            if b["proposed_at"] >= step:
                again = self.searcher.propose(len(recorded))
                if [a.hash() for a in again] != [a.hash() for a in recorded]:
                    self.log("warning: the resumed searcher proposed a different batch for "
                             "step %d than the stopped run; continuing with the recorded "
                             "batch" % b["step"])
            self._open(b["step"], b["first_index"], recorded, b["proposed_at"])

    def _open(self, step: int, first: int, archs: List[Architecture], proposed_at: int):
        self.batches.append({"step": step, "indices": [first + k for k in range(len(archs))],
                             "archs": archs, "proposed_at": proposed_at,
                             "queue": list(range(len(archs)))})

    def _fill(self):
        """Proposes batches until 1 + lookahead are open or the budget is spent."""
        changed = False
        while len(self.batches) < 1 + self.config.search.lookahead:
            if self.batches:
                step = self.batches[-1]["step"] + 1
                first = self.batches[-1]["indices"][-1] + 1
            else:
                step, first = self.searcher.step, self.state.num_done
            n = min(self.config.agent.batch_size, self.total - first)
            if n <= 0:
                break
            t0 = time.perf_counter()
            archs = self.searcher.propose(n)
            self.searcher_seconds += time.perf_counter() - t0
            self._open(step, first, archs, self.searcher.step)
            changed = True
        if changed:
            self._save_pending()

    def _dispatch(self):
        """Sends queued candidates (earliest batch first) to free workers."""
        for b in self.batches:
            while b["queue"]:
                k = b["queue"][0]
                index, arch = b["indices"][k], b["archs"][k]
                if index in self.state.finished:
                    b["queue"].pop(0)
                    continue
                h = arch.hash()
                if h in self.reusable:
                    b["queue"].pop(0)
                    self._duplicate(b["step"], index, arch, self.reusable[h])
                    continue
                if any(fh == h for _, fh in self.in_flight.values()):
                    b["queue"].pop(0)
                    self.waiting.setdefault(h, []).append((b, k))
                    continue
                free = self.pool.free_workers()
                if not free:
                    return
                b["queue"].pop(0)
                self.pool.submit(free[0], index, arch.to_dict(),
                                 candidate_seed(self.config.search.seed, index),
                                 self._task_options(b["step"]))
                self.in_flight[index] = (arch, h)

    def _task_options(self, step: int) -> Dict:
        """Per-candidate trainer options; for median early termination, the thresholds.

        The thresholds of batch ``step`` come only from batches that were
        learned from before it was proposed (steps <= step - 1 - lookahead),
        so they do not depend on timing.
        """
        if self.config.search.early_termination != "median":
            return {}
        limit = step - 1 - self.config.search.lookahead
        histories = [r["metrics"]["val_history"] for r in self.state.records
                     if r["step"] <= limit and r["status"] == "ok"
                     and isinstance(r["metrics"].get("val_history"), list)]
        return {"cull": evaluation.median_thresholds(histories, self.config.trainer.early_stop),
                "cull_start_epoch": self.config.search.cull_start_epoch}

    def _release_twins(self, h: str):
        """Candidates that waited for an in-flight twin: reuse its result or run them."""
        for b, k in self.waiting.pop(h, []):
            b["queue"].insert(0, k)

    def _learn(self, batch: Dict):
        by_index = {r["index"]: r for r in self.state.records}
        rewards = []
        for i in batch["indices"]:
            r = by_index[i]
            usable = r["status"] in REUSABLE or (r["status"] == "duplicate"
                                                 and r["reward"] is not None)
            rewards.append(r["reward"] if usable else None)
        t0 = time.perf_counter()
        self.searcher.observe(batch["archs"], rewards)
        self.searcher.save(os.path.join(self.log_dir, CHECKPOINT_DIR))
        self.searcher_seconds += time.perf_counter() - t0
        accs = [by_index[i]["metrics"].get("val_accuracy") for i in batch["indices"]]
        accs = [a for a in accs if isinstance(a, (int, float)) and math.isfinite(a)]
        avg = sum(accs) / len(accs) if accs else float("nan")
        best = self.state.best
        best_text = ("best #%d reward %.4f val_acc %.3f" % (
            best["index"], best["reward"], best["metrics"].get("val_accuracy", float("nan")))
            if best else "no feasible candidate yet")
        self.log("step = %d, average accuracy = %.3f | %d/%d evaluations | %s | %.0f s"
                 % (batch["step"], avg, self.state.num_done, self.total, best_text,
                    time.time() - self.start_time))

    def _finish(self, step: int, index: int, arch: Architecture, metrics: Dict, worker, device):
        status = metrics.get("status", "failed")
        reason = metrics.get("reason", "")
        if status == "ok" and metrics.get("stopped_early"):
            reason = ("stopped early after epoch %d of %d: validation accuracy below the median "
                      "of earlier candidates" % (metrics.get("epochs", 0),
                                                 self.config.trainer.early_stop))
        reward = None
        feasible = False
        if status in ("ok", "infeasible"):
            try:
                feas = critic.check(metrics, self.config.constraints)
                feasible = feas.feasible
                if status == "infeasible" or (self.config.constraints.mode == "hard"
                                              and not feasible):
                    status = "infeasible"
                    reward = self.config.constraints.infeasible_reward
                    reason = reason or feas.text
                else:
                    reward = critic.reward(metrics["val_accuracy"], metrics,
                                           self.config.constraints)
            except (ValueError, KeyError) as e:
                status, reason = "failed", "critic: %s" % e
        record = records.make_record(
            step=step, index=index, arch=arch, metrics=_clean_metrics(metrics), reward=reward,
            feasible=feasible, status=status, reason=reason, worker=worker, device=device,
            seconds=metrics.get("seconds"))
        self._write(record)
        self._progress(record)
        return record

    def _duplicate(self, step: int, index: int, arch: Architecture, source: Dict):
        record = records.make_record(
            step=step, index=index, arch=arch, arch_hash=source["arch_hash"],
            metrics=source["metrics"], reward=source["reward"], feasible=source["feasible"],
            status="duplicate", reason="same architecture as #%d (%s); result reused"
            % (source["index"], source["status"]), worker=None, device="", seconds=0.0)
        self._write(record)
        self._progress(record)

    def _progress(self, r: Dict):
        m = r["metrics"]
        acc = m.get("val_accuracy")
        parts = ["[%d/%d] #%d %s" % (self.state.num_done, self.total, r["index"], r["status"])]
        if isinstance(acc, (int, float)):
            parts.append("val_acc %.3f" % acc)
        if r["reward"] is not None:
            parts.append("reward %.4f" % r["reward"])
        if isinstance(m.get("params"), (int, float)):
            parts.append("params %s" % _si(m["params"]))
        if isinstance(m.get("latency_ms"), (int, float)):
            parts.append("lat %.2f ms" % m["latency_ms"])
        if r["reason"]:
            parts.append("(%s)" % r["reason"][:120])
        best = self.state.best
        parts.append("| best %s" % ("#%d %.4f" % (best["index"], best["reward"]) if best
                                    else "none feasible yet"))
        elapsed = time.time() - self.start_time
        done_here = max(self.state.num_done - self.done_at_start, 1)
        left = (self.total - self.state.num_done) * elapsed / done_here
        if self.config.search.max_time > 0:
            left = min(left, self.config.search.max_time - elapsed)
        parts.append("| %.0f s, ~%.0f s left" % (elapsed, max(left, 0)))
        self.log(" ".join(parts))

    def result(self) -> SearchResult:
        best = self.state.best
        closest = None
        if best is None:
            cands = [r for r in self.state.records if r["status"] in ("ok", "infeasible")]
            scored = []
            for r in cands:
                try:
                    scored.append((critic.check(r["metrics"], self.config.constraints)
                                   .normalised_violation, r["index"], r))
                except ValueError:
                    continue
            if scored:
                closest = min(scored, key=lambda t: (t[0], t[1]))[2]
        return SearchResult(state=self.state, best=best, closest=closest,
                            seconds=time.time() - self.start_time,
                            interrupted=self.interrupted, steps=self.searcher.step,
                            restarts=getattr(self.pool, "restarts", 0),
                            searcher_seconds=self.searcher_seconds)


def _clean_metrics(metrics: Dict) -> Dict:
    return {k: v for k, v in metrics.items() if k not in ("status", "reason", "traceback")}


def _si(x: float) -> str:
    for unit, scale in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(x) >= scale:
            return "%.2f%s" % (x / scale, unit)
    return "%g" % x


