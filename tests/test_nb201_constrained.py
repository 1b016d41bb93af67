"""NAS-Bench-201 under a latency bound: the protocol's rewards for infeasible cells, the controller's
gathered updates, the benchmark's constrained settings, and the protocol against the search loop."""
import dataclasses
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from autodl_design import nb201, records
from autodl_design.search.searchers import RandomSearcher
from tests.conftest import ROOT

FEASIBLE = 3960  # runs in <= 8 ms on the Raspberry Pi 4 (the 8 ms optimum, val 77.85)
OVER = 6111  # the unconstrained optimum: 68 ms, val 84.38


@pytest.fixture(scope="module")
def table():
    return nb201.load_table()


class Cycler:
    """Proposes the same cells every round and keeps the rewards it observes."""
    step = 0

    def __init__(self, cells):
        self.cells = cells
        self.seen = []

    def propose(self, n):
        return list(self.cells[:n])

    def observe(self, cands, rewards):
        self.seen.append(list(rewards))
        self.step += 1


def cells_of(table, *rows):
    space = nb201.NB201Space()
    return [space.from_arch_str(table.arch_strs[r]) for r in rows]


def test_the_rows_of_this_file_are_what_they_claim(table):
    lat = table.latency_ms("raspi4")
    assert table.best_test(8.0)[0] == FEASIBLE and lat[FEASIBLE] <= 8 < lat[OVER]


@pytest.mark.parametrize("rule, infeasible_reward, expected", [
    ("constant", None, lambda v, over: None),
    ("constant", -1.0, lambda v, over: -1.0),
    ("batch_min", 0.0, lambda v, over: v - 0.01),
    ("violation", 0.0, lambda v, over: -over),
])
def test_hard_rules_reward_an_infeasible_cell_without_training_it(table, rule,
                                                                  infeasible_reward, expected):
    c = Cycler(cells_of(table, FEASIBLE, OVER))
    res = nb201.run_protocol(c, table, 2, max_latency_ms=8.0, infeasible_reward=infeasible_reward,
                             infeasible_rule=rule, max_idle_proposals=6)
    v = table.columns["val_acc_12ep"][FEASIBLE] / 100
    over = table.latency_ms("raspi4")[OVER] / 8.0 - 1
    assert res.stalled and res.evaluations == 1 and res.best_row == FEASIBLE
    assert res.spent_s == pytest.approx(table.cost_s[FEASIBLE])
    assert c.seen[0][0] == pytest.approx(v)
    want = expected(v, over)
    assert c.seen[0][1] is None if want is None else c.seen[0][1] == pytest.approx(want)


def test_soft_rule_trains_the_infeasible_cell_but_never_answers_with_it(table):
    c = Cycler(cells_of(table, OVER, FEASIBLE))
    res = nb201.run_protocol(c, table, 2, max_latency_ms=8.0, infeasible_rule="soft",
                             soft_beta=-0.07, max_idle_proposals=6)
    val, lat = table.columns["val_acc_12ep"], table.latency_ms("raspi4")
    assert res.evaluations == 2 and res.best_row == FEASIBLE  # although val[OVER] is higher
    assert val[OVER] > val[FEASIBLE]
    assert res.spent_s == pytest.approx(table.cost_s[OVER] + table.cost_s[FEASIBLE])
    assert c.seen[0][0] == pytest.approx(val[OVER] / 100 * (lat[OVER] / 8.0) ** -0.07)
    assert c.seen[0][1] == pytest.approx(val[FEASIBLE] / 100)
    assert np.isnan(res.curve_test[0]) and res.curve_test[1] == res.test_acc
    with pytest.raises(ValueError, match="infeasible_rule"):
        nb201.run_protocol(c, table, 2, infeasible_rule="lagrange")


def test_learn_batch_gathers_learned_from_rewards_across_batches(tmp_path):
    from agent.space_searcher import SpaceRLSearcher
    space = nb201.NB201Space()
    s = nb201.NB201_CONTROLLER.replace(batch_size=3, hidden_size=8, learn_batch=4)
    searcher = SpaceRLSearcher(space, s.agent_config(), 0, **s.searcher_options())
    probe = searcher.propose(3)
    tokens = np.stack([c.tokens for c in probe]).astype(np.int64)
    empty = np.zeros((3, 0), np.int64)

    def logp():
        return np.array(searcher.agent.alg.log_prob(tokens, empty)[0])

    before = logp()
    searcher.observe(probe, [0.5, None, 0.3])  # 2 gathered: no update yet
    assert searcher.step == 1 and len(searcher.pending) == 2
    assert np.array_equal(logp(), before)
    searcher.save(str(tmp_path))
    again = SpaceRLSearcher(space, s.agent_config(), 0, **s.searcher_options())
    again.restore(str(tmp_path))
    assert again.pending == searcher.pending and again.step == 1
    searcher.observe(probe, [None, 0.9, 0.1])  # 4 gathered: one update on all 4
    assert searcher.step == 2 and searcher.pending == [] and len(searcher.losses) == 1
    assert not np.allclose(logp(), before)


