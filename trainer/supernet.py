"""The one-shot supernet: every op of the registry at every node, every possible edge.

A ``Supernet`` holds, for every cell of the network (``trainer.walk.cell_shapes``)
and every node j of it:

* ``compress[j]`` (used when j is a source node: no predecessor),
* ``bnrelu[j]`` (used when j has predecessors; none for node 0),
* ``src_ops[j][k]``: op k of the configured op list applied to the compressed
  cell input (stride 2 in a reduction cell),
* ``inner_ops[j][k]``: op k applied to the sum of the predecessors (stride 1;
  in a normal cell the same layer as ``src_ops[j][k]``, which has stride 1 too),
* and one projection conv over all N nodes (N n -> C_out); a candidate's
  projection is the columns of its free ends, in node order.

Every layer is made by ``trainer.network.layer_of`` from a step of
``trainer.walk.cell_steps`` of two template cells per op (N independent
source nodes; a chain), so its shape is the shape the stand-alone network
of any candidate gives that node. A candidate (``Architecture``) selects the
subnetwork (``forward(x, arch)``; ``subnet(arch)`` builds the stand-alone
``trainer.network.Network`` with these weights copied in). DARTS runs the
continuous relaxation (``forward_mixed``).
"""
from typing import Dict, List, Sequence

import numpy as np

from autodl_design.arch import Architecture, Cell
from autodl_design.backend import paddle
from autodl_design.config import TrainerConfig
from trainer.network import Network, head_forward, head_layers, layer_of
from trainer.walk import (BNRELU, COMPRESS, HEAD, OP, PROJECT, STEM, CellShape, cell_shapes,
                          cell_steps, walk)

nn = paddle.nn
F = paddle.nn.functional


class SupernetTooLarge(ValueError):
    """The supernet would not fit the device memory (the message names the size flags)."""


def _templates(op: str, num_nodes: int):
    """(N independent source nodes, a chain 0 -> 1 -> ... -> N-1), every node running ``op``."""
    sources = np.zeros((num_nodes, num_nodes), np.int8)
    chain = np.zeros((num_nodes, num_nodes), np.int8)
    for j in range(1, num_nodes):
        chain[j - 1, j] = 1
    return Cell([op] * num_nodes, sources), Cell([op] * num_nodes, chain)


class SuperCell(nn.Layer):
    """All choices of one cell position: [N, shape.cin, H, W] -> [N, shape.cout, H', W']."""

    def __init__(self, shape: CellShape, ops: Sequence[str], num_nodes: int):
        super().__init__()
        self.shape = shape
        self.ops = tuple(ops)
        self.num_nodes = num_nodes
        self.op_index = {name: k for k, name in enumerate(self.ops)}
        compress, bnrelu = [None] * num_nodes, [None] * (num_nodes - 1)
        src = [[None] * len(self.ops) for _ in range(num_nodes)]
        inner = [[None] * len(self.ops) for _ in range(num_nodes - 1)]
        for k, op in enumerate(self.ops):
            sources, chain = _templates(op, num_nodes)
            for step in cell_steps(sources, shape):
                if step.kind == COMPRESS and k == 0:
                    compress[step.node] = layer_of(step)
                elif step.kind == OP:
                    src[step.node][k] = layer_of(step)
                elif step.kind == PROJECT and k == 0:
                    self.project = layer_of(step)  # N n -> C_out: every node a free end
            for step in cell_steps(chain, shape):
                if step.kind == BNRELU and k == 0:
                    bnrelu[step.node - 1] = layer_of(step)
                elif step.kind == OP and step.node > 0:
                    inner[step.node - 1][k] = (layer_of(step) if shape.reduction
                                               else src[step.node][k])
        self.compress = nn.LayerList(compress)
        self.bnrelu = nn.LayerList(bnrelu)
        self.src_ops = nn.LayerList([nn.LayerList(row) for row in src])
        # In a normal cell these are the src_ops layers again (shared parameters).
        self.inner_ops = nn.LayerList([nn.LayerList(row) for row in inner])

    def project_weight(self, ends: Sequence[int]):
        """The projection weight [C_out, len(ends) n, 1, 1] of the free ends ``ends``."""
        n = self.shape.n
        w = self.project.weight
        return paddle.concat([w[:, e * n:(e + 1) * n] for e in ends], axis=1)

    def forward(self, x, cell: Cell):
        """The subnetwork of ``cell`` (same computation as ``trainer.network.CellLayer``)."""
        nodes = []
        for j, name in enumerate(cell.ops):
            k = self.op_index[name]
            preds = cell.predecessors(j)
            if preds:
                h = nodes[preds[0]]
                for i in preds[1:]:
                    h = h + nodes[i]
                nodes.append(self.inner_ops[j - 1][k](self.bnrelu[j - 1](h)))
            else:
                nodes.append(self.src_ops[j][k](self.compress[j](x)))
        ends = cell.output_nodes()
        h = nodes[ends[0]] if len(ends) == 1 else paddle.concat([nodes[e] for e in ends], axis=1)
        return F.conv2d(h, self.project_weight(ends))

    def forward_mixed(self, x, op_weights, edge_probs):
        """The DARTS relaxation of the cell.

        Node j's output is ``s_j * src_j + (1 - s_j) * inner_j`` with ``s_j``
        the probability that j has no predecessor (prod over i < j of
        1 - p_ij), ``src_j`` the op mixture on the compressed input and
        ``inner_j`` the op mixture on BN-ReLU of sum_i p_ij node_i. The
        projection reads node j scaled by the probability that it is a free
        end (prod over k > j of 1 - p_jk).

        Args:
          x: [B, cin, H, W] cell input.
          op_weights: [N, K] softmax weights over the ops of every node.
          edge_probs: [N, N] edge probabilities (only i < j is read).

        Returns:
          [B, cout, H', W'].
        """
        nodes = []
        n_nodes = self.num_nodes
        for j in range(n_nodes):
            w = op_weights[j]
            c = self.compress[j](x)
            src = sum(w[k] * self.src_ops[j][k](c) for k in range(len(self.ops)))
            if j == 0:
                nodes.append(src)
                continue
            p = [edge_probs[i, j] for i in range(j)]
            s = paddle.prod(paddle.stack([1 - q for q in p]))
            h = self.bnrelu[j - 1](sum(q * nodes[i] for i, q in enumerate(p)))
            inner = sum(w[k] * self.inner_ops[j - 1][k](h) for k in range(len(self.ops)))
            nodes.append(s * src + (1 - s) * inner)
        outs = []
        for j in range(n_nodes):
            after = [1 - edge_probs[j, k] for k in range(j + 1, n_nodes)]
            end = paddle.prod(paddle.stack(after)) if after else None
            outs.append(nodes[j] if end is None else end * nodes[j])
        return self.project(paddle.concat(outs, axis=1))


