"""Local trainer workers: one long-lived process per device, fed one candidate at a time.

Each worker process is started once (``spawn``), pins itself to its device and
thread count, loads the dataset once, then evaluates candidates sent to it.
The parent keeps a task queue per worker, so it always knows which candidate
a worker holds: if the worker dies (killed, out of memory) the candidate is
reported as failed with the exit code and the worker is replaced.

Workers receive a picklable ``autodl_design.interfaces.Evaluator`` (the real
``trainer.evaluate.TrainerEvaluator`` or a test's fake), call its ``setup``
once and its ``evaluate`` per candidate. A candidate's failures come back as
metrics with status 'failed'. An exception escaping the evaluator is a bug:
the worker sends its traceback and the parent raises ``WorkerBug``; a setup
refused for bad input (``WorkerSetupError``) stops the search with one line.
"""
import multiprocessing as mp
import os
import queue
import signal
import sys
import time
import traceback
from typing import Dict, List, Optional, Tuple

from autodl_design.interfaces import Evaluator
from autodl_design.search.errors import WorkerBug, WorkerSetupError

READY_TIMEOUT_S = 600.0


def _die_with_parent():
    """Linux: ask the kernel to SIGKILL this process when its parent dies."""
    if sys.platform.startswith("linux"):
        try:
            import ctypes
            libc = ctypes.CDLL("libc.so.6", use_errno=True)
            libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
        except OSError:
            pass


def _worker_main(worker_id: int, device: str, threads: int, evaluator: Evaluator,
                 task_q, result_q):
    """Body of a worker process (runs in a fresh interpreter)."""
    _die_with_parent()
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent handles Ctrl-C
    os.environ["OMP_NUM_THREADS"] = str(threads)
    os.environ["MKL_NUM_THREADS"] = str(threads)
    try:
        evaluator.setup(device, threads)
    except WorkerSetupError as e:
        result_q.put(("setup_failed", worker_id, str(e)))
        return
    except Exception:  # a bug: its traceback goes to the parent, which raises it
        result_q.put(("setup_bug", worker_id, traceback.format_exc()))
        return
    result_q.put(("ready", worker_id, os.getpid()))
    while True:
        task = task_q.get()
        if task is None:
            return
        index, candidate, seed, options = task
        start = time.time()
        try:
            metrics = evaluator.evaluate(candidate, index, seed, options)
        except Exception:  # a bug: its traceback goes to the parent, which raises it
            result_q.put(("bug", worker_id, index, traceback.format_exc()))
            return
        metrics.setdefault("seconds", time.time() - start)
        result_q.put(("done", worker_id, index, metrics))


