"""main.py end to end: real Paddle trainers on real Fashion-MNIST, tiny network, cpu,cpu."""
import json
import os
import signal
import subprocess
import sys
import time

import pytest

from autodl_design import records

from tests.conftest import ROOT, needs_fmnist
from tests.kill import kill_after_records

TINY = ["--trainer_devices=cpu,cpu", "--num_nodes=3", "--width=4", "--num_stages=1",
        "--num_cells=1", "--early_stop=1", "--latency_repeats=3", "--batch_size=3"]

pytestmark = needs_fmnist


@pytest.fixture
def data(tiny_fmnist):
    return tiny_fmnist


def main_py(*args, timeout=300):
    return subprocess.run([sys.executable, "main.py"] + list(args), cwd=ROOT,
                          capture_output=True, text=True, timeout=timeout)


def trials(log_dir):
    return records.read_trials(os.path.join(log_dir, "trials.jsonl"))


def test_tiny_real_search_with_two_workers(data, tmp_path):
    log = str(tmp_path / "log")
    r = main_py("--data_path", data, "--log_dir", log, "--num_models=6", *TINY)
    assert r.returncode == 0, r.stderr[-2000:]
    first = r.stdout.splitlines()[0]
    assert first.startswith("autodl-design: rl search on %s" % data)
    assert "step = 0, average accuracy = " in r.stdout and "Search summary" in r.stdout
    t = trials(log)
    assert sorted(x["index"] for x in t) == list(range(6))
    ok = [x for x in t if x["status"] == "ok"]
    assert len(ok) >= 4 and {x["worker"] for x in ok} == {0, 1}
    for x in ok:
        m = x["metrics"]
        assert 0.0 <= m["val_accuracy"] <= 1.0 and m["params"] > 0 and m["flops"] > 0
        assert m["latency_ms"] > 0 and m["epochs"] == 1 and x["device"] == "cpu"
    best = json.loads(open(os.path.join(log, "best.json")).read())
    assert best["reward"] == max(x["reward"] for x in ok)
    assert os.path.exists(os.path.join(log, "report", "report.md"))
    assert os.path.isdir(os.path.join(log, "checkpoint"))
    cfg = json.loads(open(os.path.join(log, "config.json")).read())
    assert cfg["devices"]["trainer_devices"] == ["cpu", "cpu"] and cfg["agent"]["num_nodes"] == 3


def test_sigkill_then_resume_completes_the_records(data, tmp_path):
    log = str(tmp_path / "log")
    args = ["--data_path", data, "--log_dir", log, "--num_models=8", *TINY,
            "--early_stop=2"]
    kill_after_records([sys.executable, "main.py"] + args, log, 3, poll=0.1)
    before = trials(log)
    assert 3 <= len(before) < 8
    r = main_py(*args, "--resume")
    assert r.returncode == 0, r.stderr[-2000:]
    assert "Resuming" in r.stdout
    after = trials(log)
    assert sorted(x["index"] for x in after) == list(range(8))
    kept = {x["index"]: x for x in after}
    for x in before:  # nothing finished before the kill was redone
        assert kept[x["index"]] == x


def test_ctrl_c_flushes_records_and_exits_130(data, tmp_path):
    log = str(tmp_path / "log")
    proc = subprocess.Popen([sys.executable, "main.py", "--data_path", data, "--log_dir", log,
                             "--num_models=60", *TINY, "--early_stop=20"], cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    path = os.path.join(log, "trials.jsonl")
    deadline = time.time() + 240
    while time.time() < deadline:
        if os.path.exists(path) and len(records.read_trials(path)) >= 2:
            break
        time.sleep(0.1)
    proc.send_signal(signal.SIGINT)
    try:
        out, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, err[-2000:]
    assert "Search summary" in out and "continue with --resume" in out
    assert len(trials(log)) >= 2


def test_bound_below_every_architecture_stops_at_once(data, tmp_path):
    r = main_py("--data_path", data, "--log_dir", str(tmp_path / "log"), "--max_params=10",
                *TINY)
    assert r.returncode == 2
    err = [l for l in r.stderr.splitlines() if l.strip()]
    assert len(err) == 1 and "There are no possible architecture satisfying constraints!" in err[0]
    assert "max_params" in err[0]
    assert not os.path.exists(tmp_path / "log" / "trials.jsonl")


def test_unmet_latency_bound_reports_closest_candidate(data, tmp_path):
    log = str(tmp_path / "log")
    r = main_py("--data_path", data, "--log_dir", log, "--num_models=3",
                "--max_latency_ms=0.000001", *TINY)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "There are no possible architecture satisfying constraints!" in r.stdout
    assert "closest candidate: #" in r.stdout
    t = trials(log)
    assert t and all(x["status"] in ("infeasible", "duplicate") for x in t)
    assert all("epochs" not in x["metrics"] for x in t)  # never trained


def test_corrupt_dataset_is_one_line_exit_2(data, tmp_path):
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "manifest.json").write_text("{not json")
    r = main_py("--data_path", str(bad), "--log_dir", str(tmp_path / "log"), *TINY)
    assert r.returncode == 2
    err = [l for l in r.stderr.splitlines() if l.strip()]
    assert len(err) == 1 and "manifest.json" in err[0] and "Traceback" not in r.stderr


def test_export_best_retrains_and_exports_the_best(data, tmp_path):
    log, out = str(tmp_path / "log"), tmp_path / "deploy"
    r = main_py("--data_path", data, "--log_dir", log, "--num_models=3", *TINY,
                "--export_best", str(out), "--final_epochs=2")
    assert r.returncode == 0, r.stderr[-2000:]
    best = json.loads(open(os.path.join(log, "best.json")).read())
    exported = json.loads((out / "arch.json").read_text())
    assert exported["normal"] == best["arch"]["normal"]
    assert exported["reduction"] == best["arch"]["reduction"]
    # 9 training chunks + the validation chunk of 30 images per class
    assert "for 2 epochs on all 300 training images" in r.stdout
    assert "export_best: test accuracy 0." in r.stdout
    assert "same top-1 on all 100 test images" in r.stdout
    for name in ("model.onnx", "model.py", "model.pdparams", "model.json", "model.pdiparams"):
        assert (out / name).is_file() and name in r.stdout, name
    record = json.loads(open(os.path.join(log, "export_best.json")).read())
    assert record["folder"] == str(out) and record["epochs"] == 2
    assert "export_best: test accuracy %.4f" % record["test_accuracy"] in r.stdout
    assert record["onnx_error"] == "" and record["onnx_max_abs_diff"] <= 1e-4
    assert record["files"]["model.onnx"] == os.path.getsize(out / "model.onnx")
    # The report says where the files are and their test accuracy.
    report = open(os.path.join(log, "report", "report.md")).read()
    assert "## Deployed model" in report and str(out) in report
    assert "test accuracy %.4f" % record["test_accuracy"] in report
    assert "| `model.onnx` | %d |" % record["files"]["model.onnx"] in report


def test_export_best_into_a_full_folder_is_one_line_exit_2(data, tmp_path):
    full = tmp_path / "full"
    full.mkdir()
    (full / "x").write_text("x")
    r = main_py("--data_path", data, "--log_dir", str(tmp_path / "log"), "--num_models=3",
                *TINY, "--export_best", str(full))
    assert r.returncode == 2
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: --export_best") and "full" in lines[0]
    assert not os.path.exists(tmp_path / "log")
