"""--searcher tpe and nsga2: Optuna's samplers over any search space, resume, failures, constraints."""
import dataclasses
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from autodl_design import critic, nb201, records
from autodl_design.config import (AgentConfig, Config, ConstraintConfig, DataConfig,
                                  DeviceConfig, SearchConfig, TrainerConfig)
from autodl_design.recipe import RecipeSpace, parse_decisions
from autodl_design.search import searchers
from autodl_design.search.optuna_searchers import (CONSTRAINTS_KEY, NSGA2Searcher, TPESearcher,
                                                   pareto_vector)
from autodl_design.spaces import CellSpace, decision_indices, num_token_decisions
from tests.conftest import ROOT
from tests.kill import kill_after_records

OPS = ("conv_3x3", "maxpool_3x3", "conv_1x1")


@pytest.fixture(scope="module")
def table():
    return nb201.load_table()


def nb201_record(table, cand, device="raspi4"):
    """The record the loop would hand over for an NB201 cell (trained, no bounds)."""
    row = int(table.rows(cand.tokens))
    return {"status": "ok", "reward": table.column("val_acc_12ep")[row] / 100,
            "metrics": {"val_accuracy": table.column("val_acc_12ep")[row] / 100,
                        "latency_ms": float(table.latency_ms(device)[row])}}


def hard_record(table, cand, bound):
    """The record under a hard latency bound: over it, infeasible and never trained."""
    rec = nb201_record(table, cand)
    if rec["metrics"]["latency_ms"] > bound:
        return {"status": "infeasible", "reward": 0.0,
                "metrics": {"latency_ms": rec["metrics"]["latency_ms"]}}
    return rec


def run_steps(searcher, steps, batch, table=None):
    """Proposes and observes ``steps`` batches; every fifth candidate fails. Returns the hashes."""
    out = []
    for _ in range(steps):
        cands = searcher.propose(batch)
        out += [c.hash() for c in cands]
        if isinstance(searcher, NSGA2Searcher):
            searcher.observe_records(cands, [nb201_record(table, c) if k % 5 else
                                             {"status": "failed", "reward": None, "metrics": {}}
                                             for k, c in enumerate(cands)])
        else:
            searcher.observe(cands, [int(c.hash()[:6], 16) / 16 ** 6 if k % 5 else None
                                     for k, c in enumerate(cands)])
    return out


@pytest.mark.parametrize("kind", ["tpe", "nsga2"])
@pytest.mark.parametrize("space", [
    CellSpace(4, OPS), nb201.NB201Space(),
    RecipeSpace(CellSpace(4, OPS), parse_decisions({"learning_rate": [0.01, 0.05, 0.1],
                                                    "optimizer": ["sgd", "adam"]}))],
    ids=["cell", "nb201", "recipe"])
def test_proposals_are_valid_candidates_of_the_space(kind, space, table):
    s = (TPESearcher(space, 0, n_startup_trials=4) if kind == "tpe"
         else NSGA2Searcher(space, 0, "latency", population_size=4))
    if kind == "nsga2" and space.name != "nb201":  # costs not in a table: made up
        cands = []
        for _ in range(4):
            batch = s.propose(3)
            s.observe_records(batch, [{"status": "ok", "reward": 0.5, "metrics": {
                "val_accuracy": 0.5 + 0.01 * k, "latency_ms": 1.0 + k}} for k in range(3)])
            cands += batch
    else:
        run_steps(s, 4, 3, table)
        cands = s.propose(6)
    sizes = [len(d.choices) for d in space.decisions()]
    for c in cands:
        idx = decision_indices(space, c)
        assert len(idx) == len(sizes) and all(0 <= i < n for i, n in zip(idx, sizes))
        assert space.from_dict(json.loads(json.dumps(c.to_dict()))).hash() == c.hash()
    assert len({c.hash() for c in cands}) > 1
    if space.name == "recipe":  # recipe decisions are searched too
        assert len({t.params["learning_rate"] for t in s.study.trials}) > 1


def test_every_decision_is_an_optuna_parameter_in_controller_order():
    space = CellSpace(4, OPS)
    s = TPESearcher(space, 0)
    c = s.propose(1)[0]
    trial = s.study.trials[0]
    assert list(trial.params) == [d.name for d in space.decisions()]
    assert tuple(trial.params.values()) == decision_indices(space, c)
    assert num_token_decisions(space) == 8  # 4 ops in each of the two cells, then 12 edges


