"""python main.py --benchmark nb201: a whole search on NAS-Bench-201's shipped table, end to end.

Every run is a real main.py subprocess (the loop, records, resume, critic and
report of a cell-space search, with the in-process pool and table look-ups).
"""
import gzip
import json
import os
import subprocess
import sys

import pytest

from autodl_design import nb201, records
from autodl_design.interfaces import Pool
from autodl_design.search.inline_pool import InlinePool
from tests.conftest import ROOT
from tests.kill import kill_after_records

BUDGET = 12000.0


@pytest.fixture(scope="module")
def table():
    return nb201.load_table()


def main_py(*args, timeout=300):
    return subprocess.run([sys.executable, "main.py"] + list(args), cwd=ROOT,
                          capture_output=True, text=True, timeout=timeout)


def bench_args(log, searcher, *extra):
    return ["--benchmark", "nb201", "--searcher", searcher, "--max_time", str(int(BUDGET)),
            "--seed", "0", "--log_dir", str(log)] + list(extra)


def trials(log):
    return records.read_trials(os.path.join(str(log), "trials.jsonl"))


def comparable(ts):
    """Records without their finishing wall time (the one field that differs between runs)."""
    return sorted(({k: v for k, v in t.items() if k != "time"} for t in ts),
                  key=lambda t: t["index"])


def one_line(stderr):
    lines = [l for l in stderr.splitlines() if l.strip()]
    assert len(lines) == 1 and "Traceback" not in stderr, stderr
    return lines[0]


def row_of(table, record):
    return int(table.rows(nb201.NB201Space().from_dict(record["arch"]).tokens))


@pytest.fixture(scope="module")
def full_runs(tmp_path_factory):
    """searcher -> (completed process, log folder) of an uninterrupted run, made once."""
    runs = {}
    for searcher in ("random", "evolution", "rl"):
        log = tmp_path_factory.mktemp("bench") / searcher
        runs[searcher] = (main_py(*bench_args(log, searcher)), log)
    return runs


@pytest.mark.parametrize("searcher", ["random", "evolution", "rl"])
def test_search_spends_the_simulated_budget_on_table_cells(full_runs, table, searcher):
    r, log = full_runs[searcher]
    assert r.returncode == 0, r.stderr[-2000:]
    first = r.stdout.splitlines()[0]
    assert first.startswith("autodl-design: %s search on NAS-Bench-201" % searcher)
    assert ("NB201_RL_SETTINGS" in first) == (searcher == "rl")
    ts = trials(log)
    assert sorted(t["index"] for t in ts) == list(range(len(ts)))
    cost = table.cost_s
    for t in ts:
        row = row_of(table, t)
        assert t["metrics"]["nb201_index"] == row
        if t["status"] == "duplicate":
            assert t["seconds"] == 0.0
        else:
            assert t["status"] == "ok" and t["seconds"] == pytest.approx(cost[row])
            assert t["metrics"]["val_accuracy"] == pytest.approx(
                table.column("val_acc_12ep")[row] / 100)
    spent = [t["seconds"] for t in ts if t["status"] != "duplicate"]
    assert BUDGET <= sum(spent) <= BUDGET + spent[-1]  # the budget, overrun by the last cell
    assert sum(spent[:-1]) < BUDGET
    assert len(spent) >= 40  # 12,000 s hold about 100 cells of NAS-Bench-201
    best = json.loads((log / "best.json").read_text())
    assert best["reward"] == max(t["reward"] for t in ts)
    row = row_of(table, best)
    assert best["metrics"]["test_accuracy"] == pytest.approx(
        table.column("test_acc_200ep")[row] / 100)
    assert "test accuracy" in r.stdout and "simulated time: " in r.stdout
    assert "%.4f" % best["metrics"]["test_accuracy"] in r.stdout
    report = log / "report"
    md = (report / "report.md").read_text()
    assert "NAS-Bench-201 cell %s" % table.arch_strs[row] in md and "| nb201 |" in md
    for png in ("progress.png", "tradeoffs.png"):
        assert (report / png).stat().st_size > 10_000
    assert not (report / "best_normal_cell.png").exists()  # an NB201 cell has no cells to draw


