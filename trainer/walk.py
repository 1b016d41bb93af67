"""The one walk of a candidate network, block by block, in forward order (pure Python).

``trainer.network`` builds its Paddle layers from these steps,
``trainer.metrics.count`` counts parameters and FLOPs over them,
``trainer.latency_table`` looks every step up in a profiled table, and
``trainer.network.summary`` prints them; none of them lays the network out on
its own.

Network (NCHW; ``trainer/network.py`` has the long form)::

    stem 3x3 conv (image channels -> width)
    num_stages stages of num_cells cells; the first cell of every stage after
    the first is the reduction cell (stride 2, channels doubled)
    head: BN-ReLU -> global average pool -> (dropout) -> fully connected

Steps of a cell with C_in input and C_out output channels, every node at
``n = max(1, C_out // ratio)`` channels, nodes in order:

* a source node (no predecessor): ``compress`` (BN-ReLU -> 1x1 conv C_in -> n
  -> BN-ReLU on the cell input), then ``op`` (stride 2 in a reduction cell);
* any other node: ``add`` (only with two or more predecessors: k - 1
  additions of its k predecessors' outputs), ``bnrelu``, then ``op``
  (stride 1);
* ``project``: the concatenation of the k free ends (none for k = 1) and the
  1x1 conv k n -> C_out.

All ops use 'same' padding, so every node of a cell has the same size: H x W,
or ceil(H / 2) x ceil(W / 2) in a reduction cell.
"""
import dataclasses
from typing import Iterator, List, Optional, Sequence, Tuple

from autodl_design.arch import Architecture, Cell
from autodl_design.config import TrainerConfig
from autodl_design.ops import OPS
from autodl_design.recipe import MIN_RESOLUTION, SearchSpaceError

HW = Tuple[int, int]

STEM, COMPRESS, ADD, BNRELU, OP, PROJECT, HEAD = (
    "stem", "compress", "add", "bnrelu", "op", "project", "head")


def same_padding(kernel: int, dilation: int = 1) -> int:
    """Symmetric padding that keeps H x W at stride 1 (odd effective kernel)."""
    return (dilation * (kernel - 1)) // 2


def conv_out(size: int, kernel: int, stride: int, dilation: int = 1) -> int:
    """Output length of a 'same'-padded conv or pool along one axis of length ``size``."""
    k_eff = dilation * (kernel - 1) + 1
    return (size + 2 * same_padding(kernel, dilation) - k_eff) // stride + 1


def op_output(name: str, hw: Optional[HW], stride: int) -> Optional[HW]:
    """Output (H, W) of registry op ``name`` on an ``hw`` input (None stays None)."""
    if hw is None:
        return None
    spec = OPS[name]
    kh, kw = spec.kernel
    dilation = spec.dilation if spec.kind == "conv" else 1
    return conv_out(hw[0], kh, stride, dilation), conv_out(hw[1], kw, stride, dilation)


def input_shape(config: TrainerConfig, image_shape: Sequence[int]) -> Tuple[int, int, int]:
    """(C, H, W) the network sees: the images' shape, or (C, r, r) with ``config.resolution`` r.

    Idempotent: the shape it returns maps to itself, so callers may pass the
    dataset's shape or one already resized.

    Args:
      config: ``resolution`` (0 = the images as made).
      image_shape: (C, H, W) of the images.

    Raises:
      SearchSpaceError: r is below ``MIN_RESOLUTION`` or larger than H or W
        (images are only ever shrunk).
    """
    r = int(config.resolution)
    if r == 0:
        return tuple(int(s) for s in image_shape)
    c, h, w = (int(s) for s in image_shape)
    if (h, w) == (r, r):
        return c, h, w
    if r < MIN_RESOLUTION or r > min(h, w):
        raise SearchSpaceError("resolution %d is not usable with %dx%d images: give a side "
                               "from %d to %d (0 = as made)" % (r, h, w, MIN_RESOLUTION,
                                                                min(h, w)))
    return c, r, r