@pytest.mark.parametrize("kind", ["tpe", "nsga2", "tpe_constrained"])
def test_resumed_searcher_proposes_what_the_uninterrupted_one_does(kind, table, tmp_path):
    space = nb201.NB201Space()
    hard = ConstraintConfig(max_latency_ms=8.0)

    def make():
        if kind == "nsga2":
            return NSGA2Searcher(space, 5, "latency", population_size=6)
        return TPESearcher(space, 5, hard if kind == "tpe_constrained" else None,
                           n_startup_trials=6)

    def observe(s, cands):
        if kind == "tpe":
            s.observe(cands, [nb201_record(table, c)["reward"] for c in cands])
        else:
            s.observe_records(cands, [hard_record(table, c, 8.0) for c in cands])

    a = make()
    for _ in range(5):
        observe(a, a.propose(3))
    ahead = a.propose(3)  # proposed before the checkpoint, told after (--lookahead)
    a.save(str(tmp_path))
    b = make()
    b.restore(str(tmp_path))
    assert b.step == a.step == 5
    for s in (a, b):
        observe(s, ahead)
    got = {}
    for name, s in (("a", a), ("b", b)):
        hashes = []
        for _ in range(6):
            cands = s.propose(3)
            hashes += [c.hash() for c in cands]
            observe(s, cands)
        got[name] = hashes
    assert got["a"] == got["b"]
    assert [t.values for t in a.study.trials] == [t.values for t in b.study.trials]
    c = make()  # a fresh searcher of the same seed, without the history, differs
    assert [x.hash() for x in c.propose(12)] != got["a"][:12]


def test_failed_candidates_are_failed_trials_and_not_learned_from():
    from optuna.trial import TrialState
    s = TPESearcher(nb201.NB201Space(), 1)
    cands = s.propose(4)
    s.observe(cands, [0.5, None, 0.7, None])
    states = [t.state for t in s.study.trials]
    assert states == [TrialState.COMPLETE, TrialState.FAIL, TrialState.COMPLETE, TrialState.FAIL]
    s2 = TPESearcher(nb201.NB201Space(), 1)
    s2.observe_records(s2.propose(2), [{"status": "failed", "reward": None, "metrics": {}},
                                       {"status": "duplicate", "reward": 0.4, "metrics": {}}])
    assert [t.state for t in s2.study.trials] == [TrialState.FAIL, TrialState.COMPLETE]
    assert s2.study.trials[1].values == [0.4]


class PickySpace(nb201.NB201Space):
    """NAS-Bench-201 without cells whose first edge is op 0 (``decode`` rejects them)."""

    def decode(self, tokens, adjvec):
        if int(tokens[0]) == 0:
            raise ValueError("first edge may not be op 0")
        return super().decode(tokens, adjvec)


class NothingSpace(nb201.NB201Space):
    def decode(self, tokens, adjvec):
        raise ValueError("no cell is valid")


def test_rejected_trials_are_told_failed_and_asked_again():
    from optuna.trial import TrialState
    s = TPESearcher(PickySpace(), 0, n_startup_trials=3)
    cands = []
    for _ in range(5):
        batch = s.propose(4)
        s.observe(batch, [0.5] * 4)
        cands += batch
    assert len(cands) == 20 and all(int(c.tokens[0]) != 0 for c in cands)
    failed = [t for t in s.study.trials if t.state == TrialState.FAIL]
    assert failed and all(list(t.params.values())[0] == 0 for t in failed)
    with pytest.raises(RuntimeError, match="rejected 100 proposals in a row"):
        TPESearcher(NothingSpace(), 0).propose(1)


def feasible_share(searcher, table, bound, trials):
    """Share of feasible cells among ``trials`` sequential proposals under a hard latency bound."""
    feasible = 0
    for _ in range(trials):
        cands = searcher.propose(1)
        rec = hard_record(table, cands[0], bound)
        feasible += rec["status"] == "ok"
        if hasattr(searcher, "observe_records"):
            searcher.observe_records(cands, [rec])
        else:
            searcher.observe(cands, [rec["reward"]])
    return feasible / trials


def test_hard_bounds_reach_tpe_as_constraints_and_steer_it_to_feasible_cells(table):
    bound = 8.0  # Raspberry Pi 4 ms: about one cell in ten is within it
    hard = ConstraintConfig(max_latency_ms=bound)
    space = nb201.NB201Space()
    tpe = [feasible_share(TPESearcher(space, s, hard), table, bound, 60) for s in range(3)]
    rnd = [feasible_share(searchers.RandomSearcher(space, s), table, bound, 60)
           for s in range(3)]
    assert np.mean(tpe) > np.mean(rnd) + 0.15, (tpe, rnd)
    s = TPESearcher(space, 0, hard)
    feasible_share(s, table, bound, 5)
    for t in s.study.trials:  # one constraint value per bound: latency / bound - 1
        lat = nb201_record(table, space.decode(np.array(list(t.params.values())),
                                               np.zeros(0)))["metrics"]["latency_ms"]
        assert list(t.system_attrs[CONSTRAINTS_KEY]) == [pytest.approx(lat / bound - 1)]
    soft = TPESearcher(space, 0, dataclasses.replace(hard, mode="soft"))
    assert not soft.constrained  # soft mode: the bounds are in the reward already


