"""Hardware metrics of an architecture: parameters, FLOPs, latency and peak memory.

Cheap metrics first: ``count`` is analytic (no network built, no training) and exact
for the network ``trainer.network`` builds; ``measure_hardware`` adds the
measured latency and peak inference memory in about a second, so the search's
critic can reject a candidate before training it.

Definitions (docs/trainer.md has the long form):

* ``params``: every number in ``model.parameters()``, i.e. conv and fully
  connected weights, the FC bias, and per BatchNorm channel its scale, shift
  and the two running statistics (4 per channel; the statistics are stored
  with the inference model). ``trainable_params`` leaves the statistics out.
* ``flops``: multiply-adds of one image's forward pass in the conv and fully
  connected layers (``H_out W_out C_out C_in kh kw`` per conv, ``in x out``
  per FC). BatchNorm (foldable into the conv at inference), ReLU, pooling,
  the node sums and the concatenation are not counted, so a pooling op costs
  0 FLOPs.
* ``latency_ms`` / ``latency_p90_ms``: median and 90th percentile wall time of
  one eval-mode forward pass (Paddle dygraph, no_grad) of a batch of
  ``latency_batch`` images on the current device, after warm-up.
* ``memory_mb``: peak memory (MiB) of one such forward pass: the allocator's
  peak during the pass minus what was allocated before the model was built,
  so parameters + input + activations + workspace. GPU: Paddle's CUDA
  allocator statistics (``memory_source`` 'paddle_gpu_allocator'); CPU:
  Paddle's host allocator statistics ('paddle_host_allocator'). If neither is
  available, an estimate ('estimate': parameter bytes + the largest sum of
  one cell's input, node outputs and output for the batch, float32).
"""
import gc
import time
from typing import Dict, Optional, Sequence, Tuple

import numpy as np

from autodl_design.arch import Architecture
from autodl_design.config import TrainerConfig
from autodl_design.ops import OPS
from trainer import walk

MIB = float(1 << 20)


class _Counter:
    """Accumulates params (total and trainable) and MACs."""

    def __init__(self):
        self.params = 0
        self.trainable = 0
        self.flops = 0

    def conv(self, cin: int, cout: int, kh: int, kw: int, h_out: int, w_out: int):
        self.params += cin * cout * kh * kw
        self.trainable += cin * cout * kh * kw
        self.flops += h_out * w_out * cout * cin * kh * kw

    def bn(self, channels: int):
        self.params += 4 * channels      # scale, shift, running mean, running variance
        self.trainable += 2 * channels

    def fc(self, fin: int, fout: int):
        self.params += fin * fout + fout
        self.trainable += fin * fout + fout
        self.flops += fin * fout

    def op(self, step: walk.Step):
        """Counts an op step (pools have neither parameters nor FLOPs)."""
        spec = OPS[step.op]
        kh, kw = spec.kernel
        n, (h, w), (ho, wo) = step.cin, step.in_hw, step.out_hw
        if spec.kind == "conv":
            self.conv(n, n, kh, kw, ho, wo)
        elif spec.kind == "sep":
            self.conv(n, n, 1, kw, h, wo)          # 1 x k, stride (1, s): h x wo
            self.conv(n, n, kh, 1, ho, wo)         # k x 1, stride (s, 1)
        elif spec.kind not in ("maxpool", "avgpool"):
            raise ValueError("op %r has kind %r, which metrics cannot count"
                             % (step.op, spec.kind))

    def step(self, step: walk.Step):
        """Counts the layers of one step of ``trainer.walk.walk``."""
        kind, (h, w) = step.kind, step.out_hw
        if kind == walk.STEM:
            self.conv(step.cin, step.cout, 3, 3, h, w)
        elif kind == walk.COMPRESS:
            self.bn(step.cin)
            self.conv(step.cin, step.cout, 1, 1, h, w)
            self.bn(step.cout)
        elif kind == walk.BNRELU:
            self.bn(step.cout)
        elif kind == walk.OP:
            self.op(step)
        elif kind == walk.PROJECT:
            self.conv(step.cin, step.cout, 1, 1, h, w)
        elif kind == walk.HEAD:
            self.bn(step.cin)
            self.fc(step.cin, step.cout)