def test_bench_runs_constrained_rl_rows_only_and_keeps_the_others(tmp_path):
    out = tmp_path / "nb201.json"
    kept = {"mean_test": 90.4, "std_test": 0.3, "mean_regret": 0.4, "feasible_share": 1.0,
            "mean_evals": 150.0, "runs": 100}
    out.write_text(json.dumps({"searchers": {"random": kept}, "constrained": {
        "raspi4_latency_ms<=8": {"bound_ms": 8.0, "searchers": {"random": kept}}},
        "seed": 10000, "controller": {"unique": False}}))
    r = subprocess.run([sys.executable, "benchmarks/bench_nb201.py", "--runs", "0", "--searchers",
                        "rl", "--latency_bounds", "8", "--constrained_runs", "1", "--workers",
                        "1", "--seed", "3", "--update", "--bench_out", str(out)],
                       cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    d = json.loads(out.read_text())
    assert d["searchers"] == {"random": kept} and d["seed"] == 10000
    assert d["controller"] == {"unique": False}
    rows = d["constrained"]["raspi4_latency_ms<=8"]["searchers"]
    assert rows["random"] == kept
    rl = rows["rl"]
    assert rl["runs"] == 1 and rl["seed"] == 3 and rl["feasible_share"] == 1.0
    assert rl["infeasible_reward"] is None  # NB201_CONSTRAINED_CONTROLLER skips them
    assert rl["controller"] == nb201.NB201_CONSTRAINED_CONTROLLER.flat()
    assert not os.path.exists(str(out)[:-5] + ".png")


def test_main_py_random_search_evaluates_the_protocols_cells_and_one_more(table, tmp_path):
    """The search loop and ``run_protocol`` differ in one rule: the loop stops once the spent
    simulated time reaches the budget, so it pays for the cell that crosses it; the protocol
    stops before that cell. Random search evaluates the same cells in the same order otherwise,
    so the loop's answer is the protocol's unless that one extra cell beats it."""
    space = nb201.NB201Space()
    val = table.columns["val_acc_12ep"]
    for seed in (0, 1):
        log = tmp_path / str(seed)
        r = subprocess.run([sys.executable, "main.py", "--benchmark", "nb201", "--searcher",
                            "random", "--max_time", "12000", "--seed", str(seed), "--log_dir",
                            str(log)], cwd=ROOT, capture_output=True, text=True, timeout=300)
        assert r.returncode == 0, r.stderr[-2000:]
        paid = [t for t in records.read_trials(str(log / "trials.jsonl"))
                if t["status"] != "duplicate"]
        loop_rows = [t["metrics"]["nb201_index"] for t in sorted(paid, key=lambda t: t["index"])]
        res = nb201.run_protocol(RandomSearcher(space, seed), table, 1)
        replay = RandomSearcher(space, seed)
        protocol_rows = []
        while len(protocol_rows) < res.evaluations:
            row = int(table.rows(replay.propose(1)[0].tokens))
            if row not in protocol_rows:
                protocol_rows.append(row)
        assert loop_rows[:-1] == protocol_rows and len(loop_rows) == res.evaluations + 1
        assert sum(table.cost_s[loop_rows[:-1]]) <= 12000 < sum(table.cost_s[loop_rows])
        best = json.loads((log / "best.json").read_text())["metrics"]["nb201_index"]
        assert best == (loop_rows[-1] if val[loop_rows[-1]] > res.val_acc else res.best_row)


def test_main_py_rl_under_a_bound_learns_from_feasible_cells_only(tmp_path):
    """``--benchmark nb201 --max_latency_ms`` gives rl NB201_CONSTRAINED_CONTROLLER: over-bound
    cells (and their repeats) are not learned from, and updates wait for learn_batch rewards."""
    from autodl_design.config import ConstraintConfig
    from autodl_design.search import searchers
    from tests.test_search import make_config
    config = make_config(tmp_path, searcher="rl")
    config = dataclasses.replace(config, search=dataclasses.replace(config.search,
                                                                    benchmark="nb201"))
    free = searchers.make_searcher(config)
    assert not isinstance(free, searchers.FeasibleOnly) and free.learn_batch == 0
    bounded = dataclasses.replace(config, constraints=ConstraintConfig(max_latency_ms=8.0))
    s = searchers.make_searcher(bounded)
    assert isinstance(s, searchers.FeasibleOnly)
    assert s.searcher.learn_batch == nb201.NB201_CONSTRAINED_CONTROLLER.learn_batch == 10
    cands = s.propose(4)
    recs = [{"status": "infeasible", "feasible": False, "reward": 0.0},
            {"status": "duplicate", "feasible": False, "reward": 0.0},
            {"status": "ok", "feasible": True, "reward": 0.8},
            {"status": "failed", "feasible": True, "reward": None}]
    s.observe_records(cands, recs)
    assert s.step == 1 and len(s.searcher.pending) == 1  # only the feasible trained cell
    log = tmp_path / "log"
    r = subprocess.run([sys.executable, "main.py", "--benchmark", "nb201", "--max_latency_ms",
                        "8", "--max_time", "4000", "--seed", "2", "--log_dir", str(log)],
                       cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    trials = records.read_trials(str(log / "trials.jsonl"))
    assert any(t["status"] == "infeasible" for t in trials)
    best = json.loads((log / "best.json").read_text())
    assert best["feasible"] is True and best["metrics"]["latency_ms"] <= 8.0
