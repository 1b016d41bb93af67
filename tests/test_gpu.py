"""GPU machines without a GPU: device defaults, real pinning of worker processes, device
failures and Ray GPU actors, with Paddle's device queries faked where a GPU would answer."""
import copy
import dataclasses
import os
import subprocess
import sys
import time
import types

import numpy as np
import pytest

from autodl_design import devices, records
from autodl_design.arch import Architecture
from autodl_design.backend import paddle
from autodl_design.search import driver, searchers
from autodl_design.search.local_pool import LocalPool
from tests.fake_trainer import FakeEvaluator
from tests.test_search import make_config

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


# ---------------------------------------------------------------- defaults

@pytest.mark.parametrize("num_gpus, agent, trainers", [
    (0, "cpu", ("cpu", "cpu", "cpu", "cpu")),
    (1, "gpu:0", ("gpu:0",)),
    (2, "gpu:0", ("gpu:1",)),
    (8, "gpu:0", ("gpu:1", "gpu:2", "gpu:3", "gpu:4", "gpu:5", "gpu:6", "gpu:7"))])
def test_default_devices_use_every_gpu(num_gpus, agent, trainers):
    assert devices.default_devices(num_gpus, cores=4) == (agent, trainers)


def test_threads_are_given_by_device_kind():
    # a GPU worker beside a CPU worker must not get every core
    assert devices.worker_threads(("gpu:0", "cpu"), cores=8) == (1, 7)
    assert devices.worker_threads(("gpu:0", "gpu:1"), cores=8) == (1, 1)
    assert devices.worker_threads(("cpu", "cpu"), cores=8) == (4, 4)
    assert devices.worker_threads(("gpu:0", "cpu"), cores=8, requested=3) == (3, 3)
    assert devices.worker_threads(("gpu:0", "cpu", "cpu"), cores=2) == (1, 1, 1)


def test_visible_gpu_entries_map_to_the_children():
    env = {"CUDA_VISIBLE_DEVICES": "GPU-aa11,GPU-bb22"}
    visible = devices.visible_gpus(env)
    assert visible == ["GPU-aa11", "GPU-bb22"]
    assert devices.worker_env("gpu:1", visible)["CUDA_VISIBLE_DEVICES"] == "GPU-bb22"
    assert devices.worker_env("gpu:1", None)["CUDA_VISIBLE_DEVICES"] == "1"
    assert devices.visible_gpus({}) is None
    assert devices.visible_gpus({"CUDA_VISIBLE_DEVICES": "2,,3"}) == ["2"]  # CUDA stops there
    with pytest.raises(ValueError, match="gpu:2 requested but CUDA_VISIBLE_DEVICES=2,3 makes "
                                         "2 GPU"):
        devices.worker_env("gpu:2", ["2", "3"])
    env = devices.worker_env("gpu:0", ["7"], deterministic=True)
    assert env["FLAGS_cudnn_deterministic"] == "1"
    assert env["FLAGS_gpu_allocator_retry_time"] == devices.ALLOCATOR_RETRY_MS
    assert "FLAGS_cudnn_deterministic" not in devices.worker_env("gpu:0", ["7"])
    assert devices.worker_env("cpu", ["7"]) == {devices.LABEL_ENV: "cpu"}


def test_entry_points_and_pools_do_not_import_paddle():
    code = ("import sys; import main, autodl_design.search.local_pool, "
            "autodl_design.search.ray_pool, autodl_design.search.pools; "
            "print(sorted(m for m in sys.modules if m == 'paddle' or m.startswith('paddle.')))")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True,
                         timeout=300, check=True)
    assert out.stdout.strip() == "[]", out.stdout


# ---------------------------------------------------------------- pinning

def a_candidate(config):
    space = searchers.make_space(config)
    return space.sample(np.random.default_rng(0)).to_dict()


