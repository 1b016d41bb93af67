"""The search loop with a fast fake trainer in real worker processes."""
import json
import os
import signal
import subprocess
import sys
import time

import pytest

from autodl_design import records
from autodl_design.search import driver as search, searchers
from autodl_design.arch import Architecture
from autodl_design.config import (AgentConfig, Config, ConstraintConfig, DataConfig,
                                  DeviceConfig, SearchConfig, TrainerConfig)
from autodl_design.search.local_pool import LocalPool
from tests import fake_trainer
from tests.fake_trainer import FakeEvaluator

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def make_config(log_dir, searcher="random", num_models=12, batch_size=4, num_nodes=3,
                ops=("conv_1x1", "conv_3x3", "maxpool_3x3"), devices=("cpu", "cpu"),
                resume=False, seed=0, lookahead=1, **bounds):
    return Config(
        data=DataConfig(), trainer=TrainerConfig(),
        agent=AgentConfig(num_nodes=num_nodes, ops=tuple(ops), batch_size=batch_size,
                          hidden_size=16, num_layers=1),
        constraints=ConstraintConfig(**bounds),
        devices=DeviceConfig(trainer_devices=tuple(devices)),
        search=SearchConfig(num_models=num_models, log_dir=str(log_dir), resume=resume,
                            seed=seed, preset="cpu", searcher=searcher, lookahead=lookahead,
                            population=4, sample_size=2))


def run(config, faults=None, delay=0.0, searcher=None):
    lines = []
    pool = LocalPool(config.devices.trainer_devices, 1,
                     FakeEvaluator(config.to_dict(), faults=faults or {}, delay=delay),
                     log=lines.append)
    space = searchers.make_space(config)
    if searcher is None:
        searcher = searchers.make_searcher(config, space)
    code = search.execute(config, space, searcher, pool, lines.append)
    trials = records.read_trials(os.path.join(config.search.log_dir, "trials.jsonl"))
    return code, trials, "\n".join(lines)


def test_search_writes_every_record_and_the_best(tmp_path):
    config = make_config(tmp_path / "log", num_models=10, batch_size=4)
    code, trials, out = run(config)
    assert code == 0
    assert [t["index"] for t in sorted(trials, key=lambda t: t["index"])] == list(range(10))
    assert [t["step"] for t in sorted(trials, key=lambda t: t["index"])] == [0] * 4 + [1] * 4 + [2] * 2
    assert "step = 0, average accuracy = " in out and "Search summary" in out
    ok = [t for t in trials if t["status"] == "ok"]
    assert ok and all({t["device"] for t in ok} <= {"cpu"} for _ in [0])
    assert {t["worker"] for t in ok} == {0, 1}  # both workers did work
    for t in ok:
        arch = Architecture.from_dict(t["arch"])
        assert t["metrics"]["val_accuracy"] == pytest.approx(fake_trainer.accuracy(arch))
        assert t["reward"] == pytest.approx(t["metrics"]["val_accuracy"])
        assert t["arch_hash"] == arch.hash()
    best = json.loads((tmp_path / "log" / "best.json").read_text())
    assert best["reward"] == max(t["reward"] for t in trials if t["reward"] is not None)
    saved = json.loads((tmp_path / "log" / "config.json").read_text())
    assert Config.from_dict(saved) == config
    assert os.path.isdir(tmp_path / "log" / "checkpoint")


def test_hard_bound_candidates_are_never_trained(tmp_path):
    # 6 nodes, params = 1000 per conv op: at most 3 conv ops are allowed.
    config = make_config(tmp_path / "log", num_models=12, max_params=3000,
                         infeasible_reward=-1.0)
    code, trials, out = run(config)
    assert code == 0
    for t in trials:
        over = t["metrics"]["params"] > 3000
        if t["status"] == "infeasible":
            assert over and t["reward"] == -1.0 and not t["feasible"]
            assert "seed" not in t["metrics"]  # the fake trainer's train() never ran
            assert "params" in t["reason"]
        elif t["status"] == "ok":
            assert not over and t["feasible"]
    assert any(t["status"] == "infeasible" for t in trials)
    best = json.loads((tmp_path / "log" / "best.json").read_text())
    assert best["metrics"]["params"] <= 3000


def test_soft_bound_shapes_reward_and_best_stays_feasible(tmp_path):
    config = make_config(tmp_path / "log", num_models=12, max_params=3000, mode="soft")
    code, trials, _ = run(config)
    assert code == 0
    for t in trials:
        if t["status"] != "ok":
            continue
        p, acc = t["metrics"]["params"], t["metrics"]["val_accuracy"]
        expected = acc * (p / 3000) ** -0.07 if p > 3000 else acc
        assert t["reward"] == pytest.approx(expected)
        assert t["feasible"] == (p <= 3000)
    best = json.loads((tmp_path / "log" / "best.json").read_text())
    assert best["feasible"] and best["metrics"]["params"] <= 3000


