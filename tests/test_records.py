"""Tests of the crash-safe search records: trials.jsonl, atomic writes, resume state."""
import dataclasses
import json
import os

import numpy as np
import pytest

from autodl_design import records
from autodl_design.arch import Architecture, Cell
from autodl_design.config import (AgentConfig, Config, ConstraintConfig, DataConfig,
                                  DeviceConfig, SearchConfig, TrainerConfig)


def arch(op="conv_3x3"):
    m = np.zeros((3, 3), np.int8)
    m[0, 1] = m[1, 2] = 1
    return Architecture(Cell([op, "conv_1x1", "conv_3x3"], m),
                        Cell(["conv_1x1", "conv_1x1", "conv_3x3"], m))


def rec(index, reward=0.5, status="ok", feasible=True, a=None, **kw):
    return records.make_record(step=index // 2, index=index, arch=a or arch(),
                               metrics={"accuracy": reward, "params": 100 + index},
                               reward=reward, feasible=feasible, status=status,
                               worker=0, device="cpu", seconds=1.5, **kw)


def test_make_record_fields_and_json_safety():
    a = arch()
    r = records.make_record(step=np.int64(3), index=7, arch=a,
                            metrics={"accuracy": np.float32(0.25), "latency_ms": float("nan"),
                                     "flops": np.int64(12), "x": float("inf")},
                            reward=float("nan"), feasible=np.bool_(True), status="failed",
                            reason="oom", time=123.0)
    assert set(r) == {"step", "index", "arch", "arch_hash", "metrics", "reward", "feasible",
                      "status", "reason", "worker", "device", "seconds", "time"}
    assert r["arch"] == a.to_dict() and r["arch_hash"] == a.hash()
    assert r["metrics"] == {"accuracy": 0.25, "latency_ms": None, "flops": 12, "x": None}
    assert type(r["step"]) is int and type(r["metrics"]["flops"]) is int
    assert r["reward"] is None and r["feasible"] is True and r["time"] == 123.0
    json.dumps(r, allow_nan=False)  # strict JSON
    with pytest.raises(ValueError, match="status"):
        rec(0, status="done")
    with pytest.raises(ValueError, match="index"):
        records.make_record(step=0, index=-1, arch=a)
    with pytest.raises(ValueError, match="arch_hash"):
        records.make_record(step=0, index=0, arch=a.to_dict())


def test_trial_record_is_the_one_field_list():
    r = rec(3, reason="why", time=5.0)
    assert list(r) == [f.name for f in dataclasses.fields(records.TrialRecord)
                       if f.name not in records.OPTIONAL_FIELDS]
    assert records.TrialRecord.from_dict(r).to_dict() == r
    rung = {"bracket": 0, "rung": 1, "epochs": 3, "continues": 2}  # with a scheduler
    with_rung = records.TrialRecord.from_dict(dict(r, rung=rung)).to_dict()
    assert list(with_rung) == [f.name for f in dataclasses.fields(records.TrialRecord)]
    assert with_rung["rung"] == rung
    with pytest.raises(ValueError, match="lacks reward"):
        records.TrialRecord.from_dict({k: v for k, v in r.items() if k != "reward"})
    with pytest.raises(ValueError, match="status"):
        records.TrialRecord.from_dict(dict(r, status="done"))


def test_append_read_round_trip(tmp_path):
    path = str(tmp_path / "trials.jsonl")
    with records.TrialLog(path) as log:
        written = [log.append(rec(i, reward=0.1 * i)) for i in range(3)]
    assert records.TrialLog.read_all(path) == written
    with open(path) as f:
        lines = f.read().splitlines()
    assert len(lines) == 3 and json.loads(lines[2])["index"] == 2
    # reopen and continue
    with records.TrialLog(path) as log:
        assert log.records == written
        log.append(rec(3))
        with pytest.raises(ValueError, match="index 1"):
            log.append(rec(1))
    assert [r["index"] for r in records.read_trials(path)] == [0, 1, 2, 3]
    assert records.read_trials(str(tmp_path / "absent.jsonl")) == []


