"""NAS-Bench-201: the shipped table's loader, the space, the table evaluator, the protocol and a searcher regression."""
import gzip
import os

import numpy as np
import pytest
from scipy import stats

from autodl_design import nb201
from autodl_design.interfaces import Evaluator, SearchSpace, Searcher
from autodl_design.search.searchers import EvolutionSearcher, RandomSearcher


@pytest.fixture(scope="module")
def table():
    return nb201.load_table()


@pytest.fixture(scope="module")
def csv_text():
    with gzip.open(nb201.TABLE_PATH, "rt") as f:
        return f.read()


def write_gz(path, text):
    with gzip.open(path, "wt") as f:
        f.write(text)
    return str(path)


def assert_one_line_error(fn, path, match):
    with pytest.raises(ValueError, match=match) as e:
        fn()
    msg = str(e.value)
    assert "\n" not in msg and str(path) in msg
    return msg


# --------------------------------------------------------------------------- loader
def test_loads_the_shipped_copy(table):
    assert len(table) == nb201.NUM_CELLS == 15625
    assert table.sha256 == nb201.TABLE_SHA256
    assert sorted(table.row_of_code.tolist()) == list(range(15625))
    assert table.arch_strs[6111] == ("|nor_conv_3x3~0|+|nor_conv_3x3~0|nor_conv_3x3~1|"
                                     "+|skip_connect~0|nor_conv_3x3~1|nor_conv_1x1~2|")
    assert table.best_test() == (6111, pytest.approx(94.3733, abs=1e-3))
    assert table.best_test(8.0)[1] == pytest.approx(90.83, abs=1e-6)
    assert table.best_test(12.0)[1] == pytest.approx(90.99, abs=1e-6)
    # The base-5 code of each row's arch_str maps back to that row.
    space = nb201.NB201Space()
    tokens = np.stack([space.from_arch_str(s).tokens for s in table.arch_strs[::97]])
    assert table.rows(tokens).tolist() == list(range(0, 15625, 97))
    assert np.all(table.cost_s > 0)