def _elements(channels: int, hw: Tuple[int, int]) -> int:
    return channels * hw[0] * hw[1]


def count(arch: Architecture, config: TrainerConfig, image_shape: Sequence[int],
          num_classes: int) -> Dict[str, float]:
    """Exact parameter count and FLOPs of the network, without building it.

    Args:
      arch: the architecture.
      config: network sizes (width, num_stages, num_cells, ratio) and the
        input resolution (``trainer.walk.input_shape``).
      image_shape: (C, H, W) of one input image as made.
      num_classes: outputs of the classifier.

    Returns:
      dict with int ``params``, ``trainable_params``, ``flops`` (multiply-adds
      per image) and ``activation_elements`` (the largest, over cells, sum of
      a cell's input, node outputs and output, per image; used by the memory
      estimate).
    """
    k = _Counter()
    peak_act = act = 0
    cell = None
    for step in walk.walk(arch, config, image_shape, num_classes):
        k.step(step)
        if step.kind == walk.STEM:
            peak_act = _elements(step.cin, step.in_hw) + _elements(step.cout, step.out_hw)
        if step.cell is not None and step.cell != cell:
            cell, act = step.cell, _elements(step.cell.cin, step.cell.in_hw)  # cell input
        if step.kind in (walk.OP, walk.PROJECT):
            act += _elements(step.cout, step.out_hw)
        if step.kind == walk.PROJECT:
            peak_act = max(peak_act, act)
    return {"params": k.params, "trainable_params": k.trainable, "flops": k.flops,
            "activation_elements": peak_act}


def flops_by_hooks(model, image_shape: Sequence[int]) -> int:
    """Multiply-adds per image of conv and linear layers, from a real forward pass.

    An independent check of ``count``: forward hooks read every Conv2D and
    Linear layer's actual output shape.
    """
    from autodl_design.backend import paddle
    total = [0]
    hooks = []

    def conv_hook(layer, inputs, output):
        kh, kw = layer.weight.shape[2], layer.weight.shape[3]
        cin_per_group = layer.weight.shape[1]
        total[0] += int(np.prod(output.shape[1:])) * cin_per_group * kh * kw

    def fc_hook(layer, inputs, output):
        total[0] += int(layer.weight.shape[0] * layer.weight.shape[1])

    for layer in model.sublayers():
        if isinstance(layer, paddle.nn.Conv2D):
            hooks.append(layer.register_forward_post_hook(conv_hook))
        elif isinstance(layer, paddle.nn.Linear):
            hooks.append(layer.register_forward_post_hook(fc_hook))
    was_training = model.training
    model.eval()
    try:
        with paddle.no_grad():
            model(paddle.zeros([1] + [int(s) for s in image_shape], "float32"))
    finally:
        for hk in hooks:
            hk.remove()
        if was_training:
            model.train()
    return total[0]


def sync(paddle):
    """Waits for the current GPU's queued work, naming the device (nothing to do on CPU).

    Called before every clock read that times GPU work: kernels run
    asynchronously, so without it the clock measures the launch only.
    """
    device = paddle.device.get_device()
    if device.startswith("gpu"):
        paddle.device.synchronize(device)


def measure_latency(model, image_shape: Sequence[int], batch: int = 1, repeats: int = 50,
                    warmup: int = 3) -> Tuple[float, float]:
    """(median, p90) ms of an eval-mode forward pass of ``batch`` random images."""
    from autodl_design.backend import paddle
    model.eval()
    x = paddle.randn([batch] + [int(s) for s in image_shape], "float32")
    times = []
    with paddle.no_grad():
        for i in range(warmup + repeats):
            sync(paddle)
            t = time.perf_counter()
            model(x)
            sync(paddle)
            if i >= warmup:
                times.append((time.perf_counter() - t) * 1e3)
    return float(np.median(times)), float(np.percentile(times, 90))


