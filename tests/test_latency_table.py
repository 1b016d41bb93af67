"""Tests of latency tables: profiling, file round trip, prediction, errors, search integration."""
import json
import os
import subprocess
import sys
import types

import numpy as np
import pytest

from autodl_design import config as cfg
from autodl_design.arch import Architecture, Cell
from autodl_design.ops import OP_NAMES
from autodl_design.spaces import CellSpace
from trainer import evaluate, metrics
from trainer import latency_table as lt

pytestmark = pytest.mark.filterwarnings("ignore:When training, we now always track")

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# Tiny network: stem -> normal cell (4 ch, 8x8, nodes at 2 ch) -> reduction cell (8 ch, 4x4,
# nodes at 4 ch) -> head; 3 nodes per cell, 1x8x8 images, 3 classes.
TRAINER = cfg.TrainerConfig(width=4, num_stages=2, num_cells=1, ratio=2, latency_repeats=3)
SHAPE = (1, 8, 8)
CLASSES = 3
NODES = 3


def tiny_config(**trainer) -> cfg.Config:
    import dataclasses
    return cfg.Config(data=cfg.DataConfig(), agent=cfg.AgentConfig(num_nodes=NODES, ops=OP_NAMES),
                      trainer=dataclasses.replace(TRAINER, **trainer),
                      constraints=cfg.ConstraintConfig(), devices=cfg.DeviceConfig(),
                      search=cfg.SearchConfig())


@pytest.fixture(scope="module")
def table(tmp_path_factory):
    from autodl_design.backend import paddle
    from trainer import profiling
    paddle.set_device("cpu")
    t = profiling.profile(tiny_config(), SHAPE, CLASSES, "cpu", 1, calibration_archs=2,
                        log=lambda line: None)
    path = str(tmp_path_factory.mktemp("table") / "TABLE.json")
    t.save(path)
    return lt.LatencyTable.load(path)


def hand_arch() -> Architecture:
    # normal: node 0 conv_3x3 (source) -> node 1 maxpool_3x3; nodes 0, 1 -> node 2 conv_1x1
    normal = Cell(["conv_3x3", "maxpool_3x3", "conv_1x1"], [[0, 1, 1], [0, 0, 1], [0, 0, 0]])
    # reduction: three source nodes, all free ends
    reduction = Cell(["avgpool_3x3", "conv_1x3_3x1", "conv_5x5"], np.zeros((3, 3), np.int8))
    return Architecture(normal, reduction)


def test_table_round_trips_and_covers_the_space(table, tmp_path):
    assert os.path.basename(table.path) == "TABLE.json"
    keys = [b.key for b in lt.space_blocks(TRAINER, OP_NAMES, NODES, SHAPE, CLASSES)]
    assert sorted(table.entries) == sorted(keys) and len(keys) == len(set(keys))
    # 1 stem + per cell (1 compress + 10 source ops + 1 BN-ReLU + 10 other ops (the normal
    # cell's coincide with its source ops) + 1 add + 3 projections) + 1 head
    assert len(keys) == 1 + (1 + 10 + 1 + 0 + 1 + 3) + (1 + 10 + 1 + 10 + 1 + 3) + 1
    assert all(e["latency_ms"] > 0 for e in table.entries.values())
    desc = table.device["description"]
    assert "Paddle " in desc and "1 thread" in desc and table.device["threads"] == 1
    assert table.settings["width"] == 4 and table.settings["image_shape"] == [1, 8, 8]
    again = str(tmp_path / "copy.json")
    table.save(again)
    loaded = lt.LatencyTable.load(again)
    assert loaded.to_dict() == table.to_dict()
    arch = hand_arch()
    a = table.predict(arch, TRAINER, SHAPE, CLASSES)
    b = loaded.predict(arch, TRAINER, SHAPE, CLASSES)
    assert a["latency_ms"] == b["latency_ms"] and a["memory_mb"] == b["memory_mb"]
    assert b["latency_source"].startswith("table:copy.json (") and desc in b["latency_source"]
    assert not [f for f in os.listdir(tmp_path) if f.startswith(".latency_table")]