def test_torn_last_line_is_dropped_and_truncated(tmp_path):
    path = str(tmp_path / "trials.jsonl")
    with records.TrialLog(path) as log:
        log.append(rec(0))
        log.append(rec(1))
    good_size = os.path.getsize(path)
    half = json.dumps(rec(2))[:40]
    with open(path, "a") as f:
        f.write(half)  # a SIGKILL mid-write
    assert [r["index"] for r in records.read_trials(path)] == [0, 1]
    assert os.path.getsize(path) > good_size  # reading alone does not modify
    with records.TrialLog(path) as log:
        assert [r["index"] for r in log.records] == [0, 1]
        assert os.path.getsize(path) == good_size
        log.append(rec(2))
    with open(path) as f:
        lines = f.read().splitlines()
    assert [json.loads(line)["index"] for line in lines] == [0, 1, 2]


def test_zero_filled_tail_and_missing_final_newline(tmp_path):
    path = str(tmp_path / "trials.jsonl")
    line = json.dumps(rec(0))
    with open(path, "wb") as f:
        f.write((line + "\n").encode() + b"\0" * 50)
    with records.TrialLog(path) as log:
        assert len(log.records) == 1
    assert open(path).read() == line + "\n"
    # a complete last object missing only its newline is kept and repaired
    with open(path, "w") as f:
        f.write(line)
    with records.TrialLog(path) as log:
        assert len(log.records) == 1
        log.append(rec(1))
    assert len(records.read_trials(path)) == 2


def test_corruption_in_the_middle_names_the_line(tmp_path):
    path = str(tmp_path / "trials.jsonl")
    lines = [json.dumps(rec(0)), '{"index": 1, "broken', json.dumps(rec(2))]
    with open(path, "w") as f:
        f.write("\n".join(lines) + "\n")
    for fn in (records.read_trials, records.TrialLog):
        with pytest.raises(ValueError, match=r"trials\.jsonl line 2 ") as e:
            fn(path)
        assert "\n" not in str(e.value)
    # a complete but damaged last line (it has its newline) is corruption too
    with open(path, "w") as f:
        f.write(lines[0] + "\n[1, 2]\n")
    with pytest.raises(ValueError, match="line 2 is a list"):
        records.read_trials(path)


def test_atomic_write_json_replaces_and_keeps_old_on_failure(tmp_path):
    path = str(tmp_path / "best.json")
    records.atomic_write_json(path, {"a": 1, "r": float("nan"), "v": np.float64(0.5),
                                     "t": (1, 2)})
    assert json.load(open(path)) == {"a": 1, "r": None, "v": 0.5, "t": [1, 2]}
    with pytest.raises(TypeError, match="best.json"):
        records.atomic_write_json(path, {"a": 2, "bad": object()})
    assert json.load(open(path))["a"] == 1
    assert sorted(os.listdir(tmp_path)) == ["best.json"]
    records.atomic_write_text(path, "hello")
    assert open(path).read() == "hello"
    assert sorted(os.listdir(tmp_path)) == ["best.json"]


def test_atomic_write_text_failure_mid_write_leaves_no_temp(tmp_path):
    path = str(tmp_path / "x.txt")
    records.atomic_write_text(path, "old")
    with pytest.raises(UnicodeEncodeError):
        records.atomic_write_text(path, "bad \udc80 surrogate")
    assert open(path).read() == "old"
    assert os.listdir(tmp_path) == ["x.txt"]


