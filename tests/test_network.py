"""Tests of trainer.network and trainer.walk: every op in both cell kinds, random DAGs, shapes."""
import numpy as np
import pytest

from autodl_design.backend import paddle
from autodl_design.arch import Architecture, Cell
from autodl_design.config import TrainerConfig
from autodl_design.ops import OP_NAMES, OPS
from autodl_design.spaces import CellSpace
from trainer import metrics, walk
from trainer.network import OP_BUILDERS, CellLayer, build_network, build_op, summary
from trainer.walk import cell_shape, cell_shapes

pytestmark = pytest.mark.filterwarnings("ignore:When training, we now always track")


def _chain(n):
    m = np.zeros((n, n), int)
    for i in range(n - 1):
        m[i, i + 1] = 1
    return m


def _random_cell(rng, n, density):
    m = np.triu((rng.random((n, n)) < density).astype(int), 1)
    return Cell([OP_NAMES[i] for i in rng.integers(0, len(OP_NAMES), n)], m)


def _backward_reaches_every_weight(layer, out):
    (out * out).mean().backward()
    missing = [name for name, p in layer.named_parameters()
               if not p.stop_gradient and p.grad is None]
    return missing


def _assert_count_is_paddles(model, counts, shape):
    """metrics.count's params, trainable params and FLOPs equal those of the real layers."""
    assert counts["params"] == sum(int(np.prod(p.shape)) for p in model.parameters())
    assert counts["trainable_params"] == sum(int(np.prod(p.shape))
                                             for p in model.parameters() if p.trainable)
    assert counts["flops"] == metrics.flops_by_hooks(model, shape)


def test_every_op_kind_has_a_builder():
    assert {spec.kind for spec in OPS.values()} <= set(OP_BUILDERS)
    with pytest.raises(ValueError, match="unknown op"):
        build_op("conv_7x7", 4, 1)


@pytest.mark.parametrize("op", OP_NAMES)
@pytest.mark.parametrize("reduction", [False, True])
def test_every_op_in_both_cell_kinds(op, reduction):
    # node 0 (source) -> node 2; node 1 (source, free end); node 2 (free end):
    # the op runs once strided (sources) and once at stride 1 (node 2).
    cell = Cell([op, op, op], [[0, 0, 1], [0, 0, 0], [0, 0, 0]])
    cin, cout = 8, 16 if reduction else 8
    layer = CellLayer(cell, cell_shape(cin, cout, reduction, ratio=4))
    for size in (9, 28, 7):
        out = layer(paddle.randn([2, cin, size, size]))
        side = (size + 1) // 2 if reduction else size
        assert out.shape == [2, cout, side, side], (op, reduction, size)
    # a non-square input keeps both sides consistent too
    out = layer(paddle.randn([2, cin, 9, 6]))
    assert out.shape == ([2, cout, 5, 3] if reduction else [2, cout, 9, 6])
    assert _backward_reaches_every_weight(layer, out) == []
    # sources compress to the cell's node channels (doubled in a reduction cell)
    assert layer.node_channels == cout // 4


def test_pooling_op_keeps_channels_and_halves_odd_sizes():
    layer = build_op("maxpool_5x5", 3, 2)
    assert layer(paddle.randn([1, 3, 7, 8])).shape == [1, 3, 4, 4]
    layer = build_op("avgpool_3x3", 3, 1)
    x = paddle.ones([1, 3, 5, 5])
    # exclusive average: padding is not counted, so a constant stays constant
    np.testing.assert_allclose(layer(x).numpy(), 1.0, rtol=1e-6)


def test_sep_is_1xk_then_kx1():
    layer = build_op("conv_1x5_5x1", 4, 2)
    shapes = [list(sub.weight.shape) for sub in layer]
    assert shapes == [[4, 4, 1, 5], [4, 4, 5, 1]]
    assert [sub._stride for sub in layer] == [[1, 2], [2, 1]]


def test_cell_shapes_put_reduction_first_in_later_stages():
    shapes = cell_shapes(TrainerConfig(width=8, num_stages=3, num_cells=2))
    assert [(s.reduction, s.cin, s.cout) for s in shapes] == [
        (False, 8, 8), (False, 8, 8), (True, 8, 16), (False, 16, 16), (True, 16, 32),
        (False, 32, 32)]
    assert [s.stage for s in shapes] == [0, 0, 1, 1, 2, 2]
    sized = cell_shapes(TrainerConfig(width=8, num_stages=3, num_cells=2), (1, 7, 9))
    assert [s.out_hw for s in sized] == [(7, 9), (7, 9), (4, 5), (4, 5), (2, 3), (2, 3)]


def test_special_dags_build_and_train_a_step():
    n = 6
    no_edges = Cell(["conv_3x3", "maxpool_3x3", "conv_1x3_3x1", "avgpool_5x5", "dilated_3x3",
                     "conv_1x1"], np.zeros((n, n), int))
    chain = Cell(["maxpool_5x5", "conv_3x3", "avgpool_3x3", "conv_1x5_5x1", "conv_5x5",
                  "conv_1x1"], _chain(n))
    cfg = TrainerConfig(width=4, num_stages=2, num_cells=1)
    for arch in (Architecture(no_edges, chain), Architecture(chain, no_edges)):
        model = build_network(arch, cfg, (1, 9, 9), 10)
        assert len(model.cells[0].outputs) in (1, n)
        logits = model(paddle.randn([3, 1, 9, 9]))
        assert logits.shape == [3, 10]
        assert _backward_reaches_every_weight(model, logits) == []


