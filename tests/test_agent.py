"""Tests of the PARL controller: distribution vs a numpy re-implementation, encoding, learning, checkpoints."""
import dataclasses
import json
import os

import numpy as np
import pytest

from agent.agent import ControllerAgent, advantage_transform, count_target
from agent.model import ControllerModel
from autodl_design.arch import Architecture, Cell
from autodl_design.config import AgentConfig
from autodl_design.ops import OP_NAMES

SMALL_OPS = ("conv_1x1", "conv_3x3", "maxpool_3x3", "avgpool_3x3")


def small_config(**kw) -> AgentConfig:
    base = dict(num_nodes=4, ops=SMALL_OPS, hidden_size=8, num_layers=2, batch_size=6)
    base.update(kw)
    return AgentConfig(**base)


# ---------------------------------------------------------------------------
# A plain, slow numpy re-implementation of the controller (one architecture
# at a time, one LSTM step at a time), written from the model's description.
# ---------------------------------------------------------------------------

def _sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


def lstm_layers(model: ControllerModel):
    """(W_ih, W_hh, b_ih + b_hh) per LSTM layer of ``model``, float64."""
    w = {name: p.numpy().astype(np.float64) for name, p in model.named_parameters()}
    return [(w["lstm.weight_ih_l%d" % k], w["lstm.weight_hh_l%d" % k],
             w["lstm.bias_ih_l%d" % k] + w["lstm.bias_hh_l%d" % k])
            for k in range(model.num_layers)]


def lstm_step(layers, x, hs, cs):
    """One step of the stacked LSTM: updates hs, cs (lists of [H]) in place; returns the top h."""
    inp = x
    for k, (w_ih, w_hh, b) in enumerate(layers):
        g = w_ih @ inp + w_hh @ hs[k] + b        # gates i, f, g, o
        i, f, gg, o = np.split(g, 4)
        cs[k] = _sigmoid(f) * cs[k] + _sigmoid(i) * np.tanh(gg)
        hs[k] = _sigmoid(o) * np.tanh(cs[k])
        inp = hs[k]
    return inp


class NumpyController:
    def __init__(self, model: ControllerModel):
        w = {name: p.numpy().astype(np.float64) for name, p in model.named_parameters()}
        self.layers = lstm_layers(model)
        self.token_w, self.token_b = w["token_w"], w["token_b"][:, 0]
        self.adj_w, self.adj_b = w["adj_w"], w["adj_b"][:, 0]
        self.n, self.k, self.h = model.num_nodes, model.num_tokens, model.hidden_size
        self.d = max(self.k, self.n - 1)
        self.t, self.c = model.temperature, model.tanh_constant

    def _lstm(self, x, hs, cs):
        return lstm_step(self.layers, x, hs, cs)

    def _squash(self, raw):
        return np.tanh(raw / self.t) * self.c

    def run(self, tokens=None, adjvec=None, u_tokens=None, u_adj=None):
        """Teacher-forced (tokens/adjvec given) or sampled (uniforms given) pass.

        Returns (tokens, adjvec, log_prob, entropy) of one architecture.
        """
        n, k, d = self.n, self.k, self.d
        hs = [np.zeros(self.h) for _ in self.layers]
        cs = [np.zeros(self.h) for _ in self.layers]
        x = np.zeros(d)
        out_tok, out_adj = [], []
        logp = ent = 0.0
        for cell in range(2):
            for j in range(n):
                if j > 0:
                    hid = self._lstm(x, hs, cs)
                    head = cell * (n - 1) + j - 1
                    logit = self._squash(hid @ self.adj_w[head][:, :j] + self.adj_b[head][:j])
                    p = _sigmoid(logit)
                    start = len(out_adj)
                    if adjvec is not None:
                        bits = np.asarray(adjvec[start:start + j], np.float64)
                    else:
                        bits = (u_adj[start:start + j] < p).astype(np.float64)
                    out_adj.extend(int(v) for v in bits)
                    logp += float(np.sum(bits * np.log(p) + (1 - bits) * np.log(1 - p)))
                    ent -= float(np.sum(p * np.log(p) + (1 - p) * np.log(1 - p)))
                    x = np.zeros(d)
                    x[:j] = bits
                hid = self._lstm(x, hs, cs)
                pos = cell * n + j
                logit = self._squash(hid @ self.token_w[pos] + self.token_b[pos])
                q = np.exp(logit - logit.max())
                q /= q.sum()
                if tokens is not None:
                    tok = int(tokens[pos])
                else:
                    tok = min(int(np.sum(np.cumsum(q) < u_tokens[pos])), k - 1)
                out_tok.append(tok)
                logp += float(np.log(q[tok]))
                ent -= float(np.sum(q * np.log(q)))
                x = np.zeros(d)
                x[tok] = 1.0
        return np.array(out_tok), np.array(out_adj), logp, ent