def test_run_state_best_duplicates_and_pending():
    a, b = arch("conv_3x3"), arch("conv_5x5")
    rs = [rec(0, 0.6, a=a),
          rec(1, 0.9, feasible=False, status="infeasible", a=b),  # not feasible
          rec(3, 0.7, a=b),
          rec(2, 0.7, a=a),
          rec(4, float("nan"), status="failed", a=b),
          rec(5, 0.95, status="duplicate", a=b)]
    state = records.RunState(rs)
    assert state.num_done == 6 and state.finished == {0, 1, 2, 3, 4, 5}
    # tie 0.7 between index 3 (earlier in file) and index 2 -> smaller index wins
    assert state.best["index"] == 2
    assert state.by_hash[a.hash()]["index"] == 0
    assert state.by_hash[b.hash()]["index"] == 1
    assert state.pending(8) == [6, 7]
    with pytest.raises(ValueError, match="index 3"):
        state.add(rec(3))
    assert records.RunState([]).best is None
    only_bad = records.RunState([rec(0, 0.9, feasible=False, status="infeasible")])
    assert only_bad.best is None


def test_run_state_from_file_after_torn_line(tmp_path):
    path = str(tmp_path / "trials.jsonl")
    with records.TrialLog(path) as log:
        for i in range(3):
            log.append(rec(i, reward=[0.3, 0.8, 0.5][i]))
    with open(path, "a") as f:
        f.write('{"index": 3, "rew')
    state = records.RunState.from_file(path)
    assert state.num_done == 3 and state.best["index"] == 1


def make_config(**search):
    return Config(DataConfig(), AgentConfig(ops=("conv_1x1", "conv_3x3")), TrainerConfig(),
                  ConstraintConfig(max_params=1e6), DeviceConfig(), SearchConfig(**search))


def test_write_best_and_config(tmp_path):
    p = records.write_best(str(tmp_path), rec(4, 0.75))
    assert p.endswith("best.json") and json.load(open(p))["index"] == 4
    c = make_config()
    p = records.write_config(str(tmp_path), c)
    assert Config.from_dict(json.load(open(p))) == c


def test_check_resume_config(tmp_path):
    d = str(tmp_path)
    with pytest.raises(ValueError, match="config.json not found"):
        records.check_resume_config(d, make_config())
    records.write_config(d, make_config(num_models=10))
    # budget, resume flag and folder may change; tuples vs JSON lists are equal
    records.check_resume_config(d, make_config(num_models=50, resume=True, max_time=60,
                                               log_dir="elsewhere"))
    records.check_resume_config(d, make_config(num_models=50).to_dict())
    changed = make_config()
    changed.trainer.width = 8
    changed.search.seed = 3
    with pytest.raises(ValueError, match="search.seed was 0, now 3") as e:
        records.check_resume_config(d, changed)
    assert "\n" not in str(e.value)
    changed.search.seed = 0
    with pytest.raises(ValueError, match="trainer.width was 64, now 8"):
        records.check_resume_config(d, changed)
    records.check_resume_config(d, changed, ignore=("search", "trainer.width"))
    ops = make_config()
    ops.agent.ops = ("conv_1x1",)
    with pytest.raises(ValueError, match="agent.ops"):
        records.check_resume_config(d, ops)


def test_resume_accepts_a_setting_added_later_only_at_its_default(tmp_path):
    """A run saved before a setting existed resumes if the setting is at its default now."""
    d = str(tmp_path)
    path = records.write_config(d, make_config())
    saved = json.load(open(path))
    del saved["trainer"]["optimizer"], saved["constraints"]["min_accuracy"]
    with open(path, "w") as f:
        json.dump(saved, f)
    records.check_resume_config(d, make_config())
    adam = make_config()
    adam.trainer.optimizer = "adam"
    with pytest.raises(ValueError, match='trainer.optimizer was \\(absent\\), now "adam"'):
        records.check_resume_config(d, adam)
    saved["trainer"]["removed_setting"] = 1  # a setting that no longer exists still refuses
    with open(path, "w") as f:
        json.dump(saved, f)
    with pytest.raises(ValueError, match="trainer.removed_setting was 1, now \\(absent\\)"):
        records.check_resume_config(d, make_config())
