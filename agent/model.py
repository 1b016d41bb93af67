"""The controller's policy network: a multi-layer LSTM that writes both cells of an architecture.

For a batch of B architectures the LSTM runs over one sequence that describes
the normal cell, then the reduction cell, as AutoDL Design's controller does.
Per cell of N nodes (``j`` = node, ``K`` = number of ops = ``num_tokens``)::

    step 0           : input x0                 -> token head -> token of node 0
    step 2j-1 (j>=1) : input one_hot(token j-1) -> adj head   -> j bits (preds 0..j-1 of node j)
    step 2j   (j>=1) : input adjacency bits j   -> token head -> token of node j

so a cell takes 2N-1 LSTM steps and the whole architecture 2(2N-1). ``x0`` is
all zeros for the normal cell and the one-hot of the normal cell's last token
for the reduction cell (the LSTM state carries on across cells). Every input
is a vector of width ``D = max(K, N-1)``: a token as a one-hot of width K and
the j adjacency bits padded with zeros to width N-1, both padded to D.

Each decision has its own output layer (AutoDL Design creates a new fc layer
per decision): 2N token heads ``H -> K`` and 2(N-1) adjacency heads
``H -> N-1`` of which node j uses the first j outputs. A head's raw output l is
squashed to ``tanh(l / temperature) * tanh_constant``; tokens are categorical
over these logits, adjacency bits independent Bernoulli with
``p = sigmoid(logit)``.

Other spaces (``groups``): the same LSTM over any sequence of T token
decisions over K ops where token t is preceded by ``groups[t]`` adjacency
bits (one adjacency step, skipped when ``groups[t] == 0``); the cell layout
above is ``groups = cell_groups(N) = (0, 1, .., N-1) * 2`` and
NAS-Bench-201's is ``(0,) * 6`` (T = 6, K = 5, no bits). The first step's
input is zeros and every later input is the previous decision fed back;
``W = max(groups)`` is the adjacency head width and ``D = max(K, W)``.

Tokens with fewer choices (``token_choices``): token t chooses among its
first ``c_t <= K`` outputs only, e.g. a recipe space's decisions after the
cell tokens (3 width multipliers, 2 resolutions, ...), each its own head.
Outputs ``c_t..K-1`` get ``MASKED_LOGIT`` added after the squash, so their
probability is exactly 0 and the log-probs and entropy are those of the
categorical over the ``c_t`` choices; the choice is fed back as a one-hot of
width D like any token. With every ``c_t = K`` nothing is masked.

Sampling takes the randomness as uniforms drawn by the caller (the agent's
seeded numpy generator), which makes a sample a pure function of the weights
and the uniforms: token = the inverse CDF of the softmax at u, bit = u < p.
"""
from typing import Optional, Sequence, Tuple

import numpy as np

from autodl_design.backend import paddle, parl

F = paddle.nn.functional

# Added to the squashed logits (|l| <= C) of a token's unused outputs: its
# exp underflows to exactly 0 in float32, and p * log p = 0 * -1e9 = 0 (an
# -inf would make it NaN).
MASKED_LOGIT = -1e9


def cell_groups(num_nodes: int) -> Tuple[int, ...]:
    """Adjacency bits before each token of the two-cell layout: ``(0, 1, .., N-1) * 2``."""
    return tuple(range(num_nodes)) * 2