def test_random_dags_shapes_params_and_flops():
    rng = np.random.default_rng(7)
    cfg = TrainerConfig(width=4, num_stages=3, num_cells=1, ratio=2)
    for k in range(8):
        n = int(rng.integers(2, 11))
        arch = Architecture(_random_cell(rng, n, rng.random()), _random_cell(rng, n, rng.random()))
        shape = (3, 28, 28) if k % 2 else (1, 7, 7)
        model = build_network(arch, cfg, shape, 5)
        logits = model(paddle.randn([2] + list(shape)))
        assert logits.shape == [2, 5]
        _assert_count_is_paddles(model, metrics.count(arch, cfg, shape, 5), shape)


def test_network_rejects_bad_sizes():
    arch = Architecture.load("examples/baseline.json")
    with pytest.raises(ValueError, match="width"):
        build_network(arch, TrainerConfig(width=0), (1, 28, 28), 10)
    with pytest.raises(ValueError, match="image_shape"):
        build_network(arch, TrainerConfig(width=4), (28, 28), 10)


def test_dropout_only_in_training():
    arch = Architecture.load("examples/chain.json")
    model = build_network(arch, TrainerConfig(width=4, num_stages=1, num_cells=1, dropout=0.5),
                          (1, 8, 8), 3)
    x = paddle.randn([4, 1, 8, 8])
    model.eval()
    np.testing.assert_array_equal(model(x).numpy(), model(x).numpy())
    assert model.dropout is not None and model.dropout.p == 0.5


def _forward_shapes(model, shape):
    """(layer kind, input shape, output shape) of every layer of a walk step, in call order."""
    seen, hooks = [], []

    def hook(kind):
        def record(layer, inputs, output):
            seen.append((kind, list(inputs[0].shape), list(output.shape)))
        return record

    named = [(model.stem, walk.STEM), (model.head_bn, walk.HEAD), (model.fc, "fc")]
    for cell in model.cells:
        named += [(cell.project, walk.PROJECT)]
        named += [(pre, walk.COMPRESS if not preds else walk.BNRELU)
                  for pre, preds in zip(cell.pre, cell.preds)]
        named += [(op, walk.OP) for op in cell.ops]
    hooks = [layer.register_forward_post_hook(hook(kind)) for layer, kind in named]
    model.eval()
    with paddle.no_grad():
        model(paddle.randn([2] + list(shape)))
    for h in hooks:
        h.remove()
    return seen


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_walk_matches_a_real_forward_pass(seed):
    rng = np.random.default_rng(seed)
    cfg = TrainerConfig(width=4 + seed, num_stages=3, num_cells=1 + seed % 2, ratio=2 + seed)
    shape = [(1, 9, 9), (3, 10, 7), (2, 5, 12)][seed]
    arch = CellSpace(int(rng.integers(2, 7)), OP_NAMES).sample(rng)
    expected = []
    for step in walk.walk(arch, cfg, shape, 5):
        if step.kind == walk.ADD:
            continue                    # a sum, no layer: its size is the next BN-ReLU's input
        out = [2, step.cout] + list(step.out_hw)
        if step.kind == walk.HEAD:
            expected += [(walk.HEAD, [2, step.cin] + list(step.in_hw), [2, step.cin] +
                          list(step.in_hw)), ("fc", [2, step.cin], [2, step.cout])]
        else:
            expected.append((step.kind, [2, step.cin] + list(step.in_hw), out))
    assert _forward_shapes(build_network(arch, cfg, shape, 5), shape) == expected


def test_count_equals_paddle_for_random_space_samples():
    rng = np.random.default_rng(11)
    for k in range(6):
        space = CellSpace(int(rng.integers(2, 9)), OP_NAMES[k % 3:])
        arch = space.sample(rng)
        cfg = TrainerConfig(width=3 + k, num_stages=1 + k % 3, num_cells=1 + k % 2,
                            ratio=1 + k % 4, dropout=0.1 * (k % 2))
        shape = [(1, 8, 8), (3, 11, 6)][k % 2]
        model = build_network(arch, cfg, shape, 4)
        _assert_count_is_paddles(model, metrics.count(arch, cfg, shape, 4), shape)


def test_summary_lists_every_cell():
    arch = Architecture.load("examples/baseline.json")
    text = summary(arch, TrainerConfig(width=8, num_stages=2, num_cells=1), (1, 28, 28), 10)
    assert text.splitlines()[:4] == [
        "input          1 x  28 x 28 ",
        "stem 3x3       8 x  28 x 28 ",
        "cell 0  normal      8 x  28 x 28  (nodes at 2 channels, 6 concatenated)",
        "cell 1  reduction  16 x  14 x 14  (nodes at 4 channels, 6 concatenated)"]