def test_log_prob_and_entropy_match_numpy_reference():
    agent = ControllerAgent.create(small_config(), seed=3, device="cpu")
    ref = NumpyController(agent.alg.model)
    rng = np.random.default_rng(0)
    n = 4
    # Arbitrary (not sampled) decisions, plus a sampled batch.
    tokens = rng.integers(0, len(SMALL_OPS), (5, 2 * n))
    adjvec = rng.integers(0, 2, (5, n * (n - 1)))
    batch = agent.sample()
    for t, a in ((tokens, adjvec), (batch.tokens, batch.adjvec)):
        logp, ent = agent.alg.log_prob(t, a)
        for b in range(t.shape[0]):
            _, _, ref_logp, ref_ent = ref.run(tokens=t[b], adjvec=a[b])
            assert logp[b] == pytest.approx(ref_logp, rel=1e-5, abs=1e-5)
            assert ent[b] == pytest.approx(ref_ent, rel=1e-5, abs=1e-5)
        assert np.allclose(agent.log_prob(t, a), logp)


def test_log_prob_matches_reference_at_default_size_after_learning():
    # Full AutoDL Design size (N = 10, ten ops, H = 64) and non-initial weights.
    agent = ControllerAgent.create(AgentConfig(ops=OP_NAMES, batch_size=4), seed=1,
                                   device="cpu")
    for _ in range(3):
        b = agent.sample()
        agent.learn_from_rewards(b.tokens, b.adjvec, count_target(b.tokens, 1))
    ref = NumpyController(agent.alg.model)
    b = agent.sample()
    logp = agent.log_prob(b.tokens, b.adjvec)
    for i in range(4):
        assert logp[i] == pytest.approx(ref.run(tokens=b.tokens[i], adjvec=b.adjvec[i])[2],
                                        rel=1e-5, abs=1e-4)


def test_sampling_follows_the_same_distribution_as_numpy_reference():
    agent = ControllerAgent.create(small_config(), seed=5, device="cpu")
    ref = NumpyController(agent.alg.model)
    rng = np.random.default_rng(7)
    u_tok, u_adj = rng.random((20, 8)), rng.random((20, 12))
    tokens, adjvec = agent.alg.sample(u_tok, u_adj)
    for b in range(20):
        t, a, _, _ = ref.run(u_tokens=u_tok[b], u_adj=u_adj[b])
        assert tokens[b].tolist() == t.tolist()
        assert adjvec[b].tolist() == a.tolist()


def test_sample_shapes_dtypes_and_vector_order():
    agent = ControllerAgent.create(AgentConfig(ops=OP_NAMES, batch_size=7), seed=0,
                                   device="cpu")
    batch = agent.sample()
    assert batch.tokens.shape == (7, 20) and batch.tokens.dtype == np.int32
    assert batch.adjvec.shape == (7, 90) and batch.adjvec.dtype == np.int32
    assert batch.tokens.min() >= 0 and batch.tokens.max() < 10
    assert set(np.unique(batch.adjvec)) <= {0, 1}
    assert len(batch.archs) == 7
    for b, arch in enumerate(batch.archs):
        assert arch == Architecture.from_vectors(batch.tokens[b], batch.adjvec[b], OP_NAMES)
        t, a = arch.to_vectors(OP_NAMES)
        assert np.array_equal(t, batch.tokens[b]) and np.array_equal(a, batch.adjvec[b])
    assert len(agent.sample(3).archs) == 3