def test_local_workers_see_their_own_gpu_only(tmp_path, monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "3,5")
    monkeypatch.delenv(devices.LABEL_ENV, raising=False)
    config = make_config(tmp_path)
    pool = LocalPool(("gpu:1", "gpu:0"), 1, FakeEvaluator(config.to_dict(), report_device=True),
                     log=lambda line: None)
    assert pool.devices == ["gpu:1 (CUDA device 5)", "gpu:0 (CUDA device 3)"]
    pool.start()
    try:
        assert os.environ["CUDA_VISIBLE_DEVICES"] == "3,5"  # the parent's is restored
        assert devices.LABEL_ENV not in os.environ
        candidate = a_candidate(config)
        for w in (0, 1):
            pool.submit(w, w, candidate, 0, {})
        got = {}
        deadline = time.time() + 120
        while len(got) < 2 and time.time() < deadline:
            result = pool.next_result(timeout=1.0)
            if result is not None:
                got[result[0]] = result[2]
    finally:
        pool.terminate()
    assert got[0]["visible_devices"] == "5" and got[1]["visible_devices"] == "3"
    assert got[0]["worker_device"] == "gpu:0" and got[1]["worker_device"] == "gpu:0"
    assert got[0]["pid"] != got[1]["pid"]
    assert got[0]["allocator_retry_ms"] == devices.ALLOCATOR_RETRY_MS


def test_measuring_holds_a_lock_per_physical_gpu(tmp_path, monkeypatch):
    import fcntl
    import tempfile
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "3,9")

    def can_lock(name):
        with open(tmp_path / name, "a") as f:  # another open file: another worker's view
            try:
                fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                return False
            fcntl.flock(f, fcntl.LOCK_UN)
            return True

    with devices.measuring("gpu:1"):
        assert not can_lock("autodl-design-gpu-9.lock")
        assert can_lock("autodl-design-gpu-3.lock")  # another GPU measures meanwhile
    assert can_lock("autodl-design-gpu-9.lock")
    with devices.measuring("cpu"):
        pass
    assert sorted(os.listdir(tmp_path)) == ["autodl-design-gpu-3.lock",
                                            "autodl-design-gpu-9.lock"]


def test_a_gpu_beyond_the_visible_list_is_one_line(tmp_path, monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "3")
    with pytest.raises(ValueError, match="^device gpu:1 requested but CUDA_VISIBLE_DEVICES=3"):
        LocalPool(("gpu:1",), 1, FakeEvaluator(make_config(tmp_path).to_dict()))


# ---------------------------------------------------------------- device checks

@pytest.fixture
def two_gpus(monkeypatch):
    """Paddle's device queries answer as on a machine with two GPUs."""
    monkeypatch.setattr(paddle.device, "is_compiled_with_cuda", lambda: True)
    monkeypatch.setattr(paddle.device.cuda, "device_count", lambda: 2)


def test_an_absent_gpu_is_refused_with_one_line(tmp_path, two_gpus, capsys):
    assert devices.count_gpus() == 2
    config = make_config(tmp_path / "log", devices=("gpu:2",))
    assert driver.run_from_config(config, log=lambda line: None) == 2
    err = capsys.readouterr().err
    assert err == ("error: device gpu:2 requested but Paddle sees 2 GPU(s): use "
                   "--trainer_devices/--agent_device cpu or an index below 2\n")
    assert not (tmp_path / "log").exists()  # refused before anything was written
    with pytest.raises(RuntimeError, match="gpu:2 requested but Paddle sees 2"):
        devices.use_device("gpu:2")
    driver.check_local_devices(dataclasses.replace(config, devices=dataclasses.replace(
        config.devices, trainer_devices=("gpu:1",))), log=lambda line: None)  # accepted


def test_amp_on_cpu_trainers_is_a_note(tmp_path):
    config = make_config(tmp_path, devices=("cpu",))
    config = dataclasses.replace(config, trainer=dataclasses.replace(config.trainer, amp=True))
    lines = []
    driver.check_local_devices(config, lines.append, num_gpus=0)
    assert lines == ["note: --amp is ignored: it applies to GPU trainers only (trainers: cpu)"]


# ---------------------------------------------------------------- metrics on a GPU

class Recorder:
    """Stands in for Paddle's GPU synchronize/memory functions and the clock."""

    def __init__(self):
        self.events = []
        self.now = 0.0

    def sync(self, device=None):
        self.events.append(("sync", device))

    def clock(self):
        self.events.append(("clock", None))
        self.now += 0.001
        return self.now

    def memory(self, name, value=0):
        def fn(device=None):
            self.events.append((name, device))
            return value
        return fn