def test_duplicates_are_trained_once(tmp_path):
    # One op and 2 nodes: each cell is 1 bit, so only 4 distinct architectures.
    config = make_config(tmp_path / "log", num_models=16, batch_size=8, num_nodes=2,
                         ops=("conv_3x3",))
    code, trials, _ = run(config)
    assert code == 0 and len(trials) == 16
    trained = [t for t in trials if t["status"] == "ok"]
    assert len({t["arch_hash"] for t in trained}) == len(trained) <= 4
    dups = [t for t in trials if t["status"] == "duplicate"]
    assert len(dups) == 16 - len(trained)
    by_hash = {t["arch_hash"]: t for t in trained}
    for d in dups:
        src = by_hash[d["arch_hash"]]
        assert d["reward"] == src["reward"] and d["metrics"] == src["metrics"]
        assert "#%d" % src["index"] in d["reason"]


def test_faults_are_recorded_and_the_search_continues(tmp_path):
    config = make_config(tmp_path / "log", num_models=8, batch_size=4)
    code, trials, out = run(config, faults={1: "raise", 2: "nan", 5: "die"})
    assert code == 0 and len(trials) == 8
    by_index = {t["index"]: t for t in trials}
    assert by_index[1]["status"] == "failed" and "injected trainer crash" in by_index[1]["reason"]
    assert by_index[2]["status"] == "failed" and "nan" in by_index[2]["reason"]
    assert by_index[5]["status"] == "failed" and "SIGKILL" in by_index[5]["reason"]
    assert by_index[1]["reward"] is None and by_index[5]["reward"] is None
    assert "restarting it" in out and "1 worker restarts" in out
    assert sum(t["status"] == "ok" for t in trials) >= 4


def test_unsatisfiable_bound_reports_closest(tmp_path):
    config = make_config(tmp_path / "log", num_models=6, max_params=1)
    code, trials, out = run(config)
    assert code == 0
    assert all(t["status"] in ("infeasible", "duplicate") for t in trials)
    assert "There are no possible architecture satisfying constraints!" in out
    assert "closest candidate: #" in out
    assert not (tmp_path / "log" / "best.json").exists()


def test_new_search_refuses_a_used_log_dir_and_resume_needs_one(tmp_path):
    config = make_config(tmp_path / "log", num_models=4)
    assert run(config)[0] == 0
    code, _, _ = run(config)
    assert code == 2
    fresh = make_config(tmp_path / "other", num_models=4, resume=True)
    assert run(fresh)[0] == 2


def test_resume_with_changed_settings_is_refused(tmp_path):
    assert run(make_config(tmp_path / "log", num_models=4))[0] == 0
    changed = make_config(tmp_path / "log", num_models=8, resume=True, num_nodes=4)
    assert run(changed)[0] == 2
    more = make_config(tmp_path / "log", num_models=8, resume=True)
    code, trials, _ = run(more)
    assert code == 0 and sorted(t["index"] for t in trials) == list(range(8))


@pytest.mark.parametrize("searcher", ["random", "rl", "evolution"])
def test_sigkill_then_resume_gives_the_uninterrupted_records(tmp_path, searcher):
    base = dict(searcher=searcher, num_models=12, batch_size=4, devices=("cpu",))
    ref_cfg = make_config(tmp_path / "ref", **base)
    code, ref, _ = run(ref_cfg, delay=0.02)
    assert code == 0

    cfg = make_config(tmp_path / "killed", **base)
    cmd = [sys.executable, "-m", "tests.fake_search_main", json.dumps(cfg.to_dict()),
           json.dumps({"delay": 0.4})]
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, start_new_session=True)
    trials_path = tmp_path / "killed" / "trials.jsonl"
    deadline = time.time() + 120
    while time.time() < deadline:  # kill mid-batch: after 6 of 12 records
        if trials_path.exists() and len(records.read_trials(str(trials_path))) >= 6:
            break
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    partial = records.read_trials(str(trials_path))
    assert 6 <= len(partial) < 12

    resumed = make_config(tmp_path / "killed", resume=True, **base)
    code, trials, out = run(resumed, delay=0.0)
    assert code == 0 and "Resuming" in out
    assert sorted(t["index"] for t in trials) == list(range(12))
    key = lambda t: t["index"]
    assert [t["arch_hash"] for t in sorted(trials, key=key)] == \
        [t["arch_hash"] for t in sorted(ref, key=key)]
    assert [t["reward"] for t in sorted(trials, key=key)] == \
        [t["reward"] for t in sorted(ref, key=key)]


