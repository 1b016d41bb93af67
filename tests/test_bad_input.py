"""Bad input and bad luck: one line on stderr and exit 2, or a bug's traceback, never half of each.

Searches run the real loop with the fake evaluator in real worker processes;
where the exit code matters they run as a subprocess (tests.fake_search_main).
"""
import errno
import json
import os
import subprocess
import sys

import pytest

from autodl_design import records
from autodl_design.search import report, searchers
from autodl_design.search.errors import WorkerBug, WorkerSetupError
from autodl_design.search.local_pool import LocalPool
from tests.test_search import ROOT, make_config, run


def fake_main(config, evaluator_args=None, env=None):
    return subprocess.run(
        [sys.executable, "-m", "tests.fake_search_main", json.dumps(config.to_dict()),
         json.dumps(evaluator_args or {})],
        cwd=ROOT, capture_output=True, text=True, timeout=120, env=env)


def one_line(stderr):
    lines = [l for l in stderr.splitlines() if l.strip()]
    assert len(lines) == 1 and "Traceback" not in stderr, stderr
    return lines[0]


@pytest.mark.parametrize("under", [False, True])
def test_log_dir_naming_a_file_is_one_line_exit_2(tmp_path, under):
    afile = tmp_path / "afile"
    afile.write_text("not a folder")
    log_dir = afile / "log" if under else afile
    r = fake_main(make_config(log_dir, num_models=2, devices=("cpu",)))
    assert r.returncode == 2
    line = one_line(r.stderr)
    assert str(afile) in line and "is a file" in line and "choose another --log_dir" in line
    assert afile.read_text() == "not a folder"


def test_resume_of_a_missing_log_dir_creates_nothing(tmp_path):
    log_dir = tmp_path / "missing" / "log"
    r = fake_main(make_config(log_dir, num_models=2, devices=("cpu",), resume=True))
    assert r.returncode == 2
    line = one_line(r.stderr)
    assert "--resume" in line and "holds no search" in line and "without --resume" in line
    assert not (tmp_path / "missing").exists()


class FullDiskSearcher(searchers.RandomSearcher):
    """A random searcher whose checkpoint meets a full disk at the second learning step."""

    def save(self, folder):
        if self.step >= 2:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), folder)
        super().save(folder)


def test_disk_full_at_the_checkpoint_is_one_line_and_records_stay_valid(tmp_path, capsys):
    config = make_config(tmp_path / "log", num_models=12, batch_size=4)
    searcher = FullDiskSearcher(searchers.make_space(config), config.search.seed)
    code, trials, out = run(config, searcher=searcher)
    assert code == 2
    line = one_line(capsys.readouterr().err)
    checkpoint = str(tmp_path / "log" / "checkpoint")
    assert checkpoint in line and "No space left on device" in line and "--resume" in line
    raw = (tmp_path / "log" / "trials.jsonl").read_text()
    assert raw.endswith("\n")
    parsed = [json.loads(l) for l in raw.splitlines()]  # every line is a whole record
    assert parsed == trials and len(trials) >= 8
    assert {t["step"] for t in trials} >= {0, 1}
    # The run continues from the last checkpoint that was written.
    code, resumed, out = run(make_config(tmp_path / "log", num_models=12, batch_size=4,
                                         resume=True))
    assert code == 0 and "controller step 1" in out
    assert sorted(t["index"] for t in resumed) == list(range(12))


def test_a_second_ctrl_c_during_the_report_exits_130_quietly(tmp_path, monkeypatch):
    def interrupted(log_dir, top=5):
        raise KeyboardInterrupt
    monkeypatch.setattr(report, "write_report", interrupted)
    config = make_config(tmp_path / "log", num_models=4, batch_size=4)
    code, trials, out = run(config)
    assert code == 130 and len(trials) == 4
    assert "Search summary" in out and "report skipped" in out


def test_report_keeps_third_party_logging_out(tmp_path):
    assert run(make_config(tmp_path / "log", num_models=4, max_params=3000))[0] == 0
    env = dict(os.environ, MPLCONFIGDIR=str(tmp_path / "mpl"))  # a fresh font cache
    r = subprocess.run([sys.executable, "-m", "autodl_design.search.report",
                        str(tmp_path / "log")], cwd=ROOT, capture_output=True, text=True,
                       timeout=120, env=env)
    assert r.returncode == 0, r.stderr
    assert os.listdir(tmp_path / "mpl")  # matplotlib did build its cache in this run
    assert r.stdout.strip() == "report written: %s" % (tmp_path / "log" / "report" / "report.md")
    assert "fontManager" not in r.stdout + r.stderr and r.stderr.strip() == "", r.stderr


def test_an_evaluator_bug_stops_the_search_with_its_traceback(tmp_path):
    config = make_config(tmp_path / "log", num_models=8, batch_size=4)
    with pytest.raises(WorkerBug) as e:
        run(config, faults={2: "bug"})
    assert "Traceback" in str(e.value) and "injected evaluator bug" in str(e.value)
    assert "#2" in str(e.value)
    trials = records.read_trials(str(tmp_path / "log" / "trials.jsonl"))
    assert 2 not in {t["index"] for t in trials}  # never recorded as a failed candidate
    r = fake_main(make_config(tmp_path / "sub", num_models=8, batch_size=4,
                              devices=("cpu",)), {"faults": {"1": "bug"}})
    assert r.returncode == 1
    assert "Traceback" in r.stderr and "KeyError: 'injected evaluator bug'" in r.stderr


def test_a_worker_refusing_its_setup_is_one_line(tmp_path):
    from trainer.evaluate import TrainerEvaluator
    config = make_config(tmp_path / "log", num_models=2, devices=("cpu",))
    pool = LocalPool(["cpu"], 1, TrainerEvaluator(str(tmp_path / "no-data"), config.to_dict()),
                     log=lambda line: None)
    try:
        with pytest.raises(WorkerSetupError, match="no such dataset folder") as e:
            pool.start()
    finally:
        pool.terminate()
    assert "\n" not in str(e.value) and str(tmp_path / "no-data") in str(e.value)