class Supernet(nn.Layer):
    """Stem, one ``SuperCell`` per cell position, head: [B, C, H, W] -> [B, classes].

    Args:
      config: network sizes (width, num_stages, num_cells, ratio, dropout).
      ops: the configured op list (token k is ``ops[k]``).
      num_nodes: nodes per cell N.
      image_shape: (C, H, W) of one image.
      num_classes: classifier outputs.
    """

    def __init__(self, config: TrainerConfig, ops: Sequence[str], num_nodes: int,
                 image_shape: Sequence[int], num_classes: int):
        super().__init__()
        self.config = config
        self.ops = tuple(ops)
        self.num_nodes = int(num_nodes)
        self.image_shape = tuple(int(s) for s in image_shape)
        self.num_classes = int(num_classes)
        sources, _ = _templates(self.ops[0], self.num_nodes)
        steps = list(walk(Architecture(sources, sources), config, self.image_shape,
                          self.num_classes))
        assert steps[0].kind == STEM and steps[-1].kind == HEAD
        self.stem = layer_of(steps[0])
        self.cells = nn.LayerList([SuperCell(s, self.ops, self.num_nodes)
                                   for s in cell_shapes(config, self.image_shape)])
        self.head_bn, self.relu, self.pool, self.dropout, self.fc = head_layers(
            steps[-1], config.dropout)

    def forward(self, x, arch: Architecture):
        """Logits [B, classes] of ``arch``'s subnetwork."""
        h = self.stem(x)
        for cell in self.cells:
            h = cell(h, arch.reduction if cell.shape.reduction else arch.normal)
        return head_forward(self.head_bn, self.relu, self.pool, self.dropout, self.fc, h)

    def forward_mixed(self, x, alphas: Dict[str, object]):
        """Logits of the DARTS relaxation.

        Args:
          x: [B, C, H, W].
          alphas: ``{"normal": (op_weights [N, K], edge_probs [N, N]),
            "reduction": (...)}`` (see ``SuperCell.forward_mixed``).
        """
        h = self.stem(x)
        for cell in self.cells:
            h = cell.forward_mixed(h, *alphas["reduction" if cell.shape.reduction else "normal"])
        return head_forward(self.head_bn, self.relu, self.pool, self.dropout, self.fc, h)

    def subnet(self, arch: Architecture) -> Network:
        """The stand-alone ``Network`` of ``arch`` holding this supernet's weights (copies)."""
        net = Network(arch, self.config, self.image_shape, self.num_classes)
        net.stem.set_state_dict(self.stem.state_dict())
        for cell_layer, sup in zip(net.cells, self.cells):
            cell = cell_layer.cell
            for j, name in enumerate(cell.ops):
                k = sup.op_index[name]
                if cell.predecessors(j):
                    pre, op = sup.bnrelu[j - 1], sup.inner_ops[j - 1][k]
                else:
                    pre, op = sup.compress[j], sup.src_ops[j][k]
                cell_layer.pre[j].set_state_dict(pre.state_dict())
                cell_layer.ops[j].set_state_dict(op.state_dict())
            cell_layer.project.weight.set_value(sup.project_weight(cell.output_nodes()))
        for mine, theirs in ((net.head_bn, self.head_bn), (net.fc, self.fc)):
            mine.set_state_dict(theirs.state_dict())
        return net