def test_nsga2_front_is_non_dominated_and_holds_the_extremes(table):
    space = nb201.NB201Space()
    s = NSGA2Searcher(space, 0, "latency", population_size=10)
    told = []
    for _ in range(8):
        cands = s.propose(10)
        recs = [nb201_record(table, c) for c in cands]
        s.observe_records(cands, recs)
        told += [pareto_vector(r, "latency", 0.0) for r in recs]
    front = [v for _, v in s.front()]
    assert len(front) >= 3
    for acc, cost in front:
        assert not any(a >= acc and c <= cost and (a > acc or c < cost) for a, c in told)
    assert max(a for a, _ in front) == max(a for a, _ in told)
    assert min(c for _, c in front) == min(c for _, c in told)
    assert [c for _, c in front] == sorted(c for _, c in front)
    with pytest.raises(TypeError, match="observe_records"):
        s.observe(s.propose(1), [0.5])
    with pytest.raises(ValueError, match="Pareto cost"):
        NSGA2Searcher(space, 0, "energy")


def test_pareto_vector_reads_accuracy_and_cost_from_the_record():
    ok = {"status": "ok", "reward": 0.9, "metrics": {"val_accuracy": 0.9, "params": 1e5}}
    assert pareto_vector(ok, "params", 0.0) == (0.9, 1e5)
    assert pareto_vector(ok, "latency", 0.0) is None  # not measured
    infeasible = {"status": "infeasible", "reward": 0.0, "metrics": {"latency_ms": 20.0}}
    assert pareto_vector(infeasible, "latency", 0.1) == (0.1, 20.0)
    assert pareto_vector({"status": "failed", "reward": None, "metrics": {}}, "latency",
                         0.0) is None


def test_make_searcher_builds_tpe_and_refuses_nsga2_without_a_pareto_objective():
    config = Config(DataConfig(), AgentConfig(), TrainerConfig(), ConstraintConfig(),
                    DeviceConfig(), SearchConfig(searcher="tpe", benchmark="nb201"))
    s = searchers.make_searcher(config)
    assert isinstance(s, TPESearcher) and s.space.name == "nb201"
    config = dataclasses.replace(config, search=dataclasses.replace(config.search,
                                                                    searcher="nsga2"))
    with pytest.raises(ValueError, match="--objective pareto"):
        searchers.make_searcher(config)


def main_py(*args, timeout=300):
    return subprocess.run([sys.executable, "main.py"] + list(args), cwd=ROOT,
                          capture_output=True, text=True, timeout=timeout)


def comparable(log):
    ts = records.read_trials(os.path.join(str(log), "trials.jsonl"))
    return sorted(({k: v for k, v in t.items() if k != "time"} for t in ts),
                  key=lambda t: t["index"])


def test_main_benchmark_tpe_writes_records_and_resumes_after_sigkill(tmp_path):
    args = ["--benchmark", "nb201", "--searcher", "tpe", "--num_models", "30", "--seed", "3",
            "--lookahead", "1"]
    full = tmp_path / "full"
    r = main_py(*args, "--log_dir", str(full))
    assert r.returncode == 0, r.stderr[-2000:]
    assert r.stdout.startswith("autodl-design: tpe search on NAS-Bench-201")
    ts = comparable(full)
    assert [t["index"] for t in ts] == list(range(30))
    assert all(t["status"] in ("ok", "duplicate") for t in ts)
    best = json.loads((full / "best.json").read_text())
    assert best["reward"] == max(t["reward"] for t in ts)
    assert os.path.exists(full / "checkpoint" / "optuna_searcher.json")
    log = tmp_path / "log"
    kill_after_records([sys.executable, "-m", "tests.slow_benchmark_main", "0.05"] + args
                       + ["--log_dir", str(log)], log, 15)
    assert 15 <= len(comparable(log)) < 30
    r = main_py(*args, "--log_dir", str(log), "--resume")
    assert r.returncode == 0, r.stderr[-2000:]
    assert "Resuming" in r.stdout and "warning" not in r.stdout
    assert comparable(log) == ts


def test_main_nsga2_pareto_best_json_lists_the_front(tmp_path):
    """``--searcher nsga2 --objective pareto``: best.json holds the most accurate feasible
    record and ``pareto_front``, the critic's front of every record, by latency."""
    log = tmp_path / "log"
    r = main_py("--benchmark", "nb201", "--searcher", "nsga2", "--objective", "pareto",
                "--pareto_cost", "latency", "--num_models", "40", "--seed", "1",
                "--log_dir", str(log))
    assert r.returncode == 0, r.stderr[-2000:]
    trials = records.read_trials(str(log / records.TRIALS_FILE))
    best = json.loads((log / "best.json").read_text())
    cons = ConstraintConfig(objective="pareto", pareto_cost="latency")
    front = critic.pareto_front(trials, cons)
    assert len(front) >= 2
    assert [p["index"] for p in best["pareto_front"]] == [t["index"] for t in front]
    lat = [p["latency_ms"] for p in best["pareto_front"]]
    acc = [p["val_accuracy"] for p in best["pareto_front"]]
    assert lat == sorted(lat) and acc == sorted(acc)  # cheaper ones are less accurate
    for p in best["pareto_front"]:
        assert not any(critic.dominates(critic.objective_vector(t, cons),
                                        (p["val_accuracy"], p["latency_ms"]))
                       for t in trials if t["status"] == "ok")
    assert best["index"] == max((t for t in trials if t["status"] == "ok"),
                                key=lambda t: (t["reward"], -t["index"]))["index"]