@pytest.mark.parametrize("searcher", ["rl", "evolution"])
def test_same_seed_same_search_whatever_the_worker_count(tmp_path, searcher):
    one = make_config(tmp_path / "one", searcher=searcher, devices=("cpu",))
    two = make_config(tmp_path / "two", searcher=searcher, devices=("cpu", "cpu"))
    _, a, _ = run(one, delay=0.01)
    _, b, _ = run(two, delay=0.01)
    key = lambda t: t["index"]
    assert [(t["arch_hash"], t["reward"]) for t in sorted(a, key=key)] == \
        [(t["arch_hash"], t["reward"]) for t in sorted(b, key=key)]


def test_strict_alternation_without_lookahead(tmp_path):
    config = make_config(tmp_path / "log", lookahead=0, num_models=8, batch_size=4)
    code, trials, out = run(config)
    assert code == 0 and sorted(t["index"] for t in trials) == list(range(8))
    # With lookahead 0, no candidate of step 1 finishes before all of step 0 did.
    order = [t["step"] for t in trials]
    assert order == sorted(order)


def test_median_early_termination_stops_weak_candidates(tmp_path):
    import dataclasses
    config = make_config(tmp_path / "log", num_models=24, batch_size=4)
    config = dataclasses.replace(
        config, trainer=dataclasses.replace(config.trainer, early_stop=4),
        search=dataclasses.replace(config.search, early_termination="median",
                                   cull_start_epoch=2))
    code, trials, out = run(config)
    assert code == 0 and len(trials) == 24
    stopped = [t for t in trials if t["status"] == "ok" and t["metrics"]["stopped_early"]]
    full = [t for t in trials if t["status"] == "ok" and not t["metrics"]["stopped_early"]]
    assert stopped and full
    for t in stopped:
        assert 2 <= t["metrics"]["epochs"] < 4 and "stopped early" in t["reason"]
        assert t["step"] >= 2  # steps 0 and 1 have no earlier learned batch to compare with
        assert t["reward"] == t["metrics"]["val_accuracy"] == t["metrics"]["val_history"][-1]
    # A stopped candidate was below the median of the candidates of batches
    # learned before its own batch was proposed (steps <= step - 2).
    from autodl_design.search.early_termination import median_thresholds
    for t in stopped:
        earlier = [r["metrics"]["val_history"] for r in trials
                   if r["step"] <= t["step"] - 2 and r["status"] == "ok"]
        e = t["metrics"]["epochs"]
        assert t["metrics"]["val_history"][-1] < median_thresholds(earlier, 4)[e - 1]


def test_median_thresholds_against_hand_values():
    from autodl_design.evaluation import median_stopper
    from autodl_design.search.early_termination import median_thresholds
    h = [[0.1, 0.2, 0.3], [0.3, 0.4], [0.2, 0.6, 0.9], [0.5]]
    assert median_thresholds(h, 3) == [0.25, 0.4, None]
    stop = median_stopper([0.25, 0.4, None], start_epoch=2)
    assert stop(1, 0.0)            # before the start epoch: keep going
    assert not stop(2, 0.39) and stop(2, 0.4)
    assert stop(3, 0.0)            # no threshold at epoch 3


def test_tensorboard_scalars_and_progress_lines(tmp_path):
    import dataclasses
    config = make_config(tmp_path / "log", num_models=6, batch_size=3)
    config = dataclasses.replace(config, search=dataclasses.replace(
        config.search, tensorboard_dir=str(tmp_path / "tb")))
    code, trials, out = run(config)
    assert code == 0
    progress = [l for l in out.splitlines() if l.startswith("[")]
    assert len(progress) == 6 and all("| best #" in l and "s left" in l for l in progress)
    import struct
    from tensorboardX.proto import event_pb2
    rewards = {}
    for path in (tmp_path / "tb").iterdir():  # TFRecord: length, crc, event, crc
        data = path.read_bytes()
        pos = 0
        while pos < len(data):
            (n,) = struct.unpack("<Q", data[pos:pos + 8])
            event = event_pb2.Event.FromString(data[pos + 12:pos + 12 + n])
            pos += 12 + n + 4
            for v in event.summary.value:
                if v.tag == "search/reward":
                    rewards[event.step] = v.simple_value
    by_index = {t["index"]: t["reward"] for t in trials}
    assert sorted(rewards) == list(range(6))
    for i, value in rewards.items():
        assert abs(value - by_index[i]) < 1e-6


def test_resume_after_a_kill_between_the_checkpoint_renames(tmp_path):
    # The agent swaps checkpoint folders with two renames; killed between them,
    # only checkpoint.old is left, and the resumed controller must use it.
    assert run(make_config(tmp_path / "log", searcher="rl", num_models=8))[0] == 0
    os.replace(tmp_path / "log" / "checkpoint", tmp_path / "log" / "checkpoint.old")
    code, trials, out = run(make_config(tmp_path / "log", searcher="rl", num_models=12,
                                        resume=True))
    assert code == 0 and "controller step 2" in out
    assert sorted(t["index"] for t in trials) == list(range(12))