def test_hand_built_three_node_case():
    ops = ("conv_1x1", "conv_3x3", "maxpool_3x3")
    normal = Cell(["conv_3x3", "maxpool_3x3", "conv_1x1"], [[0, 1, 0], [0, 0, 1], [0, 0, 0]])
    reduction = Cell(["conv_1x1", "conv_1x1", "conv_3x3"], [[0, 0, 1], [0, 0, 1], [0, 0, 0]])
    arch = Architecture(normal, reduction)
    tokens, adjvec = arch.to_vectors(ops)
    assert tokens.tolist() == [1, 2, 0, 0, 0, 1]
    # per cell: node 1 <- [m01], node 2 <- [m02, m12]
    assert adjvec.tolist() == [1, 0, 1, 0, 1, 1]

    agent = ControllerAgent.create(AgentConfig(num_nodes=3, ops=ops, hidden_size=6,
                                               batch_size=1), seed=2, device="cpu")
    model = agent.alg.model
    x = model.build_inputs(tokens[None], adjvec[None])[0]
    assert x.shape == (10, 3)        # 2 cells x (2N-1) steps, width max(3, 2)
    expected = np.zeros((10, 3), np.float32)
    # normal cell: zeros, one_hot(t0=1), bits [1], one_hot(t1=2), bits [0, 1]
    expected[1, 1] = 1
    expected[2, 0] = 1
    expected[3, 2] = 1
    expected[4, 1] = 1
    # reduction cell: one_hot(t2=0), one_hot(t0=0), bits [0], one_hot(t1=0), bits [1, 1]
    expected[5, 0] = 1
    expected[6, 0] = 1
    expected[8, 0] = 1
    expected[9, :2] = 1
    assert np.array_equal(x, expected)
    ref = NumpyController(model)
    assert agent.log_prob(tokens[None], adjvec[None])[0] == pytest.approx(
        ref.run(tokens=tokens, adjvec=adjvec)[2], rel=1e-5)


def test_bad_vectors_are_rejected():
    agent = ControllerAgent.create(small_config(), seed=0, device="cpu")
    good = agent.sample(2)
    with pytest.raises(ValueError, match="tokens must have shape"):
        agent.learn(good.tokens[:, :3], good.adjvec, [0.0, 0.0])
    with pytest.raises(ValueError, match="adjvec must have shape"):
        agent.learn(good.tokens, good.adjvec[:, :3], [0.0, 0.0])
    with pytest.raises(ValueError, match=r"tokens must lie in \[0, 4\)"):
        agent.learn(good.tokens + 4, good.adjvec, [0.0, 0.0])
    with pytest.raises(ValueError, match="2 architectures"):
        agent.learn_from_rewards(good.tokens, good.adjvec, [1.0])
    with pytest.raises(ValueError, match="finite"):
        agent.learn_from_rewards(good.tokens, good.adjvec, [1.0, float("nan")])
    assert agent.step == 0 and agent.baseline is None


def test_baseline_and_advantages():
    agent = ControllerAgent.create(small_config(bl_decay=0.9), seed=0, device="cpu")
    adv = agent.update_baseline([1.0, 3.0])
    assert agent.baseline == 2.0                      # first batch: its mean
    assert adv.tolist() == [-1.0, 1.0]
    adv = agent.update_baseline([6.0, 6.0])
    assert agent.baseline == pytest.approx(0.9 * 2.0 + 0.1 * 6.0)
    assert adv == pytest.approx([6.0 - 2.4, 6.0 - 2.4])
    assert advantage_transform(np.array([-2.0, 0.5]), "cube").tolist() == [-8.0, 0.125]
    with pytest.raises(ValueError, match="unknown advantage"):
        ControllerAgent.create(small_config(advantage="square"), seed=0, device="cpu")


def test_learning_step_moves_log_prob_in_the_advantage_direction():
    agent = ControllerAgent.create(small_config(learning_rate=1e-2), seed=0, device="cpu")
    b = agent.sample()
    before = agent.log_prob(b.tokens, b.adjvec)
    adv = np.array([1.0, -1.0, 1.0, -1.0, 1.0, -1.0])
    loss = agent.learn(b.tokens, b.adjvec, adv)
    assert loss == pytest.approx(-np.mean(before * adv), rel=1e-4)
    change = agent.log_prob(b.tokens, b.adjvec) - before
    assert np.sum(change * adv) > 0 and agent.step == 1


