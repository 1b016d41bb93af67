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

Layers are built from ``autodl_design.ops.OPS`` specs by one builder per
``OpSpec.kind``; the registry's keys are the only op names.
"""
from typing import Callable, Dict, List, Sequence, Tuple

from autodl_design.backend import paddle
from autodl_design.arch import Architecture, Cell
from autodl_design.config import TrainerConfig
from autodl_design.ops import OPS, OpSpec

nn = paddle.nn


def same_padding(kernel: int, dilation: int = 1) -> int:
    """Symmetric padding that keeps H x W at stride 1 (odd effective kernel)."""
    return (dilation * (kernel - 1)) // 2


def node_channels(out_channels: int, ratio: int) -> int:
    """Channels of every node of a cell with ``out_channels`` output channels."""
    return max(1, out_channels // ratio)


def _conv(cin: int, cout: int, kernel: Tuple[int, int], stride=1, dilation: int = 1):
    kh, kw = kernel
    return nn.Conv2D(cin, cout, kernel, stride=stride,
                     padding=(same_padding(kh, dilation), same_padding(kw, dilation)),
                     dilation=dilation, bias_attr=False)


def _build_conv(spec: OpSpec, channels: int, stride: int) -> nn.Layer:
    return _conv(channels, channels, spec.kernel, stride, spec.dilation)


def _build_sep(spec: OpSpec, channels: int, stride: int) -> nn.Layer:
    kh, kw = spec.kernel
    # 1 x kw (strides the width) then kh x 1 (strides the height).
    return nn.Sequential(_conv(channels, channels, (1, kw), (1, stride)),
                         _conv(channels, channels, (kh, 1), (stride, 1)))


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


class CellLayer(nn.Layer):
    """One cell applied to a [N, in_channels, H, W] tensor.

    Output: [N, out_channels, H', W'] with H' = H (normal) or ceil(H / 2)
    (reduction).
    """

    def __init__(self, cell: Cell, in_channels: int, out_channels: int, reduction: bool,
                 ratio: int):
        super().__init__()
        self.cell = cell
        self.reduction = reduction
        self.in_channels = in_channels
        self.out_channels = out_channels
        n = node_channels(out_channels, ratio)
        self.node_channels = n
        self.preds: List[List[int]] = [cell.predecessors(j) for j in range(cell.num_nodes)]
        self.outputs: List[int] = cell.output_nodes()
        pre, ops = [], []
        for j, name in enumerate(cell.ops):
            if self.preds[j]:
                pre.append(nn.Sequential(*_bn_relu(n)))
                ops.append(build_op(name, n, 1))
            else:
                pre.append(nn.Sequential(*_bn_relu(in_channels),
                                         _conv(in_channels, n, (1, 1)), *_bn_relu(n)))
                ops.append(build_op(name, n, 2 if reduction else 1))
        self.pre = nn.LayerList(pre)
        self.ops = nn.LayerList(ops)
        self.project = _conv(len(self.outputs) * n, out_channels, (1, 1))

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


def cell_plan(config: TrainerConfig) -> List[Tuple[bool, int, int]]:
    """The cells in order as (reduction, in_channels, out_channels)."""
    plan, channels = [], config.width
    for stage in range(config.num_stages):
        for c in range(config.num_cells):
            reduction = stage > 0 and c == 0
            out = channels * 2 if reduction else channels
            plan.append((reduction, channels, out))
            channels = out
    return plan


class Network(nn.Layer):
    """The whole classifier: [N, C, H, W] float32 -> [N, num_classes] logits."""

    def __init__(self, arch: Architecture, config: TrainerConfig,
                 image_shape: Sequence[int], num_classes: int):
        super().__init__()
        if len(image_shape) != 3:
            raise ValueError("image_shape must be (C, H, W), got %s" % (tuple(image_shape),))
        for name in ("width", "num_stages", "num_cells", "ratio"):
            if getattr(config, name) < 1:
                raise ValueError("TrainerConfig.%s must be >= 1, got %r"
                                 % (name, getattr(config, name)))
        self.image_shape = tuple(int(s) for s in image_shape)
        self.num_classes = int(num_classes)
        self.stem = _conv(self.image_shape[0], config.width, (3, 3))
        cells = []
        for reduction, cin, cout in cell_plan(config):
            cells.append(CellLayer(arch.reduction if reduction else arch.normal, cin, cout,
                                   reduction, config.ratio))
        self.cells = nn.LayerList(cells)
        channels = cells[-1].out_channels
        self.head_bn = nn.BatchNorm2D(channels)
        self.relu = nn.ReLU()
        self.pool = nn.AdaptiveAvgPool2D(1)
        self.dropout = nn.Dropout(config.dropout) if config.dropout > 0 else None
        self.fc = nn.Linear(channels, self.num_classes)

    def forward(self, x):
        h = self.stem(x)
        for cell in self.cells:
            h = cell(h)
        h = self.pool(self.relu(self.head_bn(h)))
        h = paddle.flatten(h, 1)
        if self.dropout is not None:
            h = self.dropout(h)
        return self.fc(h)


def build_network(arch: Architecture, config: TrainerConfig, image_shape: Sequence[int],
                  num_classes: int) -> Network:
    """Builds the network on the current Paddle device (see ``Network``)."""
    return Network(arch, config, image_shape, num_classes)


def summary(arch: Architecture, config: TrainerConfig, image_shape: Sequence[int]) -> str:
    """A readable outline: stem, each cell's kind, channels and spatial size, head."""
    c, h, w = (int(s) for s in image_shape)
    lines = ["input        %3d x %3d x %-3d" % (c, h, w),
             "stem 3x3     %3d x %3d x %-3d" % (config.width, h, w)]
    for k, (reduction, cin, cout) in enumerate(cell_plan(config)):
        if reduction:
            h, w = (h + 1) // 2, (w + 1) // 2
        cell = arch.reduction if reduction else arch.normal
        lines.append("cell %-2d %-9s %3d x %3d x %-3d (nodes at %d channels, %d concatenated)"
                     % (k, "reduction" if reduction else "normal", cout, h, w,
                        node_channels(cout, config.ratio), len(cell.output_nodes())))
    lines.append("head: BN-ReLU, global average pool, dropout %.2f, fully connected"
                 % config.dropout)
    return "\n".join(lines)
