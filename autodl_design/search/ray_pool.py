"""Trainer workers as Ray actors, for searches that span several machines.

Same interface as ``autodl_design.search.local_pool.LocalPool`` and the same
evaluator objects (``autodl_design.interfaces.Evaluator``); the controller
stays in the driver.

* On a node with GPUs, one actor per ``gpus_per_trainer`` GPUs (a fraction
  such as 0.5 puts two actors on a GPU), each with ``cpus_per_trainer`` CPUs
  and threads; on a node without GPUs, one CPU actor per ``cpus_per_trainer``
  CPUs. ``num_trainers`` of them (GPU actors first), 0 = as many as the
  cluster holds; each actor is placed on the node it was counted on (soft
  node affinity: a restart after the node's loss may move it). Ray sets each GPU actor's ``CUDA_VISIBLE_DEVICES``; inside,
  the evaluator uses ``gpu:0`` and the actor's name gives the physical GPU.
* The dataset folder is read once in the driver and put in Ray's object store
  once; each actor writes it to its own temporary folder and loads it once,
  so nodes need no shared file system.
* An actor lost mid-evaluation (process or node death) is restarted by Ray
  (``max_restarts=-1``) and its candidate is sent to another actor, up to
  ``max_retries`` times, then reported as failed. A candidate running longer
  than ``trial_timeout`` seconds has its actor killed (and restarted). An
  evaluator raising ``DeviceFault`` (a CUDA/cuDNN error) has its candidate
  recorded failed and its actor restarted. A restarted actor that fails to
  set up more than ``START_RETRIES`` times in a row, or is not ready within
  ``READY_TIMEOUT_S``, stops the search with one line (``SearchError``).
* An exception escaping the evaluator is a bug: ``next_result`` raises
  ``WorkerBug`` with the actor's traceback.
"""
import dataclasses
import os
import tempfile
import time
from typing import Any, Dict, List, Optional, Tuple

from autodl_design import devices as devices_lib
from autodl_design.evaluation import DeviceFault
from autodl_design.interfaces import Evaluator
from autodl_design.search.errors import SearchError, WorkerBug, WorkerSetupError

READY_TIMEOUT_S = 600.0
START_RETRIES = 2
# With this set to 0 before ``import ray``, a Ray instance started here uses
# 127.0.0.1 as its node address instead of probing an outside route
# (Ray ignores --node-ip-address=127.0.0.1 on Linux otherwise).
LOCAL_ONLY_ENV = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"
DEVICE_FAULT = "device_fault"  # metrics key of an actor that must be restarted


def ships_data(evaluator: Evaluator) -> bool:
    """Whether ``evaluator`` is a dataclass with a ``data_path`` field (its folder is shipped)."""
    return (dataclasses.is_dataclass(evaluator)
            and any(f.name == "data_path" for f in dataclasses.fields(evaluator)))


def _read_folder(path: str) -> Dict[str, bytes]:
    files = {}
    for name in sorted(os.listdir(path)):
        full = os.path.join(path, name)
        if os.path.isfile(full):
            with open(full, "rb") as f:
                files[name] = f.read()
    return files


def _prefer(node: Dict[str, Any]):
    """Ray's scheduling strategy placing an actor on ``node`` (soft: a restart may move it)."""
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy
    return NodeAffinitySchedulingStrategy(node_id=node["NodeID"], soft=True)


class TrainerActor:
    """Body of one Ray trainer actor (wrapped with ``ray.remote`` at start).

    A setup refused for bad input (``WorkerSetupError``) is kept and reported
    by ``ready()``; any other exception kills the actor (a bug, raised by the
    pool with Ray's traceback).
    """

    def __init__(self, evaluator: Evaluator, threads: int,
                 dataset_files: Optional[Dict[str, bytes]], deterministic: bool = False):
        os.environ["OMP_NUM_THREADS"] = str(threads)
        import ray
        gpu_ids = [str(g) for g in ray.get_gpu_ids()]
        self.device = "gpu:0" if gpu_ids else "cpu"  # Ray sets CUDA_VISIBLE_DEVICES
        self.gpu_ids = gpu_ids
        if gpu_ids:  # the actor sees its GPU(s) only; name the physical one in messages
            env = devices_lib.worker_env(self.device, gpu_ids, deterministic)
            os.environ.update({k: v for k, v in env.items() if k != devices_lib.VISIBLE_ENV})
        if dataset_files is not None:
            self._tmp = tempfile.mkdtemp(prefix="autodl-design-data-")
            for name, blob in dataset_files.items():
                with open(os.path.join(self._tmp, name), "wb") as f:
                    f.write(blob)
            evaluator = dataclasses.replace(evaluator, data_path=self._tmp)
        self.evaluator = evaluator
        self.setup_error = ""
        try:
            evaluator.setup(self.device, threads)
        except WorkerSetupError as e:
            self.setup_error = str(e)
        self.node = ray.util.get_node_ip_address()
        self.pid = os.getpid()

    def ready(self):
        return {"node": self.node, "pid": self.pid, "device": self.device,
                "gpu_ids": self.gpu_ids, "setup_error": self.setup_error}

    def evaluate(self, index: int, candidate: Dict, seed: int, options: Dict) -> Dict:
        start = time.time()
        try:
            metrics = self.evaluator.evaluate(candidate, index, seed, options)
        except DeviceFault as e:  # the pool restarts this actor
            return {"status": "failed", "reason": str(e), "seconds": time.time() - start,
                    DEVICE_FAULT: True}
        metrics.setdefault("seconds", time.time() - start)
        return metrics