def test_same_seed_same_records(full_runs, tmp_path):
    r = main_py(*bench_args(tmp_path / "again", "rl"))
    assert r.returncode == 0, r.stderr[-2000:]
    assert comparable(trials(tmp_path / "again")) == comparable(trials(full_runs["rl"][1]))
    r = main_py(*bench_args(tmp_path / "seed1", "random", "--seed", "1"))
    assert r.returncode == 0
    assert comparable(trials(tmp_path / "seed1")) != comparable(trials(full_runs["random"][1]))


@pytest.mark.parametrize("searcher", ["rl", "evolution"])
def test_sigkill_then_resume_gives_the_uninterrupted_records(full_runs, tmp_path, searcher):
    log = tmp_path / "log"
    args = bench_args(log, searcher)
    kill_after_records([sys.executable, "-m", "tests.slow_benchmark_main", "0.05"] + args,
                       log, 35)
    before = trials(log)
    full = trials(full_runs[searcher][1])
    assert 35 <= len(before) < len(full)
    r = main_py(*args, "--resume")
    assert r.returncode == 0, r.stderr[-2000:]
    assert "Resuming" in r.stdout
    assert comparable(trials(log)) == comparable(full)


def test_latency_bound_on_raspi4_is_met_and_unmet_cells_cost_nothing(table, tmp_path):
    log = tmp_path / "log"
    r = main_py(*bench_args(log, "evolution", "--max_latency_ms", "8",
                            "--latency_device", "raspi4"))
    assert r.returncode == 0, r.stderr[-2000:]
    ts = trials(log)
    lat = table.latency_ms("raspi4")
    infeasible = [t for t in ts if t["status"] == "infeasible"]
    assert infeasible
    for t in infeasible:
        assert lat[row_of(table, t)] > 8 and t["seconds"] == 0.0
        assert "val_accuracy" not in t["metrics"]  # never trained
    best = json.loads((log / "best.json").read_text())
    assert best["metrics"]["latency_ms"] == pytest.approx(lat[row_of(table, best)])
    assert best["metrics"]["latency_ms"] <= 8
    assert "latency_ms <= 8" in r.stdout


@pytest.mark.parametrize("args, words", [
    (["--max_latency_ms", "0.001"], ["There are no possible architecture", "max_latency_ms",
                                     "raspi4"]),
    (["--max_params", "1000"], ["There are no possible architecture", "max_params"]),
    (["--data_path", "."], ["--data_path", "cell space"]),
    (["--num_nodes", "4"], ["--num_nodes", "cell space"]),
    (["--learning_rate", "0.1"], ["--learning_rate", "controller"]),
])
def test_bad_benchmark_input_is_one_line_exit_2(tmp_path, args, words):
    log = tmp_path / "log"
    r = main_py(*bench_args(log, "rl", *args))
    assert r.returncode == 2
    line = one_line(r.stderr)
    assert line.startswith("error: ") and all(w in line for w in words), line
    assert not (log / "trials.jsonl").exists()


def test_benchmark_flags_without_benchmark_are_refused(tmp_path):
    r = main_py("--latency_device", "eyeriss", "--log_dir", str(tmp_path / "log"))
    assert r.returncode == 2
    assert "--latency_device" in one_line(r.stderr) and "--benchmark nb201" in r.stderr


