"""Tests of the architecture encoding: validation, flat vectors, JSON and hash."""
import json

import numpy as np
import pytest

from autodl_design.arch import Architecture, Cell
from autodl_design.ops import OP_NAMES, OPS, parse_ops


def random_cell(rng, n, ops=OP_NAMES, p=0.4):
    m = np.triu((rng.random((n, n)) < p).astype(np.int8), k=1)
    return Cell([ops[i] for i in rng.integers(0, len(ops), n)], m)


def random_topological_relabel(cell, rng):
    """Same DAG with nodes renumbered in another random topological order."""
    n = cell.num_nodes
    indeg = cell.matrix.sum(axis=0).astype(int).tolist()
    ready = [v for v in range(n) if indeg[v] == 0]
    order = []
    while ready:
        v = ready.pop(rng.integers(len(ready)))
        order.append(v)
        for w in cell.successors(v):
            indeg[w] -= 1
            if indeg[w] == 0:
                ready.append(w)
    new = {old: k for k, old in enumerate(order)}
    m = np.zeros_like(cell.matrix)
    for i in range(n):
        for j in cell.successors(i):
            m[new[i], new[j]] = 1
    ops = [None] * n
    for old, k in new.items():
        ops[k] = cell.ops[old]
    return Cell(ops, m), order


def test_registry_is_autodl_design_order():
    assert OP_NAMES == ("conv_1x1", "conv_3x3", "conv_5x5", "dilated_3x3", "conv_1x3_3x1",
                        "conv_1x5_5x1", "maxpool_3x3", "maxpool_5x5", "avgpool_3x3",
                        "avgpool_5x5")
    assert set(OPS) == set(OP_NAMES)


def test_parse_ops_subset_keeps_registry_order_and_rejects_unknown():
    assert parse_ops(["avgpool_3x3", "conv_1x1"]) == ["conv_1x1", "avgpool_3x3"]
    assert parse_ops([]) == list(OP_NAMES)
    with pytest.raises(ValueError, match="unknown op 'conv_7x7'"):
        parse_ops(["conv_7x7"])
    with pytest.raises(ValueError, match="repeats"):
        parse_ops(["conv_1x1", "conv_1x1"])


@pytest.mark.parametrize("ops, matrix, message", [
    (["conv_1x1", "conv_3x3"], [[0, 1, 0], [0, 0, 1], [0, 0, 0]], "2 ops but a 3x3"),
    (["conv_1x1"] * 3, [[0, 1], [0, 0]], "3 ops but a 2x2"),
    (["conv_1x1"] * 2, [[0, 1, 0], [0, 0, 0]], "square"),
    (["conv_1x1"] * 2, [[0, 2], [0, 0]], "0 or 1"),
    (["conv_1x1"] * 2, [[0, 0], [1, 0]], r"upper triangular.*\[1, 0\]"),
    (["conv_1x1"] * 2, [[1, 0], [0, 0]], r"upper triangular.*\[0, 0\]"),
    (["conv_1x1", "conv_9x9"], [[0, 1], [0, 0]], "node 1 has unknown op 'conv_9x9'"),
    (["conv_1x1"], [[0]], "at least 2 nodes"),
    ("conv_1x1", [[0, 1], [0, 0]], "list of op names"),
])
def test_cell_validation_names_the_problem(ops, matrix, message):
    with pytest.raises(ValueError, match=message):
        Cell(ops, matrix)


def test_cell_keeps_original_and_is_read_only():
    m = [[0, 1], [0, 0]]
    c = Cell(["conv_1x1", "maxpool_3x3"], m)
    assert c.original_matrix is m
    with pytest.raises(ValueError):
        c.matrix[0, 1] = 0


def test_architecture_needs_same_node_count():
    a = Cell(["conv_1x1"] * 2, [[0, 1], [0, 0]])
    b = Cell(["conv_1x1"] * 3, np.zeros((3, 3)))
    with pytest.raises(ValueError, match="2 nodes, reduction cell 3"):
        Architecture(a, b)


