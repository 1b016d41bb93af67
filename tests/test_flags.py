"""Tests of flag validation, presets, device defaults and build_config()."""
import os
import subprocess
import sys

import pytest
from absl import flags as absl_flags

import flags
from autodl_design import config as cfg
from autodl_design.ops import OP_NAMES

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def parse(argv):
    """Parses argv into a fresh copy of the project's flags (global FLAGS untouched)."""
    fv = absl_flags.FlagValues()
    fv.append_flag_values(flags.FLAGS)
    fv.unparse_flags()
    fv(["prog"] + list(argv))
    return fv


@pytest.fixture(autouse=True)
def reset_flags():
    yield
    flags.FLAGS.unparse_flags()


def test_autodl_design_defaults():
    fv = parse([])
    assert (fv.num_nodes, len(fv.ops), fv.batch_size, fv.learning_rate, fv.hidden_size,
            fv.num_layers, fv.bl_decay, fv.log_dir) == (10, 10, 10, 1e-3, 64, 2, 0.9, "./log")
    c = flags.build_config(fv, num_gpus=1)
    assert c.search.preset == "gpu"
    assert c.trainer.early_stop == 20 and c.trainer.width == 64
    assert (c.trainer.num_stages, c.trainer.num_cells) == (3, 3)
    assert c.agent.num_tokens == 10 and c.agent.ops == OP_NAMES


def test_cpu_preset_when_no_gpu_and_size_flags_override():
    c = flags.build_config(parse([]), num_gpus=0)
    assert c.search.preset == "cpu"
    assert c.trainer.width == cfg.SIZE_PRESETS["cpu"]["width"]
    assert c.search.num_models == cfg.SIZE_PRESETS["cpu"]["num_models"]
    c = flags.build_config(parse(["--width=32", "--early_stop=7"]), num_gpus=0)
    assert c.trainer.width == 32 and c.trainer.early_stop == 7
    c = flags.build_config(parse(["--preset=gpu", "--num_models=5"]), num_gpus=0)
    assert c.search.preset == "gpu" and c.trainer.width == 64 and c.search.num_models == 5


@pytest.mark.parametrize("num_gpus, cores, agent, trainers", [
    (0, 1, "cpu", ("cpu",)), (0, 2, "cpu", ("cpu", "cpu")), (1, 2, "gpu:0", ("gpu:0",)),
    (2, 2, "gpu:0", ("gpu:1",)), (8, 64, "gpu:0", ("gpu:1",))])
def test_default_devices(num_gpus, cores, agent, trainers):
    c = flags.build_config(parse([]), num_gpus=num_gpus, cores=cores)
    assert c.devices.agent_device == agent and c.agent.device == agent
    assert c.devices.trainer_devices == trainers


def test_explicit_devices_are_normalised():
    c = flags.build_config(parse(["--agent_device=CPU", "--trainer_devices=cpu, cpu"]),
                           num_gpus=2)
    assert c.devices.agent_device == "cpu"
    assert c.devices.trainer_devices == ("cpu", "cpu")


@pytest.mark.parametrize("argv", [
    ["--num_nodes=1"], ["--max_params=-1"], ["--max_latency_ms=-0.5"],
    ["--agent_device=tpu"], ["--trainer_devices=cpu,gpu"], ["--trainer_devices=gpu:x"],
    ["--ops=conv_3x3,conv_7x7"], ["--bl_decay=1.5"], ["--constraint_mode=medium"],
    ["--lr_max=0.01", "--lr_min=0.1"], ["--data_path=/nonexistent/dataset"],
])
def test_bad_values_are_rejected(argv):
    with pytest.raises(absl_flags.IllegalFlagValueError):
        parse(argv)


def test_ops_subset_sets_the_token_count():
    c = flags.build_config(parse(["--ops=maxpool_3x3,conv_1x1"]), num_gpus=0)
    assert c.agent.ops == ("conv_1x1", "maxpool_3x3") and c.agent.num_tokens == 2


def test_config_round_trips_through_dict():
    c = flags.build_config(parse(["--max_params=1e6", "--trainer_devices=cpu,cpu"]), num_gpus=0)
    assert cfg.Config.from_dict(c.to_dict()) == c
    assert c.constraints.bounds() == {"params": 1e6}


def test_device_parsing_and_threads():
    assert cfg.parse_device(" gpu:01 ") == "gpu:1"
    with pytest.raises(ValueError, match="unknown device 'npu:0'"):
        cfg.parse_device("npu:0")
    with pytest.raises(ValueError, match="empty"):
        cfg.parse_device_list(" , ")
    assert cfg.threads_per_worker(("cpu", "cpu"), cores=2) == 1
    assert cfg.threads_per_worker(("cpu",), cores=2) == 2
    assert cfg.threads_per_worker(("cpu",), cores=2, requested=1) == 1
    assert cfg.threads_per_worker(("gpu:0", "gpu:1"), cores=8) == 1


def run_main(*argv):
    return subprocess.run([sys.executable, "main.py"] + list(argv), cwd=ROOT,
                          capture_output=True, text=True, timeout=120)


def test_main_helpfull_lists_flags_grouped():
    out = run_main("--helpfull").stdout
    for name in ("--num_nodes", "--max_latency_ms", "--trainer_devices", "--constraint_mode",
                 "--preset", "--early_stop", "--resume"):
        assert name in out


def test_main_rejects_bad_flag_with_one_line(tmp_path):
    r = run_main("--num_nodes=1")
    assert r.returncode != 0
    assert "num_nodes" in r.stderr and "Traceback" not in r.stderr


def test_flagfile_works(tmp_path):
    ff = tmp_path / "run.flags"
    ff.write_text("--agent_device=gpu:x\n")
    r = run_main("--flagfile=%s" % ff)
    assert r.returncode != 0 and "agent_device" in r.stderr
    fv = parse(["--flagfile=%s" % _write(tmp_path / "ok.flags", "--num_nodes=4\n--seed=3\n")])
    assert fv.num_nodes == 4 and fv.seed == 3


def _write(path, text):
    path.write_text(text)
    return str(path)