def _damaged(tmp_path):
    raw = open(nb201.TABLE_PATH, "rb").read()
    truncated = tmp_path / "truncated.csv.gz"
    truncated.write_bytes(raw[:len(raw) // 2])
    foreign = tmp_path / "foreign.csv.gz"
    foreign.write_bytes(gzip.compress(b"index,arch,acc\n0,x,1\n"))
    return {"truncated": (truncated, "gzip"), "foreign": (foreign, "column"),
            "missing": (tmp_path / "nothing.csv.gz", "cannot read")}


@pytest.mark.parametrize("kind", ["truncated", "foreign", "missing"])
def test_damaged_benchmark_table_is_one_line_exit_2(tmp_path, kind):
    path, word = _damaged(tmp_path)[kind]
    log = tmp_path / "log"
    r = main_py(*bench_args(log, "random", "--benchmark_table", str(path)))
    assert r.returncode == 2
    line = one_line(r.stderr)
    assert str(path) in line and "not the NAS-Bench-201" in line and word in line, line
    assert not (log / "trials.jsonl").exists()


def test_another_table_with_the_same_columns_is_read(table, tmp_path):
    copy = tmp_path / "copy.csv.gz"
    copy.write_bytes(open(nb201.TABLE_PATH, "rb").read())
    log = tmp_path / "log"
    r = main_py("--benchmark", "nb201", "--searcher", "random", "--num_models", "7",
                "--benchmark_table", str(copy), "--latency_device", "eyeriss",
                "--log_dir", str(log))
    assert r.returncode == 0, r.stderr[-2000:]
    assert str(copy) in r.stdout.splitlines()[0]
    ts = trials(log)
    assert len(ts) == 7  # without --max_time the budget is --num_models evaluations
    for t in ts:
        assert t["metrics"]["latency_ms"] == pytest.approx(
            table.latency_ms("eyeriss")[row_of(table, t)])


class Exploding:
    """An evaluator whose evaluate raises: a bug, which keeps its traceback."""

    def setup(self, device, threads):
        self.device = device

    def evaluate(self, candidate, index, seed, options):
        raise KeyError("bug in evaluate")


def test_inline_pool_is_a_pool_and_a_bug_keeps_its_traceback():
    pool = InlinePool(Exploding())
    assert isinstance(pool, Pool) and pool.devices == ["cpu"]
    with pytest.raises(RuntimeError, match="not free"):
        pool.submit(0, 0, {}, 0, {})  # not started
    pool.start()
    assert pool.free_workers() == [0] and pool.next_result() is None
    with pytest.raises(KeyError, match="bug in evaluate"):
        pool.submit(0, 0, {}, 0, {})


def test_simulated_clock_sums_costly_records_also_after_resume(tmp_path):
    from autodl_design.config import (AgentConfig, Config, ConstraintConfig, DataConfig,
                                      DeviceConfig, SearchConfig, TrainerConfig)
    from autodl_design.search.clock import SimulatedClock, WallClock, make_clock
    from autodl_design.search.run_records import RunRecords
    from autodl_design.search.searchers import RandomSearcher

    def config(benchmark="nb201", resume=False):
        return Config(DataConfig(), AgentConfig(), TrainerConfig(), ConstraintConfig(),
                      DeviceConfig(), SearchConfig(log_dir=str(tmp_path / "log"), resume=resume,
                                                   benchmark=benchmark))

    space = nb201.NB201Space()
    cell = space.from_arch_str(nb201.arch_str(["nor_conv_3x3"] * 6))
    assert isinstance(make_clock(config(""), None), WallClock)
    rr = RunRecords(config(), lambda line: None)
    clock = make_clock(config(), rr)
    assert isinstance(clock, SimulatedClock)
    rr.open(RandomSearcher(space, 0))
    assert clock.elapsed() == 0.0
    for index, status, seconds in ((0, "ok", 100.5), (1, "duplicate", 40.0),
                                   (2, "infeasible", 0.0), (3, "ok", 20.0)):
        rr.write(records.TrialRecord(
            step=0, index=index, arch=cell.to_dict(), arch_hash=cell.hash(), metrics={},
            reward=0.5, feasible=True, status=status, reason="", worker=0, device="cpu",
            seconds=seconds, time=0.0))
        assert clock.elapsed() == {0: 100.5, 1: 100.5, 2: 100.5, 3: 120.5}[index]
    rr.close()
    resumed = RunRecords(config(resume=True), lambda line: None)
    clock = make_clock(config(resume=True), resumed)
    resumed.open(RandomSearcher(space, 0))
    assert clock.elapsed() == 120.5  # the whole run's, not this process's
    resumed.close()
