"""Local trainer workers: one long-lived process per device, fed one candidate at a time.

Each worker process is started once (``spawn``), pins itself to its device and
thread count, loads the dataset once, then evaluates candidates sent to it.
A GPU worker is pinned for real: it starts with ``CUDA_VISIBLE_DEVICES`` set
to its entry of this process's visible list (``devices.worker_env``), so it
sees one GPU and uses ``gpu:0``; ``devices`` (and each record) names the
physical GPU, e.g. ``gpu:1 (CUDA device 5)``.
The parent keeps a task queue per worker, so it always knows which candidate
a worker holds: if the worker dies (killed, out of memory) the candidate is
reported as failed with the exit code and the worker is replaced.

Workers receive a picklable ``autodl_design.interfaces.Evaluator`` (the real
``trainer.evaluate.TrainerEvaluator`` or a test's fake), call its ``setup``
once and its ``evaluate`` per candidate. A candidate's failures come back as
metrics with status 'failed'. An exception escaping the evaluator is a bug:
the worker sends its traceback and the parent raises ``WorkerBug``; a setup
refused for bad input (``WorkerSetupError``) stops the search with one line.
An evaluator raising ``DeviceFault`` (a CUDA/cuDNN error) has its candidate
reported failed and its worker replaced by a fresh process. A (re)started
worker must be ready within ``ready_timeout`` seconds; a start that dies or
hangs is retried ``start_retries`` times, then the search stops with one line
naming the device (``SearchError``).
"""
import contextlib
import multiprocessing as mp
import os
import queue
import signal
import sys
import time
import traceback
from typing import Dict, Iterator, List, Optional, Sequence, Tuple, Union

from autodl_design import devices as devices_lib
from autodl_design.evaluation import DeviceFault
from autodl_design.interfaces import Evaluator
from autodl_design.search.errors import SearchError, WorkerBug, WorkerSetupError

READY_TIMEOUT_S = 600.0
START_RETRIES = 2


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
        except DeviceFault as e:  # the device may be broken: report, exit, be replaced
            result_q.put(("fault", worker_id, index, {
                "status": "failed", "reason": str(e), "seconds": time.time() - start}))
            return
        except Exception:  # a bug: its traceback goes to the parent, which raises it
            result_q.put(("bug", worker_id, index, traceback.format_exc()))
            return
        metrics.setdefault("seconds", time.time() - start)
        result_q.put(("done", worker_id, index, metrics))


@contextlib.contextmanager
def _environment(env: Dict[str, str]) -> Iterator[None]:
    """``os.environ`` updated with ``env`` inside (a spawned child inherits it), restored after."""
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


class LocalPool:
    """A pool of long-lived worker processes, one per device entry.

    Args:
      devices: one entry per worker, e.g. ("cpu", "cpu") or ("gpu:0", "gpu:1"),
        indices into this process's ``CUDA_VISIBLE_DEVICES`` (if set).
      threads: CPU threads per worker: one number, or one per worker
        (``devices.worker_threads``).
      evaluator: picklable; each worker gets a copy and sets it up once.
      log: callable for progress lines.
      trial_timeout: seconds a candidate may run before its worker is
        killed (and replaced) and the candidate reported failed; 0 = no limit.
      deterministic: GPU workers start with ``FLAGS_cudnn_deterministic=1``.
      ready_timeout: seconds a (re)started worker may take to set up.
      start_retries: failed starts of one worker retried before the search stops.

    Raises:
      ValueError: a GPU index beyond ``CUDA_VISIBLE_DEVICES`` (one line).
    """

    def __init__(self, devices, threads: Union[int, Sequence[int]], evaluator: Evaluator,
                 log=print, trial_timeout: float = 0.0, deterministic: bool = False,
                 ready_timeout: float = READY_TIMEOUT_S, start_retries: int = START_RETRIES):
        self.requested = list(devices)
        visible = devices_lib.visible_gpus()
        self._envs = [devices_lib.worker_env(d, visible, deterministic) for d in self.requested]
        self.devices = [env[devices_lib.LABEL_ENV] for env in self._envs]
        self.threads = ([int(threads)] * len(self.requested) if isinstance(threads, int)
                        else [int(t) for t in threads])
        self.ready_timeout = ready_timeout
        self.start_retries = start_retries
        self._deadline: Dict[int, float] = {}     # starting worker -> ready-by time
        self._start_failures: Dict[int, int] = {}  # worker -> failed starts in a row
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
            args=(w, devices_lib.worker_device(self.requested[w]), self.threads[w],
                  self.evaluator, self._task_qs[w], self._result_q))
        with _environment(self._envs[w]):  # before the child imports anything
            p.start()
        self._procs[w] = p
        self._ready[w] = False
        self._deadline[w] = time.time() + self.ready_timeout

    def _wait_ready(self):
        while not all(self._ready):
            self._check_starting()
            try:
                msg = self._result_q.get(timeout=0.5)
            except queue.Empty:
                continue
            self._handle_control(msg)

    def _check_starting(self):
        """Retries a start that died or ran over ``ready_timeout``; SearchError when out of retries."""
        now = time.time()
        for w, deadline in list(self._deadline.items()):
            p = self._procs[w]
            if p.is_alive() and now <= deadline:
                continue
            if p.is_alive():
                p.kill()
                p.join(timeout=2)
                why = "was not ready within %.0f s" % self.ready_timeout
            else:
                why = "exited with code %s while starting" % p.exitcode
            failures = self._start_failures.get(w, 0) + 1
            self._start_failures[w] = failures
            if failures > self.start_retries:
                raise SearchError("trainer worker %d (%s) %s, %d time(s) in a row; check that "
                                  "the device works" % (w, self.devices[w], why, failures))
            self.log("[workers] worker %d (%s) %s; starting it again (%d/%d)"
                     % (w, self.devices[w], why, failures, self.start_retries))
            self.restarts += 1
            self._spawn(w)

    def _handle_control(self, msg):
        kind, w = msg[0], msg[1]
        if kind == "ready":
            self._ready[w] = True
            self._deadline.pop(w, None)
            self._start_failures.pop(w, None)
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
        if msg[0] == "fault":
            return self._replace_faulty(*msg[1:])
        self._handle_control(msg)
        return None

    def _replace_faulty(self, w: int, index: int, metrics: Dict):
        """A worker whose device failed exits after reporting; a fresh one takes its place."""
        if self._busy.get(w, (None,))[0] != index:  # its death was reported already
            return None
        self._busy.pop(w)
        self._procs[w].join(timeout=5)
        if self._procs[w].is_alive():
            self._procs[w].kill()
            self._procs[w].join(timeout=2)
        self.log("[workers] %s while evaluating #%d; starting a fresh worker %d"
                 % (metrics["reason"], index, w))
        self.restarts += 1
        self._spawn(w)
        return w, index, metrics

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
        self._check_starting()
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