def test_flat_vector_order_written_out_for_n3():
    # Normal cell: 0 -> 1, 0 -> 2, 1 -> 2.  Reduction cell: only 1 -> 2.
    normal = Cell(["conv_3x3", "maxpool_3x3", "conv_1x1"],
                  [[0, 1, 1], [0, 0, 1], [0, 0, 0]])
    reduction = Cell(["avgpool_5x5", "conv_5x5", "dilated_3x3"],
                     [[0, 0, 0], [0, 0, 1], [0, 0, 0]])
    arch = Architecture(normal, reduction)
    tokens, adjvec = arch.to_vectors(OP_NAMES)
    # tokens: normal cell's 3 op indices then the reduction cell's.
    assert tokens.tolist() == [1, 6, 0, 9, 2, 3]
    # adjvec per cell: node 1 -> [m01]; node 2 -> [m02, m12]; normal then reduction.
    assert adjvec.tolist() == [1, 1, 1, 0, 0, 1]
    assert tokens.dtype == np.int32 and adjvec.dtype == np.int32
    assert Architecture.from_vectors(tokens, adjvec, OP_NAMES) == arch


def test_vectors_round_trip_random_and_subset_ops():
    rng = np.random.default_rng(1)
    ops = parse_ops(["conv_3x3", "maxpool_3x3", "avgpool_5x5"])
    for n in (2, 3, 5, 10):
        for _ in range(20):
            arch = Architecture(random_cell(rng, n, ops), random_cell(rng, n, ops))
            tokens, adjvec = arch.to_vectors(ops)
            assert tokens.shape == (2 * n,) and adjvec.shape == (n * (n - 1),)
            assert tokens.max() < len(ops)
            back = Architecture.from_vectors(tokens, adjvec, ops)
            assert back == arch
            np.testing.assert_array_equal(back.to_vectors(ops)[1], adjvec)


def test_from_vectors_rejects_bad_shapes_and_tokens():
    with pytest.raises(ValueError, match="even length"):
        Architecture.from_vectors([0, 1, 2], [0, 0], OP_NAMES)
    with pytest.raises(ValueError, match="N\\(N-1\\) = 6"):
        Architecture.from_vectors([0] * 6, [0] * 5, OP_NAMES)
    with pytest.raises(ValueError, match="out of range"):
        Architecture.from_vectors([0, 0, 0, 10], [0, 0], OP_NAMES)
    arch = Architecture(Cell(["conv_5x5"] * 2, [[0, 1], [0, 0]]),
                        Cell(["conv_1x1"] * 2, [[0, 1], [0, 0]]))
    with pytest.raises(ValueError, match="'conv_5x5' is not in the configured op list"):
        arch.to_vectors(["conv_1x1"])


def test_json_round_trip_is_readable_data():
    rng = np.random.default_rng(2)
    arch = Architecture(random_cell(rng, 4), random_cell(rng, 4))
    text = arch.to_json()
    d = json.loads(text)
    assert d["normal"]["ops"] == list(arch.normal.ops)
    assert d["reduction"]["matrix"] == arch.reduction.matrix.tolist()
    assert Architecture.from_json(text) == arch
    assert Architecture.from_dict(arch.to_dict()) == arch


def test_json_errors_name_the_cell_and_problem(tmp_path):
    arch = Architecture(Cell(["conv_1x1"] * 2, [[0, 1], [0, 0]]),
                        Cell(["conv_1x1"] * 2, [[0, 1], [0, 0]]))
    d = arch.to_dict()
    d["reduction"]["matrix"] = [[0, 0], [1, 0]]
    with pytest.raises(ValueError, match="reduction cell: .*upper triangular"):
        Architecture.from_dict(d)
    with pytest.raises(ValueError, match="missing 'normal'"):
        Architecture.from_dict({"reduction": d["reduction"]})
    with pytest.raises(ValueError, match="not valid JSON"):
        Architecture.from_json("{nope")
    p = tmp_path / "a.json"
    p.write_text("[1, 2]")
    with pytest.raises(ValueError, match=r"a\.json: .*JSON object"):
        Architecture.load(str(p))
    with pytest.raises(ValueError, match="cannot read architecture file"):
        Architecture.load(str(tmp_path / "missing.json"))
    record = tmp_path / "best.json"  # a search record holding the architecture
    record.write_text(json.dumps({"index": 3, "reward": 0.5, "arch": arch.to_dict()}))
    assert Architecture.load(str(record)) == arch


