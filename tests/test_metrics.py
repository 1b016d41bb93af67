"""Tests of trainer.metrics: hand-counted params/FLOPs, latency and memory measurement."""
import numpy as np
import pytest

from autodl_design.backend import paddle
from autodl_design.arch import Architecture, Cell
from autodl_design.config import TrainerConfig
from trainer import metrics
from trainer.network import build_network

pytestmark = pytest.mark.filterwarnings("ignore:When training, we now always track")


def _model_params(model):
    return sum(int(np.prod(p.shape)) for p in model.parameters())


def test_hand_count_single_normal_cell():
    # width 4, 1 stage of 1 normal cell, ratio 2 (nodes at 2 channels), 1x5x5 input, 3 classes.
    # Cell: node 0 = conv_3x3 (source) -> node 1 = maxpool_3x3 (the only free end).
    cell = Cell(["conv_3x3", "maxpool_3x3"], [[0, 1], [0, 0]])
    arch = Architecture(cell, cell)
    cfg = TrainerConfig(width=4, num_stages=1, num_cells=1, ratio=2)
    # params (BN: 4 per channel = scale, shift, running mean, running variance):
    #   stem 3x3 1->4            36
    #   node 0: BN(4)            16    1x1 4->2   8    BN(2)  8    conv 3x3 2->2  36
    #   node 1: BN(2)             8    maxpool    0
    #   project 1x1 (1 node x 2) -> 4   8
    #   head BN(4)               16    FC 4*3+3  15
    params = 36 + (16 + 8 + 8 + 36) + 8 + 8 + 16 + 15
    trainable = 36 + (8 + 8 + 4 + 36) + 4 + 8 + 8 + 15       # BN: 2 per channel
    # FLOPs (multiply-adds), all at 5x5 = 25 positions:
    #   stem 25*4*1*9 = 900; 1x1 25*2*4 = 200; conv 25*2*2*9 = 900; project 25*4*2 = 200; FC 12
    flops = 900 + 200 + 900 + 200 + 12
    assert (params, trainable, flops) == (151, 127, 2212)
    counts = metrics.count(arch, cfg, (1, 5, 5), 3)
    assert (counts["params"], counts["trainable_params"], counts["flops"]) == (
        params, trainable, flops)
    model = build_network(arch, cfg, (1, 5, 5), 3)
    assert _model_params(model) == params
    assert metrics.flops_by_hooks(model, (1, 5, 5)) == flops


def test_hand_count_with_reduction_cell_sep_and_pool():
    # width 4, 2 stages x 1 cell (normal then reduction), ratio 4, 1x7x7 input, 10 classes.
    normal = Cell(["conv_1x1", "conv_1x1"], [[0, 0], [0, 0]])          # two free sources
    reduction = Cell(["conv_1x3_3x1", "avgpool_3x3"], [[0, 1], [0, 0]])  # sep -> avgpool
    arch = Architecture(normal, reduction)
    cfg = TrainerConfig(width=4, num_stages=2, num_cells=1, ratio=4)
    # stem 3x3 1->4 at 7x7: params 36, flops 49*4*9 = 1764
    # normal cell 4->4, nodes at 1 channel; per source node:
    #   BN(4) 16 (8 trainable), 1x1 4->1: 4 params, 49*4 = 196 flops, BN(1) 4 (2),
    #   conv_1x1 1->1: 1 param, 49 flops
    #   project 2 nodes x 1 -> 4: 8 params, 49*8 = 392 flops
    # reduction cell 4->8 at stride 2, nodes at 2 channels:
    #   node 0: BN(4) 16 (8), 1x1 4->2 at 7x7: 8 params, 49*8 = 392 flops, BN(2) 8 (4),
    #           1x3 stride (1,2) -> 7x4: 12 params, 28*2*2*3 = 336 flops,
    #           3x1 stride (2,1) -> 4x4: 12 params, 16*2*2*3 = 192 flops
    #   node 1: BN(2) 8 (4), avgpool (stride 1, 4x4)
    #   project 1 node x 2 -> 8 at 4x4: 16 params, 16*16 = 256 flops
    # head: BN(8) 32 (16), FC 8*10+10 = 90 params, 80 flops
    params = 36 + 2 * (16 + 4 + 4 + 1) + 8 + (16 + 8 + 8 + 12 + 12) + 8 + 16 + 32 + 90
    trainable = 36 + 2 * (8 + 4 + 2 + 1) + 8 + (8 + 8 + 4 + 12 + 12) + 4 + 16 + 16 + 90
    flops = 1764 + 2 * (196 + 49) + 392 + (392 + 336 + 192) + 256 + 80
    assert (params, trainable, flops) == (296, 244, 3902)
    counts = metrics.count(arch, cfg, (1, 7, 7), 10)
    assert (counts["params"], counts["trainable_params"], counts["flops"]) == (
        params, trainable, flops)
    model = build_network(arch, cfg, (1, 7, 7), 10)
    assert _model_params(model) == params
    assert metrics.flops_by_hooks(model, (1, 7, 7)) == flops


