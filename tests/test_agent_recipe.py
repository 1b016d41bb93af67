"""Tests of the controller over recipe spaces: per-token choices vs a numpy re-implementation, learning, checkpoints."""
import itertools
import os

import numpy as np
import pytest

from agent.agent import ControllerAgent, space_layout
from agent.model import ControllerModel
from agent.space_searcher import SpaceRLSearcher
from autodl_design.config import (AgentConfig, Config, ConstraintConfig, DataConfig,
                                  DeviceConfig, SearchConfig, TrainerConfig)
from autodl_design.recipe import RecipeSpace, parse_decisions
from autodl_design.search import searchers
from autodl_design.spaces import CellSpace
from tests.test_agent import _sigmoid, lstm_layers, lstm_step

OPS = ("conv_1x1", "conv_3x3", "maxpool_3x3", "avgpool_3x3")
# 3 x 2 x 3 recipes: fewer choices than the 4 ops.
RECIPE = {"width_mult": [0.5, 0.75, 1.0], "resolution": [16, 28],
          "optimizer": ["sgd", "adam", "rmsprop"]}
# More choices (5) than the cell's 2 ops: the op tokens are the masked ones.
WIDE_RECIPE = {"depth": [1, 2], "learning_rate": [0.01, 0.02, 0.05, 0.1, 0.2]}


def config(**kw) -> AgentConfig:
    base = dict(num_nodes=3, ops=OPS, hidden_size=8, num_layers=2, batch_size=6)
    base.update(kw)
    return AgentConfig(**base)


def cell_space(ops=OPS, recipe=None) -> RecipeSpace:
    return RecipeSpace(CellSpace(3, ops), parse_decisions(recipe or RECIPE))


def fixed_space(recipe=None) -> RecipeSpace:
    cell = CellSpace(3, OPS).sample(np.random.default_rng(4))
    return RecipeSpace(None, parse_decisions(recipe or RECIPE), fixed_cell=cell)


# ---------------------------------------------------------------------------
# A plain, slow numpy re-implementation of the controller for any layout
# (groups, per-token choices), one decision at a time, written from the
# model's description: token t is a softmax over its first c_t outputs only.
# ---------------------------------------------------------------------------

class NumpyLayoutController:
    def __init__(self, model: ControllerModel):
        w = {name: p.numpy().astype(np.float64) for name, p in model.named_parameters()}
        self.layers = lstm_layers(model)
        self.token_w, self.token_b = w["token_w"], w["token_b"][:, 0]
        if model.num_bits:
            self.adj_w, self.adj_b = w["adj_w"], w["adj_b"][:, 0]
        self.groups, self.choices = model.groups, model.token_choices
        self.h, self.t, self.c = model.hidden_size, model.temperature, model.tanh_constant
        self.d = max(model.num_tokens, max(self.groups))

    def _lstm(self, x, hs, cs):
        return lstm_step(self.layers, x, hs, cs)

    def run(self, tokens=None, adjvec=None, u_tokens=None, u_adj=None):
        """(tokens, adjvec, log_prob, entropy) of one candidate, teacher-forced or sampled."""
        hs = [np.zeros(self.h) for _ in self.layers]
        cs = [np.zeros(self.h) for _ in self.layers]
        x = np.zeros(self.d)
        out_tok, out_adj = [], []
        logp = ent = 0.0
        head = 0
        for pos, j in enumerate(self.groups):
            if j:
                hid = self._lstm(x, hs, cs)
                p = _sigmoid(np.tanh((hid @ self.adj_w[head][:, :j] + self.adj_b[head][:j])
                                     / self.t) * self.c)
                head += 1
                start = len(out_adj)
                if adjvec is not None:
                    bits = np.asarray(adjvec[start:start + j], np.float64)
                else:
                    bits = (u_adj[start:start + j] < p).astype(np.float64)
                out_adj.extend(int(v) for v in bits)
                logp += float(np.sum(bits * np.log(p) + (1 - bits) * np.log(1 - p)))
                ent -= float(np.sum(p * np.log(p) + (1 - p) * np.log(1 - p)))
                x = np.zeros(self.d)
                x[:j] = bits
            hid = self._lstm(x, hs, cs)
            c = self.choices[pos]
            logit = np.tanh((hid @ self.token_w[pos][:, :c] + self.token_b[pos][:c])
                            / self.t) * self.c
            q = np.exp(logit - logit.max())
            q /= q.sum()
            if tokens is not None:
                tok = int(tokens[pos])
            else:
                tok = min(int(np.sum(np.cumsum(q) < u_tokens[pos])), c - 1)
            out_tok.append(tok)
            logp += float(np.log(q[tok]))
            ent -= float(np.sum(q * np.log(q)))
            x = np.zeros(self.d)
            x[tok] = 1.0
        return np.array(out_tok), np.array(out_adj), logp, ent


