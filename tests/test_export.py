"""Tests of the deployment export: ONNX (paddle2onnx + onnxruntime) and the standalone model.py."""
import os
import subprocess
import sys

import numpy as np
import pytest

from autodl_design.backend import paddle
from autodl_design.arch import Architecture, Cell
from autodl_design.config import TrainerConfig
from autodl_design.ops import OPS
from trainer import deploy, onnx_export, train
from trainer.data import Dataset

pytestmark = pytest.mark.filterwarnings("ignore:When training, we now always track")

TINY = TrainerConfig(width=4, num_stages=2, num_cells=1, early_stop=1, train_batch_size=32,
                     latency_repeats=2)
# node 0 and 3 read the cell input (stride 2 in the reduction cell), node 2 adds
# nodes 0 and 1, nodes 2 and 3 are concatenated.
MATRIX = [[0, 1, 1, 0], [0, 0, 1, 0], [0, 0, 0, 0], [0, 0, 0, 0]]


def random_data(n=48, shape=(1, 9, 9), classes=3, seed=0) -> Dataset:
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((3 * n,) + shape).astype(np.float32)
    y = rng.integers(0, classes, 3 * n).astype(np.int64)
    return Dataset(x[:n], y[:n], x[n:2 * n], y[n:2 * n], x[2 * n:], y[2 * n:],
                   [str(i) for i in range(classes)], shape, classes, augment=False, manifest={})


def one_op_arch(op: str) -> Architecture:
    return Architecture(Cell([op] * 4, MATRIX), Cell([op] * 4, MATRIX))


def trained(arch, data):
    result, model = train.fit(arch, TINY, data, seed=0)
    assert result["status"] == "ok", result["reason"]
    return model


@pytest.mark.parametrize("op", list(OPS))
def test_onnx_round_trip_of_every_op(op, tmp_path):
    data = random_data()
    model = trained(one_op_arch(op), data)
    folder = tmp_path / "export"
    result = deploy.export_all(model, one_op_arch(op), TINY, data, str(folder))
    assert result.onnx_error == ""
    assert result.onnx_images == len(data.test_images)
    assert result.onnx_diff <= onnx_export.CHECK_TOLERANCE
    # independently of the export's own check: onnxruntime's logits are Paddle's
    got = onnx_export.predict(onnx_export.session(str(folder / "model.onnx")), data.test_images)
    expected = train.predict(model, data.test_images)
    assert got.shape == expected.shape == (len(data.test_images), 3)
    np.testing.assert_allclose(got, expected, atol=1e-4, rtol=0)
    assert np.array_equal(np.argmax(got, 1), np.argmax(expected, 1))
    names = [name for name, _ in result.files]
    for name in ("model.onnx", "model.json", "model.pdiparams", "model.pdparams", "model.py",
                 "arch.json", "export.json"):
        assert name in names, name


def test_model_py_runs_without_the_project(tmp_path):
    """model.py in a fresh process whose path holds no autodl-design gives the same logits."""
    arch = Architecture(Cell(list(OPS)[:5] + ["conv_3x3"], [[0, 1, 1, 0, 0, 0]] + [[0] * 6] * 5),
                        Cell(list(OPS)[5:] + ["conv_1x1"], [[0, 1, 0, 0, 1, 0]] + [[0] * 6] * 5))
    data = random_data(shape=(1, 10, 10))
    model = trained(arch, data)
    folder = tmp_path / "export"
    deploy.export_all(model, arch, TINY, data, str(folder))
    np.save(folder / "x.npy", data.test_images)
    code = ("import numpy, paddle, model\n"
            "try:\n    import autodl_design\nexcept ImportError:\n    pass\n"
            "else:\n    raise SystemExit('the project is importable')\n"
            "net = model.load()\n"
            "x = paddle.to_tensor(numpy.load('x.npy'))\n"
            "numpy.save('y.npy', net(x).numpy())\n")
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    proc = subprocess.run([sys.executable, "-c", code], cwd=str(folder), env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    got = np.load(folder / "y.npy")
    np.testing.assert_allclose(got, train.predict(model, data.test_images), atol=1e-5, rtol=0)
    source = (folder / "model.py").read_text()
    imports = {line.split()[1] for line in source.splitlines()
               if line.startswith(("import ", "from "))}
    assert imports == {"os", "paddle"}


class Lgamma(paddle.nn.Layer):
    def forward(self, x):
        return paddle.lgamma(x)


def test_unconvertible_op_is_named(tmp_path):
    """paddle2onnx 2.1.0 has no converter for lgamma: the real converter fails, the op is named."""
    prefix = str(tmp_path / "model")
    paddle.jit.save(Lgamma(), prefix,
                    input_spec=[paddle.static.InputSpec([None, 4], "float32", "x")])
    assert "lgamma" in onnx_export.program_ops(prefix + ".json")
    with pytest.raises(onnx_export.ConversionError, match=r"cannot convert op lgamma$"):
        onnx_export.convert(prefix, str(tmp_path / "model.onnx"))
    assert not os.path.exists(tmp_path / "model.onnx")


def test_failed_conversion_keeps_the_paddle_export(tmp_path, monkeypatch):
    """A converter that aborts as paddle2onnx does on an unsupported op: the rest stands."""
    monkeypatch.setattr(onnx_export, "_CHILD",
                        "import os, sys\nprint('[ERROR][Paddle2ONNX] Due to the unsupported "
                        "operators, the conversion is aborted.', flush=True)\nos.abort()\n")
    monkeypatch.setattr(onnx_export, "unsupported_ops", lambda ops: ["lgamma"])
    data = random_data()
    arch = one_op_arch("conv_3x3")
    model = trained(arch, data)
    folder = tmp_path / "export"
    result = deploy.export_all(model, arch, TINY, data, str(folder))
    assert result.onnx_error == "paddle2onnx cannot convert op lgamma"
    assert result.onnx_diff is None
    assert sorted(os.listdir(folder)) == ["arch.json", "export.json", "model.json",
                                          "model.pdiparams", "model.pdparams", "model.py"]
    lines = deploy.describe(result)
    assert "no ONNX model: paddle2onnx cannot convert op lgamma; the Paddle export stands" in lines


def test_supported_ops_of_our_network_are_recognised(tmp_path):
    """The op-naming table knows every op our networks use (no false 'cannot convert')."""
    data = random_data()
    arch = Architecture(Cell(list(OPS), np.eye(10, k=1, dtype=int)),
                        Cell(list(OPS), np.zeros((10, 10), int)))
    model = trained(arch, data)
    prefix = str(tmp_path / "model")
    model.eval()
    paddle.jit.save(model, prefix,
                    input_spec=[paddle.static.InputSpec([None, 1, 9, 9], "float32", "image")])
    ops = onnx_export.program_ops(prefix + ".json")
    assert {"conv2d", "pool2d", "batch_norm_", "relu", "add", "concat", "matmul"} <= set(ops)
    assert onnx_export.unsupported_ops(ops) == []
