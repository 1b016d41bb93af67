"""Tests of trainer.train and python -m trainer: real Fashion-MNIST, seeds, NaN, export."""
import dataclasses
import gzip
import os
import subprocess
import sys
import types

import numpy as np
import pytest

from autodl_design.backend import paddle
from trainer.data import Dataset
from autodl_design.arch import Architecture
from autodl_design.config import TrainerConfig
from trainer import metrics, train

pytestmark = pytest.mark.filterwarnings("ignore:When training, we now always track")

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FMNIST = "/usr/share/datasets/fashion-mnist"
needs_fmnist = pytest.mark.skipif(
    not os.path.isfile(os.path.join(FMNIST, "train-images-idx3-ubyte.gz")),
    reason="real Fashion-MNIST is not installed (apt-get install dataset-fashion-mnist)")
BASELINE = os.path.join(ROOT, "examples", "baseline.json")
TINY = TrainerConfig(width=4, num_stages=2, num_cells=1, early_stop=1, train_batch_size=32,
                     latency_repeats=2)


def Data(*fields, augment: bool = False) -> Dataset:
    """A ``trainer.data.Dataset`` built in memory (no manifest on disk)."""
    return Dataset(*fields, augment=augment, manifest={})


def _idx(name: str) -> np.ndarray:
    with gzip.open(os.path.join(FMNIST, name + ".gz"), "rb") as f:
        raw = f.read()
    ndim = raw[3]
    dims = np.frombuffer(raw, ">u4", ndim, 4).astype(int)
    return np.frombuffer(raw, np.uint8, int(np.prod(dims)), 4 + 4 * ndim).reshape(dims)


def fashion_mnist(n_train: int, n_val: int, n_test: int) -> Data:
    """Real Fashion-MNIST: the first n_train + n_val training images, the first n_test test ones."""
    images, labels = _idx("train-images-idx3-ubyte"), _idx("train-labels-idx1-ubyte")
    t_images, t_labels = _idx("t10k-images-idx3-ubyte"), _idx("t10k-labels-idx1-ubyte")

    def norm(x):
        return ((x.astype(np.float32) / 255.0 - 0.286) / 0.353)[:, None]

    a, b = n_train, n_train + n_val
    return Data(norm(images[:a]), labels[:a].astype(np.int64), norm(images[a:b]),
                labels[a:b].astype(np.int64), norm(t_images[:n_test]),
                t_labels[:n_test].astype(np.int64), [str(i) for i in range(10)], (1, 28, 28), 10)


def random_data(n=64, shape=(1, 9, 9), classes=3, seed=0) -> Data:
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((3 * n,) + shape).astype(np.float32)
    y = rng.integers(0, classes, 3 * n).astype(np.int64)
    return Data(x[:n], y[:n], x[n:2 * n], y[n:2 * n], x[2 * n:], y[2 * n:],
                [str(i) for i in range(classes)], shape, classes)


@pytest.fixture(scope="module")
def arch():
    return Architecture.load(BASELINE)


def test_cosine_schedule_ends():
    assert train.cosine_lr(0, 100, 0.1, 1e-4) == pytest.approx(0.1)
    assert train.cosine_lr(50, 100, 0.1, 1e-4) == pytest.approx((0.1 + 1e-4) / 2)
    assert train.cosine_lr(99, 100, 0.1, 1e-4) < 0.001


@needs_fmnist
def test_short_run_on_real_fashion_mnist_beats_chance(arch):
    data = fashion_mnist(1000, 300, 300)
    # 3 epochs of 32 steps: 50-60% val accuracy over seeds 0-3 (chance: 10%)
    cfg = dataclasses.replace(TINY, width=8, early_stop=3)
    result = train.train_and_evaluate(arch, cfg, data, seed=0)
    assert result["status"] == "ok", result["reason"]
    assert result["epochs"] == 3 and not result["stopped_early"]
    assert result["val_accuracy"] >= 0.40, result
    assert result["test_accuracy"] >= 0.40, result
    assert result["train_loss"] < 2.0
    assert result["images_per_second"] > 0 and result["seconds"] > 0


def test_same_seed_same_result_other_seed_differs(arch):
    data = random_data()
    a = train.train_and_evaluate(arch, TINY, data, seed=3)
    b = train.train_and_evaluate(arch, TINY, data, seed=3)
    c = train.train_and_evaluate(arch, TINY, data, seed=4)
    d = train.train_and_evaluate(arch, TINY, data, seed=5)
    assert a["status"] == "ok"
    assert (a["seed"], c["seed"], d["seed"]) == (3, 4, 5)    # the explicit seed, as given
    assert (a["train_loss"], a["val_accuracy"], a["test_accuracy"]) == (
        b["train_loss"], b["val_accuracy"], b["test_accuracy"])
    assert len({a["seed"], c["seed"], d["seed"]}) == 3
    assert a["train_loss"] != c["train_loss"] and a["train_loss"] != d["train_loss"]


