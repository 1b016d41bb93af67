"""Architecture encoding: cells as (ops, DAG), flat controller vectors, JSON and hash.

An architecture is a normal cell and a reduction cell of N nodes each. A cell
is ``ops`` (one registry op name per node) and an N x N 0/1 adjacency matrix
with ``matrix[i, j] == 1`` meaning node i feeds node j, allowed only for
``i < j`` (strictly upper triangular). Nodes with no predecessor read the cell
input; nodes that feed no other node are concatenated into the cell output.

The controller's flat vectors follow AutoDL Design's order:

* ``tokens``: int32 [2N], the normal cell's N op indices then the reduction
  cell's, each an index into the configured op list.
* ``adjvec``: int32 [N(N-1)], the normal cell's N(N-1)/2 bits then the
  reduction cell's; within a cell, node j = 1..N-1 contributes the bits
  ``matrix[0..j-1, j]`` after those of node j-1.
"""
import hashlib
import json
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

from autodl_design.ops import OPS

ARCH_FORMAT = "autodl-design-arch/1"


class Cell:
    """One cell: op names per node and a strictly upper-triangular adjacency.

    The constructor validates and raises ValueError naming the problem. The
    inputs are kept as given (``original_ops``/``original_matrix``); ``ops``
    is a tuple and ``matrix`` a read-only int8 array.
    """

    def __init__(self, ops: Sequence[str], matrix):
        self.original_ops = list(ops) if not isinstance(ops, str) else ops
        self.original_matrix = matrix
        if isinstance(ops, str) or not isinstance(ops, (list, tuple)):
            raise ValueError("cell ops must be a list of op names, got %r" % (ops,))
        try:
            m = np.array(matrix)
        except ValueError as e:  # ragged nested lists
            raise ValueError("cell matrix is not a rectangular array: %s" % e) from None
        if m.ndim != 2 or m.shape[0] != m.shape[1]:
            raise ValueError("cell matrix must be square N x N, got shape %s" % (m.shape,))
        n = m.shape[0]
        if n < 2:
            raise ValueError("a cell needs at least 2 nodes, got %d" % n)
        if len(ops) != n:
            raise ValueError("cell has %d ops but a %dx%d matrix" % (len(ops), n, n))
        if m.dtype == bool:
            m = m.astype(np.int8)
        if not np.issubdtype(m.dtype, np.number):
            raise ValueError("cell matrix entries must be 0 or 1, got dtype %s" % m.dtype)
        if not np.all((m == 0) | (m == 1)):
            bad = m[(m != 0) & (m != 1)][0]
            raise ValueError("cell matrix entries must be 0 or 1, found %r" % (bad,))
        if np.any(np.tril(m) != 0):
            i, j = np.argwhere(np.tril(m) != 0)[0]
            raise ValueError("cell matrix must be strictly upper triangular (node i feeds j only "
                             "if i < j); entry [%d, %d] is 1" % (i, j))
        for k, name in enumerate(ops):
            if name not in OPS:
                raise ValueError("node %d has unknown op %r; valid ops are %s"
                                 % (k, name, ", ".join(OPS)))
        self.ops: Tuple[str, ...] = tuple(ops)
        self.matrix = m.astype(np.int8)
        self.matrix.setflags(write=False)

    @property
    def num_nodes(self) -> int:
        return len(self.ops)

    def predecessors(self, j: int) -> List[int]:
        return [int(i) for i in np.nonzero(self.matrix[:, j])[0]]

    def successors(self, i: int) -> List[int]:
        return [int(j) for j in np.nonzero(self.matrix[i, :])[0]]

    def output_nodes(self) -> List[int]:
        """Nodes that feed no other node; their outputs are concatenated."""
        return [i for i in range(self.num_nodes) if not self.matrix[i].any()]

    def to_dict(self) -> Dict:
        return {"ops": list(self.ops), "matrix": self.matrix.astype(int).tolist()}

    @classmethod
    def from_dict(cls, d: Dict) -> "Cell":
        if not isinstance(d, dict) or set(d) != {"ops", "matrix"}:
            raise ValueError("a cell must be an object with keys 'ops' and 'matrix', got %r"
                             % (sorted(d) if isinstance(d, dict) else d,))
        return cls(d["ops"], d["matrix"])

    def canonical(self) -> Tuple:
        """A certificate equal for isomorphic cells and different otherwise."""
        return _canonical_certificate(self.ops, self.matrix)

    def __eq__(self, other):
        return (isinstance(other, Cell) and self.ops == other.ops
                and np.array_equal(self.matrix, other.matrix))

    def __hash__(self):
        return hash((self.ops, self.matrix.tobytes()))

    def describe(self) -> str:
        """One line per node: ``2: conv_3x3 <- 0,1`` (``<- in`` for cell input)."""
        lines = []
        for j, op in enumerate(self.ops):
            preds = self.predecessors(j)
            src = ",".join(map(str, preds)) if preds else "in"
            out = " -> out" if not self.matrix[j].any() else ""
            lines.append("%d: %s <- %s%s" % (j, op, src, out))
        return "\n".join(lines)