class LocalPool:
    """A pool of long-lived worker processes, one per device entry.

    Args:
      devices: one entry per worker, e.g. ("cpu", "cpu") or ("gpu:0", "gpu:1").
      threads: CPU threads per worker.
      evaluator: picklable; each worker gets a copy and sets it up once.
      log: callable for progress lines.
      trial_timeout: seconds a candidate may run before its worker is
        killed (and replaced) and the candidate reported failed; 0 = no limit.
    """

    def __init__(self, devices, threads: int, evaluator: Evaluator, log=print,
                 trial_timeout: float = 0.0):
        self.devices = list(devices)
        self.threads = threads
        self.evaluator = evaluator
        self.log = log
        self._ctx = mp.get_context("spawn")
        self._result_q = self._ctx.Queue()
        self._procs: List[Optional[mp.Process]] = [None] * len(self.devices)
        self._task_qs = [None] * len(self.devices)
        self._busy: Dict[int, Tuple[int, float]] = {}  # worker -> (index, start time)
        self._ready = [False] * len(self.devices)
        self.restarts = 0
        self.trial_timeout = trial_timeout
        self._timed_out: Dict[int, str] = {}

    # ----- life cycle -----
    def start(self):
        for w in range(len(self.devices)):
            self._spawn(w)
        self._wait_ready()

    def _spawn(self, w: int):
        self._task_qs[w] = self._ctx.Queue()
        p = self._ctx.Process(
            # Daemonic, so that an exit that skipped terminate() (a second
            # Ctrl-C) does not wait for it; it also dies with its parent
            # (PR_SET_PDEATHSIG) if the parent is SIGKILLed.
            target=_worker_main, name="trainer-%d" % w, daemon=True,
            args=(w, self.devices[w], self.threads, self.evaluator, self._task_qs[w],
                  self._result_q))
        p.start()
        self._procs[w] = p
        self._ready[w] = False

    def _wait_ready(self):
        deadline = time.time() + READY_TIMEOUT_S
        while not all(self._ready):
            if time.time() > deadline:
                raise RuntimeError("trainer workers did not start within %.0f s" % READY_TIMEOUT_S)
            for w, p in enumerate(self._procs):
                if not self._ready[w] and not p.is_alive():
                    raise RuntimeError("trainer worker %d (%s) exited with code %s while starting"
                                       % (w, self.devices[w], p.exitcode))
            try:
                msg = self._result_q.get(timeout=0.5)
            except queue.Empty:
                continue
            self._handle_control(msg)

    def _handle_control(self, msg):
        kind, w = msg[0], msg[1]
        if kind == "ready":
            self._ready[w] = True
        elif kind == "setup_failed":
            raise WorkerSetupError("trainer worker %d (%s) could not start: %s"
                                   % (w, self.devices[w], msg[2]))
        elif kind == "setup_bug":
            raise WorkerBug("trainer worker %d (%s) failed while starting:\n%s"
                            % (w, self.devices[w], msg[2]))
        elif kind == "bug":
            raise WorkerBug("the evaluator raised in trainer worker %d (%s) while evaluating "
                            "#%d:\n%s" % (w, self.devices[w], msg[2], msg[3]))
        else:
            raise RuntimeError("unexpected worker message %r" % (msg,))

    def close(self):
        for w, p in enumerate(self._procs):
            if p is not None and p.is_alive():
                try:
                    self._task_qs[w].put(None)
                except (OSError, ValueError):
                    pass
        for p in self._procs:
            if p is not None:
                p.join(timeout=2)
                if p.is_alive():
                    p.kill()
                    p.join(timeout=2)

    def terminate(self):
        for p in self._procs:
            if p is not None and p.is_alive():
                p.kill()
        for p in self._procs:
            if p is not None:
                p.join(timeout=2)

    # ----- work -----
    @property
    def size(self) -> int:
        return len(self.devices)

    def free_workers(self) -> List[int]:
        return [w for w in range(self.size) if w not in self._busy and self._ready[w]]

    def submit(self, worker: int, index: int, candidate: Dict, seed: int, options: Dict):
        assert worker not in self._busy
        self._busy[worker] = (index, time.time())
        self._task_qs[worker].put((index, candidate, seed, options))

    def busy(self) -> int:
        return len(self._busy)

    def pid(self, worker: int) -> Optional[int]:
        p = self._procs[worker]
        return p.pid if p is not None else None

    def next_result(self, timeout: float = 1.0):
        """Waits for one finished candidate.

        Returns:
          (worker, index, metrics), or None if nothing finished within timeout.
          A worker that died while holding a candidate yields that candidate
          as failed, and the worker is restarted.

        Raises:
          WorkerBug: the evaluator raised in a worker (with its traceback).
        """
        try:
            msg = self._result_q.get(timeout=timeout)
        except queue.Empty:
            return self._reap_dead()
        if msg[0] == "done":
            _, w, index, metrics = msg
            self._busy.pop(w, None)
            return w, index, metrics
        self._handle_control(msg)
        return None

    def _kill_overdue(self):
        if self.trial_timeout <= 0:
            return
        now = time.time()
        for w, (index, start) in self._busy.items():
            if now - start > self.trial_timeout and w not in self._timed_out:
                self._timed_out[w] = "ran over --trial_timeout=%gs" % self.trial_timeout
                self._procs[w].kill()

    def _reap_dead(self):
        self._kill_overdue()
        for w, (index, start) in list(self._busy.items()):
            p = self._procs[w]
            if p.is_alive():
                continue
            # Drain a result the worker may have sent just before dying.
            code = p.exitcode
            self._busy.pop(w)
            reason = "worker %d (%s) died with exit code %s" % (w, self.devices[w], code)
            if code is not None and code < 0:
                reason += " (signal %s)" % signal.Signals(-code).name
            if w in self._timed_out:
                reason = "%s: %s" % (self._timed_out.pop(w), reason)
            self.log("[workers] %s while evaluating #%d; restarting it" % (reason, index))
            self.restarts += 1
            self._spawn(w)
            return w, index, {"status": "failed", "reason": reason,
                              "seconds": time.time() - start}
        for w, p in enumerate(self._procs):
            if w not in self._busy and self._ready[w] and not p.is_alive():
                self.log("[workers] idle worker %d (%s) exited with code %s; restarting it"
                         % (w, self.devices[w], p.exitcode))
                self.restarts += 1
                self._spawn(w)
        return None

    def wait_restarted(self):
        """Blocks until every worker (including replacements) is ready."""
        if not all(self._ready):
            self._wait_ready()