def test_gpu_measurement_syncs_names_the_device_and_resets_the_peak(monkeypatch):
    from tests.test_train import TINY, BASELINE, random_data
    from trainer import metrics, network
    rec = Recorder()
    monkeypatch.setattr(paddle.device, "get_device", lambda: "gpu:0")
    monkeypatch.setattr(paddle.device, "synchronize", rec.sync)
    monkeypatch.setattr(paddle.device.cuda, "memory_allocated", rec.memory("current", 1 << 20))
    monkeypatch.setattr(paddle.device.cuda, "max_memory_allocated", rec.memory("peak", 3 << 20))
    monkeypatch.setattr(paddle.device.cuda, "reset_max_memory_allocated", rec.memory("reset"))
    monkeypatch.setattr(metrics, "time", types.SimpleNamespace(perf_counter=rec.clock))
    build = network.build_network

    def recorded_build(*args):
        model = build(*args)
        model.register_forward_pre_hook(lambda layer, inputs: rec.events.append(
            ("forward", None)))
        return model

    monkeypatch.setattr(network, "build_network", recorded_build)
    data = random_data()
    hw = metrics.measure_hardware(Architecture.load(BASELINE), TINY, data.image_shape,
                                  data.num_classes)
    kinds = [k for k, _ in rec.events]
    assert hw["memory_source"] == "paddle_gpu_allocator" and hw["memory_mb"] == 2.0
    # every GPU query names the device
    assert all(d == "gpu:0" for k, d in rec.events if k not in ("clock", "forward"))
    # a sync right before every clock read
    clocks = [i for i, k in enumerate(kinds) if k == "clock"]
    # a start per run (3 warm-up runs included) and an end per timed run
    assert len(clocks) == (3 + TINY.latency_repeats) + TINY.latency_repeats
    assert all(kinds[i - 1] == "sync" for i in clocks)
    # the peak is reset after the first (set-up) pass and before the measured one
    forwards = [i for i, k in enumerate(kinds) if k == "forward"]
    reset, peak = kinds.index("reset"), kinds.index("peak")
    assert forwards[0] < reset < forwards[1] < peak
    assert kinds[forwards[1] + 1] == "sync" and kinds[forwards[1] + 2] == "peak"


# ---------------------------------------------------------------- device failures

class FixedSearcher:
    """Proposes a fixed list of candidates in order; remembers the rewards it learned."""

    def __init__(self, candidates):
        self.candidates = list(candidates)
        self.step = 0
        self.learned = []

    def propose(self, n):
        out, self.candidates = self.candidates[:n], self.candidates[n:]
        return out

    def observe(self, candidates, rewards):
        self.step += 1
        self.learned += list(zip([c.hash() for c in candidates], rewards))

    def save(self, folder):
        os.makedirs(folder, exist_ok=True)

    def restore(self, folder):
        pass


def search(config, evaluator, searcher=None, **pool_args):
    lines = []
    space = searchers.make_space(config)
    if searcher is None:
        searcher = searchers.make_searcher(config, space)
    pool = LocalPool(config.devices.trainer_devices, 1, evaluator, log=lines.append, **pool_args)
    code = driver.execute(config, space, searcher, pool, lines.append)
    path = os.path.join(config.search.log_dir, "trials.jsonl")
    trials = records.read_trials(path) if os.path.exists(path) else []
    return code, sorted(trials, key=lambda t: t["index"]), "\n".join(lines), pool


def test_out_of_memory_is_infeasible_learned_and_reused(tmp_path):
    config = make_config(tmp_path, devices=("cpu",), num_models=6, batch_size=2, lookahead=0,
                         infeasible_reward=-0.25)
    space = searchers.make_space(config)
    rng = np.random.default_rng(1)
    a, b, c = (space.sample(rng) for _ in range(3))
    searcher = FixedSearcher([a, b, c, a, b, c])
    code, trials, _, pool = search(config, FakeEvaluator(config.to_dict(), faults={0: "oom"},
                                                         report_device=True), searcher)
    assert code == 0 and len(trials) == 6
    oom = trials[0]
    assert oom["status"] == "infeasible" and not oom["feasible"]
    assert oom["reason"].startswith("out of memory on cpu: MemoryError: ")
    assert oom["reward"] == -0.25
    assert (a.hash(), -0.25) in searcher.learned  # the controller learns to avoid it
    assert trials[3]["status"] == "duplicate" and trials[3]["reward"] == -0.25
    assert "#0 (infeasible)" in trials[3]["reason"]
    assert pool.restarts == 0  # the same worker goes on
    assert len({t["metrics"]["pid"] for t in trials if "pid" in t["metrics"]}) == 1


