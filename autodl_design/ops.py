"""The op registry: the only valid op names and what each op computes.

Keys are AutoDL Design's ten ops in its order (token i of the controller is
the i-th name of the configured op list, which keeps this order). Values are
plain data (``OpSpec``); ``trainer.network`` turns a spec into Paddle layers.
"""
import dataclasses
from typing import Dict, List, Optional, Sequence, Tuple


@dataclasses.dataclass(frozen=True)
class OpSpec:
    """What an op computes.

    Attributes:
      kind: "conv" (BN-ReLU happen before, as in AutoDL Design's cells),
        "sep" (a kxk conv factored into 1xk then kx1), "maxpool" or "avgpool".
      kernel: (kh, kw) window of the op.
      dilation: dilation of a "conv" op.
    """
    kind: str
    kernel: Tuple[int, int]
    dilation: int = 1


OPS: Dict[str, OpSpec] = {
    "conv_1x1": OpSpec("conv", (1, 1)),
    "conv_3x3": OpSpec("conv", (3, 3)),
    "conv_5x5": OpSpec("conv", (5, 5)),
    "dilated_3x3": OpSpec("conv", (3, 3), dilation=2),
    "conv_1x3_3x1": OpSpec("sep", (3, 3)),
    "conv_1x5_5x1": OpSpec("sep", (5, 5)),
    "maxpool_3x3": OpSpec("maxpool", (3, 3)),
    "maxpool_5x5": OpSpec("maxpool", (5, 5)),
    "avgpool_3x3": OpSpec("avgpool", (3, 3)),
    "avgpool_5x5": OpSpec("avgpool", (5, 5)),
}

OP_NAMES: Tuple[str, ...] = tuple(OPS)


def parse_ops(names: Optional[Sequence[str]]) -> List[str]:
    """Returns the chosen op subset in registry order.

    Args:
      names: op names (any order, no repeats) or None/empty for all ten.

    Raises:
      ValueError: an unknown or repeated name, or fewer than one op.
    """
    if not names:
        return list(OP_NAMES)
    unknown = [n for n in names if n not in OPS]
    if unknown:
        raise ValueError("unknown op %s; valid ops are %s" % (", ".join(map(repr, unknown)),
                                                             ", ".join(OP_NAMES)))
    if len(set(names)) != len(names):
        raise ValueError("op list %s repeats a name" % list(names))
    return [n for n in OP_NAMES if n in set(names)]