def test_refuses_a_truncated_gzip(tmp_path):
    raw = open(nb201.TABLE_PATH, "rb").read()
    path = tmp_path / "cut.csv.gz"
    path.write_bytes(raw[:len(raw) // 2])
    assert_one_line_error(lambda: nb201.load_table(str(path)), path, "gzip")
    # With the shipped checksum expected, the checksum names the damage first.
    assert_one_line_error(lambda: nb201.load_table(str(path), nb201.TABLE_SHA256), path,
                          "SHA-256")


def test_refuses_missing_rows_foreign_columns_and_non_gzip(tmp_path, csv_text):
    lines = csv_text.splitlines(keepends=True)
    short = write_gz(tmp_path / "short.csv.gz", "".join(lines[:101]))
    assert_one_line_error(lambda: nb201.load_table(short), short, "100 rows, expected 15625")
    foreign = write_gz(tmp_path / "foreign.csv.gz", "a,b,c\n1,2,3\n")
    assert_one_line_error(lambda: nb201.load_table(foreign), foreign, "missing index")
    plain = tmp_path / "plain.csv.gz"
    plain.write_text(csv_text[:1000])
    assert_one_line_error(lambda: nb201.load_table(str(plain)), plain, "gzip")
    missing = tmp_path / "nothing.csv.gz"
    assert_one_line_error(lambda: nb201.load_table(str(missing)), missing, "cannot read")
    def edit_row(k, field, value):
        fields = lines[k].split(",")
        fields[field] = value
        return lines[:k] + [",".join(fields)] + lines[k + 1:]
    bad_value = write_gz(tmp_path / "bad.csv.gz", "".join(edit_row(2, 2, "x")))
    assert_one_line_error(lambda: nb201.load_table(bad_value), bad_value,
                          "row 2: val_acc_12ep is 'x'")
    twice = write_gz(tmp_path / "twice.csv.gz", "".join(edit_row(2, 1, lines[1].split(",")[1])))
    assert_one_line_error(lambda: nb201.load_table(twice), twice, "missing")


def test_refuses_a_valid_table_with_another_checksum(tmp_path, csv_text):
    # Same format, one accuracy changed: only the checksum can tell.
    lines = csv_text.splitlines(keepends=True)
    fields = lines[1].split(",")
    fields[2] = "99.0"
    edited = write_gz(tmp_path / "edited.csv.gz", "".join([lines[0], ",".join(fields)]
                                                          + lines[2:]))
    assert nb201.load_table(edited).columns["val_acc_12ep"][0] == 99.0
    msg = assert_one_line_error(lambda: nb201.load_table(edited, nb201.TABLE_SHA256), edited,
                                "SHA-256")
    assert "expected %s" % nb201.TABLE_SHA256[:12] in msg


# --------------------------------------------------------------------------- space
def test_space_round_trips_and_mutates_one_edge():
    space = nb201.NB201Space()
    assert isinstance(space, SearchSpace)
    assert [d.choices for d in space.decisions()] == [nb201.OPS] * 6
    rng = np.random.default_rng(0)
    seen = set()
    for _ in range(300):
        cell = space.sample(rng)
        tokens, adjvec = space.encode(cell)
        assert tokens.dtype == np.int32 and tokens.shape == (6,)
        assert adjvec.dtype == np.int32 and adjvec.shape == (0,)
        assert space.decode(tokens, adjvec) == cell
        assert space.from_dict(cell.to_dict()) == cell
        assert space.from_arch_str(cell.arch_str) == cell
        assert nb201.tokens_of_codes(cell.code).tolist() == tokens.tolist()
        child = space.mutate(cell, rng)
        assert sum(a != b for a, b in zip(cell.ops, child.ops)) == 1
        assert child.hash() != cell.hash()
        seen.add(cell.hash())
    assert len(seen) > 290  # 300 draws from 15,625 cells
    assert "node 3 <-" in cell.describe()


@pytest.mark.parametrize("bad", [
    {"arch_str": "|conv~0|+|none~0|none~1|+|none~0|none~1|none~2|"},
    {"arch_str": "|none~0|+|none~0|none~1|"},
    {"arch_str": "|none~1|+|none~0|none~1|+|none~0|none~1|none~2|"},
    {"space": "cell", "arch_str": "|none~0|+|none~0|none~1|+|none~0|none~1|none~2|"},
    {"normal": {}}, "not a dict"])
def test_from_dict_names_the_problem(bad):
    with pytest.raises(ValueError):
        nb201.NB201Space().from_dict(bad)


def test_decode_refuses_vectors_outside_the_space():
    space = nb201.NB201Space()
    for tokens, adjvec in (([0, 1, 2, 3, 4, 5], []), ([0, 1, 2], []), ([0] * 6, [1])):
        with pytest.raises(ValueError):
            space.decode(np.array(tokens), np.array(adjvec, np.int32))


# --------------------------------------------------------------------------- evaluator
def test_evaluator_returns_the_table_values(table):
    ev = nb201.TableEvaluator(latency_device="eyeriss")
    assert isinstance(ev, Evaluator)
    ev.setup("cpu", 1)
    space = nb201.NB201Space()
    m = ev.evaluate(space.from_arch_str(table.arch_strs[0]).to_dict(), 0, 0, {})
    assert m["status"] == "ok" and m["nb201_index"] == 0
    assert m["val_accuracy"] == pytest.approx(0.6336399998046875)
    assert m["test_accuracy"] == pytest.approx(0.8586333333333334)
    assert m["params"] == pytest.approx(129306)
    assert m["latency_ms"] == pytest.approx(3.645620000000001)
    assert m["simulated_seconds"] == pytest.approx(12 * 7.221092999 + 2.548979237)
    best = ev.evaluate({"arch_str": table.arch_strs[6111]}, 1, 0, {})
    assert best["test_accuracy"] == pytest.approx(0.9437333, abs=1e-6)
    ev = nb201.TableEvaluator()
    ev.setup("cpu", 1)
    assert ev.evaluate({"arch_str": table.arch_strs[6111]}, 1, 0, {})["latency_ms"] == \
        pytest.approx(68.40410818003875)
    with pytest.raises(ValueError, match="latency device"):
        nb201.TableEvaluator(latency_device="gpu")


# --------------------------------------------------------------------------- protocol
class Repeater:
    """Proposes one fixed cell forever."""
    step = 0

    def __init__(self, cell):
        self.cell = cell
        self.seen = []

    def propose(self, n):
        return [self.cell] * n

    def observe(self, cands, rewards):
        self.seen.extend(rewards)
        self.step += 1


def test_protocol_reuses_repeats_for_free_and_skips_infeasible_cells(table):
    space = nb201.NB201Space()
    cell = space.from_arch_str(table.arch_strs[6111])
    rep = Repeater(cell)
    res = nb201.run_protocol(rep, table, 4, max_idle_proposals=50)
    assert res.stalled and res.evaluations == 1 and res.best_row == 6111
    assert res.spent_s == pytest.approx(table.cost_s[6111])
    assert rep.seen[0] == pytest.approx(0.843840000012207) and len(set(rep.seen)) == 1
    # 6111 runs in 68 ms on the Raspberry Pi 4: under an 8 ms bound it is never trained.
    rep = Repeater(cell)
    res = nb201.run_protocol(rep, table, 4, max_latency_ms=8, infeasible_reward=-1.0,
                             max_idle_proposals=20)
    assert res.evaluations == 0 and res.spent_s == 0 and not res.feasible
    assert np.isnan(res.test_acc) and set(rep.seen) == {-1.0}


def test_protocol_stops_within_the_budget(table):
    res = nb201.run_protocol(RandomSearcher(nb201.NB201Space(), 0), table, 1, budget_s=3000)
    assert not res.stalled and 0 < res.spent_s <= 3000
    assert res.evaluations == len(res.curve_t)
    assert np.all(np.diff(res.curve_test[np.argsort(res.curve_t)]) >= -100)
    assert res.test_acc == res.curve_test[-1] == table.columns["test_acc_200ep"][res.best_row]


# --------------------------------------------------------------------------- controller
def test_controller_builds_for_nb201_and_the_cell_space_unchanged():
    from agent.agent import ControllerAgent
    from agent.space_searcher import SpaceRLSearcher
    from autodl_design.config import AgentConfig
    from autodl_design.spaces import CellSpace
    cfg = AgentConfig(num_nodes=3, ops=("conv_1x1", "conv_3x3", "maxpool_3x3"), hidden_size=8,
                      batch_size=5)
    a = ControllerAgent.create(cfg, 2, "cpu")
    b = ControllerAgent.create_for_space(cfg, CellSpace(3, cfg.ops), 2, "cpu")
    for _ in range(2):
        sa, sb = a.sample(), b.sample()
        assert np.array_equal(sa.tokens, sb.tokens) and np.array_equal(sa.adjvec, sb.adjvec)
        r = np.arange(5.0)
        assert a.learn_from_rewards(sa.tokens, sa.adjvec, r) == \
            b.learn_from_rewards(sb.tokens, sb.adjvec, r)
    space = nb201.NB201Space()
    agent = ControllerAgent.create_for_space(cfg, space, 0, "cpu")
    batch = agent.sample(7)
    assert batch.tokens.shape == (7, 6) and batch.adjvec.shape == (7, 0)
    assert [space.encode(c)[0].tolist() for c in batch.archs] == batch.tokens.tolist()
    assert agent.log_prob(batch.tokens, batch.adjvec).shape == (7,)
    searcher = SpaceRLSearcher(space, cfg, seed=0, advantage="normalize", ppo_epochs=3,
                               unique=True)
    assert isinstance(searcher, Searcher)
    cells = searcher.propose(5)
    assert len({c.hash() for c in cells}) == 5
    searcher.observe(cells, [0.1, 0.5, None, 0.3, 0.9])
    assert searcher.step == 1


def test_space_rl_searcher_on_the_cell_space_is_rl_searcher():
    from agent.space_searcher import SpaceRLSearcher
    from autodl_design.config import AgentConfig
    from autodl_design.search.searchers import RLSearcher
    from autodl_design.spaces import CellSpace
    cfg = AgentConfig(num_nodes=3, ops=("conv_1x1", "conv_3x3", "maxpool_3x3"), hidden_size=8,
                      batch_size=4, advantage="cube")
    old = RLSearcher(CellSpace(3, cfg.ops), cfg, 5, "cpu")
    new = SpaceRLSearcher(CellSpace(3, cfg.ops), cfg, 5)
    for step in range(3):
        a, b = old.propose(4), new.propose(4)
        assert [x.hash() for x in a] == [x.hash() for x in b]
        rewards = [0.1 * step, None, 0.5, 0.2]
        old.observe(a, rewards)
        new.observe(b, rewards)
    assert old.losses == new.losses and old.step == new.step == 3


# --------------------------------------------------------------------------- regression
def run_many(make, batch, table, runs, budget):
    return np.array([nb201.run_protocol(make(seed), table, batch, budget_s=budget).val_acc
                     for seed in range(runs)])


def test_rl_and_evolution_beat_random_search(table):
    """A searcher regression: on NB201 rl and evolution find better cells than random search.

    Compared on the best reward found (val_acc_12ep, what the searchers
    optimise) over seeded runs of the paper's protocol (12,000 s): 200 runs
    of random search and evolution, 15 of rl (the slowest); one-sided Welch
    t-tests.
    """
    from agent.space_searcher import SpaceRLSearcher
    space = nb201.NB201Space()
    s = nb201.NB201_CONTROLLER
    budget = 12000.0
    random = run_many(lambda seed: RandomSearcher(space, seed), 1, table, 200, budget)
    evolution = run_many(lambda seed: EvolutionSearcher(space, seed, 10, 3), 1, table, 200,
                         budget)
    rl = run_many(lambda seed: SpaceRLSearcher(space, s.agent_config(), seed,
                                               **s.searcher_options()),
                  s.batch_size, table, 15, budget)
    for name, values in (("rl", rl), ("evolution", evolution)):
        p = stats.ttest_ind(values, random, equal_var=False, alternative="greater").pvalue
        assert p < 0.01, "%s (%.2f) does not beat random search (%.2f): p = %.3g" % (
            name, values.mean(), random.mean(), p)
