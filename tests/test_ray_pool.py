"""Trainer actors on a local Ray instance bound to 127.0.0.1 (fake trainer: fast)."""
import os
import threading
import time

import pytest

# Bind the local Ray instance to 127.0.0.1 (see autodl_design/search/ray_pool.py).
os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"
ray = pytest.importorskip("ray", reason="Ray is the optional extra: WITH_RAY=1 bash setup.sh")

from autodl_design import records  # noqa: E402
from autodl_design.search import searchers  # noqa: E402
from autodl_design.search.loop import Search  # noqa: E402
from autodl_design.search.ray_pool import RayPool  # noqa: E402
from tests.fake_trainer import FakeEvaluator  # noqa: E402
from tests.test_search import make_config  # noqa: E402


@pytest.fixture(scope="module")
def local_ray():
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    yield
    ray.shutdown()


def make_pool(config, faults=None, delay=0.0, max_retries=1, trial_timeout=0.0, log=None):
    return RayPool("auto", num_trainers=2, cpus_per_trainer=1, use_gpus=False,
                   max_retries=max_retries, trial_timeout=trial_timeout,
                   evaluator=FakeEvaluator(config.to_dict(), faults=faults or {}, delay=delay),
                   log=log if log is not None else (lambda s: None))


def run(config, pool):
    lines = []
    space = searchers.make_space(config)
    s = Search(config, space, searchers.make_searcher(config, space), pool, log=lines.append)
    pool.start()
    result = s.run()
    return result, records.read_trials(os.path.join(config.search.log_dir, "trials.jsonl")), lines


def kill_a_busy_actor(pool, trials_path, after, timeout=120):
    """Starts a thread that kills an actor busy with a candidate once ``after`` records exist.

    Returns:
      (thread, killed): ``killed`` receives the index of the candidate that
      was running on the killed actor.
    """
    killed = []

    def killer():
        deadline = time.time() + timeout
        while time.time() < deadline:
            if (trials_path.exists() and len(records.read_trials(str(trials_path))) >= after
                    and pool._busy):
                w = next(iter(pool._busy))
                killed.append(pool._busy[w]["index"])
                pool.kill_actor(w)
                return
            time.sleep(0.02)

    t = threading.Thread(target=killer, daemon=True)
    t.start()
    return t, killed


def test_ray_search_matches_local_records(local_ray, tmp_path):
    config = make_config(tmp_path / "ray", num_models=10, batch_size=4)
    result, trials, _ = run(config, make_pool(config))
    assert sorted(t["index"] for t in trials) == list(range(10))
    assert {t["worker"] for t in trials if t["status"] == "ok"} == {0, 1}
    assert all(t["device"].startswith("127.0.0.1/") for t in trials if t["status"] == "ok")
    code, local, _ = __import__("tests.test_search", fromlist=["run"]).run(
        make_config(tmp_path / "local", num_models=10, batch_size=4))
    key = lambda t: t["index"]
    assert [(t["arch_hash"], t["reward"]) for t in sorted(trials, key=key)] == \
        [(t["arch_hash"], t["reward"]) for t in sorted(local, key=key)]


def test_killed_actor_mid_run_loses_and_duplicates_nothing(local_ray, tmp_path):
    config = make_config(tmp_path / "log", num_models=12, batch_size=4)
    lines = []
    pool = make_pool(config, delay=0.5, max_retries=2, log=lines.append)

    t, killed = kill_a_busy_actor(pool, tmp_path / "log" / "trials.jsonl", after=3)
    result, trials, out = run(config, pool)
    t.join(timeout=5)
    pool.terminate()
    indices = [r["index"] for r in trials]
    assert sorted(indices) == list(range(12)) and len(set(indices)) == 12
    assert all(r["status"] == "ok" or r["status"] == "duplicate" for r in trials)
    assert killed and any("retrying it" in l for l in lines), lines


def test_dead_candidate_is_retried_then_recorded_failed(local_ray, tmp_path):
    config = make_config(tmp_path / "log", num_models=4, batch_size=4)
    lines = []
    pool = make_pool(config, faults={2: "die"}, max_retries=1, log=lines.append)
    result, trials, _ = run(config, pool)
    pool.terminate()
    by_index = {r["index"]: r for r in trials}
    assert len(by_index) == 4
    assert by_index[2]["status"] == "failed" and "after 2 attempts" in by_index[2]["reason"]
    assert sum("retrying it" in l for l in lines) == 1