def node_latencies(table, config: TrainerConfig, ops: Sequence[str], num_nodes: int,
                   image_shape: Sequence[int]) -> List[Dict[str, np.ndarray]]:
    """Table latency (ms, before calibration) of every choice of every node, per cell position.

    Args:
      table: a ``trainer.latency_table.LatencyTable`` of these settings.

    Returns:
      One dict per cell (``cell_shapes`` order): ``compress`` [N] and
      ``bnrelu`` [N] (row 0 unused), ``src`` [N, K] (op k on the compressed
      input) and ``inner`` [N, K] (op k after the predecessors' sum; row 0
      unused).

    Raises:
      MissingEntry: the table lacks a block of the space.
    """
    from trainer.latency_table import block_of

    def ms(step):
        return float(table.entry(block_of(step, config.dropout))["latency_ms"])
    out = []
    for shape in cell_shapes(config, image_shape):
        k_ops = len(ops)
        d = {"compress": np.zeros(num_nodes), "bnrelu": np.zeros(num_nodes),
             "src": np.zeros((num_nodes, k_ops)), "inner": np.zeros((num_nodes, k_ops))}
        for k, op in enumerate(ops):
            sources, chain = _templates(op, num_nodes)
            for step in cell_steps(sources, shape):
                if step.kind == COMPRESS:
                    d["compress"][step.node] = ms(step)
                elif step.kind == OP:
                    d["src"][step.node, k] = ms(step)
            for step in cell_steps(chain, shape):
                if step.kind == BNRELU:
                    d["bnrelu"][step.node] = ms(step)
                elif step.kind == OP and step.node > 0:
                    d["inner"][step.node, k] = ms(step)
        out.append(d)
    return out


def estimate_memory_mb(config: TrainerConfig, ops: Sequence[str], num_nodes: int,
                       image_shape: Sequence[int], batch: int, mixed: bool) -> float:
    """Rough peak memory of training the supernet (float32), in MB.

    Parameters are counted per cell position from the walk (every node, every
    op, twice in a reduction cell) times 4 (weights, gradient, momentum,
    spare); activations are the node outputs of one path (ENAS) or of every op
    of every node (``mixed``, DARTS), kept for the backward pass.
    """
    params = image_shape[0] * config.width * 9
    act = config.width * image_shape[1] * image_shape[2]
    for shape in cell_shapes(config, image_shape):
        n, (h, w) = shape.n, shape.out_hw
        kernels = 0
        for op in ops:
            sources, _ = _templates(op, num_nodes)
            for step in cell_steps(sources, shape):
                if step.kind == OP:
                    kernels += _op_params(op, n)
        params += (2 if shape.reduction else 1) * kernels
        params += num_nodes * (shape.cin * n + n * shape.cout + 4 * (shape.cin + n))
        per_node = n * h * w * (2 * len(ops) + 3 if mixed else 3)
        act += num_nodes * per_node + shape.cout * h * w
    return (4.0 * params * 4 + 4.0 * act * batch * 2) / 2 ** 20


def _op_params(op: str, n: int) -> int:
    from autodl_design.ops import OPS
    spec = OPS[op]
    kh, kw = spec.kernel
    if spec.kind == "conv":
        return n * n * kh * kw
    if spec.kind == "sep":
        return n * n * (kh + kw)
    return 0


def check_fits(config: TrainerConfig, ops: Sequence[str], num_nodes: int,
               image_shape: Sequence[int], batch: int, mixed: bool,
               available_mb: float) -> float:
    """The memory estimate (MB); raises SupernetTooLarge if over ``available_mb``."""
    need = estimate_memory_mb(config, ops, num_nodes, image_shape, batch, mixed)
    if need > available_mb:
        raise SupernetTooLarge(
            "the supernet needs about %.0f MB but the device has %.0f MB available: shrink "
            "--width, --num_stages, --num_cells, --num_nodes, --ops or --train_batch_size"
            % (need, available_mb))
    return need


def available_memory_mb() -> float:
    """MemAvailable of this machine (MB), from /proc/meminfo (inf if unreadable)."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) / 1024.0
    except OSError:
        return float("inf")
    return float("inf")


__all__: List[str] = ["Supernet", "SuperCell", "SupernetTooLarge", "check_fits",
                      "available_memory_mb", "estimate_memory_mb"]