def test_flops_scale_with_image_area_and_width():
    arch = Architecture.load("examples/baseline.json")
    small = metrics.count(arch, TrainerConfig(width=8, num_stages=2, num_cells=1), (1, 14, 14), 10)
    big = metrics.count(arch, TrainerConfig(width=8, num_stages=2, num_cells=1), (1, 28, 28), 10)
    wide = metrics.count(arch, TrainerConfig(width=16, num_stages=2, num_cells=1), (1, 28, 28), 10)
    assert small["params"] == big["params"]
    # everything but the 10*C classifier scales with the area (14x14 -> 28x28: x4)
    assert abs((big["flops"] - 160) / (small["flops"] - 160) - 4.0) < 1e-9
    assert 3.0 < wide["flops"] / big["flops"] < 4.5


def test_measure_hardware_is_cheap_sane_and_leaves_rng_alone():
    arch = Architecture.load("examples/baseline.json")
    cfg = TrainerConfig(width=8, num_stages=2, num_cells=1, latency_repeats=5)
    paddle.seed(123)
    expected = paddle.rand([4]).numpy()
    paddle.seed(123)
    hw = metrics.measure_hardware(arch, cfg, (1, 28, 28), 10)
    np.testing.assert_array_equal(paddle.rand([4]).numpy(), expected)
    assert set(hw) >= {"params", "flops", "latency_ms", "latency_p90_ms", "memory_mb",
                       "memory_source"}
    counts = metrics.count(arch, cfg, (1, 28, 28), 10)
    assert hw["params"] == counts["params"] and hw["flops"] == counts["flops"]
    assert 0 < hw["latency_ms"] <= hw["latency_p90_ms"] < 1000
    assert hw["memory_source"] == "paddle_host_allocator"
    # parameters alone are a lower bound; the activations of batch 1 are small
    assert hw["params"] * 4 / metrics.MIB < hw["memory_mb"] < 10 * metrics.memory_estimate_mb(
        counts, 1)


def test_measured_memory_grows_with_batch_and_is_repeatable():
    arch = Architecture.load("examples/baseline.json")
    cfg = TrainerConfig(width=8, num_stages=2, num_cells=1, latency_repeats=2)
    one = metrics.measure_hardware(arch, cfg, (1, 28, 28), 10)["memory_mb"]
    again = metrics.measure_hardware(arch, cfg, (1, 28, 28), 10)["memory_mb"]
    cfg.latency_batch = 16
    sixteen = metrics.measure_hardware(arch, cfg, (1, 28, 28), 10)["memory_mb"]
    assert abs(one - again) < 0.05 * one
    counts = metrics.count(arch, cfg, (1, 28, 28), 10)
    # 15 more images need at least 15 inputs and at most 15 x the cell estimate more
    assert sixteen - one > 15 * 28 * 28 * 4 / metrics.MIB
    assert sixteen < 2 * metrics.memory_estimate_mb(counts, 16)


def test_latency_percentiles():
    model = build_network(Architecture.load("examples/chain.json"),
                          TrainerConfig(width=4, num_stages=1, num_cells=1), (1, 8, 8), 2)
    median, p90 = metrics.measure_latency(model, (1, 8, 8), batch=2, repeats=7, warmup=1)
    assert 0 < median <= p90