def test_hash_is_invariant_under_relabelling():
    rng = np.random.default_rng(3)
    for n in (3, 5, 10):
        for _ in range(30):
            normal, reduction = random_cell(rng, n), random_cell(rng, n)
            arch = Architecture(normal, reduction)
            normal2, _ = random_topological_relabel(normal, rng)
            reduction2, _ = random_topological_relabel(reduction, rng)
            assert Architecture(normal2, reduction2).hash() == arch.hash()


def test_hash_distinguishes_near_misses():
    rng = np.random.default_rng(4)
    seen = 0
    for n in (3, 5, 10):
        for _ in range(30):
            normal, reduction = random_cell(rng, n), random_cell(rng, n)
            h = Architecture(normal, reduction).hash()
            # One op changed.
            ops = list(normal.ops)
            k = int(rng.integers(n))
            ops[k] = OP_NAMES[(OP_NAMES.index(ops[k]) + 1) % len(OP_NAMES)]
            assert Architecture(Cell(ops, normal.matrix), reduction).hash() != h
            # One edge flipped.
            m = normal.matrix.copy()
            i = int(rng.integers(n - 1))
            j = int(rng.integers(i + 1, n))
            m[i, j] = 1 - m[i, j]
            assert Architecture(Cell(normal.ops, m), reduction).hash() != h
            # Normal and reduction swapped (different unless the cells are equal).
            if normal.canonical() != reduction.canonical():
                assert Architecture(reduction, normal).hash() != h
                seen += 1
    assert seen > 50


def test_hash_separates_classic_non_isomorphic_pairs():
    # Same op multiset and degree sequence, different wiring.
    ops = ["conv_1x1"] * 4
    chain = Cell(ops, [[0, 1, 0, 0], [0, 0, 1, 0], [0, 0, 0, 1], [0, 0, 0, 0]])
    two_paths = Cell(ops, [[0, 1, 0, 0], [0, 0, 0, 0], [0, 0, 0, 1], [0, 0, 0, 0]])
    assert chain.canonical() != two_paths.canonical()
    # Which node carries which op matters even with identical structure.
    a = Cell(["conv_1x1", "conv_3x3", "conv_3x3"], [[0, 1, 0], [0, 0, 0], [0, 0, 0]])
    b = Cell(["conv_3x3", "conv_1x1", "conv_3x3"], [[0, 1, 0], [0, 0, 0], [0, 0, 0]])
    assert a.canonical() != b.canonical()
    # Relabelling the two isolated nodes of equal op is the same cell.
    c = Cell(["conv_3x3", "conv_3x3", "conv_1x1"], [[0, 0, 1], [0, 0, 0], [0, 0, 0]])
    assert b.canonical() == c.canonical()


def test_hash_of_highly_symmetric_cells_is_fast_and_stable():
    empty = Cell(["conv_1x1"] * 10, np.zeros((10, 10), np.int8))
    full = Cell(["conv_1x1"] * 10, np.triu(np.ones((10, 10), np.int8), 1))
    assert empty.canonical() != full.canonical()
    bip = np.zeros((10, 10), np.int8)
    bip[:5, 5:] = 1
    assert Cell(["avgpool_3x3"] * 10, bip).canonical() == Cell(["avgpool_3x3"] * 10,
                                                               bip).canonical()


def test_describe_lists_inputs_and_outputs():
    cell = Cell(["conv_3x3", "maxpool_3x3", "conv_1x1"], [[0, 1, 1], [0, 0, 0], [0, 0, 0]])
    assert cell.describe().splitlines() == [
        "0: conv_3x3 <- in", "1: maxpool_3x3 <- 0 -> out", "2: conv_1x1 <- 0 -> out"]
    assert cell.output_nodes() == [1, 2]