def test_a_cuda_error_replaces_the_worker(tmp_path):
    config = make_config(tmp_path, devices=("cpu",), num_models=4, batch_size=2, lookahead=0)
    code, trials, log, pool = search(config, FakeEvaluator(config.to_dict(), faults={1: "cuda"},
                                                           report_device=True))
    assert code == 0 and len(trials) == 4
    assert trials[1]["status"] == "failed"
    assert trials[1]["reason"].startswith("device error on cpu: OSError: (External) CUDA error")
    assert pool.restarts == 1 and "starting a fresh worker 0" in log
    pids = [t["metrics"].get("pid") for t in trials if t["status"] == "ok"]
    assert pids[0] != pids[-1]  # candidates after the fault ran in a fresh process


@pytest.mark.parametrize("fault", ["crash", "hang"])
def test_a_worker_that_cannot_start_again_stops_the_search(tmp_path, capsys, fault):
    config = make_config(tmp_path / "log", devices=("cpu",), num_models=6, batch_size=2)
    evaluator = FakeEvaluator(config.to_dict(), faults={1: "cuda"},
                              setup_faults={2: fault, 3: fault, 4: fault},
                              counter_file=str(tmp_path / "starts"))
    start = time.time()
    code, trials, log, _ = search(config, evaluator, ready_timeout=3.0, start_retries=2)
    assert code == 2 and time.time() - start < 120
    err = capsys.readouterr().err
    why = "exited with code 3 while starting" if fault == "crash" else "was not ready within 3 s"
    assert err == ("error: trainer worker 0 (cpu) %s, 3 time(s) in a row; check that the "
                   "device works\n" % why)
    assert "starting it again (2/2)" in log
    with open(tmp_path / "starts") as f:
        assert len(f.read().split()) == 4  # the first start, then three failed ones


def test_resume_accepts_other_devices(tmp_path):
    config = make_config(tmp_path, devices=("cpu", "cpu"), num_models=4, searcher="rl")
    code, trials, _, _ = search(config, FakeEvaluator(config.to_dict()))
    assert code == 0 and len(trials) == 4
    moved = make_config(tmp_path, devices=("cpu",), num_models=8, searcher="rl", resume=True)
    moved = dataclasses.replace(moved, devices=dataclasses.replace(
        moved.devices, agent_device="gpu:0", threads_per_worker=2, gpus_per_trainer=0.5))
    records.check_resume_config(str(tmp_path), moved.to_dict())  # accepted
    moved = dataclasses.replace(moved, devices=dataclasses.replace(moved.devices,
                                                                   agent_device="cpu"))
    code, trials, _, _ = search(moved, FakeEvaluator(moved.to_dict()))
    assert code == 0 and len(trials) == 8
    changed = dataclasses.replace(moved, devices=dataclasses.replace(moved.devices,
                                                                     deterministic=True))
    with pytest.raises(ValueError, match="devices.deterministic was false, now true"):
        records.check_resume_config(str(tmp_path), changed.to_dict())


# ---------------------------------------------------------------- Ray on GPU nodes

class _Ref:
    def __init__(self, value):
        self.value = value


def stub_ray(nodes, gpu_ids):
    """A ``ray`` module enough for ``RayPool.start``: actors are built in this process."""
    ray = types.ModuleType("ray")
    ray.started = []  # (options, constructor arguments, actor)
    ray.current_gpus = []

    class RayError(Exception):
        pass

    ray.exceptions = types.SimpleNamespace(RayError=RayError, RayActorError=RayError,
                                           RayTaskError=RayError)
    ray.util = types.ModuleType("ray.util")
    ray.util.get_node_ip_address = lambda: "10.0.0.7"
    ray.is_initialized = lambda: True
    ray.nodes = lambda: nodes
    ray.put = lambda value: value
    ray.get_gpu_ids = lambda: list(ray.current_gpus)
    ray.get = lambda refs, timeout=None: [r.value for r in refs]

    class Handle:
        def __init__(self, actor):
            self.ready = types.SimpleNamespace(remote=lambda: _Ref(actor.ready()))

    def remote(**_):
        def wrap(cls):
            def options(**opts):
                def make(*args):
                    ray.current_gpus = gpu_ids if opts.get("num_gpus") else []
                    args = copy.deepcopy(args)  # each actor its own evaluator
                    actor = cls(*args)
                    ray.started.append((opts, args, actor))
                    return Handle(actor)
                return types.SimpleNamespace(remote=make)
            return types.SimpleNamespace(options=options)
        return wrap

    ray.remote = remote
    return ray


