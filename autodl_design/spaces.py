"""Search spaces: AutoDL Design's cell space (normal + reduction cell), as a ``SearchSpace``."""
from typing import Dict, List, Sequence, Tuple

import numpy as np

from autodl_design.arch import Architecture, Cell
from autodl_design.interfaces import Candidate, Decision, SearchSpace


def encode_batch(space: SearchSpace,
                 candidates: Sequence[Candidate]) -> Tuple[np.ndarray, np.ndarray]:
    """The controller's vectors of several candidates, stacked.

    Returns:
      (tokens int32 [B, T], adjvec int32 [B, A]) in the order of ``candidates``.
    """
    vectors = [space.encode(c) for c in candidates]
    return np.stack([v[0] for v in vectors]), np.stack([v[1] for v in vectors])


def num_token_decisions(space: SearchSpace) -> int:
    """T: how many of ``space.decisions()`` are token decisions (the rest are edge bits)."""
    return len(space.encode(space.sample(np.random.default_rng(0)))[0])


def decision_indices(space: SearchSpace, candidate: Candidate) -> Tuple[int, ...]:
    """One choice index per decision of ``space`` (tokens then edge bits), as ints.

    Returns:
      tuple [T + A] equal to ``np.concatenate(space.encode(candidate))``.
    """
    return tuple(int(i) for i in np.concatenate(space.encode(candidate)))


def candidate_of_indices(space: SearchSpace, indices: Sequence[int], num_tokens: int) -> Candidate:
    """Inverse of ``decision_indices``; ValueError when the space rejects the vectors.

    Args:
      space: the search space.
      indices: int [T + A], one choice index per decision.
      num_tokens: T (``num_token_decisions(space)``).
    """
    idx = np.asarray(indices, np.int32)
    return space.decode(idx[:num_tokens], idx[num_tokens:])


class CellSpace:
    """AutoDL Design's space: two cells of ``num_nodes`` nodes, an op per node, DAG edges.

    Decisions in controller order: the normal cell's op per node, the
    reduction cell's, then one bit per possible edge (i -> j, i < j) of the
    normal cell and of the reduction cell (``Architecture.to_vectors``).

    Args:
      num_nodes: nodes per cell (>= 2).
      ops: op names of the registry the nodes choose from (registry order).
    """

    name = "cell"

    def __init__(self, num_nodes: int, ops: Sequence[str]):
        if num_nodes < 2:
            raise ValueError("a cell needs at least 2 nodes, got %d" % num_nodes)
        if not ops:
            raise ValueError("the cell space needs at least one op")
        self.num_nodes = int(num_nodes)
        self.ops = tuple(ops)

    def decisions(self) -> List[Decision]:
        out = [Decision("%s.op.%d" % (c, k), self.ops)
               for c in ("normal", "reduction") for k in range(self.num_nodes)]
        out += [Decision("%s.edge.%d.%d" % (c, i, j), (0, 1))
                for c in ("normal", "reduction")
                for j in range(1, self.num_nodes) for i in range(j)]
        return out

    def sample(self, rng: np.random.Generator) -> Architecture:
        """Uniform ops and fair-coin edges, drawn cell by cell in the controller's order."""
        n = self.num_nodes
        cells = []
        for _ in range(2):
            names = [self.ops[int(i)] for i in rng.integers(0, len(self.ops), n)]
            m = np.zeros((n, n), np.int8)
            for j in range(1, n):
                m[:j, j] = rng.integers(0, 2, j)
            cells.append(Cell(names, m))
        return Architecture(*cells)

    def mutate(self, arch: Architecture, rng: np.random.Generator) -> Architecture:
        """One mutation: change one node's op, or flip one edge, in one of the two cells."""
        cells = [arch.normal, arch.reduction]
        c = int(rng.integers(2))
        cell = cells[c]
        n = cell.num_nodes
        if len(self.ops) > 1 and rng.random() < 0.5:
            node = int(rng.integers(n))
            choices = [op for op in self.ops if op != cell.ops[node]]
            new_ops = list(cell.ops)
            new_ops[node] = choices[int(rng.integers(len(choices)))]
            cells[c] = Cell(new_ops, cell.matrix)
        else:
            j = int(rng.integers(1, n))
            i = int(rng.integers(j))
            m = cell.matrix.copy()
            m[i, j] = 1 - m[i, j]
            cells[c] = Cell(cell.ops, m)
        return Architecture(*cells)

    def encode(self, arch: Architecture) -> Tuple[np.ndarray, np.ndarray]:
        return arch.to_vectors(self.ops)

    def decode(self, tokens: np.ndarray, adjvec: np.ndarray) -> Architecture:
        return Architecture.from_vectors(tokens, adjvec, self.ops)

    def from_dict(self, d: Dict) -> Architecture:
        arch = Architecture.from_dict(d)
        if arch.num_nodes != self.num_nodes:
            raise ValueError("architecture has %d nodes per cell; this space has %d"
                             % (arch.num_nodes, self.num_nodes))
        unknown = sorted({op for c in arch.cells for op in c.ops} - set(self.ops))
        if unknown:
            raise ValueError("architecture uses ops %s outside this space's %s"
                             % (unknown, list(self.ops)))
        return arch