def test_the_config_has_no_say_in_the_seed(arch):
    # the trainer reads no seed field: a config without one gives the same numbers
    no_seed = types.SimpleNamespace(**{k: v for k, v in dataclasses.asdict(TINY).items()
                                       if k != "seed"})
    data = random_data()
    a = train.train_and_evaluate(arch, TINY, data, seed=3)
    b = train.train_and_evaluate(arch, no_seed, data, seed=3)
    assert (a["status"], a["train_loss"], a["val_accuracy"]) == (
        b["status"], b["train_loss"], b["val_accuracy"])
    hw = metrics.measure_hardware(arch, no_seed, data.image_shape, data.num_classes, seed=3)
    assert hw["params"] == metrics.count(arch, TINY, data.image_shape, data.num_classes)["params"]


def test_nan_in_data_fails_without_raising(arch):
    data = random_data()
    data.train_images[3, 0, 4, 4] = np.nan
    result = train.train_and_evaluate(arch, TINY, data, seed=0)
    assert result["status"] == "failed"
    assert "nan" in result["reason"].lower()
    assert result["val_accuracy"] == 0.0


def test_huge_learning_rate_fails_as_diverged(arch):
    cfg = dataclasses.replace(TINY, lr_max=1e12, lr_min=1e12, early_stop=2)
    result = train.train_and_evaluate(arch, cfg, random_data(), seed=0)
    assert result["status"] == "failed"
    assert "nan" in result["reason"].lower() or "inf" in result["reason"].lower()


def test_training_error_is_reported_not_raised(arch):
    data = random_data()
    data.train_labels = data.train_labels + 10      # labels outside the 3 classes
    result = train.train_and_evaluate(arch, TINY, data, seed=0)
    assert result["status"] == "failed" and result["reason"].startswith("IndexError")
    assert "\n" not in result["reason"]
    bad = random_data()
    bad.train_images = bad.train_images[:, 0]        # 3-D images
    result = train.train_and_evaluate(arch, TINY, bad, seed=0)
    assert result["status"] == "failed" and "image_shape" in result["reason"]


class _Raising(paddle.nn.Layer):
    """A candidate network whose forward pass raises ``error()`` (or a real Paddle error)."""

    def __init__(self, net, error=None):
        super().__init__()
        self.net, self.error, self.num_classes = net, error, net.num_classes

    def forward(self, x):
        if self.error is not None:
            raise self.error()
        return paddle.matmul(self.net(x), paddle.ones([7, 7]))   # [N, 3] x [7, 7]: invalid


def _with_network(monkeypatch, error=None):
    build = train.build_network
    monkeypatch.setattr(train, "build_network",
                        lambda *args: _Raising(build(*args), error))


def test_paddle_error_in_the_candidates_forward_is_a_failed_record(arch, monkeypatch):
    _with_network(monkeypatch)
    result = train.train_and_evaluate(arch, TINY, random_data(), seed=0)
    assert result["status"] == "failed" and result["val_accuracy"] == 0.0
    assert result["reason"].startswith("ValueError") and "\n" not in result["reason"]


def test_out_of_memory_is_a_failed_record(arch, monkeypatch):
    _with_network(monkeypatch, lambda: MemoryError("ResourceExhaustedError: out of memory"))
    result = train.train_and_evaluate(arch, TINY, random_data(), seed=0)
    assert result["status"] == "failed"
    assert result["reason"] == "MemoryError: ResourceExhaustedError: out of memory"


def test_bugs_around_the_candidate_raise(arch, monkeypatch):
    # a bug in the candidate's forward code that no Paddle op raises (TypeError, KeyError):
    _with_network(monkeypatch, lambda: TypeError("our bug"))
    with pytest.raises(TypeError, match="our bug"):
        train.train_and_evaluate(arch, TINY, random_data(), seed=0)
    monkeypatch.undo()

    # the same type as a Paddle error, raised by our code outside the candidate's ops
    def broken_schedule(*args):
        raise ValueError("schedule bug")

    monkeypatch.setattr(train, "cosine_lr", broken_schedule)
    with pytest.raises(ValueError, match="schedule bug"):
        train.train_and_evaluate(arch, TINY, random_data(), seed=0)
    monkeypatch.undo()

    def out_of_memory_in_callback(epoch, val):
        raise MemoryError("caller's")

    with pytest.raises(MemoryError, match="caller's"):
        train.train_and_evaluate(arch, TINY, random_data(), seed=0,
                                 on_epoch=out_of_memory_in_callback)
    empty = random_data()
    empty.train_images, empty.train_labels = empty.train_images[:0], empty.train_labels[:0]
    with pytest.raises(ValueError, match="training split is empty"):
        train.train_and_evaluate(arch, TINY, empty, seed=0)