def test_hung_candidate_times_out(local_ray, tmp_path):
    config = make_config(tmp_path / "log", num_models=3, batch_size=3)
    pool = make_pool(config, faults={1: "hang"}, max_retries=0, trial_timeout=3.0)
    result, trials, _ = run(config, pool)
    pool.terminate()
    by_index = {r["index"]: r for r in trials}
    assert by_index[1]["status"] == "failed" and "died" in by_index[1]["reason"]
    assert by_index[0]["status"] == "ok"


def test_a_cuda_error_restarts_the_actor(local_ray, tmp_path):
    config = make_config(tmp_path / "log", num_models=6, batch_size=2)
    lines = []
    pool = make_pool(config, faults={1: "cuda"}, log=lines.append)
    result, trials, _ = run(config, pool)
    pool.terminate()
    by_index = {r["index"]: r for r in trials}
    assert sorted(by_index) == list(range(6))
    assert by_index[1]["status"] == "failed"
    assert by_index[1]["reason"].startswith("device error on cpu: OSError: (External) CUDA error")
    assert "device_fault" not in by_index[1]["metrics"]
    assert pool.restarts == 1 and sum("restarting the actor" in l for l in lines) == 1
    assert all(by_index[i]["status"] in ("ok", "duplicate") for i in (0, 2, 3, 4, 5))


def test_an_evaluator_bug_on_an_actor_stops_the_search(local_ray, tmp_path):
    from autodl_design.search.errors import WorkerBug
    config = make_config(tmp_path / "log", num_models=4, batch_size=4)
    pool = make_pool(config, faults={1: "bug"})
    try:
        with pytest.raises(WorkerBug) as e:
            run(config, pool)
    finally:
        pool.terminate()
    assert "injected evaluator bug" in str(e.value) and "#1" in str(e.value)
    trials = records.read_trials(str(tmp_path / "log" / "trials.jsonl"))
    assert 1 not in {t["index"] for t in trials}


from tests.conftest import ROOT, needs_fmnist  # noqa: E402


@pytest.fixture
def tiny_data(tiny_fmnist):
    return tiny_fmnist


@needs_fmnist
def test_real_trainer_actors_survive_a_killed_actor(local_ray, tmp_path, tiny_data):
    import dataclasses
    from autodl_design.config import TrainerConfig
    from trainer.evaluate import TrainerEvaluator
    config = make_config(tmp_path / "log", num_models=8, batch_size=4)
    config = dataclasses.replace(config, trainer=TrainerConfig(
        width=4, num_stages=1, num_cells=1, early_stop=3, latency_repeats=3))
    lines = []
    pool = RayPool("auto", num_trainers=2, cpus_per_trainer=1, use_gpus=False, max_retries=2,
                   trial_timeout=0, evaluator=TrainerEvaluator(tiny_data, config.to_dict()),
                   log=lines.append)
    t, killed = kill_a_busy_actor(pool, tmp_path / "log" / "trials.jsonl", after=2)
    result, trials, _ = run(config, pool)
    t.join(timeout=5)
    pool.terminate()
    indices = [r["index"] for r in trials]
    assert sorted(indices) == list(range(8)) and len(set(indices)) == 8
    assert killed and all(r["status"] in ("ok", "duplicate") for r in trials), \
        [(r["index"], r["status"], r["reason"]) for r in trials]
    ok = [r for r in trials if r["status"] == "ok"]
    assert all(r["metrics"]["epochs"] == 3 and r["metrics"]["params"] > 0 for r in ok)
    assert any("retrying it" in l for l in lines)


@needs_fmnist
def test_main_py_on_a_private_local_ray_instance(tmp_path, tiny_data):
    import subprocess
    import sys
    log = str(tmp_path / "log")
    r = subprocess.run(
        [sys.executable, "main.py", "--cluster=ray", "--ray_address=local", "--num_trainers=2",
         "--data_path", tiny_data, "--log_dir", log, "--num_models=4", "--batch_size=2",
         "--num_nodes=3", "--width=4", "--num_stages=1", "--num_cells=1", "--early_stop=1",
         "--latency_repeats=3"], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "trainers ray:local" in r.stdout.splitlines()[0]
    assert "[ray] 2 trainer actors ready: 127.0.0.1/cpu, 127.0.0.1/cpu" in r.stdout
    t = records.read_trials(os.path.join(log, "trials.jsonl"))
    assert sorted(x["index"] for x in t) == list(range(4))
    assert all(x["device"] == "127.0.0.1/cpu" for x in t if x["status"] == "ok")
