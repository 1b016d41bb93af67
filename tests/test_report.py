"""The report: PNGs that decode and show something, Markdown links that resolve."""
import re
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from autodl_design.search import report
from tests.test_search import ROOT, make_config, run


def nontrivial_png(path):
    with Image.open(path) as im:
        im.load()
        assert im.format == "PNG"
        w, h = im.size
        a = np.asarray(im.convert("L"), dtype=np.float32)
    assert w >= 400 and h >= 200
    assert a.std() > 5.0  # not a blank canvas
    assert (a < 128).mean() > 0.002  # some dark ink: axes, text, points


@pytest.mark.parametrize("searcher", ["rl", "random", "evolution"])
def test_search_writes_a_report_with_working_links(tmp_path, searcher):
    config = make_config(tmp_path / "log", searcher=searcher, num_models=12, num_nodes=4,
                         max_params=5000)
    code, trials, out = run(config)
    assert code == 0 and "report: " in out
    folder = tmp_path / "log" / "report"
    md = (folder / "report.md").read_text()
    links = re.findall(r"\]\(([^)]+)\)", md)
    assert {"progress.png", "tradeoffs.png", "best_normal_cell.png",
            "best_reduction_cell.png"} <= set(links)
    for link in links:
        nontrivial_png(folder / link)
    assert "| %s |" % searcher in md and "params <= 5000" in md
    assert "## Top" in md and "## Best architecture: #" in md


def test_report_command_and_errors(tmp_path):
    config = make_config(tmp_path / "log", num_models=4, max_params=1)
    assert run(config)[0] == 0
    r = subprocess.run([sys.executable, "-m", "autodl_design.search.report", "--log_dir",
                        str(tmp_path / "log")], cwd=ROOT, capture_output=True, text=True)
    assert r.returncode == 0 and "report.md" in r.stdout
    md = (tmp_path / "log" / "report" / "report.md").read_text()
    assert "There are no possible architecture satisfying constraints!" in md
    r = subprocess.run([sys.executable, "-m", "autodl_design.search.report", "--log_dir",
                        str(tmp_path / "empty")], cwd=ROOT, capture_output=True, text=True)
    assert r.returncode == 2 and "holds no search records" in r.stderr


def test_pareto_front_against_brute_force():
    rng = np.random.default_rng(0)
    pts = [(float(c), float(a)) for c, a in rng.random((60, 2))]
    front = set(report.pareto_front(pts))
    for k, (c, a) in enumerate(pts):
        dominated = any((c2 <= c and a2 >= a) and (c2, a2) != (c, a) for c2, a2 in pts)
        assert (k in front) == (not dominated)