def test_prediction_is_the_hand_written_sum_of_entries():
    keys = {
        "stem 1->4 8x8": 1.0,
        # normal cell 4 -> 4, nodes at 2 channels, 8x8
        "compress 4->2 8x8": 2.0, "op conv_3x3 n=2 8x8 s=1": 4.0,
        "bnrelu n=2 8x8": 8.0, "op maxpool_3x3 n=2 8x8 s=1": 16.0,
        "add n=2 8x8": 32.0, "op conv_1x1 n=2 8x8 s=1": 64.0,
        "project 1x2->4 8x8": 128.0,
        # reduction cell 4 -> 8, nodes at 4 channels, 8x8 -> 4x4
        "compress 4->4 8x8": 256.0, "op avgpool_3x3 n=4 8x8 s=2": 512.0,
        "op conv_1x3_3x1 n=4 8x8 s=2": 1024.0, "op conv_5x5 n=4 8x8 s=2": 2048.0,
        "project 3x4->8 4x4": 4096.0,
        "head 8 4x4 classes=3 dropout=0": 8192.0,
    }
    table = lt.LatencyTable({"description": "hand"}, lt.settings_of(TRAINER, SHAPE, CLASSES),
                            {"scale": 0.5, "offset_ms": 0.25}, {"source": ""},
                            {k: {"latency_ms": v} for k, v in keys.items()})
    # stem + normal: node 0 compress + conv_3x3; node 1 BN-ReLU + maxpool; node 2 one add,
    # BN-ReLU, conv_1x1; project 1 free end; reduction: 3 x compress + the three strided
    # ops; project 3 free ends; head.
    blocks = (1 + (2 + 4) + (8 + 16) + (32 + 8 + 64) + 128
              + 3 * 256 + 512 + 1024 + 2048 + 4096 + 8192)
    assert table.block_sum(hand_arch(), TRAINER, SHAPE, CLASSES) == blocks == 16903
    p = table.predict(hand_arch(), TRAINER, SHAPE, CLASSES)
    assert p["latency_ms"] == 0.5 * 16903 + 0.25
    assert p["memory_source"] == "estimate"   # no memory figures in this table
    assert p["latency_source"] == "table:<table> (hand)"


def test_missing_entry_is_named(table, tmp_path):
    d = table.to_dict()
    del d["entries"]["op conv_5x5 n=4 8x8 s=2"]
    path = str(tmp_path / "T.json")
    with open(path, "w") as f:
        json.dump(d, f)
    t = lt.LatencyTable.load(path)
    with pytest.raises(lt.MissingEntry) as e:
        t.predict(hand_arch(), TRAINER, SHAPE, CLASSES)
    msg = str(e.value)
    assert "\n" not in msg
    assert msg.startswith("conv_5x5 in the reduction cell 1 (4 -> 8 channels) at 4 channels, "
                          "8x8, stride 2 is not in T.json: profile with the search's settings")
    # an architecture without that block is still predicted; the space check finds it
    other = Architecture(hand_arch().normal, hand_arch().normal)
    assert t.predict(other, TRAINER, SHAPE, CLASSES)["latency_ms"] > 0
    with pytest.raises(lt.MissingEntry, match="conv_5x5 in the reduction cell"):
        t.check_space(TRAINER, OP_NAMES, NODES, SHAPE, CLASSES)
    t.check_space(TRAINER, [o for o in OP_NAMES if o != "conv_5x5"], NODES, SHAPE, CLASSES)
    with pytest.raises(lt.MissingEntry, match="concatenation of 4 free ends"):
        table.check_space(TRAINER, OP_NAMES, NODES + 1, SHAPE, CLASSES)


def test_other_settings_are_rejected_by_name(table, tmp_path):
    import dataclasses
    wide = dataclasses.replace(TRAINER, width=8)
    with pytest.raises(ValueError, match="TABLE.json was profiled with width 4 but the search "
                                         "uses width 8"):
        table.predict(hand_arch(), wide, SHAPE, CLASSES)
    with pytest.raises(ValueError, match="image_shape 1x8x8 but the search uses image_shape "
                                         "3x8x8"):
        table.predict(hand_arch(), TRAINER, (3, 8, 8), CLASSES)
    with pytest.raises(ValueError, match="latency_batch 1 .* latency_batch 4"):
        table.check_space(dataclasses.replace(TRAINER, latency_batch=4), OP_NAMES, NODES,
                          SHAPE, CLASSES)
    bad = tmp_path / "bad.json"
    bad.write_text('{"format": "something else"}')
    with pytest.raises(ValueError, match="not made by python -m trainer.profile"):
        lt.LatencyTable.load(str(bad))
    with pytest.raises(ValueError, match="no such latency table"):
        lt.LatencyTable.load(str(tmp_path / "none.json"))


def test_predicted_memory_matches_the_allocator_and_latency_is_sane(table):
    rng = np.random.default_rng(7)
    for _ in range(3):
        arch = CellSpace(NODES, OP_NAMES).sample(rng)
        hw = metrics.measure_hardware(arch, TRAINER, SHAPE, CLASSES)
        p = table.predict(arch, TRAINER, SHAPE, CLASSES)
        assert p["memory_source"] == "table:paddle_host_allocator"
        assert abs(p["memory_mb"] / hw["memory_mb"] - 1) < 0.005, (p, hw)
        # timing on a shared machine: only a loose sanity bound here (see the benchmark)
        assert 0.2 < p["latency_ms"] / hw["latency_ms"] < 5


