"""Tests of flag validation, presets, device defaults and build_config()."""
import dataclasses
import os
import subprocess
import sys

import pytest
from absl import flags as absl_flags

import flags
from autodl_design import config as cfg
from autodl_design import devices
from autodl_design.ops import OP_NAMES, parse_ops

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


def test_flag_defaults_are_the_dataclass_defaults():
    for flag, (section, name) in flags.CONFIG_FLAGS.items():
        assert flags.FLAGS[flag].default == cfg.default(section, name), flag
    assert parse_ops(flags.FLAGS["ops"].default) == parse_ops(cfg.default("agent", "ops"))
    for key in cfg.SIZE_KEYS:    # size flags: None = the preset's value, named in the help
        assert flags.FLAGS[key].default is None
        assert "%s on the cpu preset, %s on the gpu preset" % (
            cfg.SIZE_PRESETS["cpu"][key], cfg.SIZE_PRESETS["gpu"][key]) in flags.FLAGS[key].help
    sized = {("data", "images_per_class"), ("search", "num_models")} | {
        ("trainer", k) for k in ("width", "num_stages", "num_cells", "early_stop",
                                 "latency_repeats")}
    assert {k for k, _ in sized} == {"data", "search", "trainer"}
    for section, name in sized:
        assert cfg.default(section, name) == cfg.SIZE_PRESETS["gpu"][name]
    # Every setting comes from exactly one flag or is derived (sizes, ops, preset, devices).
    derived = sized | {("agent", "ops"), ("search", "preset"), ("devices", "agent_device"),
                       ("devices", "trainer_devices"),
                       ("search", "search_space"),  # the content of the --search_space file
                       # the input side: a --search_space "resolution" decision (or
                       # python -m trainer --resolution) sets it per candidate
                       ("trainer", "resolution")}
    mapped = list(flags.CONFIG_FLAGS.values())
    assert len(set(mapped)) == len(mapped) and not derived & set(mapped)
    settings = {(s.name, f.name) for s in dataclasses.fields(cfg.Config)
                for f in dataclasses.fields(s.type)}
    assert set(mapped) | derived == settings
    # Default flags on one GPU build the dataclass defaults (the gpu preset).
    c = flags.build_config(parse([]), num_gpus=1, cores=2)
    assert c == cfg.Config(cfg.DataConfig(), cfg.AgentConfig(ops=OP_NAMES), cfg.TrainerConfig(),
                           cfg.ConstraintConfig(),
                           cfg.DeviceConfig(agent_device="gpu:0", trainer_devices=("gpu:0",)),
                           cfg.SearchConfig())
    with pytest.raises(KeyError, match="unknown agent setting 'device'"):
        cfg.default("agent", "device")
    with pytest.raises(KeyError, match="unknown config section"):
        cfg.default("model", "width")


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
    (2, 2, "gpu:0", ("gpu:1",)),
    (8, 64, "gpu:0", ("gpu:1", "gpu:2", "gpu:3", "gpu:4", "gpu:5", "gpu:6", "gpu:7"))])
def test_default_devices(num_gpus, cores, agent, trainers):
    c = flags.build_config(parse([]), num_gpus=num_gpus, cores=cores)
    assert c.devices.agent_device == agent and not hasattr(c.agent, "device")
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
    ["--trainer_devices=cpu,,cpu"], ["--trainer_devices=cpu,"],
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
    assert devices.parse_device(" gpu:01 ") == "gpu:1"
    with pytest.raises(ValueError, match="unknown device 'npu:0'"):
        devices.parse_device("npu:0")
    with pytest.raises(ValueError, match="empty"):
        devices.parse_device_list(" , ")
    assert devices.parse_device_list("cpu, GPU:1") == ["cpu", "gpu:1"]
    with pytest.raises(ValueError, match=r"'cpu,,cpu': entry 2 of 3 is empty; remove the extra "
                                         r"comma, e.g. 'cpu,cpu'"):
        devices.parse_device_list("cpu,,cpu")
    with pytest.raises(ValueError, match=r"'gpu:0, ': entry 2 of 2 is empty"):
        devices.parse_device_list("gpu:0, ")
    assert devices.threads_per_worker(("cpu", "cpu"), cores=2) == 1
    assert devices.threads_per_worker(("cpu",), cores=2) == 2
    assert devices.threads_per_worker(("cpu",), cores=2, requested=1) == 1
    assert devices.threads_per_worker(("gpu:0", "gpu:1"), cores=8) == 1
    for name in ("parse_device", "parse_device_list", "default_devices", "threads_per_worker"):
        assert not hasattr(cfg, name), name      # device choice lives in devices.py only


def test_devices_and_flags_do_not_import_paddle():
    code = ("import sys, autodl_design.devices, autodl_design.cli, flags; "
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('paddle', 'parl')))")
    r = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True,
                       timeout=120)
    assert r.returncode == 0 and r.stdout == "[]\n", r.stdout + r.stderr


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
    assert r.returncode == 2
    assert "num_nodes" in r.stderr and "Traceback" not in r.stderr
    assert r.stderr.strip().splitlines() == ["error: flag --num_nodes=1: 1 is not integer >= 2"]


def test_flagfile_works(tmp_path):
    ff = tmp_path / "run.flags"
    ff.write_text("--agent_device=gpu:x\n")
    r = run_main("--flagfile=%s" % ff)
    assert r.returncode == 2 and "agent_device" in r.stderr
    fv = parse(["--flagfile=%s" % _write(tmp_path / "ok.flags", "--num_nodes=4\n--seed=3\n")])
    assert fv.num_nodes == 4 and fv.seed == 3


def _write(path, text):
    path.write_text(text)
    return str(path)