SPACES = {"cells": lambda: cell_space(), "wide": lambda: cell_space(OPS[:2], WIDE_RECIPE),
          "fixed": lambda: fixed_space()}


def test_layout_of_recipe_spaces():
    lay = space_layout(cell_space())
    assert lay.ops == OPS and lay.groups == (0, 1, 2) * 2 + (0, 0, 0)
    assert lay.choices == (4,) * 6 + (3, 2, 3)
    lay = space_layout(cell_space(OPS[:2], WIDE_RECIPE))
    assert lay.choices == (2,) * 6 + (2, 5)
    lay = space_layout(fixed_space())
    assert lay == ((), (0, 0, 0), (3, 2, 3))
    agent = ControllerAgent.create_for_space(config(), fixed_space(), 0, "cpu")
    model = agent.alg.model
    assert model.num_token_decisions == 3 and model.num_bits == 0 and model.num_tokens == 3
    assert tuple(model.token_w.shape) == (3, 8, 3)
    batch = agent.sample(5)
    assert batch.tokens.shape == (5, 3) and batch.adjvec.shape == (5, 0)
    assert all(c.arch == fixed_space().fixed_cell for c in batch.archs)


def test_all_counts_equal_to_k_change_nothing():
    groups = (0, 1, 2) * 2
    a = ControllerModel(None, 4, 8, groups=groups, seed=3)
    b = ControllerModel(None, 4, 8, groups=groups, seed=3, token_choices=(4,) * 6)
    assert a.token_choices == b.token_choices == (4,) * 6 and b.token_mask is None
    for (n, p), (m, q) in zip(a.named_parameters(), b.named_parameters()):
        assert n == m and np.array_equal(p.numpy(), q.numpy()), n
    with pytest.raises(ValueError, match="token_choices"):
        ControllerModel(None, 4, 8, groups=groups, token_choices=(4,) * 5 + (5,))


@pytest.mark.parametrize("name", sorted(SPACES))
def test_log_prob_and_entropy_match_numpy_reference(name):
    space = SPACES[name]()
    agent = ControllerAgent.create_for_space(config(learning_rate=0.05), space, 3, "cpu")
    for _ in range(2):  # away from the initial weights
        b = agent.sample()
        agent.learn_from_rewards(b.tokens, b.adjvec, b.tokens[:, -1].astype(float))
    model = agent.alg.model
    ref = NumpyLayoutController(model)
    rng = np.random.default_rng(0)
    # Arbitrary valid decisions (not sampled), plus a sampled batch.
    tokens = np.stack([rng.integers(0, c, 6) for c in model.token_choices], axis=1)
    adjvec = rng.integers(0, 2, (6, model.num_bits))
    batch = agent.sample()
    for t, a in ((tokens, adjvec), (batch.tokens, batch.adjvec)):
        logp, ent = agent.alg.log_prob(t, a)
        for k in range(t.shape[0]):
            _, _, ref_logp, ref_ent = ref.run(tokens=t[k], adjvec=a[k])
            assert logp[k] == pytest.approx(ref_logp, rel=1e-5, abs=1e-5)
            assert ent[k] == pytest.approx(ref_ent, rel=1e-5, abs=1e-5)


@pytest.mark.parametrize("name", sorted(SPACES))
def test_sampling_matches_numpy_reference_and_stays_in_range(name):
    space = SPACES[name]()
    agent = ControllerAgent.create_for_space(config(), space, 5, "cpu")
    model = agent.alg.model
    ref = NumpyLayoutController(model)
    rng = np.random.default_rng(7)
    u_tok, u_adj = rng.random((30, model.num_token_decisions)), rng.random((30, model.num_bits))
    u_tok[:10] = np.nextafter(1.0, 0.0)  # above any rounded-down cdf: the clip decides
    tokens, adjvec = agent.alg.sample(u_tok, u_adj)
    for k in range(30):
        t, a, _, _ = ref.run(u_tokens=u_tok[k], u_adj=u_adj[k])
        assert tokens[k].tolist() == t.tolist() and adjvec[k].tolist() == a.tolist()
    assert tokens[:10].tolist() == [[c - 1 for c in model.token_choices]] * 10
    # Many samples: every index in range, every choice of every token seen.
    batch = agent.sample(2000)
    for pos, c in enumerate(model.token_choices):
        assert sorted(set(batch.tokens[:, pos].tolist())) == list(range(c)), pos
    assert all(isinstance(x.recipe.get("depth" if name == "wide" else "resolution"), int)
               for x in batch.archs[:20])


def test_out_of_range_recipe_index_is_rejected():
    agent = ControllerAgent.create_for_space(config(), fixed_space(), 0, "cpu")
    good = agent.sample(2)
    bad = good.tokens.copy()
    bad[0, 1] = 2  # resolution has 2 choices; 2 < K = 3 would pass a single range check
    with pytest.raises(ValueError, match=r"choices \[3, 2, 3\]"):
        agent.learn(bad, good.adjvec, [0.0, 0.0])
    assert agent.step == 0


