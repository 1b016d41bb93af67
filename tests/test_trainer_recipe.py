"""Tests of the trainer side of recipes: optimizers, gradient clip, resolution, scale, CLI."""
import dataclasses
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from autodl_design import config as cfg
from autodl_design.arch import Architecture, Cell
from autodl_design.backend import paddle
from autodl_design.recipe import Recipe, SearchSpaceError, parse_decisions
from trainer import data as data_lib
from trainer import evaluate, metrics, train
from trainer import latency_table as lt
from trainer.data import Dataset
from trainer.network import build_network
from tests.conftest import FMNIST, ROOT, needs_fmnist

pytestmark = pytest.mark.filterwarnings("ignore:When training, we now always track")

# stem 3x3 (1 -> 4) -> normal cell (4 -> 4, nodes at 2) -> reduction cell (4 -> 8, nodes at 4)
TINY = cfg.TrainerConfig(width=4, num_stages=2, num_cells=1, ratio=2, early_stop=1,
                         train_batch_size=32, latency_repeats=2)
CLASSES = 3


def chain() -> Architecture:
    """Both cells: node 0 conv_1x1 (source) -> node 1 conv_3x3 (the one free end)."""
    cell = Cell(["conv_1x1", "conv_3x3"], [[0, 1], [0, 0]])
    return Architecture(cell, cell)


def random_data(n=48, side=12, classes=CLASSES, seed=0) -> Dataset:
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((3 * n, 1, side, side)).astype(np.float32)
    y = rng.integers(0, classes, 3 * n).astype(np.int64)
    return Dataset(x[:n], y[:n], x[n:2 * n], y[n:2 * n], x[2 * n:], y[2 * n:],
                   [str(i) for i in range(classes)], (1, side, side), classes, False, {})


def trainable(model) -> np.ndarray:
    return np.concatenate([p.numpy().ravel() for p in model.parameters() if not p.stop_gradient])


def initial(config, data, seed=0) -> np.ndarray:
    """The trainable weights ``train.fit`` starts from (same seed, same draws)."""
    paddle.seed(seed)
    shape = data_lib.at_resolution(data, config).train_images.shape[1:]
    return trainable(build_network(chain(), config, shape, CLASSES))


# ----------------------------------------------------------------- optimizers and clipping

def test_each_optimizer_trains_and_sgd_is_the_default():
    data = random_data()
    base = dataclasses.replace(TINY, lr_max=0.01)
    kinds = {"sgd": paddle.optimizer.Momentum, "adam": paddle.optimizer.Adam,
             "rmsprop": paddle.optimizer.RMSProp}
    weights, losses = {}, {}
    for name, kind in kinds.items():
        config = dataclasses.replace(base, optimizer=name)
        opt = train.make_optimizer(config, [paddle.create_parameter([2], "float32")])
        assert type(opt) is kind
        result, model = train.fit(chain(), config, data, seed=0)
        assert result["status"] == "ok" and np.isfinite(result["train_loss"])
        weights[name], losses[name] = trainable(model), result["train_loss"]
        assert not np.allclose(weights[name], initial(config, data))   # it trained
    assert train.make_optimizer(base, [paddle.create_parameter([2], "float32")])._use_nesterov
    for a, b in (("sgd", "adam"), ("sgd", "rmsprop"), ("adam", "rmsprop")):
        assert np.abs(weights[a] - weights[b]).max() > 1e-4, (a, b)
        assert losses[a] != losses[b]
    # the default config trains with exactly the SGD of before (Nesterov momentum)
    default, model = train.fit(chain(), base, data, seed=0)
    assert base.optimizer == "sgd" and default["train_loss"] == losses["sgd"]
    assert np.array_equal(trainable(model), weights["sgd"])


def one_step_update(clip: float) -> float:
    """Global norm of the first (only) step's change of the trainable weights."""
    data = random_data()
    config = dataclasses.replace(TINY, train_batch_size=len(data.train_images), weight_decay=0.0,
                                 lr_max=0.1, lr_min=0.1, grad_clip=clip)
    before = initial(config, data)
    result, model = train.fit(chain(), config, data, seed=0)
    assert result["status"] == "ok"
    return float(np.linalg.norm(trainable(model) - before))


def test_grad_clip_bounds_the_update():
    # Nesterov SGD's first step moves the weights by lr (1 + momentum) g, g clipped to norm c
    bound = 0.1 * (1 + TINY.momentum) * 1e-3
    clipped = one_step_update(1e-3)
    assert clipped == pytest.approx(bound, rel=1e-3)     # the raw gradient is far larger
    assert one_step_update(0.0) > 100 * bound            # 0 = off


# ----------------------------------------------------------------- resolution, width, depth