def test_short_training_raises_pseudo_reward():
    agent = ControllerAgent.create(AgentConfig(ops=OP_NAMES), seed=0, device="cpu")
    curve = []
    for _ in range(100):
        b = agent.sample()
        r = count_target(b.tokens, 1)
        agent.learn_from_rewards(b.tokens, b.adjvec, r)
        curve.append(r.mean())
    first, last = np.mean(curve[:20]), np.mean(curve[-20:])
    assert first < 3.5            # ~ 20 / 10 at the start
    assert last > first + 2.5, (first, last)


def _run(agent, steps):
    out = []
    for _ in range(steps):
        b = agent.sample()
        loss = agent.learn_from_rewards(b.tokens, b.adjvec, count_target(b.tokens, 0))
        out.append((b.tokens.copy(), b.adjvec.copy(), loss))
    return out


def test_save_restore_resumes_exactly(tmp_path):
    config = small_config()
    a = ControllerAgent.create(config, seed=11, device="cpu")
    _run(a, 4)
    ckpt = str(tmp_path / "agent")
    a.save(ckpt)
    a.save(ckpt)                                   # overwriting works
    assert sorted(os.listdir(tmp_path)) == ["agent"]   # no temp or .old left behind
    saved_opt = {k: np.array(v) for k, v in a.alg.optimizer.state_dict().items()
                 if hasattr(v, "shape")}
    cont = _run(a, 3)

    # other seed: everything must come from disk
    b = ControllerAgent.create(config, seed=99, device="cpu")
    b.restore(ckpt)
    assert b.step == 4 and b.baseline is not None
    opt_b = b.alg.optimizer.state_dict()
    for k, v in saved_opt.items():
        assert np.array_equal(np.array(opt_b[k]), v), k
    resumed = _run(b, 3)
    for (t1, a1, l1), (t2, a2, l2) in zip(cont, resumed):
        assert np.array_equal(t1, t2) and np.array_equal(a1, a2) and l1 == l2
    for (name, p), (_, q) in zip(a.alg.model.named_parameters(), b.alg.model.named_parameters()):
        assert np.array_equal(p.numpy(), q.numpy()), name
    assert a.baseline == b.baseline and a.step == b.step == 7
    state = json.load(open(os.path.join(ckpt, "state.json")))
    assert state["step"] == 4 and state["controller"]["ops"] == list(SMALL_OPS)


def test_restore_rejects_other_shapes_and_missing_folders(tmp_path):
    a = ControllerAgent.create(small_config(), seed=0, device="cpu")
    a.save(str(tmp_path / "ckpt"))
    other = ControllerAgent.create(small_config(hidden_size=9), seed=0, device="cpu")
    with pytest.raises(ValueError, match="hidden_size differ"):
        other.restore(str(tmp_path / "ckpt"))
    with pytest.raises(ValueError, match="missing state.json"):
        a.restore(str(tmp_path / "nothing"))


def test_same_seed_same_curve_other_seed_differs():
    def curve(seed):
        agent = ControllerAgent.create(small_config(), seed=seed, device="cpu")
        return [(t.tolist(), a.tolist(), l) for t, a, l in _run(agent, 8)]
    assert curve(4) == curve(4)
    assert curve(4) != curve(5)


def test_config_is_plain_dataclass_roundtrip():
    # The agent keeps the config it was given (search code records it).
    config = small_config()
    agent = ControllerAgent.create(config, seed=0, device="cpu")
    assert dataclasses.asdict(agent.config) == dataclasses.asdict(config)
    assert agent.ops == SMALL_OPS


def test_create_runs_on_the_device_it_is_given():
    from autodl_design.devices import count_gpus
    from autodl_design.backend import paddle
    assert not hasattr(AgentConfig(), "device")   # the device is DeviceConfig.agent_device
    agent = ControllerAgent.create(small_config(), seed=0, device="cpu")
    assert paddle.device.get_device() == "cpu" and agent.step == 0
    n = count_gpus()
    with pytest.raises(RuntimeError,
                       match="device gpu:%d requested but Paddle sees %d GPU" % (n, n)):
        ControllerAgent.create(small_config(), seed=0, device="gpu:%d" % n)
