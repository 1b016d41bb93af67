"""Baseline searchers: random and regularized evolution."""
import numpy as np
import pytest

from autodl_design.arch import Architecture
from autodl_design.search.searchers import EvolutionSearcher, RandomSearcher
from autodl_design.spaces import CellSpace

OPS = ("conv_1x1", "conv_3x3", "maxpool_3x3")


def agent(n=4):
    return CellSpace(n, OPS)


def diff_count(a: Architecture, b: Architecture):
    ops = sum(x != y for ca, cb in zip(a.cells, b.cells) for x, y in zip(ca.ops, cb.ops))
    edges = int(sum(np.abs(ca.matrix - cb.matrix).sum() for ca, cb in zip(a.cells, b.cells)))
    return ops, edges


def test_mutation_changes_exactly_one_op_or_one_edge():
    rng = np.random.default_rng(0)
    kinds = set()
    for _ in range(300):
        space = CellSpace(5, OPS)
        a = space.sample(rng)
        b = space.mutate(a, rng)
        ops, edges = diff_count(a, b)
        assert (ops, edges) in ((1, 0), (0, 1))
        kinds.add((ops, edges))
    assert kinds == {(1, 0), (0, 1)}
    one_op = CellSpace(3, ("conv_3x3",))
    single = one_op.sample(rng)
    assert diff_count(single, one_op.mutate(single, rng)) == (0, 1)


def test_random_searcher_is_seeded_and_covers_ops_and_edges():
    a = [x.hash() for x in RandomSearcher(agent(), 3).propose(20)]
    b = [x.hash() for x in RandomSearcher(agent(), 3).propose(20)]
    c = [x.hash() for x in RandomSearcher(agent(), 4).propose(20)]
    assert a == b and a != c
    archs = RandomSearcher(agent(), 0).propose(200)
    used = {op for x in archs for cell in x.cells for op in cell.ops}
    assert used == set(OPS)
    density = np.mean([cell.matrix[np.triu_indices(4, 1)].mean() for x in archs
                       for cell in x.cells])
    assert 0.4 < density < 0.6


def test_evolution_selects_from_best_of_tournament_and_ages():
    ev = EvolutionSearcher(agent(), seed=0, population=4, sample_size=4)
    first = ev.propose(4)  # random while the population fills
    rewards = [0.1, 0.9, 0.2, 0.3]
    ev.observe(first, rewards)
    children = ev.propose(10)
    # sample_size == population: the parent is always the best member.
    for child in children:
        assert sum(diff_count(first[1], child)) == 1
    # Aging: 4 new members push all the old ones out.
    ev.observe(children[:4], [0.0] * 4)
    assert [r for _, r in ev.population] == [0.0] * 4
    ev.observe(children[4:5], [None])  # failed candidates never join
    assert len(ev.population) == 4


def test_evolution_save_restore_continues_identically(tmp_path):
    a = EvolutionSearcher(agent(), seed=1, population=5, sample_size=2)
    archs = a.propose(6)
    a.observe(archs, [0.1 * k for k in range(6)])
    a.save(str(tmp_path))
    b = EvolutionSearcher(agent(), seed=99, population=5, sample_size=2)
    b.restore(str(tmp_path))
    assert [x.hash() for x in a.propose(7)] == [x.hash() for x in b.propose(7)]
    assert b.step == 1


def test_evolution_rejects_bad_tournament():
    with pytest.raises(ValueError, match="sample_size"):
        EvolutionSearcher(agent(), 0, population=3, sample_size=4)