def hand_flops(side: int) -> int:
    """FLOPs of ``chain()`` at ``TINY`` on side x side inputs, 3 classes, by hand.

    stem 3x3 1->4: 36 S^2. Normal cell (n = 2) at S: compress 1x1 4->2 8 S^2, conv_1x1
    2->2 4 S^2, conv_3x3 2->2 36 S^2, project 2->4 8 S^2. Reduction cell (n = 4), T =
    ceil(S / 2): compress 4->4 at S 16 S^2, strided conv_1x1 16 T^2, conv_3x3 144 T^2,
    project 4->8 32 T^2. Head: FC 8 x 3.
    """
    t = -(-side // 2)
    return 108 * side * side + 192 * t * t + 24


def test_resolution_changes_flops_as_computed_by_hand_and_the_forward_runs():
    data = random_data(side=12)
    assert hand_flops(12) == 22488 and hand_flops(8) == 10008
    for side in (12, 8, 9):
        config = dataclasses.replace(TINY, resolution=side)
        counts = metrics.count(chain(), config, (1, 12, 12), CLASSES)
        assert counts["flops"] == hand_flops(side)
        model = build_network(chain(), config, (1, 12, 12), CLASSES)
        assert model.image_shape == (1, side, side)
        assert metrics.flops_by_hooks(model, model.image_shape) == hand_flops(side)
        small = data_lib.at_resolution(data, config)
        assert small.train_images.shape[1:] == small.image_shape == (1, side, side)
        assert data.train_images.shape[1:] == (1, 12, 12)       # the data itself stays
        hw = metrics.measure_hardware(chain(), config, (1, 12, 12), CLASSES)
        assert hw["flops"] == hand_flops(side) and hw["latency_ms"] > 0
        result = train.train_and_evaluate(chain(), config, data, seed=0)
        assert result["status"] == "ok" and 0 <= result["val_accuracy"] <= 1
    # resolution 0 (and the images' own side) is the network of before
    assert (metrics.count(chain(), TINY, (1, 12, 12), CLASSES)["flops"] == hand_flops(12)
            and data_lib.at_resolution(data, dataclasses.replace(TINY, resolution=12)) is data)


def test_resize_is_paddles_bilinear():
    x = np.random.default_rng(1).standard_normal((2, 3, 12, 12)).astype(np.float32)
    ours = data_lib.resize_images(x, 8)
    ref = paddle.nn.functional.interpolate(paddle.to_tensor(x), size=[8, 8], mode="bilinear",
                                           align_corners=False).numpy()
    assert ours.shape == (2, 3, 8, 8) and np.abs(ours - ref).max() < 1e-5


@pytest.mark.parametrize("side", [7, 13])
def test_resolution_outside_the_images_is_bad_input(side):
    data = random_data(side=12)
    config = dataclasses.replace(TINY, resolution=side)
    with pytest.raises(SearchSpaceError, match="resolution %d is not usable with 12x12" % side):
        train.train_and_evaluate(chain(), config, data, seed=0)
    with pytest.raises(SearchSpaceError):
        metrics.count(chain(), config, (1, 12, 12), CLASSES)


def test_width_and_depth_change_params_as_paddle_counts():
    seen = []
    for width_mult, depth in ((0.5, 1), (1.0, 1), (1.0, 2), (2.0, 1), (2.0, 3)):
        config = Recipe((("width_mult", width_mult), ("depth", depth))).apply(TINY)
        assert (config.width, config.num_cells) == (max(1, round(4 * width_mult)), depth)
        model = build_network(chain(), config, (1, 12, 12), CLASSES)
        paddle_count = sum(int(np.prod(p.shape)) for p in model.parameters())
        assert metrics.count(chain(), config, (1, 12, 12), CLASSES)["params"] == paddle_count
        assert len(model.cells) == 2 * depth
        seen.append(paddle_count)
    assert seen == sorted(seen) and len(set(seen)) == len(seen)


# ----------------------------------------------------------------- the search's evaluator

def context(**constraints):
    config = cfg.Config(cfg.DataConfig(), cfg.AgentConfig(num_nodes=2, ops=("conv_1x1",
                                                                            "conv_3x3")),
                        TINY, cfg.ConstraintConfig(**constraints), cfg.DeviceConfig(),
                        cfg.SearchConfig())
    return {"config": config, "data": random_data(side=12), "device": "cpu"}


def test_evaluate_trains_the_candidates_recipe():
    recipe = {"width_mult": 0.5, "depth": 2, "resolution": 8, "optimizer": "adam",
              "learning_rate": 0.01, "grad_clip": 1.0, "dropout": 0.2}
    cand = dict(chain().to_dict(), recipe=recipe)
    m = evaluate.evaluate_candidate(cand, 0, 0, context(), {})
    scaled = Recipe.from_dict(recipe).apply(TINY)
    assert (scaled.width, scaled.num_cells, scaled.resolution) == (2, 2, 8)
    counts = metrics.count(chain(), scaled, (1, 12, 12), CLASSES)
    assert m["status"] == "ok" and (m["params"], m["flops"]) == (counts["params"],
                                                                 counts["flops"])
    expected = train.train_and_evaluate(chain(), scaled, random_data(side=12), seed=0)
    assert m["train_loss"] == expected["train_loss"]
    assert m["val_accuracy"] == expected["val_accuracy"]
    assert m["trainer_settings"] == {
        "width": 2, "num_cells": 2, "resolution": 8, "lr_max": 0.01, "weight_decay": 1e-4,
        "optimizer": "adam", "train_batch_size": 32, "grad_clip": 1.0, "dropout": 0.2}
    plain = evaluate.evaluate_candidate(chain().to_dict(), 0, 0, context(), {})
    assert "trainer_settings" not in plain     # a cell-only candidate's record is as before
    assert plain["params"] == metrics.count(chain(), TINY, (1, 12, 12), CLASSES)["params"]
    assert plain["params"] > m["params"] and plain["flops"] > m["flops"]


def test_cheap_gate_is_at_the_candidates_scale():
    small = metrics.count(chain(), Recipe((("width_mult", 0.5),)).apply(TINY), (1, 12, 12),
                          CLASSES)["params"]
    ctx = context(max_params=small)
    wide = evaluate.evaluate_candidate(dict(chain().to_dict(), recipe={"width_mult": 2.0}),
                                       0, 0, ctx, {})
    assert wide["status"] == "infeasible" and "val_accuracy" not in wide   # never trained
    narrow = evaluate.evaluate_candidate(dict(chain().to_dict(), recipe={"width_mult": 0.5}),
                                         0, 0, ctx, {})
    assert narrow["status"] == "ok" and narrow["params"] == small


def test_unsatisfiable_looks_at_the_smallest_scale():
    manifest = {"image_shape_hwc": [12, 12, 1], "class_names": ["a", "b", "c"]}
    decisions = parse_decisions({"width_mult": [0.5, 1.0], "depth": [1, 2]})
    half = metrics.count(chain(), Recipe((("width_mult", 0.5),)).apply(TINY), (1, 12, 12),
                         CLASSES)["params"]
    ctx = context(max_params=half)
    # no op chain at width 4 fits half-width's params; at width_mult 0.5 one does
    assert evaluate.unsatisfiable(ctx["config"], manifest) is not None
    assert evaluate.unsatisfiable(ctx["config"], manifest, decisions) is None
    big = parse_decisions({"resolution": [8, 16]})
    assert "resolution [16] is larger" in evaluate.unsatisfiable(context()["config"], manifest,
                                                                   big)


# ----------------------------------------------------------------- latency tables with scales

SPACE = {"width_mult": [0.5, 1.0], "depth": [1, 2], "resolution": [8, 12]}


@pytest.fixture(scope="module")
def scaled_table(tmp_path_factory):
    from trainer import profiling
    paddle.set_device("cpu")
    config = context()["config"]
    t = profiling.profile(config, (1, 12, 12), CLASSES, "cpu", 1, calibration_archs=2, passes=1,
                          log=lambda line: None, decisions=parse_decisions(SPACE))
    path = str(tmp_path_factory.mktemp("table") / "SCALED.json")
    t.save(path)
    return lt.LatencyTable.load(path)


def test_table_covers_every_scale_of_the_file(scaled_table):
    t, decisions = scaled_table, parse_decisions(SPACE)
    configs = lt.scale_configs(TINY, decisions)
    assert len(configs) == 8 and len(t.settings["scales"]) == 8
    keys = lt.scaled_space_blocks(TINY, decisions, ("conv_1x1", "conv_3x3"), 2, (1, 12, 12),
                                  CLASSES)
    assert sorted(t.entries) == sorted(b.key for b in keys)
    assert "op conv_3x3 n=1 8x8 s=1" in t.entries and "op conv_3x3 n=2 12x12 s=1" in t.entries
    t.check_space(TINY, ("conv_1x1", "conv_3x3"), 2, (1, 12, 12), CLASSES, decisions)
    for c in configs:
        p = t.predict(chain(), c, (1, 12, 12), CLASSES)
        assert p["latency_ms"] > 0 and p["memory_mb"] > 0
    assert sorted(t.memory["input_bytes_by_shape"]) == ["1x12x12", "1x8x8"]


def test_a_scale_the_table_lacks_is_named(scaled_table):
    wide = Recipe((("width_mult", 2.0),)).apply(TINY)
    with pytest.raises(lt.MissingEntry) as e:
        scaled_table.predict(chain(), wide, (1, 12, 12), CLASSES)
    msg = str(e.value)
    assert "\n" not in msg and msg.startswith(
        "SCALED.json has no entries for the scale width 8, 1 cells per stage, input 1x12x12, "
        "dropout 0 (it covers 8 scales of ")
    more = parse_decisions(dict(SPACE, resolution=[8, 10, 12]))
    with pytest.raises(lt.MissingEntry, match="input 1x10x10"):
        scaled_table.check_space(TINY, ("conv_1x1", "conv_3x3"), 2, (1, 12, 12), CLASSES, more)


def _run(module, *args):
    env = dict(os.environ, PYTHONPATH=ROOT)
    return subprocess.run([sys.executable, "-m", module] + list(args), cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=300)


def _one_error_line(proc, *words):
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert proc.returncode == 2 and len(lines) == 1 and lines[0].startswith("error:"), \
        proc.stderr[-2000:]
    for w in words:
        assert w in lines[0], (w, lines[0])


def test_profile_command_bad_search_space_is_exit_2(tmp_path):
    out = str(tmp_path / "t.json")
    space = tmp_path / "space.json"
    common = ["--output", out, "--image_shape=12,12,1", "--num_classes=3", "--search_space",
              str(space)]
    space.write_text(json.dumps({"resolution": [8, 16]}))
    _one_error_line(_run("trainer.profile", *common), "resolution [16] is larger")
    space.write_text(json.dumps({"width": [1]}))
    _one_error_line(_run("trainer.profile", *common), "unknown decision 'width'")
    assert not os.path.exists(out)


# ----------------------------------------------------------------- python -m trainer

def test_cli_bad_scale_values_are_exit_2(tmp_path):
    cand = tmp_path / "cand.json"
    cand.write_text(json.dumps(dict(chain().to_dict(), recipe={"width_mult": 0.5})))
    _one_error_line(_run("trainer", "--arch", str(cand), "--resolution", "4"),
                    "--resolution 4", "must be >= 8")
    _one_error_line(_run("trainer", "--arch", str(cand), "--width_mult", "0"),
                    "--width_mult 0", "must be > 0")
    cand.write_text(json.dumps(dict(chain().to_dict(), recipe={"learning_rate": -1})))
    _one_error_line(_run("trainer", "--arch", str(cand)), "cand.json", "learning_rate")
    cand.write_text(json.dumps({"arch": dict(chain().to_dict(), recipe={"size": 2})}))
    _one_error_line(_run("trainer", "--arch", str(cand)), "unknown recipe decision 'size'")


@needs_fmnist
def test_cli_trains_the_recipe_and_checks_the_table(tmp_path, scaled_table):
    path = str(tmp_path / "fm")
    data_lib.build_dataset("fashion_mnist", FMNIST, path, images_per_class=10,
                           test_per_class=3, log=lambda _: None)
    best = tmp_path / "best.json"   # a record, as a recipe search writes best.json
    best.write_text(json.dumps({"arch": dict(chain().to_dict(), recipe={
        "width_mult": 0.5, "depth": 2, "resolution": 16, "optimizer": "adam",
        "learning_rate": 0.01})}))
    sizes = ["--width", "4", "--num_stages", "2", "--num_cells", "1", "--ratio", "2",
             "--latency_repeats", "2", "--data_path", path]
    _one_error_line(_run("trainer", "--arch", str(best), "--resolution", "29", *sizes),
                    "resolution 29 is not usable with 28x28 images")
    _one_error_line(_run("trainer", "--arch", str(best), "--latency_table", scaled_table.path,
                         *sizes), "SCALED.json has no entries for the scale width 2, 2 cells "
                    "per stage, input 1x16x16")
    proc = _run("trainer", "--arch", str(best), "--epochs", "1", "--depth", "1", *sizes)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert ("Recipe: width_mult=0.5, depth=1, resolution=16, learning_rate=0.01, "
            "optimizer=adam") in proc.stdout
    assert "input          1 x  16 x 16" in proc.stdout
    scaled = Recipe.from_dict({"width_mult": 0.5, "depth": 1, "resolution": 16}).apply(
        dataclasses.replace(TINY, num_stages=2))
    params = metrics.count(chain(), scaled, (1, 28, 28), 10)["params"]
    row = [line for line in proc.stdout.splitlines() if line.startswith("params ")]
    assert len(row) == 1 and " %s (" % format(params, ",") in row[0]
    for row in ("val accuracy", "test accuracy", "latency", "peak memory"):
        assert row in proc.stdout, row