class ControllerModel(parl.Model):
    """LSTM policy over (tokens, adjacency bits) of a normal and a reduction cell.

    Args:
      num_nodes: N, nodes per cell (>= 2); None with ``groups``.
      num_tokens: K, ops the token heads choose from (>= 1).
      hidden_size: H, LSTM hidden size.
      num_layers: LSTM layers.
      temperature: T in ``tanh(l / T) * C``.
      tanh_constant: C in ``tanh(l / T) * C``.
      seed: seeds the weight initialisation (a numpy generator; Paddle's global
        RNG is not used, so two models built with the same seed are equal).
      groups: instead of ``num_nodes``, the adjacency bits before each of the
        T token decisions (int [T], >= 0); ``cell_groups(N)`` is the same
        model as ``num_nodes=N``.
      token_choices: the number of choices of each token (int [T], each in
        1..K); None = K for every token. Does not change the parameters.

    Parameters (all float32): ``lstm`` (``paddle.nn.LSTM``, input D = max(K,
    N-1), weights U(-0.1, 0.1) and biases 0 as AutoDL Design's LstmUnit),
    ``token_w`` [2N, H, K], ``token_b`` [2N, 1, K], ``adj_w`` [2(N-1), H, N-1],
    ``adj_b`` [2(N-1), 1, N-1] (weights truncated normal with std sqrt(2/H)
    as AutoDL Design's heads, biases 0). With ``groups``: ``token_w`` [T, H,
    K], ``adj_w`` [G, H, W] for the G non-zero groups (no adjacency
    parameters when G = 0).

    Attributes:
      groups: int tuple [T], adjacency bits before each token.
      token_choices: int tuple [T], choices of each token (K when not given).
      num_token_decisions: T; num_bits: A = sum(groups).
    """

    def __init__(self, num_nodes: Optional[int], num_tokens: int, hidden_size: int = 64,
                 num_layers: int = 2, temperature: float = 5.0, tanh_constant: float = 2.5,
                 seed: int = 0, groups: Optional[Sequence[int]] = None,
                 token_choices: Optional[Sequence[int]] = None):
        # A fixed name scope keeps parameter names (and so the keys of the
        # optimizer's state) the same in every process, whatever was built before.
        with paddle.utils.unique_name.guard("controller_"):
            super().__init__()
            self._build(num_nodes, num_tokens, hidden_size, num_layers, temperature,
                        tanh_constant, groups)
        self._init_weights(np.random.default_rng([seed, 0]))
        self._build_index()
        self._build_token_mask(token_choices)

    def _build(self, num_nodes, num_tokens, hidden_size, num_layers, temperature,
               tanh_constant, groups):
        if (num_nodes is None) == (groups is None):
            raise ValueError("give either num_nodes or groups, not %s"
                             % ("both" if groups is not None else "neither"))
        if num_nodes is not None:
            if num_nodes < 2:
                raise ValueError("num_nodes must be at least 2, got %d" % num_nodes)
            groups = cell_groups(num_nodes)
        groups = tuple(int(g) for g in groups)
        if not groups or min(groups) < 0:
            raise ValueError("groups must be a non-empty list of bit counts >= 0, got %s"
                             % list(groups))
        if num_tokens < 1:
            raise ValueError("num_tokens must be at least 1, got %d" % num_tokens)
        k, h = num_tokens, hidden_size
        self.num_nodes, self.num_tokens, self.groups = num_nodes, k, groups
        self.num_token_decisions, self.num_bits = len(groups), sum(groups)
        self.adj_width = max(groups)
        num_heads = sum(g > 0 for g in groups)
        self.hidden_size, self.num_layers = h, num_layers
        self.temperature, self.tanh_constant = float(temperature), float(tanh_constant)
        self.input_size = max(k, self.adj_width)
        self.num_steps = len(groups) + num_heads
        self.lstm = paddle.nn.LSTM(self.input_size, h, num_layers)
        self.token_w = self.create_parameter([len(groups), h, k])
        self.token_b = self.create_parameter([len(groups), 1, k], is_bias=True)
        if num_heads:
            self.adj_w = self.create_parameter([num_heads, h, self.adj_width])
            self.adj_b = self.create_parameter([num_heads, 1, self.adj_width], is_bias=True)

    # ------------------------------------------------------------------ setup
    def _init_weights(self, rng: np.random.Generator):
        std = np.sqrt(2.0 / self.hidden_size)
        for name, p in self.named_parameters():
            shape = tuple(p.shape)
            if name.startswith("lstm.") and ".weight_" in name:
                value = rng.uniform(-0.1, 0.1, shape)
            elif name in ("token_w", "adj_w"):
                value = rng.standard_normal(shape)
                bad = np.abs(value) > 2
                while bad.any():  # truncated normal: redraw beyond 2 std
                    value[bad] = rng.standard_normal(int(bad.sum()))
                    bad = np.abs(value) > 2
                value = value * std
            else:  # LSTM and head biases
                value = np.zeros(shape)
            p.set_value(value.astype(np.float32))

    def _build_index(self):
        """Index arrays mapping flat vectors to sequence steps and heads."""
        # Output step of each token (flat order) and of each adjacency head.
        token_steps, adj_steps, heads, cols = [], [], [], []
        step = 0
        for g in self.groups:
            if g:
                # Each adjacency bit of the flat adjvec: its head and column.
                heads.extend([len(adj_steps)] * g)
                cols.extend(range(g))
                adj_steps.append(step)
                step += 1
            token_steps.append(step)
            step += 1
        self.token_steps = np.array(token_steps)
        self.adj_steps = np.array(adj_steps, np.int64)
        # Input steps fed with a token one-hot: step s+1 after each token
        # output s, except the very last token (nothing follows it).
        self.token_input_steps = self.token_steps[:-1] + 1
        # The input step a bit is fed back at: the step after its head's output.
        self.bit_head = np.array(heads, np.int64)
        self.bit_col = np.array(cols, np.int64)
        self.bit_input_step = self.adj_steps[self.bit_head] + 1
        mask = np.zeros([len(adj_steps), 1, self.adj_width], np.float32)
        mask[self.bit_head, 0, self.bit_col] = 1
        self.adj_mask = mask

    def _build_token_mask(self, token_choices: Optional[Sequence[int]]):
        """``token_choices`` and ``token_mask`` (float32 [T, 1, K], or None when nothing is masked)."""
        t, k = self.num_token_decisions, self.num_tokens
        if token_choices is None:
            token_choices = (k,) * t
        token_choices = tuple(int(c) for c in token_choices)
        if len(token_choices) != t or not all(1 <= c <= k for c in token_choices):
            raise ValueError("token_choices must give %d counts in 1..%d, got %s"
                             % (t, k, list(token_choices)))
        self.token_choices = token_choices
        self.token_mask = None
        if min(token_choices) < k:
            mask = np.zeros([t, 1, k], np.float32)
            for pos, c in enumerate(token_choices):
                mask[pos, 0, c:] = MASKED_LOGIT
            self.token_mask = mask

    # ------------------------------------------------------------- utilities
    def squash(self, raw):
        """``tanh(raw / T) * C`` (Paddle tensor in, same shape out)."""
        return paddle.tanh(raw * (1.0 / self.temperature)) * self.tanh_constant

    def build_inputs(self, tokens: np.ndarray, adjvec: np.ndarray) -> np.ndarray:
        """Teacher-forcing input sequence for given decisions.

        Args:
          tokens: int [B, T] (T = 2N), flat token order (normal cell then reduction).
          adjvec: int [B, A] (A = N(N-1)), flat adjacency order (see autodl_design.arch).

        Returns:
          float32 [B, S, D] (S = 2(2N-1) for cells): the LSTM input at every
          step, as in sampling.
        """
        b = tokens.shape[0]
        x = np.zeros([b, self.num_steps, self.input_size], np.float32)
        rows = np.arange(b)[:, None]
        x[rows, self.token_input_steps[None, :], tokens[:, :-1]] = 1.0
        x[:, self.bit_input_step, self.bit_col] = adjvec
        return x

    def adj_bits(self, adjvec: np.ndarray) -> np.ndarray:
        """float32 [G, B, W] (cells: [2(N-1), B, N-1]): adjvec per head, zero beyond its width."""
        out = np.zeros([len(self.adj_steps), adjvec.shape[0], self.adj_width], np.float32)
        out[self.bit_head, :, self.bit_col] = adjvec.T
        return out

    # ------------------------------------------------------------- policy
    def forward(self, inputs):
        """Head logits for a whole teacher-forced sequence.

        Args:
          inputs: float32 tensor [B, S, D] from ``build_inputs``.

        Returns:
          (token_logits [T, B, K], adj_logits [G, B, W]) float32 (cells: T =
          2N, G = 2(N-1), W = N-1), squashed, ``MASKED_LOGIT`` added beyond
          a token's choices; adjacency logits beyond column j of node j are
          unused; adj_logits is None when there are no bits.
        """
        out, _ = self.lstm(inputs)                     # [B, S, H]
        out = paddle.transpose(out, [1, 0, 2])         # [S, B, H]
        tok_h = paddle.gather(out, paddle.to_tensor(self.token_steps))
        token_logits = self.squash(paddle.bmm(tok_h, self.token_w) + self.token_b)
        if self.token_mask is not None:
            token_logits = token_logits + paddle.to_tensor(self.token_mask)
        if not self.num_bits:
            return token_logits, None
        adj_h = paddle.gather(out, paddle.to_tensor(self.adj_steps))
        adj_logits = self.squash(paddle.bmm(adj_h, self.adj_w) + self.adj_b)
        return token_logits, adj_logits

    def log_prob_entropy(self, tokens: np.ndarray, adjvec: np.ndarray):
        """Log-probability and entropy of given architectures under the policy.

        Args:
          tokens: int [B, T]; adjvec: int [B, A] (flat controller order).

        Returns:
          (log_prob, entropy): float32 tensors [B] (differentiable). The
          entropy is the sum over the T token and A Bernoulli decisions
          of each decision's entropy at the visited states.
        """
        tokens = np.asarray(tokens, np.int64)
        adjvec = np.asarray(adjvec, np.float32)
        x = paddle.to_tensor(self.build_inputs(tokens, adjvec))
        token_logits, adj_logits = self.forward(x)
        logp_all = F.log_softmax(token_logits, axis=-1)                   # [2N, B, K]
        idx = paddle.to_tensor(tokens.T[:, :, None])
        logp_tok = paddle.take_along_axis(logp_all, idx, axis=-1).squeeze(-1).sum(0)
        ent_tok = -(paddle.exp(logp_all) * logp_all).sum([0, 2])
        if adj_logits is None:
            return logp_tok, ent_tok
        bits = paddle.to_tensor(self.adj_bits(adjvec))
        mask = paddle.to_tensor(self.adj_mask)
        # log p(bit) = -BCE(logit, bit); log sigmoid(l) = -softplus(-l).
        nll = F.binary_cross_entropy_with_logits(adj_logits, bits, reduction="none")
        logp_adj = -(nll * mask).sum([0, 2])
        p = F.sigmoid(adj_logits)
        ent_bits = p * F.softplus(-adj_logits) + (1 - p) * F.softplus(adj_logits)
        ent_adj = (ent_bits * mask).sum([0, 2])
        return logp_tok + logp_adj, ent_tok + ent_adj

    @paddle.no_grad()
    def sample(self, u_tokens: np.ndarray, u_adj: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
        """Samples B architectures step by step, feeding each decision back.

        Args:
          u_tokens: float [B, T] uniforms in [0, 1), one per token (T = 2N).
          u_adj: float [B, A] uniforms in [0, 1), one per adjacency bit,
            in flat adjvec order (A = N(N-1)).

        Returns:
          (tokens int32 [B, T], adjvec int32 [B, A]) in flat order; token t
          lies in [0, token_choices[t]).
        """
        d = self.input_size
        b = u_tokens.shape[0]
        ut = paddle.to_tensor(np.asarray(u_tokens, np.float32))
        ua = paddle.to_tensor(np.asarray(u_adj, np.float32))
        state = (paddle.zeros([self.num_layers, b, self.hidden_size]),
                 paddle.zeros([self.num_layers, b, self.hidden_size]))
        x = paddle.zeros([b, 1, d])
        tokens, bits_out = [], []
        bit_pos = head = 0
        for pos, j in enumerate(self.groups):
            if j > 0:
                out, state = self.lstm(x, state)
                raw = paddle.matmul(out[:, 0], self.adj_w[head, :, :j]) + self.adj_b[head, :, :j]
                p = F.sigmoid(self.squash(raw))
                bits = paddle.cast(ua[:, bit_pos:bit_pos + j] < p, "float32")
                bit_pos += j
                head += 1
                bits_out.append(bits)
                x = F.pad(bits, [0, d - j]).unsqueeze(1) if j < d else bits.unsqueeze(1)
            out, state = self.lstm(x, state)
            logits = self.squash(paddle.matmul(out[:, 0], self.token_w[pos]) + self.token_b[pos])
            if self.token_mask is not None:
                logits = logits + paddle.to_tensor(self.token_mask[pos])
            cdf = paddle.cumsum(F.softmax(logits, axis=-1), axis=-1)
            # Inverse CDF; the clip guards u above a rounded-down cdf[c - 1].
            tok = paddle.clip(paddle.sum(paddle.cast(cdf < ut[:, pos:pos + 1], "int64"),
                                         axis=-1), max=self.token_choices[pos] - 1)
            tokens.append(tok)
            x = F.one_hot(tok, d).unsqueeze(1)
        tokens = paddle.stack(tokens, axis=1).numpy().astype(np.int32)
        if not bits_out:
            return tokens, np.zeros((b, 0), np.int32)
        adjvec = paddle.concat(bits_out, axis=1).numpy().astype(np.int32)
        return tokens, adjvec