def test_ray_gpu_fractions_and_cpu_nodes(tmp_path, monkeypatch):
    from autodl_design.search.ray_pool import RayPool
    for key in ("OMP_NUM_THREADS", devices.LABEL_ENV, "FLAGS_gpu_allocator_retry_time",
                "FLAGS_cudnn_deterministic"):  # the actors run here: restore what they set
        monkeypatch.setenv(key, "x")
        monkeypatch.delenv(key)
    nodes = [{"Alive": True, "NodeID": "gpu-node", "Resources": {"GPU": 2.0, "CPU": 8.0}},
             {"Alive": False, "NodeID": "dead", "Resources": {"GPU": 4.0, "CPU": 64.0}},
             {"Alive": True, "NodeID": "cpu-node", "Resources": {"CPU": 4.0}}]
    ray = stub_ray(nodes, gpu_ids=[3])
    monkeypatch.setitem(sys.modules, "ray", ray)
    strategies = types.ModuleType("ray.util.scheduling_strategies")
    strategies.NodeAffinitySchedulingStrategy = lambda node_id, soft: (node_id, soft)
    monkeypatch.setitem(sys.modules, "ray.util", ray.util)
    monkeypatch.setitem(sys.modules, "ray.util.scheduling_strategies", strategies)
    config = make_config(tmp_path)
    pool = RayPool("auto", num_trainers=0, cpus_per_trainer=2, use_gpus=True, max_retries=0,
                   trial_timeout=0, evaluator=FakeEvaluator(config.to_dict()),
                   log=lambda line: None, gpus_per_trainer=0.5, deterministic=True)
    pool.start()
    opts = [o for o, _, _ in ray.started]
    gpu, cpu = ("gpu-node", True), ("cpu-node", True)  # (node, soft affinity)
    assert opts == ([{"num_gpus": 0.5, "num_cpus": 2, "scheduling_strategy": gpu}] * 4
                    + [{"num_cpus": 2, "scheduling_strategy": cpu}] * 2)
    assert [args[1] for _, args, _ in ray.started] == [2] * 6  # threads = cpus_per_trainer
    gpu_actor, cpu_actor = ray.started[0][2], ray.started[-1][2]
    assert gpu_actor.device == "gpu:0" and gpu_actor.evaluator._device == "gpu:0"
    assert cpu_actor.device == "cpu"
    assert pool.devices[0] == "10.0.0.7/gpu:0 (CUDA device 3)"
    assert pool.devices[-1] == "10.0.0.7/cpu"
    assert os.environ["FLAGS_cudnn_deterministic"] == "1"
    assert os.environ[devices.LABEL_ENV] == "gpu:0 (CUDA device 3)"


def test_ray_asks_for_no_more_than_the_cluster_holds(monkeypatch, tmp_path):
    from autodl_design.search.errors import SearchError
    from autodl_design.search.ray_pool import RayPool
    pool = RayPool("auto", num_trainers=5, cpus_per_trainer=1, use_gpus=True, max_retries=0,
                   trial_timeout=0, evaluator=FakeEvaluator(make_config(tmp_path).to_dict()),
                   gpus_per_trainer=0.5)
    with pytest.raises(SearchError, match="holds 4 trainer"):
        pool._shape([{"GPU": 2.0, "CPU": 8.0}])
    no_gpus = RayPool("auto", num_trainers=0, cpus_per_trainer=3, use_gpus=False, max_retries=0,
                      trial_timeout=0, evaluator=None)
    assert no_gpus._shape([{"GPU": 2.0, "CPU": 8.0}]) == [({"num_cpus": 3}, 3, 0)] * 2


# ---------------------------------------------------------------- the real evaluator

