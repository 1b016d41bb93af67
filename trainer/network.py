"""Paddle layers of an architecture: AutoDL Design's Inception-style cell network.

Network (NCHW, float32)::

    stem 3x3 conv (in_channels -> width)
    num_stages stages of num_cells cells; the first cell of every stage after
    the first is the reduction cell (stride 2, channels doubled), the others
    are normal cells (same size, same channels)
    BN-ReLU -> global average pool -> dropout -> fully connected (num_classes)

Cell with input C_in channels and output C_out channels (C_out = C_in in a
normal cell, 2 C_in in a reduction cell). Every node works at
``n = max(1, C_out // ratio)`` channels:

* a source node (no predecessor) takes the cell input through
  BN-ReLU-1x1 conv (C_in -> n), BN-ReLU, then its op; in a reduction cell
  the op has stride 2. The 1x1 compression is what doubles the channels in
  a reduction cell (n = 2 C_in / ratio there), for every op kind alike, so a
  pooling source node needs no extra layer and every op keeps its channels;
* any other node sums its predecessors' outputs, BN-ReLU, then its op
  (stride 1);
* the outputs of the nodes that feed no other node are concatenated and a
  1x1 conv maps them (k n channels) to C_out.

The BN-ReLU between the compression and the op follows AutoDL Design's
``cell()`` (every op sees a pre-activated input). All ops use 'same'
padding ((k - 1) dilation / 2 on each side; all kernels are odd), so a node's
output is H x W, or ceil(H / 2) x ceil(W / 2) after a stride-2 source node,
for odd and even H, W alike. Convs have no bias (a BN follows every sum).

The layers are built step by step from ``trainer.walk.walk`` (the walk that
``trainer.metrics.count`` and ``trainer.latency_table`` follow too); an op's
layer from its ``autodl_design.ops.OPS`` spec by one builder per
``OpSpec.kind``; the registry's keys are the only op names.
"""
from typing import Callable, Dict, List, Optional, Sequence, Tuple

from autodl_design.backend import paddle
from autodl_design.arch import Architecture, Cell
from autodl_design.config import TrainerConfig
from autodl_design.ops import OPS, OpSpec
from trainer.walk import (BNRELU, COMPRESS, HEAD, OP, PROJECT, STEM, CellShape, Step,
                          cell_shapes, cell_steps, input_shape, same_padding, walk)

nn = paddle.nn


def conv(cin: int, cout: int, kernel: Tuple[int, int], stride=1, dilation: int = 1) -> nn.Layer:
    """A bias-free 'same'-padded Conv2D [N, cin, H, W] -> [N, cout, H', W']."""
    kh, kw = kernel
    return nn.Conv2D(cin, cout, kernel, stride=stride,
                     padding=(same_padding(kh, dilation), same_padding(kw, dilation)),
                     dilation=dilation, bias_attr=False)


def _build_conv(spec: OpSpec, channels: int, stride: int) -> nn.Layer:
    return conv(channels, channels, spec.kernel, stride, spec.dilation)


def _build_sep(spec: OpSpec, channels: int, stride: int) -> nn.Layer:
    kh, kw = spec.kernel
    # 1 x kw (strides the width) then kh x 1 (strides the height).
    return nn.Sequential(conv(channels, channels, (1, kw), (1, stride)),
                         conv(channels, channels, (kh, 1), (stride, 1)))


