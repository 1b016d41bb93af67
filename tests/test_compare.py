"""``report --compare``: several fake-trainer searches in one PNG and one table; bad folders."""
import os
import subprocess
import sys

from autodl_design.search import compare
from tests.test_report import nontrivial_png
from tests.test_search import ROOT, make_config, run

REPORT = [sys.executable, "-m", "autodl_design.report", "--compare"]  # the command
LONG_REPORT = [sys.executable, "-m", "autodl_design.search.report", "--compare"]


def two_searches(tmp_path):
    for name, searcher in (("rand", "random"), ("evo", "evolution")):
        config = make_config(tmp_path / name, searcher=searcher, num_models=8, num_nodes=3,
                             max_params=5000)
        assert run(config)[0] == 0
    return [str(tmp_path / "rand"), str(tmp_path / "evo")]


def test_compare_writes_one_png_and_one_table(tmp_path):
    dirs = two_searches(tmp_path)
    out = tmp_path / "cmp"
    r = subprocess.run(REPORT + dirs + ["--out", str(out)], cwd=ROOT, capture_output=True,
                       text=True)
    assert r.returncode == 0, r.stderr
    nontrivial_png(out / "compare.png")
    md = (out / "compare.md").read_text()
    rows = [line for line in md.splitlines() if line.startswith("| rand") or
            line.startswith("| evo")]
    assert len(rows) == 2 and "| random | none | 8 |" in rows[0]
    assert "| evolution | none | 8 |" in rows[1]
    assert "](compare.png)" in md and rows[0] in r.stdout


def test_both_command_names_write_the_same_comparison(tmp_path):
    """``python -m autodl_design.report`` is ``python -m autodl_design.search.report``."""
    dirs = two_searches(tmp_path)
    outs = []
    for command, out in ((REPORT, tmp_path / "short"), (LONG_REPORT, tmp_path / "long")):
        r = subprocess.run(command + dirs + ["--out", str(out)], cwd=ROOT, capture_output=True,
                           text=True)
        assert r.returncode == 0, r.stderr
        outs.append((out / "compare.md").read_text())
    assert outs[0] == outs[1] and "| rand" in outs[0]


def test_running_best_is_the_best_feasible_reward_so_far(tmp_path):
    dirs = two_searches(tmp_path)
    for run_ in compare.read_runs(dirs):
        xs, ys = compare.running_best(run_, "index")
        assert ys == sorted(ys) and len(set(ys)) == len(ys)  # strictly improving
        feasible = [t["reward"] for t in run_.trials if t["status"] == "ok" and t["feasible"]]
        assert ys[-1] == max(feasible)
        xt, yt = compare.running_best(run_, "time")
        assert yt[-1] == ys[-1] and xt == sorted(xt)
        row = compare.summary_row(run_)
        assert row["best_reward"] == ys[-1] and row["evaluations"] == 8


def test_bad_folders_one_line_exit_2_nothing_written(tmp_path):
    dirs = two_searches(tmp_path)
    out = tmp_path / "cmp"
    for args, words in (([dirs[0], str(tmp_path / "nothing")], "holds no search records"),
                        ([], "at least one search folder"),
                        (dirs + ["--out"], "--out needs a folder"),
                        (dirs + ["--bogus"], "unknown option --bogus")):
        r = subprocess.run(REPORT + args + ["--out=%s" % out] * ("--out" not in args),
                           cwd=ROOT, capture_output=True, text=True)
        assert r.returncode == 2 and words in r.stderr, (args, r.stderr)
        assert len(r.stderr.strip().splitlines()) == 1
        assert not os.path.exists(out)
    (tmp_path / "file").write_text("x")
    r = subprocess.run(REPORT + dirs + ["--out", str(tmp_path / "file")], cwd=ROOT,
                       capture_output=True, text=True)
    assert r.returncode == 2 and "is a file" in r.stderr