# The synthetic reward: the number of recipe indices equal to OPTIMUM's, plus
# 2 for the whole combination (peaked at OPTIMUM, 5 there, at most 2 elsewhere).
OPTIMUM = (2, 0, 1)   # width_mult 1.0, resolution 16, optimizer adam


def recipe_reward(recipe_indices: np.ndarray) -> np.ndarray:
    hits = (np.asarray(recipe_indices) == np.asarray(OPTIMUM)).sum(1)
    return hits + 2.0 * (hits == len(OPTIMUM))


def test_fixed_cell_controller_learns_the_peak_recipe():
    space = fixed_space()
    agent = ControllerAgent.create_for_space(config(learning_rate=0.05, batch_size=8), space,
                                             0, "cpu")
    every = np.array(list(itertools.product(range(3), range(2), range(3))))
    start = agent.log_prob(every, np.zeros((18, 0)))
    for _ in range(50):
        b = agent.sample()
        agent.learn_from_rewards(b.tokens, b.adjvec, recipe_reward(b.tokens))
    logp = agent.log_prob(every, np.zeros((18, 0)))
    assert tuple(every[np.argmax(logp)]) == OPTIMUM
    assert tuple(every[np.argmax(start)]) != OPTIMUM          # it was learned
    assert np.exp(logp).sum() == pytest.approx(1.0, abs=1e-4)  # a distribution over 18
    best = space.decode(every[np.argmax(logp)], np.zeros(0))
    assert best.recipe.to_dict() == {"width_mult": 1.0, "resolution": 16, "optimizer": "adam"}


def make_config(searcher="rl", seed=0) -> Config:
    return Config(data=DataConfig(), trainer=TrainerConfig(),
                  agent=config(learning_rate=0.05, batch_size=8),
                  constraints=ConstraintConfig(), devices=DeviceConfig(),
                  search=SearchConfig(seed=seed, searcher=searcher))


def _search(searcher, space, steps):
    out = []
    for _ in range(steps):
        cands = searcher.propose(8)
        tokens = np.stack([space.encode(c)[0] for c in cands])
        rewards = recipe_reward(tokens[:, -3:]).tolist()
        searcher.observe(cands, rewards)
        out.append(([c.hash() for c in cands], rewards))
    return out


def test_rl_searcher_on_cells_and_recipe_learns_the_peak_recipe():
    space = cell_space()
    searcher = searchers.make_searcher(make_config(), space)
    assert isinstance(searcher, SpaceRLSearcher)
    assert searcher.agent.alg.model.token_choices == (4,) * 6 + (3, 2, 3)

    def share_of_optimum():
        tokens = searcher.agent.sample(400).tokens[:, -3:]
        combos, counts = np.unique(tokens, axis=0, return_counts=True)
        return tuple(combos[np.argmax(counts)]), np.mean(np.all(tokens == OPTIMUM, axis=1))

    mode, before = share_of_optimum()
    assert mode != OPTIMUM and before < 0.15      # about 1/18 at the start
    _search(searcher, space, 50)
    mode, after = share_of_optimum()
    assert mode == OPTIMUM and after > 0.5
    assert searcher.step == 50


def test_save_restore_continues_identically_and_refuses_another_layout(tmp_path):
    space = cell_space()
    a = searchers.make_searcher(make_config(seed=11), space)
    _search(a, space, 3)
    a.save(str(tmp_path / "s"))
    cont = _search(a, space, 3)
    b = searchers.make_searcher(make_config(seed=99), space)   # everything from disk
    b.restore(str(tmp_path / "s"))
    assert b.step == 3
    assert _search(b, space, 3) == cont
    for (n, p), (_, q) in zip(a.agent.alg.model.named_parameters(),
                              b.agent.alg.model.named_parameters()):
        assert np.array_equal(p.numpy(), q.numpy()), n
    ckpt = os.path.join(str(tmp_path / "s"), "agent")
    # Same shape, another value of a decision: the indices would mean other recipes.
    other = dict(RECIPE, width_mult=[0.5, 0.75, 1.25])
    c = ControllerAgent.create_for_space(config(), cell_space(recipe=other), 0, "cpu")
    with pytest.raises(ValueError, match="recipe differ"):
        c.restore(ckpt)
    fixed = ControllerAgent.create_for_space(config(), fixed_space(), 0, "cpu")
    with pytest.raises(ValueError, match="groups, ops differ"):
        fixed.restore(ckpt)
    cells = ControllerAgent.create(config(), 0, "cpu")
    with pytest.raises(ValueError, match="another controller"):
        cells.restore(ckpt)