class Architecture:
    """A normal cell and a reduction cell with the same number of nodes."""

    def __init__(self, normal: Cell, reduction: Cell):
        if not isinstance(normal, Cell) or not isinstance(reduction, Cell):
            raise ValueError("an architecture is made of two Cell objects")
        if normal.num_nodes != reduction.num_nodes:
            raise ValueError("normal cell has %d nodes, reduction cell %d; they must match"
                             % (normal.num_nodes, reduction.num_nodes))
        self.normal = normal
        self.reduction = reduction

    @property
    def num_nodes(self) -> int:
        return self.normal.num_nodes

    @property
    def cells(self) -> Tuple[Cell, Cell]:
        return (self.normal, self.reduction)

    # ----- flat vectors (controller order) -----
    def to_vectors(self, op_names: Sequence[str]) -> Tuple[np.ndarray, np.ndarray]:
        """Returns (tokens int32 [2N], adjvec int32 [N(N-1)]) for this op list.

        Raises:
          ValueError: an op of the architecture is not in ``op_names``.
        """
        index = {name: i for i, name in enumerate(op_names)}
        tokens, bits = [], []
        for cell in self.cells:
            for op in cell.ops:
                if op not in index:
                    raise ValueError("op %r is not in the configured op list %s"
                                     % (op, list(op_names)))
                tokens.append(index[op])
            for j in range(1, cell.num_nodes):
                bits.extend(int(b) for b in cell.matrix[:j, j])
        return np.asarray(tokens, np.int32), np.asarray(bits, np.int32)

    @classmethod
    def from_vectors(cls, tokens, adjvec, op_names: Sequence[str]) -> "Architecture":
        """Inverse of ``to_vectors``; N is inferred from ``len(tokens) // 2``."""
        tokens = np.asarray(tokens).reshape(-1)
        adjvec = np.asarray(adjvec).reshape(-1)
        if tokens.size % 2:
            raise ValueError("tokens must have even length 2N, got %d" % tokens.size)
        n = tokens.size // 2
        if adjvec.size != n * (n - 1):
            raise ValueError("adjvec must have N(N-1) = %d entries for N = %d, got %d"
                             % (n * (n - 1), n, adjvec.size))
        if tokens.min(initial=0) < 0 or tokens.max(initial=0) >= len(op_names):
            raise ValueError("token out of range [0, %d): %s" % (len(op_names), tokens.tolist()))
        half = n * (n - 1) // 2
        cells = []
        for c in range(2):
            ops = [op_names[int(t)] for t in tokens[c * n:(c + 1) * n]]
            m = np.zeros((n, n), np.int8)
            bits = adjvec[c * half:(c + 1) * half]
            pos = 0
            for j in range(1, n):
                m[:j, j] = bits[pos:pos + j]
                pos += j
            cells.append(Cell(ops, m))
        return cls(*cells)

    # ----- JSON -----
    def to_dict(self) -> Dict:
        return {"format": ARCH_FORMAT, "normal": self.normal.to_dict(),
                "reduction": self.reduction.to_dict()}

    @classmethod
    def from_dict(cls, d: Dict) -> "Architecture":
        if not isinstance(d, dict):
            raise ValueError("an architecture must be a JSON object, got %s" % type(d).__name__)
        fmt = d.get("format", ARCH_FORMAT)
        if fmt != ARCH_FORMAT:
            raise ValueError("architecture format %r is not %r" % (fmt, ARCH_FORMAT))
        missing = [k for k in ("normal", "reduction") if k not in d]
        if missing:
            raise ValueError("architecture is missing %s" % " and ".join(map(repr, missing)))
        try:
            normal = Cell.from_dict(d["normal"])
        except ValueError as e:
            raise ValueError("normal cell: %s" % e) from None
        try:
            reduction = Cell.from_dict(d["reduction"])
        except ValueError as e:
            raise ValueError("reduction cell: %s" % e) from None
        return cls(normal, reduction)

    def to_json(self) -> str:
        """Readable JSON: op names and one matrix row per line."""
        def cell_json(cell):
            rows = ",\n      ".join(json.dumps(r) for r in cell.matrix.astype(int).tolist())
            return '{\n    "ops": %s,\n    "matrix": [\n      %s\n    ]\n  }' % (
                json.dumps(list(cell.ops)), rows)
        return '{\n  "format": "%s",\n  "normal": %s,\n  "reduction": %s\n}\n' % (
            ARCH_FORMAT, cell_json(self.normal), cell_json(self.reduction))

    @classmethod
    def from_json(cls, text: str) -> "Architecture":
        try:
            d = json.loads(text)
        except json.JSONDecodeError as e:
            raise ValueError("architecture is not valid JSON: %s" % e) from None
        return cls.from_dict(d)

    @classmethod
    def load(cls, path: str) -> "Architecture":
        """Reads an architecture JSON file, or a search record holding one (best.json).

        Raises:
          ValueError: naming the file and the problem.
        """
        try:
            with open(path) as f:
                text = f.read()
        except OSError as e:
            raise ValueError("cannot read architecture file %s: %s" % (path, e.strerror)) from None
        try:
            d = json.loads(text)
        except json.JSONDecodeError as e:
            raise ValueError("%s: architecture is not valid JSON: %s" % (path, e)) from None
        if isinstance(d, dict) and "arch" in d and "normal" not in d:
            d = d["arch"]  # a trial record, e.g. log/best.json
        try:
            return cls.from_dict(d)
        except ValueError as e:
            raise ValueError("%s: %s" % (path, e)) from None

    # ----- identity -----
    def hash(self) -> str:
        """Hex digest equal for isomorphic architectures (cell by cell)."""
        cert = (self.normal.canonical(), self.reduction.canonical())
        return hashlib.sha256(repr(cert).encode()).hexdigest()[:32]

    def __eq__(self, other):
        return (isinstance(other, Architecture) and self.normal == other.normal
                and self.reduction == other.reduction)

    def __hash__(self):
        return hash((self.normal, self.reduction))

    def describe(self) -> str:
        return "normal cell:\n%s\nreduction cell:\n%s" % (
            _indent(self.normal.describe()), _indent(self.reduction.describe()))