class AllocatorStats:
    """Paddle allocator statistics of the current device (``allocator_stats`` makes one).

    The GPU functions are given the device explicitly (``gpu:0`` inside a
    pinned worker), never Paddle's implicit current device.

    Raises:
      AttributeError: this Paddle build lacks the host allocator statistics.
    """

    def __init__(self, paddle):
        self.paddle = paddle
        self.device = paddle.device.get_device()
        self.gpu = self.device.startswith("gpu")
        self.source = "paddle_gpu_allocator" if self.gpu else "paddle_host_allocator"
        if not self.gpu:
            self.core = paddle.base.core
            for fn in ("host_memory_stat_current_value", "host_memory_stat_peak_value",
                       "host_memory_stat_reset_peak_value"):
                if not hasattr(self.core, fn):
                    raise AttributeError("paddle.base.core.%s is missing" % fn)

    def current(self) -> int:
        if self.gpu:
            return int(self.paddle.device.cuda.memory_allocated(self.device))
        return int(self.core.host_memory_stat_current_value("Allocated", 0))

    def reset_peak(self):
        if self.gpu:
            self.paddle.device.cuda.reset_max_memory_allocated(self.device)
        else:
            self.core.host_memory_stat_reset_peak_value("Allocated", 0)

    def peak(self) -> int:
        if self.gpu:
            return int(self.paddle.device.cuda.max_memory_allocated(self.device))
        return int(self.core.host_memory_stat_peak_value("Allocated", 0))


def allocator_stats(paddle) -> Optional[AllocatorStats]:
    """The current device's allocator statistics, or None if this Paddle has none."""
    try:
        return AllocatorStats(paddle)
    except AttributeError:
        return None


def memory_estimate_mb(counts: Dict[str, float], batch: int) -> float:
    """Parameter bytes + batch x the largest cell's activations, float32, in MiB."""
    return 4.0 * (counts["params"] + batch * counts["activation_elements"]) / MIB


def measure_hardware(arch: Architecture, config: TrainerConfig, image_shape: Sequence[int],
                     num_classes: int, *, seed: int = 0) -> Dict[str, float]:
    """All hardware metrics of an untrained network, in about a second.

    Builds the network on the current Paddle device with weights drawn from
    ``seed`` (the global Paddle random state is restored afterwards; latency
    and memory do not depend on the weights), measures peak memory of one
    forward pass, then latency, on inputs of ``trainer.walk.input_shape(config,
    image_shape)`` (the resolution the candidate is trained at).

    Returns:
      dict: params, trainable_params, flops (ints), latency_ms,
      latency_p90_ms, memory_mb (floats), memory_source (str),
      latency_batch (int).
    """
    from autodl_design.backend import paddle
    from trainer.network import build_network
    counts = count(arch, config, image_shape, num_classes)
    image_shape = walk.input_shape(config, image_shape)
    batch = config.latency_batch
    shape = [batch] + [int(s) for s in image_shape]
    stats = allocator_stats(paddle)
    rng_state = paddle.get_rng_state()
    try:
        paddle.seed(seed)
        # Free earlier networks held only by reference cycles now, so that the
        # garbage collector cannot release them in the middle of the
        # measurement (which made two identical measurements differ).
        gc.collect()
        before = stats.current() if stats is not None else 0
        model = build_network(arch, config, image_shape, num_classes)
        model.eval()
        x = paddle.randn(shape, "float32")
        with paddle.no_grad():
            model(x)                       # first pass: lazy kernel set-up
            sync(paddle)
            if stats is not None:
                stats.reset_peak()
            model(x)
            sync(paddle)
        if stats is not None:
            memory_mb = (stats.peak() - before) / MIB
            source = stats.source
        else:
            memory_mb, source = memory_estimate_mb(counts, batch), "estimate"
        del x
        median, p90 = measure_latency(model, image_shape, batch, config.latency_repeats)
    finally:
        paddle.set_rng_state(rng_state)
    return {"params": int(counts["params"]), "trainable_params": int(counts["trainable_params"]),
            "flops": int(counts["flops"]), "latency_ms": median, "latency_p90_ms": p90,
            "memory_mb": float(memory_mb), "memory_source": source, "latency_batch": batch}
