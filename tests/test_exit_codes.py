"""Exit codes of the entry points, run as subprocesses: 2 and one ``error:`` line for bad input."""
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PROJECT_FLAG_ENTRY_POINTS = [["main.py"], ["simple_main.py"], ["-m", "trainer"],
                             ["-m", "trainer.profile"], ["-m", "autodl_design.search.report"],
                             ["-m", "autodl_design.report"]]
ENTRY_POINTS = PROJECT_FLAG_ENTRY_POINTS + [["dataset_maker.py"]]


def run(command, *args, **kwargs):
    return subprocess.run([sys.executable] + list(command) + list(args), cwd=ROOT,
                          capture_output=True, text=True, timeout=120, **kwargs)


def refused(r) -> str:
    """Asserts exit code 2, nothing on stdout and one ``error:`` line on stderr; returns it."""
    assert r.returncode == 2, (r.returncode, r.stderr[-2000:])
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), r.stderr[-2000:]
    assert r.stdout == ""
    return lines[0]


@pytest.mark.parametrize("command", PROJECT_FLAG_ENTRY_POINTS, ids=" ".join)
@pytest.mark.parametrize("args, expected", [
    (["--data_path=/nonexistent/dataset"],
     "--data_path=/nonexistent/dataset: must be an existing dataset folder (make one with "
     "dataset_maker.py)"),
    (["--trainer_devices=cpu,,cpu"],
     "--trainer_devices=cpu,,cpu: device list 'cpu,,cpu': entry 2 of 3 is empty; remove the "
     "extra comma, e.g. 'cpu,cpu'"),
    (["--trainer_devices=cpu,tpu"], "--trainer_devices=cpu,tpu: unknown device 'tpu'"),
    (["--no_such_flag=3"], "Unknown command line flag 'no_such_flag' (--helpfull lists every "
                           "flag)"),
    (["--constraint_mode=medium"], "--constraint_mode=medium: value should be one of "
                                   "<hard|soft>"),
    (["--num_nodes=1"], "--num_nodes=1: 1 is not integer >= 2"),
    (["--searcher=evolution", "--population=4", "--sample_size=5"],
     "population=4, sample_size=5: --sample_size must not exceed --population"),
    (["--lr_max=0.01", "--lr_min=0.1"], "--lr_min must not exceed --lr_max"),
], ids=["data_path", "empty_device", "bad_device", "unknown_flag", "enum", "range",
        "sample_size", "lr"])
def test_flag_errors_exit_2_with_one_line(command, args, expected):
    assert expected in refused(run(command, *args))


@pytest.mark.parametrize("command", ENTRY_POINTS, ids=" ".join)
def test_unknown_flag_and_positional_argument_exit_2(command):
    line = refused(run(command, "--no_such_flag"))
    assert "'no_such_flag'" in line and "--helpfull" in line
    if command[-1] not in ("autodl_design.search.report", "autodl_design.report"):
        # the report's main checks its own arguments
        line = refused(run(command, "stray_argument"))
        assert "unexpected arguments" in line and "stray_argument" in line


@pytest.mark.parametrize("command", ENTRY_POINTS, ids=" ".join)
@pytest.mark.parametrize("help_flag", ["--help", "--helpfull"])
def test_help_exits_0(command, help_flag):
    r = run(command, help_flag)
    assert r.returncode == 0, r.stderr[-2000:]
    assert r.stderr == ""
    if help_flag == "--help":
        assert "Try --helpfull to get a list of all flags." in r.stdout
    else:
        assert "flags:" in r.stdout
        if command != ["dataset_maker.py"]:
            assert "--trainer_devices" in r.stdout


def test_flag_error_in_a_flagfile_exits_2(tmp_path):
    ff = tmp_path / "run.flags"
    ff.write_text("--seed=1\n--trainer_devices=gpu:0,,gpu:1\n")
    assert "entry 2 of 3 is empty" in refused(run(["main.py"], "--flagfile=%s" % ff))


@pytest.mark.parametrize("args, expected", [
    (["--source=cifar100"], "--source=cifar100: value should be one of "
                            "<cifar10|fashion_mnist|folder>"),
    (["--num_chunks=1"], "--num_chunks=1: 1 is not integer >= 2"),
    (["--source=folder"], "--source folder needs --input"),
    (["--image_size=64"], "--image_size applies to --source folder only"),
], ids=["enum", "range", "usage", "usage2"])
def test_dataset_maker_flag_and_usage_errors_exit_2(args, expected):
    assert expected in refused(run(["dataset_maker.py"], *args))


CLI_SCRIPT = """
import sys
from absl import app
from autodl_design import cli

def main(argv):
    if sys.argv[1:] == ["usage"]:
        raise app.UsageError("bad\\nusage")
    if sys.argv[1:] == ["interrupt"]:
        raise KeyboardInterrupt
    if sys.argv[1:] == ["bug"]:
        raise RuntimeError("a bug")
    return 3

cli.run(main)
"""


def test_cli_run_exit_codes():
    r = run(["-c", CLI_SCRIPT], "usage")
    assert refused(r) == "error: bad; usage"
    r = run(["-c", CLI_SCRIPT], "interrupt")
    assert r.returncode == 130 and r.stderr.strip() == "interrupted"
    r = run(["-c", CLI_SCRIPT], "bug")
    assert r.returncode == 1 and "Traceback" in r.stderr and "RuntimeError: a bug" in r.stderr
    r = run(["-c", CLI_SCRIPT])
    assert r.returncode == 3 and r.stderr == ""