def _indent(text: str) -> str:
    return "\n".join("  " + line for line in text.splitlines())


# ---------------------------------------------------------------------------
# Canonical form by colour refinement + individualisation (exact, small N).
# ---------------------------------------------------------------------------

def _rank(signatures: List) -> List[int]:
    order = sorted(set(signatures))
    pos = {s: i for i, s in enumerate(order)}
    return [pos[s] for s in signatures]


def _refine(colors: List[int], preds: List[List[int]], succs: List[List[int]]) -> List[int]:
    """Iterates colour refinement on a directed graph until the partition is stable."""
    while True:
        sig = [(colors[v], tuple(sorted(colors[u] for u in preds[v])),
                tuple(sorted(colors[u] for u in succs[v]))) for v in range(len(colors))]
        new = _rank(sig)
        if len(set(new)) == len(set(colors)):
            return new
        colors = new


def _canonical_certificate(ops: Sequence[str], matrix: np.ndarray) -> Tuple:
    """Smallest (ops, edges) relabelling over an individualisation-refinement tree.

    Colour refinement labels every node by a canonical invariant; ties are
    broken by individualising each member of the first non-singleton colour
    class in turn (twins, i.e. nodes with equal colour and equal predecessor
    and successor sets, are interchangeable, so only one of them is tried).
    The result depends only on the isomorphism class of the labelled DAG.
    """
    n = len(ops)
    preds = [[int(i) for i in np.nonzero(matrix[:, v])[0]] for v in range(n)]
    succs = [[int(j) for j in np.nonzero(matrix[v, :])[0]] for v in range(n)]
    colors = _refine(_rank(list(ops)), preds, succs)
    best: List[Optional[Tuple]] = [None]

    def certificate(order: List[int]) -> Tuple:
        pos = {v: k for k, v in enumerate(order)}
        edges = tuple(sorted((pos[i], pos[j]) for i in range(n) for j in succs[i]))
        return (tuple(ops[v] for v in order), edges)

    def search(cols: List[int]):
        if len(set(cols)) == n:
            cert = certificate(sorted(range(n), key=lambda v: cols[v]))
            if best[0] is None or cert < best[0]:
                best[0] = cert
            return
        sizes: Dict[int, int] = {}
        for c in cols:
            sizes[c] = sizes.get(c, 0) + 1
        target = min(c for c, k in sizes.items() if k > 1)
        tried = set()
        for v in range(n):
            if cols[v] != target:
                continue
            twin_key = (frozenset(preds[v]), frozenset(succs[v]))
            if twin_key in tried:
                continue
            tried.add(twin_key)
            ind = [2 * c + (0 if u == v else 1) for u, c in enumerate(cols)]
            search(_refine(_rank(ind), preds, succs))

    search(colors)
    return best[0]