def a_trainer_evaluator(tmp_path, device):
    from tests.test_train import TINY, random_data
    from trainer.evaluate import TrainerEvaluator
    config = dataclasses.replace(make_config(tmp_path), trainer=TINY)
    evaluator = TrainerEvaluator(str(tmp_path), config.to_dict())
    evaluator._context = {"config": config, "data": random_data(), "device": device}
    return evaluator


def test_the_trainer_makes_out_of_memory_infeasible_and_empties_the_cache(tmp_path,
                                                                          monkeypatch):
    from tests.test_train import BASELINE
    from trainer import train
    emptied = []
    monkeypatch.setattr(paddle.device.cuda, "empty_cache", lambda: emptied.append(1))
    monkeypatch.delenv(devices.LABEL_ENV, raising=False)

    def no_memory(*args):
        raise MemoryError("ResourceExhaustedError: Out of memory error on GPU 0")

    monkeypatch.setattr(train, "build_network", no_memory)
    arch = Architecture.load(BASELINE).to_dict()
    result = a_trainer_evaluator(tmp_path, "gpu:0").evaluate(arch, 0, 0, {})
    assert result["status"] == "infeasible"
    assert result["reason"].startswith("out of memory on gpu:0: MemoryError: ")
    assert result["params"] > 0 and emptied == [1]
    result = a_trainer_evaluator(tmp_path, "cpu").evaluate(arch, 0, 0, {})
    assert result["status"] == "infeasible" and emptied == [1]  # no GPU cache on CPU


def test_the_trainer_turns_cuda_errors_into_device_faults(tmp_path, monkeypatch):
    from autodl_design.evaluation import DeviceFault
    from tests.test_train import BASELINE
    from trainer import metrics, train
    arch = Architecture.load(BASELINE).to_dict()

    def cuda_error(*args, **kwargs):
        raise OSError("(External) CUDNN_STATUS_EXECUTION_FAILED: cuDNN error(8)")

    monkeypatch.setattr(train, "build_network", cuda_error)
    with pytest.raises(DeviceFault, match="^device error on cpu: OSError: .*cuDNN error"):
        a_trainer_evaluator(tmp_path, "cpu").evaluate(arch, 0, 0, {})
    monkeypatch.undo()
    monkeypatch.setattr(metrics, "measure_hardware", cuda_error)  # while measuring
    with pytest.raises(DeviceFault, match="cuDNN error"):
        a_trainer_evaluator(tmp_path, "cpu").evaluate(arch, 0, 0, {})

    def other_os_error(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(metrics, "measure_hardware", other_os_error)
    with pytest.raises(OSError, match="disk full"):  # not the device's: a bug, raised
        a_trainer_evaluator(tmp_path, "cpu").evaluate(arch, 0, 0, {})


def test_amp_trains_through_a_grad_scaler(monkeypatch):
    # On CPU paddle.amp.auto_cast is a no-op (Paddle warns); the scaler still runs each step.
    from tests.test_train import BASELINE, TINY, random_data
    from trainer import train
    steps = []

    class RecordingScaler(paddle.amp.GradScaler):
        def step(self, optimizer):
            steps.append(1)
            return super().step(optimizer)

    monkeypatch.setattr(paddle.amp, "GradScaler", RecordingScaler)
    arch = Architecture.load(BASELINE)
    plain = train.train_and_evaluate(arch, TINY, random_data(), seed=0)
    assert "amp" not in plain and steps == []
    with pytest.warns(UserWarning, match="amp_guard can only be enabled on CUDAPlace"):
        mixed = train.train_and_evaluate(arch, TINY, random_data(), seed=0, amp=True)
    assert mixed["status"] == "ok" and mixed["amp"] is True
    assert len(steps) == 2  # 64 images, batches of 32, one epoch


def test_a_restart_that_crashes_once_is_retried(tmp_path):
    config = make_config(tmp_path / "log", devices=("cpu",), num_models=6, batch_size=2)
    evaluator = FakeEvaluator(config.to_dict(), faults={1: "cuda"}, setup_faults={2: "crash"},
                              counter_file=str(tmp_path / "starts"))
    code, trials, log, pool = search(config, evaluator)
    assert code == 0 and len(trials) == 6
    assert "exited with code 3 while starting; starting it again (1/2)" in log
    assert pool.restarts == 2  # the fresh worker after the CUDA error, then its retry
    assert [t["status"] for t in trials].count("failed") == 1