def test_profile_command_writes_a_valid_table(tmp_path):
    out = str(tmp_path / "t.json")
    args = ["--width=4", "--num_stages=1", "--num_cells=1", "--num_nodes=2",
            "--ops=conv_3x3,maxpool_3x3", "--image_shape=8,8,1", "--num_classes=3",
            "--latency_repeats=3", "--calibration_archs=1", "--passes=1", "--trainer_devices=cpu"]
    r = subprocess.run([sys.executable, "-m", "trainer.profile", "--output", out] + args,
                       cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr[-2000:]
    t = lt.LatencyTable.load(out)
    small = cfg.TrainerConfig(width=4, num_stages=1, num_cells=1, latency_repeats=3)
    assert t.settings["ops"] == ["conv_3x3", "maxpool_3x3"] and t.settings["num_nodes"] == 2
    t.check_space(small, ["conv_3x3", "maxpool_3x3"], 2, SHAPE, CLASSES)
    assert len(t.entries) == len(lt.space_blocks(small, ["conv_3x3", "maxpool_3x3"], 2, SHAPE,
                                                 CLASSES))
    assert len(t.calibration["networks"]) == 1 and t.calibration["scale"] > 0
    r = subprocess.run([sys.executable, "-m", "trainer.profile"] + args, cwd=ROOT,
                       capture_output=True, text=True, timeout=120)
    err = [line for line in r.stderr.splitlines() if line.strip()]
    assert r.returncode == 2 and len(err) == 1 and "--output is required" in err[0]


def test_evaluate_candidate_uses_the_table(table):
    config = tiny_config(latency_table=table.path)
    config = cfg.Config(config.data, config.agent, config.trainer,
                        cfg.ConstraintConfig(max_params=1), config.devices, config.search)
    data = types.SimpleNamespace(image_shape=SHAPE, num_classes=CLASSES)
    arch = hand_arch()
    context = {"config": config, "data": data, "device": "cpu", "latency_table": table}
    m = evaluate.evaluate_candidate(arch.to_dict(), 0, 0, context, {})
    assert m["status"] == "infeasible"         # over max_params: never trained
    expected = table.predict(arch, config.trainer, SHAPE, CLASSES)
    assert m["latency_ms"] == expected["latency_ms"] and m["memory_mb"] == expected["memory_mb"]
    assert m["latency_source"] == table.source and m["latency_source"].startswith("table:")
    counts = metrics.count(arch, config.trainer, SHAPE, CLASSES)
    assert (m["params"], m["flops"]) == (counts["params"], counts["flops"])
    del context["latency_table"]
    m = evaluate.evaluate_candidate(arch.to_dict(), 0, 0, context, {})
    assert m["latency_source"] == "measured on cpu" and m["latency_ms"] != expected["latency_ms"]


def test_unsatisfiable_checks_the_table(table, tmp_path):
    manifest = {"image_shape_hwc": [8, 8, 1], "class_names": ["a", "b", "c"]}
    assert evaluate.unsatisfiable(tiny_config(latency_table=table.path), manifest) is None
    msg = evaluate.unsatisfiable(tiny_config(latency_table=table.path, width=8), manifest)
    assert msg.startswith("TABLE.json was profiled with width 4 but the search uses width 8")
    d = table.to_dict()
    del d["entries"]["bnrelu n=4 4x4"]
    path = str(tmp_path / "T.json")
    with open(path, "w") as f:
        json.dump(d, f)
    msg = evaluate.unsatisfiable(tiny_config(latency_table=path), manifest)
    assert msg.startswith("the BN-ReLU of a node with predecessors in the reduction cell 1") \
        and "is not in T.json" in msg and "\n" not in msg
    msg = evaluate.unsatisfiable(tiny_config(latency_table=str(tmp_path / "no.json")), manifest)
    assert "no such latency table" in msg


def test_main_with_a_latency_table(tiny_fmnist, tmp_path):
    data = tiny_fmnist
    tiny = ["--trainer_devices=cpu,cpu", "--num_nodes=3", "--width=4", "--num_stages=1",
            "--num_cells=1", "--early_stop=1", "--latency_repeats=3", "--batch_size=3"]
    table = str(tmp_path / "dev.json")
    r = subprocess.run([sys.executable, "-m", "trainer.profile", "--output", table,
                        "--data_path", data, "--calibration_archs=1"] + tiny, cwd=ROOT,
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr[-2000:]
    log = str(tmp_path / "log")
    # a latency bound no candidate meets: every candidate is judged by the table, none trained
    r = subprocess.run([sys.executable, "main.py", "--data_path", data, "--log_dir", log,
                        "--num_models=3", "--max_latency_ms=0.000001", "--latency_table", table]
                       + tiny, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    from autodl_design import records
    t = [x for x in records.read_trials(os.path.join(log, "trials.jsonl"))
         if x["status"] == "infeasible"]
    assert t and all(x["metrics"]["latency_source"].startswith("table:dev.json (")
                     for x in t)
    # settings the table was not made for: one line, exit 2, nothing written
    r = subprocess.run([sys.executable, "main.py", "--data_path", data, "--log_dir",
                        str(tmp_path / "log2"), "--latency_table", table] + tiny
                       + ["--width=8"], cwd=ROOT, capture_output=True, text=True, timeout=300)
    err = [line for line in r.stderr.splitlines() if line.strip()]
    assert r.returncode == 2 and len(err) == 1 and "profiled with width 4" in err[0]
    assert not os.path.exists(tmp_path / "log2" / "trials.jsonl")


@pytest.mark.parametrize("runtime", ["onnxruntime", "paddle_inference"])
def test_table_profiled_through_a_runtime(runtime, tmp_path):
    """The blocks and calibration networks run in the runtime named; the table records it."""
    from autodl_design.backend import paddle
    from trainer import onnx_export, profiling, runtimes
    from trainer.network import build_network
    paddle.set_device("cpu")
    t = profiling.profile(tiny_config(), SHAPE, CLASSES, "cpu", 1, calibration_archs=2,
                          passes=1, log=lambda line: None, runtime=runtime)
    path = str(tmp_path / "t.json")
    t.save(path)
    t = lt.LatencyTable.load(path)
    assert t.device["runtime"] == runtime
    assert runtimes.version(runtime) in t.device["description"]
    keys = [b.key for b in lt.space_blocks(TRAINER, OP_NAMES, NODES, SHAPE, CLASSES)]
    assert sorted(t.entries) == sorted(keys)
    for e in t.entries.values():   # the runtime's per-call cost is taken off every block
        assert 0 <= e["latency_ms"] <= e["call_latency_ms"]
        assert "peak_bytes" not in e      # memory: Paddle's allocator does not see the runtime
    assert t.calibration["offset_ms"] > 0 and t.calibration["scale"] > 0
    assert len(t.calibration["networks"]) == 2
    p = t.predict(hand_arch(), TRAINER, SHAPE, CLASSES)
    assert p["memory_source"] == "estimate"
    assert runtimes.version(runtime) in p["latency_source"]
    # the same network timed through the runtime: a loose sanity bound (see the benchmark)
    paddle.seed(0)
    compiled = runtimes.Compiled(runtime)
    try:
        compiled.add(build_network(hand_arch(), TRAINER, SHAPE, CLASSES), [[1] + list(SHAPE)])
        fn = compiled.build(1)[0]
    finally:
        compiled.close()
    measured = profiling.time_fn(fn, 20)["latency_ms"]
    assert 0.2 < p["latency_ms"] / measured < 5
    if runtime == "onnxruntime":
        assert onnx_export.versions().startswith("paddle2onnx 2.1.0")


def test_profile_command_with_runtime_onnxruntime(tmp_path):
    out = str(tmp_path / "t.json")
    args = ["--width=4", "--num_stages=1", "--num_cells=1", "--num_nodes=2",
            "--ops=conv_3x3,maxpool_3x3", "--image_shape=8,8,1", "--num_classes=3",
            "--latency_repeats=3", "--calibration_archs=1", "--passes=1", "--trainer_devices=cpu",
            "--runtime=onnxruntime"]
    r = subprocess.run([sys.executable, "-m", "trainer.profile", "--output", out] + args,
                       cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "through onnxruntime 1.26.0" in r.stdout
    assert lt.LatencyTable.load(out).device["runtime"] == "onnxruntime"
    r = subprocess.run([sys.executable, "-m", "trainer.profile", "--output", out] + args[:-1]
                       + ["--runtime=tensorrt"], cwd=ROOT, capture_output=True, text=True,
                       timeout=120)
    err = [line for line in r.stderr.splitlines() if line.strip()]
    assert r.returncode == 2 and len(err) == 1 and "--runtime" in err[0]
    r = subprocess.run([sys.executable, "-m", "trainer.profile", "--output", out] + args[:-2]
                       + ["--trainer_devices=gpu:0", "--runtime=onnxruntime"], cwd=ROOT,
                       capture_output=True, text=True, timeout=120)
    err = [line for line in r.stderr.splitlines() if line.strip()]
    assert r.returncode == 2 and len(err) == 1
    assert "--runtime onnxruntime runs on the CPU" in err[0]
