"""Tests of simple_main.py (a subprocess) and its loop agent.agent.run_pseudo_reward (in-process).

simple_main is not imported here: absl.app must be imported before the
shared ``flags`` package (both define --log_dir), which pytest cannot promise.
"""
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from agent.agent import run_pseudo_reward
from autodl_design.config import AgentConfig
from autodl_design.ops import OP_NAMES

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PYTHON = os.path.join(ROOT, ".venv", "bin", "python")
if not os.path.exists(PYTHON):
    PYTHON = sys.executable


def run_simple_main(*args):
    return subprocess.run([PYTHON, "simple_main.py", *args], cwd=ROOT, capture_output=True,
                          text=True, timeout=300)


def test_simple_main_prints_progress_and_writes_json(tmp_path):
    out = tmp_path / "res" / "simple.json"
    p = run_simple_main("--num_models", "30", "--seed", "0", "--result_json", str(out))
    assert p.returncode == 0, p.stderr
    lines = p.stdout.splitlines()
    assert lines[0] == ("simple_main: tanh_constant=5, learning_rate=0.003, batch_size=10, "
                        "seed=0 (simple_main's defaults: learning_rate, tanh_constant)")
    assert lines[1] == "Simple run target is 20"
    mids = [ln for ln in lines if ln.startswith("mid=")]
    assert [ln.split(",")[0] for ln in mids] == ["mid=0", "mid=10", "mid=20"]
    assert lines[-1].startswith("steps=30, mean reward over the last 30 steps=")
    assert sorted(os.listdir(out.parent)) == ["simple.json"]   # no temp file left
    res = json.loads(out.read_text())
    assert res["steps"] == 30 and res["seed"] == 0 and res["target"] == 20
    assert len(res["curve"]) == 30
    assert res["mean_reward_last_50"] == pytest.approx(np.mean(res["curve"]))
    assert res["agent"]["ops"] == list(OP_NAMES) and res["agent"]["advantage"] == "identity"
    # The printed averages are the curve's values at steps 0, 10, 20.
    for ln, k in zip(mids, (0, 10, 20)):
        assert float(ln.split("=")[-1]) == pytest.approx(res["curve"][k], abs=1e-3)
    # Same seed in another process (here: in-process) -> the same curve.
    again = run_pseudo_reward(AgentConfig(ops=OP_NAMES, tanh_constant=5.0, learning_rate=3e-3),
                              30, 0, 1, log=None)
    assert again["curve"] == res["curve"]


def test_same_seed_same_curve_other_seed_differs():
    config = AgentConfig(ops=("conv_1x1", "conv_3x3", "maxpool_3x3"), num_nodes=5,
                         hidden_size=16)
    lines = []
    a = run_pseudo_reward(config, 25, 3, 2, log=lines.append)
    b = run_pseudo_reward(config, 25, 3, 2, log=None)
    c = run_pseudo_reward(config, 25, 4, 2, log=None)
    assert lines[0] == "Simple run target is 10" and len(lines) == 4
    assert a["curve"] == b["curve"] and a["curve"] != c["curve"]
    assert all(0 <= r <= 10 for r in a["curve"])


def test_default_is_300_steps_and_converges(tmp_path):
    out = tmp_path / "s.json"
    p = run_simple_main("--seed", "0", "--result_json", str(out))
    assert p.returncode == 0, p.stderr
    res = json.loads(out.read_text())
    assert res["steps"] == 300 and len(res["curve"]) == 300
    # The pseudo reward is learned: the last 50 steps beat the first 50 clearly,
    # and reach AutoDL Design's target (20) to within half a token.
    assert np.mean(res["curve"][-50:]) > np.mean(res["curve"][:50]) + 8
    assert res["mean_reward_last_50"] >= 19.5
    assert res["agent"]["tanh_constant"] == 5.0 and res["agent"]["learning_rate"] == 3e-3


def test_explicit_flags_override_simple_mains_defaults(tmp_path):
    out = tmp_path / "s.json"
    p = run_simple_main("--num_models", "3", "--tanh_constant", "2.5", "--result_json", str(out))
    assert p.returncode == 0, p.stderr
    assert p.stdout.splitlines()[0].startswith("simple_main: tanh_constant=2.5, "
                                               "learning_rate=0.003,")
    res = json.loads(out.read_text())
    assert res["agent"]["tanh_constant"] == 2.5 and res["agent"]["learning_rate"] == 3e-3


def test_bad_target_token_is_one_line_error_exit_2(tmp_path):
    out = tmp_path / "s.json"
    p = run_simple_main("--num_models", "2", "--target_token", "10", "--result_json", str(out))
    assert p.returncode == 2
    assert p.stderr.strip().splitlines()[-1].startswith("error: --target_token=10 is not a "
                                                        "token index: use 0..9")
    assert not out.exists()