def node_channels(out_channels: int, ratio: int) -> int:
    """Channels of every node of a cell with ``out_channels`` output channels."""
    return max(1, out_channels // ratio)


@dataclasses.dataclass(frozen=True)
class CellShape:
    """Where one cell sits in the network and its sizes.

    Attributes:
      index: position among all cells (0-based).
      stage: its stage (0-based).
      reduction: whether it is a reduction cell (stride 2, channels doubled).
      cin: input channels C_in.
      cout: output channels C_out.
      n: channels of every node.
      in_hw: (H, W) of the cell input, or None for a cell laid out for any
        input size.
      out_hw: (H, W) of every node and of the output (None with ``in_hw``).
    """
    index: int
    stage: int
    reduction: bool
    cin: int
    cout: int
    n: int
    in_hw: Optional[HW] = None
    out_hw: Optional[HW] = None

    @property
    def stride(self) -> int:
        return 2 if self.reduction else 1

    @property
    def where(self) -> str:
        """E.g. ``reduction cell 1 (4 -> 8 channels)``, for messages."""
        return "%s cell %d (%d -> %d channels)" % (
            "reduction" if self.reduction else "normal", self.index, self.cin, self.cout)


def cell_shape(cin: int, cout: int, reduction: bool, ratio: int, in_hw: Optional[HW] = None,
               index: int = 0, stage: int = 0) -> CellShape:
    """The ``CellShape`` of a cell C_in -> C_out (``in_hw`` None: any input size)."""
    out_hw = op_output("conv_3x3", in_hw, 2 if reduction else 1)  # every op: H or ceil(H/2)
    return CellShape(index, stage, reduction, cin, cout, node_channels(cout, ratio), in_hw,
                     out_hw)


def cell_shapes(config: TrainerConfig, image_shape: Optional[Sequence[int]] = None
                ) -> List[CellShape]:
    """Every cell of the network in order (sizes None without ``image_shape``).

    Args:
      config: width, num_stages, num_cells, ratio (and resolution, see ``input_shape``).
      image_shape: (C, H, W) of one input image, or None.
    """
    if image_shape is not None:
        image_shape = input_shape(config, image_shape)
    hw = None if image_shape is None else (int(image_shape[1]), int(image_shape[2]))
    shapes, channels = [], config.width
    for stage in range(config.num_stages):
        for c in range(config.num_cells):
            reduction = stage > 0 and c == 0
            out = channels * 2 if reduction else channels
            shape = cell_shape(channels, out, reduction, config.ratio, hw, len(shapes), stage)
            shapes.append(shape)
            channels, hw = out, shape.out_hw
    return shapes


@dataclasses.dataclass(frozen=True)
class Step:
    """One block of the forward pass.

    Attributes:
      kind: ``STEM``, ``COMPRESS``, ``ADD``, ``BNRELU``, ``OP``, ``PROJECT`` or
        ``HEAD``.
      cin: input channels (``PROJECT``: k n, all free ends together;
        ``HEAD``: the last cell's C_out).
      cout: output channels (``HEAD``: the number of classes).
      in_hw: (H, W) of the input (None for a cell laid out for any size).
      out_hw: (H, W) of the output (``HEAD``: (1, 1)).
      stride: 2 for an op of a source node in a reduction cell, else 1.
      op: the registry op name of an ``OP`` step, else "".
      cell: the cell it belongs to (None for ``STEM`` and ``HEAD``).
      node: the node it belongs to (-1 for ``STEM``, ``PROJECT``, ``HEAD``).
      inputs: node indices read: the predecessors (``COMPRESS``: none,
        ``ADD``, ``BNRELU``, ``OP``) or the free ends (``PROJECT``).
    """
    kind: str
    cin: int
    cout: int
    in_hw: Optional[HW]
    out_hw: Optional[HW]
    stride: int = 1
    op: str = ""
    cell: Optional[CellShape] = None
    node: int = -1
    inputs: Tuple[int, ...] = ()


def cell_steps(cell: Cell, shape: CellShape) -> Iterator[Step]:
    """The steps of one cell in forward order (see the module docstring)."""
    n, in_hw, out_hw = shape.n, shape.in_hw, shape.out_hw
    for j, name in enumerate(cell.ops):
        preds = tuple(cell.predecessors(j))
        if preds:
            if len(preds) > 1:
                yield Step(ADD, n, n, out_hw, out_hw, cell=shape, node=j, inputs=preds)
            yield Step(BNRELU, n, n, out_hw, out_hw, cell=shape, node=j, inputs=preds)
            yield Step(OP, n, n, out_hw, op_output(name, out_hw, 1), 1, name, shape, j, preds)
        else:
            yield Step(COMPRESS, shape.cin, n, in_hw, in_hw, cell=shape, node=j)
            yield Step(OP, n, n, in_hw, op_output(name, in_hw, shape.stride), shape.stride,
                       name, shape, j)
    ends = tuple(cell.output_nodes())
    yield Step(PROJECT, len(ends) * n, shape.cout, out_hw, out_hw, cell=shape, inputs=ends)


def walk(arch: Architecture, config: TrainerConfig, image_shape: Sequence[int],
         num_classes: int) -> Iterator[Step]:
    """Every step of ``arch``'s network in forward order: stem, each cell's steps, head.

    Args:
      arch: the architecture (normal and reduction cell).
      config: width, num_stages, num_cells, ratio, resolution.
      image_shape: (C, H, W) of one input image as made; the walk runs at
        ``input_shape(config, image_shape)``.
      num_classes: classifier outputs.
    """
    c, h, w = input_shape(config, image_shape)
    yield Step(STEM, c, config.width, (h, w), (h, w))
    shapes = cell_shapes(config, image_shape)
    for shape in shapes:
        yield from cell_steps(arch.reduction if shape.reduction else arch.normal, shape)
    last = shapes[-1]
    yield Step(HEAD, last.cout, int(num_classes), last.out_hw, (1, 1))