def test_on_epoch_callback_stops_early(arch):
    calls = []

    def on_epoch(epoch, val):
        calls.append((epoch, val))
        return epoch < 2

    cfg = dataclasses.replace(TINY, early_stop=4)
    result = train.train_and_evaluate(arch, cfg, random_data(), seed=0, on_epoch=on_epoch)
    assert result["status"] == "ok" and result["stopped_early"] is True
    assert result["epochs"] == 2 and [e for e, _ in calls] == [1, 2]
    assert result["val_history"] == [v for _, v in calls]
    assert all(0.0 <= v <= 1.0 for _, v in calls)

    def broken(epoch, val):
        raise KeyError("caller bug")

    with pytest.raises(KeyError, match="caller bug"):
        train.train_and_evaluate(arch, cfg, random_data(), seed=0, on_epoch=broken)


def test_export_round_trip(arch, tmp_path):
    data = random_data(shape=(1, 8, 8))
    result, model = train.fit(arch, TINY, data, seed=0)
    assert result["status"] == "ok"
    folder = tmp_path / "exported"
    diff = train.export_model(model, data.image_shape, str(folder), arch, TINY,
                              data.class_names, data.test_images)
    assert diff < 1e-4
    assert sorted(os.listdir(tmp_path)) == ["exported"]  # no temp folder left
    loaded = paddle.jit.load(str(folder / train.EXPORT_PREFIX))
    loaded.eval()
    got = loaded(paddle.to_tensor(data.val_images)).numpy()
    np.testing.assert_allclose(got, train.predict(model, data.val_images), rtol=1e-4, atol=1e-5)
    assert Architecture.load(str(folder / "arch.json")) == arch
    with pytest.raises(OSError):      # a non-empty target is never overwritten
        train.export_model(model, data.image_shape, str(folder), arch, TINY, data.class_names,
                           data.test_images)


def _cli(*args):
    env = dict(os.environ, PYTHONPATH=ROOT)
    return subprocess.run([sys.executable, "-m", "trainer"] + list(args), cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=300)


def test_cli_bad_arch_file_is_one_line_exit_2(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text('{"normal": {"ops": ["conv_9x9", "conv_3x3"], "matrix": [[0, 1], [0, 0]]}}')
    proc = _cli("--arch", str(bad), "--data_path", str(tmp_path))
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:") and "bad.json" in lines[0]


@needs_fmnist
def test_cli_trains_prints_table_and_exports(tmp_path):
    from trainer import data as data_lib
    path = str(tmp_path / "fm")
    data_lib.build_dataset("fashion_mnist", FMNIST, path, images_per_class=20,
                           test_per_class=5, log=lambda _: None)
    out = tmp_path / "model"
    proc = _cli("--arch", BASELINE, "--data_path", path, "--epochs", "1", "--width", "4",
                "--latency_repeats", "2", "--export", str(out))
    assert proc.returncode == 0, proc.stderr[-2000:]
    for row in ("val accuracy", "test accuracy", "params", "FLOPs", "latency", "peak memory",
                "cell 1  reduction"):
        assert row in proc.stdout, row
    assert "paddle.jit.load reproduces the predictions" in proc.stdout
    assert os.path.isfile(out / "arch.json") and os.path.isfile(out / "model.pdiparams")
    # ONNX beside it, checked on the whole test split (10 classes x 5 images)
    assert "same top-1 on all 50 test images" in proc.stdout
    for name in ("model.onnx", "model.py", "model.pdparams"):
        assert os.path.isfile(out / name) and name in proc.stdout, name


def test_static_graph_gives_the_dygraph_numbers(arch):
    data = random_data()
    dygraph = train.train_and_evaluate(arch, TINY, data, seed=0)
    static = train.train_and_evaluate(arch, TINY, data, seed=0, static_graph=True)
    assert (dygraph["static_graph"], static["static_graph"]) == (False, True)
    assert static["status"] == "ok" and "static_graph_error" not in static
    assert static["train_loss"] == pytest.approx(dygraph["train_loss"], rel=1e-4)
    assert static["val_accuracy"] == dygraph["val_accuracy"]