def _build_maxpool(spec: OpSpec, channels: int, stride: int) -> nn.Layer:
    kh, kw = spec.kernel
    return nn.MaxPool2D(spec.kernel, stride=stride, padding=(kh // 2, kw // 2))


def _build_avgpool(spec: OpSpec, channels: int, stride: int) -> nn.Layer:
    kh, kw = spec.kernel
    # exclusive: padded positions are not counted in the average.
    return nn.AvgPool2D(spec.kernel, stride=stride, padding=(kh // 2, kw // 2), exclusive=True)


OP_BUILDERS: Dict[str, Callable[[OpSpec, int, int], nn.Layer]] = {
    "conv": _build_conv,
    "sep": _build_sep,
    "maxpool": _build_maxpool,
    "avgpool": _build_avgpool,
}


def build_op(name: str, channels: int, stride: int) -> nn.Layer:
    """The layer of registry op ``name`` at ``channels`` in and out.

    Args:
      name: a key of ``OPS``.
      channels: channels of the input and the output.
      stride: 1, or 2 for a source node of a reduction cell.

    Raises:
      ValueError: unknown op name or an OpSpec kind without a builder.
    """
    if name not in OPS:
        raise ValueError("unknown op %r; valid ops are %s" % (name, ", ".join(OPS)))
    spec = OPS[name]
    if spec.kind not in OP_BUILDERS:
        raise ValueError("op %r has kind %r, which has no layer builder (known: %s)"
                         % (name, spec.kind, ", ".join(OP_BUILDERS)))
    return OP_BUILDERS[spec.kind](spec, channels, stride)


def _bn_relu(channels: int) -> List[nn.Layer]:
    return [nn.BatchNorm2D(channels), nn.ReLU()]


def layer_of(step: Step) -> nn.Layer:
    """The Paddle layer of a stem, compress, bnrelu, op or project step.

    [N, step.cin, H, W] -> [N, step.cout, H', W'] (a ``PROJECT`` layer takes
    the free ends already concatenated).

    Raises:
      ValueError: an add or head step (no single layer; see ``head_layers``).
    """
    if step.kind == STEM:
        return conv(step.cin, step.cout, (3, 3))
    if step.kind == COMPRESS:
        return nn.Sequential(*_bn_relu(step.cin), conv(step.cin, step.cout, (1, 1)),
                             *_bn_relu(step.cout))
    if step.kind == BNRELU:
        return nn.Sequential(*_bn_relu(step.cout))
    if step.kind == OP:
        return build_op(step.op, step.cout, step.stride)
    if step.kind == PROJECT:
        return conv(step.cin, step.cout, (1, 1))
    raise ValueError("a %s step has no single layer" % step.kind)


def head_layers(step: Step, dropout: float) -> Tuple[nn.Layer, nn.Layer, nn.Layer,
                                                     Optional[nn.Layer], nn.Layer]:
    """(BN, ReLU, global average pool, dropout or None, fully connected) of a head step."""
    if step.kind != HEAD:
        raise ValueError("head_layers needs a head step, got %s" % step.kind)
    return (nn.BatchNorm2D(step.cin), nn.ReLU(), nn.AdaptiveAvgPool2D(1),
            nn.Dropout(dropout) if dropout > 0 else None, nn.Linear(step.cin, step.cout))


def head_forward(bn, relu, pool, dropout, fc, x):
    """[N, C, H, W] -> [N, num_classes] logits through ``head_layers``."""
    h = paddle.flatten(pool(relu(bn(x))), 1)
    if dropout is not None:
        h = dropout(h)
    return fc(h)


class CellLayer(nn.Layer):
    """One cell applied to a [N, shape.cin, H, W] tensor.

    Output: [N, shape.cout, H', W'] with H' = H (normal) or ceil(H / 2)
    (reduction). Layers come from ``trainer.walk.cell_steps(cell, shape)``.
    """

    def __init__(self, cell: Cell, shape: CellShape):
        super().__init__()
        self.cell = cell
        self.reduction = shape.reduction
        self.in_channels = shape.cin
        self.out_channels = shape.cout
        self.node_channels = shape.n
        self.preds: List[List[int]] = [[] for _ in cell.ops]
        pre, ops, project = [], [], None
        for step in cell_steps(cell, shape):
            if step.kind in (COMPRESS, BNRELU):
                pre.append(layer_of(step))
            elif step.kind == OP:
                self.preds[step.node] = list(step.inputs)
                ops.append(layer_of(step))
            elif step.kind == PROJECT:
                self.outputs: List[int] = list(step.inputs)
                project = layer_of(step)
        self.pre = nn.LayerList(pre)
        self.ops = nn.LayerList(ops)
        self.project = project

    def forward(self, x):
        nodes = []
        for j in range(len(self.preds)):
            preds = self.preds[j]
            if preds:
                h = nodes[preds[0]]
                for i in preds[1:]:
                    h = h + nodes[i]
            else:
                h = x
            nodes.append(self.ops[j](self.pre[j](h)))
        outs = [nodes[i] for i in self.outputs]
        h = outs[0] if len(outs) == 1 else paddle.concat(outs, axis=1)
        return self.project(h)


class Network(nn.Layer):
    """The whole classifier: [N, C, H, W] float32 -> [N, num_classes] logits.

    It is laid out for inputs of ``image_shape`` = ``trainer.walk.input_shape(
    config, shape given)``: with ``config.resolution`` r, (C, r, r) (the
    caller resizes the images, ``trainer.data.at_resolution``).
    """

    def __init__(self, arch: Architecture, config: TrainerConfig,
                 image_shape: Sequence[int], num_classes: int):
        super().__init__()
        if len(image_shape) != 3:
            raise ValueError("image_shape must be (C, H, W), got %s" % (tuple(image_shape),))
        for name in ("width", "num_stages", "num_cells", "ratio"):
            if getattr(config, name) < 1:
                raise ValueError("TrainerConfig.%s must be >= 1, got %r"
                                 % (name, getattr(config, name)))
        self.image_shape = input_shape(config, image_shape)
        self.num_classes = int(num_classes)
        steps = list(walk(arch, config, self.image_shape, self.num_classes))
        self.stem = layer_of(steps[0])
        self.cells = nn.LayerList([CellLayer(arch.reduction if s.reduction else arch.normal, s)
                                   for s in cell_shapes(config, self.image_shape)])
        self.head_bn, self.relu, self.pool, self.dropout, self.fc = head_layers(
            steps[-1], config.dropout)

    def forward(self, x):
        h = self.stem(x)
        for cell in self.cells:
            h = cell(h)
        return head_forward(self.head_bn, self.relu, self.pool, self.dropout, self.fc, h)


def build_network(arch: Architecture, config: TrainerConfig, image_shape: Sequence[int],
                  num_classes: int) -> Network:
    """Builds the network on the current Paddle device (see ``Network``)."""
    return Network(arch, config, image_shape, num_classes)


def summary(arch: Architecture, config: TrainerConfig, image_shape: Sequence[int],
            num_classes: int) -> str:
    """A readable outline: stem, each cell's kind, channels and spatial size, head."""
    lines = []
    for step in walk(arch, config, image_shape, num_classes):
        if step.kind == STEM:
            lines.append("input        %3d x %3d x %-3d" % ((step.cin,) + step.in_hw))
            lines.append("stem 3x3     %3d x %3d x %-3d" % ((step.cout,) + step.out_hw))
        elif step.kind == PROJECT:
            g = step.cell
            lines.append("cell %-2d %-9s %3d x %3d x %-3d (nodes at %d channels, %d "
                         "concatenated)" % ((g.index, "reduction" if g.reduction else "normal",
                                             g.cout) + g.out_hw + (g.n, len(step.inputs))))
    lines.append("head: BN-ReLU, global average pool, dropout %.2f, fully connected"
                 % config.dropout)
    return "\n".join(lines)