class RayPool:
    """Trainer actors on a Ray cluster (see module docstring).

    Args:
      address: Ray address to connect to ("auto" = the running cluster), or
        "local" to start a private Ray instance on this machine bound to
        127.0.0.1.
      num_trainers: actors to start; 0 = as many as the cluster holds.
      cpus_per_trainer: CPUs (and threads) per actor.
      use_gpus: GPU actors on the nodes that have GPUs.
      max_retries: how often a candidate whose actor died is retried.
      trial_timeout: seconds before a running candidate's actor is killed
        (0 = no limit).
      evaluator: as for ``LocalPool``; when it has a ``data_path`` field
        (``ships_data``), that folder is shipped through the object store and
        each actor's copy replaces the field.
      log: callable for progress lines.
      local_cpus: CPUs of a private instance (address "local"); None = all.
      gpus_per_trainer: GPUs per GPU actor (fractions allowed).
      deterministic: GPU actors set ``FLAGS_cudnn_deterministic=1``.
    """

    def __init__(self, address: str, num_trainers: int, cpus_per_trainer: int, use_gpus: bool,
                 max_retries: int, trial_timeout: float, evaluator: Evaluator, log=print,
                 local_cpus: Optional[int] = None, gpus_per_trainer: float = 1.0,
                 deterministic: bool = False):
        self.gpus_per_trainer = gpus_per_trainer
        self.deterministic = deterministic
        self.address = address
        self.num_trainers = num_trainers
        self.cpus_per_trainer = cpus_per_trainer
        self.use_gpus = use_gpus
        self.max_retries = max_retries
        self.trial_timeout = trial_timeout
        self.evaluator = evaluator
        self.log = log
        self.local_cpus = local_cpus
        self.actors: List[Any] = []
        self.devices: List[str] = []
        self.restarts = 0
        self._busy: Dict[int, Dict] = {}      # actor -> task
        self._refs: Dict[Any, int] = {}       # object ref -> actor
        self._restarting: Dict[Any, int] = {}  # ready() ref -> actor
        self._ready_by: Dict[int, float] = {}  # restarting actor -> deadline
        self._start_failures: Dict[int, int] = {}  # actor -> failed restarts in a row
        self._pids: Dict[int, int] = {}        # actor -> pid of its ready process
        self._stale: Dict[int, Optional[int]] = {}  # restarting actor -> its old pid
        self._retry: List[Dict] = []
        self._started_ray = False
        self._dataset_ref = None

    # ----- life cycle -----
    def start(self):
        """Connects to Ray, starts the actors and waits until each is set up.

        Raises:
          SearchError: no Ray cluster at the address, or too few resources.
          WorkerSetupError: an actor's evaluator refused its setup (bad input).
          WorkerBug: an actor could not be created (Ray's traceback).
        """
        import ray
        self._connect()
        nodes = [node for node in ray.nodes() if node.get("Alive")]
        shapes = self._shape([node["Resources"] for node in nodes])
        n = len(shapes)
        data = _read_folder(self.evaluator.data_path) if ships_data(self.evaluator) else None
        # Kept for the pool's lifetime: Ray re-runs an actor's constructor with
        # these arguments when it restarts the actor.
        self._dataset_ref = ray.put(data) if data is not None else None
        actor_cls = ray.remote(max_restarts=-1, max_task_retries=0)(TrainerActor)
        self.actors = [actor_cls.options(**per, scheduling_strategy=_prefer(nodes[k]))
                       .remote(self.evaluator, threads, self._dataset_ref, self.deterministic)
                       for per, threads, k in shapes]
        try:
            infos = ray.get([a.ready.remote() for a in self.actors], timeout=READY_TIMEOUT_S)
        except ray.exceptions.RayError as e:
            raise WorkerBug("Ray trainer actors could not start:\n%s" % e) from None
        for i in infos:
            if i["setup_error"]:
                raise WorkerSetupError("Ray trainer actor on %s/%s could not start: %s"
                                       % (i["node"], i["device"], i["setup_error"]))
        self._pids = {w: i["pid"] for w, i in enumerate(infos)}
        self.devices = ["%s/%s" % (i["node"], i["device"]) + (
            " (CUDA device %s)" % ",".join(i["gpu_ids"]) if i.get("gpu_ids") else "")
            for i in infos]
        self.log("[ray] %d trainer actors ready: %s" % (n, ", ".join(self.devices)))

    def _connect(self):
        if self.address == "local":
            os.environ[LOCAL_ONLY_ENV] = "0"  # read when ray is first imported
        import ray
        if ray.is_initialized():
            return
        if self.address == "local":
            ray.init(num_cpus=self.local_cpus, include_dashboard=False,
                     log_to_driver=False, configure_logging=False)
            self._started_ray = True
            return
        try:
            ray.init(address=self.address, log_to_driver=False, configure_logging=False)
        except (ConnectionError, RuntimeError) as e:
            raise SearchError(
                "cannot connect to a Ray cluster at %r (%s): start one with "
                "'ray start --head' or pass --ray_address local"
                % (self.address, " ".join(str(e).split()))) from None

    def _shape(self, nodes: List[Dict[str, float]]) -> List[Tuple[Dict[str, float], int, int]]:
        """(Ray resources, threads, node position) of each actor to start, GPU actors first.

        Args:
          nodes: the ``Resources`` of each alive node.

        Raises:
          SearchError: the cluster holds no trainer, or fewer than ``num_trainers``.
        """
        cpus = self.cpus_per_trainer
        gpu_slots, cpu_slots = [], []
        for k, res in enumerate(nodes):
            gpus = float(res.get("GPU", 0)) if self.use_gpus else 0.0
            by_cpu = int(float(res.get("CPU", 0)) // cpus)
            if gpus > 0:
                fit = min(int(gpus / self.gpus_per_trainer + 1e-9), by_cpu)
                gpu_slots += [({"num_gpus": self.gpus_per_trainer, "num_cpus": cpus}, cpus, k)
                              ] * fit
            else:
                cpu_slots += [({"num_cpus": cpus}, cpus, k)] * by_cpu
        slots = gpu_slots + cpu_slots
        n = self.num_trainers if self.num_trainers > 0 else len(slots)
        if n <= 0 or n > len(slots):
            raise SearchError("the Ray cluster holds %d trainer(s) (%d GPU, %d CPU actors of %d "
                              "CPUs, %g GPUs per GPU actor); asked for %d (lower --num_trainers, "
                              "--cpus_per_trainer or --gpus_per_trainer)"
                              % (len(slots), len(gpu_slots), len(cpu_slots), cpus,
                                 self.gpus_per_trainer, n))
        return slots[:n]

    def close(self):
        self.terminate()

    def terminate(self):
        import ray
        for a in self.actors:
            try:
                ray.kill(a, no_restart=True)
            except ray.exceptions.RayError:  # already gone
                pass
        self.actors = []
        if self._started_ray and ray.is_initialized():
            ray.shutdown()

    # ----- work -----
    @property
    def size(self) -> int:
        return len(self.actors)

    def _idle(self) -> List[int]:
        down = set(self._restarting.values())
        return [w for w in range(self.size) if w not in self._busy and w not in down]

    def free_workers(self) -> List[int]:
        idle = self._idle()
        return idle[len(self._retry):]  # retries go first

    def busy(self) -> int:
        return len(self._busy)

    def submit(self, worker: int, index: int, candidate: Dict, seed: int, options: Dict):
        self._send(worker, {"index": index, "arch": candidate, "seed": seed,
                            "options": options, "attempts": 0})

    def _send(self, worker: int, task: Dict):
        task["start"] = time.time()
        task["worker"] = worker
        ref = self.actors[worker].evaluate.remote(task["index"], task["arch"], task["seed"],
                                                  task["options"])
        self._busy[worker] = task
        self._refs[ref] = worker

    def kill_actor(self, worker: int):
        """Kills one actor (Ray restarts it); used for fault tests and timeouts."""
        import ray
        ray.kill(self.actors[worker], no_restart=False)

    def next_result(self, timeout: float = 1.0):
        """(worker, index, metrics) of one finished candidate, or None (see ``interfaces.Pool``).

        Raises:
          WorkerBug: the evaluator raised on an actor (with its traceback).
        """
        import ray
        for w in self._idle():
            if not self._retry:
                break
            self._send(w, self._retry.pop(0))
        self._check_timeouts()
        watch = list(self._refs) + list(self._restarting)
        if not watch:
            time.sleep(min(timeout, 0.05))
            return None
        done, _ = ray.wait(watch, num_returns=1, timeout=timeout)
        if not done:
            return None
        ref = done[0]
        if ref in self._restarting:
            self._restarted(self._restarting.pop(ref), ref)
            return None
        w = self._refs.pop(ref)
        task = self._busy.pop(w)
        try:
            metrics = ray.get(ref)
            if metrics.pop(DEVICE_FAULT, False):
                self.log("[ray] %s on actor %d while evaluating #%d; restarting the actor"
                         % (metrics["reason"], w, task["index"]))
                self.kill_actor(w)
                self._watch_restart(w)
            return w, task["index"], metrics
        except ray.exceptions.RayActorError as e:
            return self._lost(w, task, "actor %d (%s) died: %s"
                              % (w, self.devices[w], str(e).splitlines()[0][:200]))
        except ray.exceptions.RayTaskError as e:
            raise WorkerBug("the evaluator raised on actor %d (%s) while evaluating #%d:\n%s"
                            % (w, self.devices[w], task["index"], e)) from None
        except ray.exceptions.RayError as e:
            return w, task["index"], {"status": "failed", "reason": "ray: %s"
                                      % str(e).splitlines()[0][:300],
                                      "seconds": time.time() - task["start"]}

    def _watch_restart(self, w: int):
        """Counts a restart of actor ``w`` and waits (in ``next_result``) for it to be ready.

        ``ray.kill`` is asynchronous: a ``ready()`` answered by the old
        process (same pid) is asked again until the new one answers.
        """
        self._stale[w] = self._pids.get(w)
        self.restarts += 1
        self._restarting[self.actors[w].ready.remote()] = w
        self._ready_by.setdefault(w, time.time() + READY_TIMEOUT_S)

    def _restarted(self, w: int, ref):
        """Actor ``w`` answered ``ready()`` (or failed to); SearchError after too many failures."""
        import ray
        try:
            info = ray.get(ref)
        except ray.exceptions.RayError as e:
            failures = self._start_failures.get(w, 0) + 1
            self._start_failures[w] = failures
            if failures > START_RETRIES:
                raise SearchError("Ray trainer actor %d (%s) failed to start again, %d time(s) "
                                  "in a row: %s" % (w, self.devices[w], failures,
                                                    str(e).splitlines()[0][:200])) from None
            self._restarting[self.actors[w].ready.remote()] = w
            return
        if info["pid"] == self._stale.get(w):  # the old process, not yet gone
            time.sleep(0.05)
            self._restarting[self.actors[w].ready.remote()] = w
            return
        self._stale.pop(w, None)
        self._pids[w] = info["pid"]
        if info["setup_error"]:
            raise WorkerSetupError("Ray trainer actor %d (%s) could not start again: %s"
                                   % (w, self.devices[w], info["setup_error"]))
        self._ready_by.pop(w, None)
        self._start_failures.pop(w, None)

    def _lost(self, w: int, task: Dict, reason: str):
        self._watch_restart(w)
        task["attempts"] += 1
        if task["attempts"] <= self.max_retries:
            self.log("[ray] %s while evaluating #%d; retrying it (%d/%d)"
                     % (reason, task["index"], task["attempts"], self.max_retries))
            self._retry.append(task)
            return None
        self.log("[ray] %s while evaluating #%d; no retries left" % (reason, task["index"]))
        return w, task["index"], {"status": "failed", "reason": "%s (after %d attempts)"
                                  % (reason, task["attempts"]),
                                  "seconds": time.time() - task["start"]}

    def _check_timeouts(self):
        now = time.time()
        for w, deadline in self._ready_by.items():
            if now > deadline:
                raise SearchError("Ray trainer actor %d (%s) was not ready again within %.0f s"
                                  % (w, self.devices[w], READY_TIMEOUT_S))
        if self.trial_timeout <= 0:
            return
        for w, task in list(self._busy.items()):
            if now - task["start"] > self.trial_timeout:
                self.log("[ray] #%d ran over --trial_timeout=%gs on actor %d; killing the actor"
                         % (task["index"], self.trial_timeout, w))
                task["start"] = now  # the death is reported by ray.wait
                self.kill_actor(w)
