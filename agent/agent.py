"""The controller agent: samples architectures, keeps the reward baseline, learns, checkpoints.

Other search spaces (``create_for_space``): any ``SearchSpace`` whose
``encode`` gives T tokens over one list of K ops and A adjacency bits, e.g.
NAS-Bench-201 (T = 6, K = 5, A = 0), or a ``RecipeSpace`` (the cell's 2N op
tokens and bits, or a fixed cell, then one token per recipe decision over
its own choices); ``Sample.archs`` are then the space's candidates
(``space.decode``).

Typical use (one controller step)::

    agent = ControllerAgent.create(config.agent, seed=0, device=config.devices.agent_device)
    batch = agent.sample()                       # tokens, adjvec, archs
    rewards = [evaluate(a) for a in batch.archs]
    agent.learn_from_rewards(batch.tokens, batch.adjvec, rewards)
    agent.save("log/checkpoints/agent")          # resume: agent.restore(...)

Baseline: an exponential moving average of the batch-mean reward. The first
call of ``learn_from_rewards`` sets it to that batch's mean reward (as AutoDL
Design's simple_run does); later calls first update
``b <- bl_decay * b + (1 - bl_decay) * mean(r)`` and then use the updated b.
The advantage is ``r - b`` ("identity") or ``(r - b) ** 3`` ("cube", AutoDL
Design's search), per ``AgentConfig.advantage``.
"""
import json
import os
import shutil
import tempfile
import time
import warnings
from typing import Any, Callable, Dict, List, NamedTuple, Optional, Tuple

import numpy as np

from agent.algorithm import Reinforce
from agent.model import ControllerModel, cell_groups
from autodl_design.backend import paddle, parl
from autodl_design.arch import Architecture
from autodl_design.config import AgentConfig
from autodl_design.ops import parse_ops
from autodl_design.devices import use_device
from autodl_design.interfaces import SearchSpace
from autodl_design.recipe import RecipeSpace
from autodl_design.spaces import CellSpace

CHECKPOINT_FORMAT = "autodl-design-agent/1"
ADVANTAGES = ("identity", "cube")


class Sample(NamedTuple):
    """A sampled batch: flat vectors (arch.py order) and the architectures."""
    tokens: np.ndarray       # int32 [B, T] (cells: T = 2N)
    adjvec: np.ndarray       # int32 [B, A] (cells: A = N(N-1))
    archs: List[Any]         # Architecture, or the space's candidates


class Layout(NamedTuple):
    """The controller's shape for a space (``space_layout``)."""
    ops: Tuple[str, ...]       # the op names of the op tokens ((): no op tokens)
    groups: Tuple[int, ...]    # int [T]: adjacency bits before each token
    choices: Tuple[int, ...]   # int [T]: choices of each token (K = max)


def space_layout(space: SearchSpace) -> Layout:
    """The controller's ``Layout`` for ``space``: op list, bits before each token, choices per token.

    The token decisions are the first T of ``space.decisions()`` (T from
    ``encode``). A ``CellSpace`` gets the cell layout over its ops; a
    ``RecipeSpace`` the cell layout (none for a fixed cell) followed by one
    token per recipe decision (no bits), each over its own choices; any other
    space must have no adjacency bits (A = 0) and token decisions sharing one
    op list.

    Raises:
      ValueError: the space does not fit the controller.
    """
    tokens, adjvec = space.encode(space.sample(np.random.default_rng(0)))
    t, a = int(np.asarray(tokens).size), int(np.asarray(adjvec).size)
    decisions = list(space.decisions())[:t]
    choices = tuple(len(d.choices) for d in decisions)
    if isinstance(space, RecipeSpace):
        if space.cells is None:
            return Layout((), (0,) * t, choices)
        cell = space_layout(space.cells)
        return Layout(cell.ops, cell.groups + (0,) * len(space.recipe), choices)
    ops = tuple(decisions[0].choices) if t else ()
    if not t or any(tuple(d.choices) != ops for d in decisions):
        raise ValueError("space %r: the controller needs token decisions sharing one op list"
                         % space.name)
    if isinstance(space, CellSpace):
        return Layout(ops, cell_groups(space.num_nodes), choices)
    if a:
        raise ValueError("space %r has %d adjacency bits but no controller layout for them"
                         % (space.name, a))
    return Layout(ops, (0,) * t, choices)


def advantage_transform(centered: np.ndarray, kind: str) -> np.ndarray:
    """Advantages from ``r - b``: unchanged ("identity") or cubed ("cube")."""
    if kind == "identity":
        return centered
    if kind == "cube":
        return centered ** 3
    raise ValueError("unknown advantage %r: use one of %s" % (kind, ", ".join(ADVANTAGES)))


class ControllerAgent(parl.Agent):
    """PARL agent around ``Reinforce`` + ``ControllerModel``.

    Args:
      algorithm: a ``Reinforce`` holding the controller model.
      config: the agent settings (``ops`` empty means all registry ops;
        ``num_nodes`` and ``ops`` are not used with ``space``).
      seed: seeds the sampling generator (numpy PCG64); with the model built
        from the same seed (``create`` does this) the samples and learning
        curves are identical run to run on CPU.
      space: the search space the model was built for (``space_layout``);
        None = AutoDL Design's cell space of ``config``.

    Attributes:
      ops: the op names the op tokens index into (tuple of str; () for a
        recipe space with a fixed cell).
      token_choices: int tuple [T], the choices of each token (all
        ``len(ops)`` except a recipe space's recipe tokens).
      baseline: the reward moving average, None before the first
        ``learn_from_rewards``.
      step: number of ``learn``/``learn_from_rewards`` updates made.
    """

    def __init__(self, algorithm: Reinforce, config: AgentConfig, seed: int = 0,
                 space: Optional[SearchSpace] = None):
        super().__init__(algorithm)
        if config.advantage not in ADVANTAGES:
            raise ValueError("unknown advantage %r: use one of %s"
                             % (config.advantage, ", ".join(ADVANTAGES)))
        self.config = config
        self.space = space
        model = algorithm.model
        if space is None:
            self.ops = tuple(parse_ops(config.ops))
            if model.num_nodes != config.num_nodes or model.num_tokens != len(self.ops):
                raise ValueError("model has %s nodes and %d tokens but the config asks for %d "
                                 "and %d" % (model.num_nodes, model.num_tokens, config.num_nodes,
                                             len(self.ops)))
        else:
            layout = space_layout(space)
            self.ops = layout.ops
            if (model.groups, model.token_choices) != (layout.groups, layout.choices):
                raise ValueError("model has layout %s with choices %s but space %r needs %s "
                                 "with %s" % (list(model.groups), list(model.token_choices),
                                              space.name, list(layout.groups),
                                              list(layout.choices)))
        self.token_choices = model.token_choices
        self.seed = int(seed)
        self.rng = np.random.Generator(np.random.PCG64([self.seed, 1]))
        self.baseline: Optional[float] = None
        self.step = 0

    @classmethod
    def create(cls, config: AgentConfig, seed: int, device: str) -> "ControllerAgent":
        """Builds model, algorithm and agent on ``device`` from one seed.

        Args:
          config: the agent settings.
          seed: seeds the model's initial weights and the sampling generator.
          device: 'cpu' or 'gpu:N' (``autodl_design.devices.parse_device``),
            made current with ``autodl_design.devices.use_device``.
        """
        use_device(device)
        ops = parse_ops(config.ops)
        model = ControllerModel(config.num_nodes, len(ops), config.hidden_size,
                                config.num_layers, config.temperature, config.tanh_constant,
                                seed=seed)
        alg = Reinforce(model, config.learning_rate, config.entropy_weight)
        return cls(alg, config, seed)

    @classmethod
    def create_for_space(cls, config: AgentConfig, space: SearchSpace, seed: int,
                         device: str) -> "ControllerAgent":
        """Like ``create``, for any space ``space_layout`` accepts (``config.ops``/``num_nodes`` unused).

        For a ``CellSpace`` of ``config``'s nodes and ops the agent samples
        exactly what ``create``'s does. Tokens with fewer choices than the
        most (K) are masked to theirs (``ControllerModel``'s ``token_choices``).
        """
        use_device(device)
        layout = space_layout(space)
        num_nodes = space.num_nodes if isinstance(space, CellSpace) else None
        model = ControllerModel(num_nodes, max(layout.choices), config.hidden_size,
                                config.num_layers, config.temperature, config.tanh_constant,
                                seed=seed, groups=None if num_nodes else layout.groups,
                                token_choices=None if num_nodes else layout.choices)
        alg = Reinforce(model, config.learning_rate, config.entropy_weight)
        return cls(alg, config, seed, space)

    # ------------------------------------------------------------ sampling
    @property
    def num_nodes(self) -> int:
        return self.config.num_nodes

    def sample(self, batch_size: Optional[int] = None) -> Sample:
        """Samples a batch of architectures from the current policy.

        Args:
          batch_size: architectures to sample (default ``config.batch_size``).

        Returns:
          ``Sample(tokens int32 [B, T], adjvec int32 [B, A], archs)`` (cells:
          T = 2N, A = N(N-1)) with ``archs[b] ==
          Architecture.from_vectors(tokens[b], adjvec[b], ops)``, or
          ``space.decode(tokens[b], adjvec[b])`` with a space.
        """
        b = self.config.batch_size if batch_size is None else int(batch_size)
        model = self.alg.model
        u_tokens = self.rng.random((b, model.num_token_decisions))
        u_adj = self.rng.random((b, model.num_bits))
        tokens, adjvec = self.alg.sample(u_tokens, u_adj)
        if self.space is None:
            archs = [Architecture.from_vectors(tokens[i], adjvec[i], self.ops)
                     for i in range(b)]
        else:
            archs = [self.space.decode(tokens[i], adjvec[i]) for i in range(b)]
        return Sample(tokens, adjvec, archs)

    def predict(self, batch_size: Optional[int] = None) -> Sample:
        """Same as ``sample``."""
        return self.sample(batch_size)

    def log_prob(self, tokens, adjvec) -> np.ndarray:
        """float32 [B]: log pi(tokens_b, adjvec_b) under the current policy."""
        tokens, adjvec = self._check_vectors(tokens, adjvec)
        return self.alg.log_prob(tokens, adjvec)[0]

    # ------------------------------------------------------------ learning
    def _check_vectors(self, tokens, adjvec):
        t, a = self.alg.model.num_token_decisions, self.alg.model.num_bits
        tokens = np.asarray(tokens)
        adjvec = np.asarray(adjvec)
        if tokens.ndim != 2 or tokens.shape[1] != t:
            raise ValueError("tokens must have shape [B, %d], got %s" % (t, tokens.shape))
        if adjvec.size == 0 and a == 0:
            adjvec = adjvec.reshape(tokens.shape[0], 0)
        if adjvec.shape != (tokens.shape[0], a):
            raise ValueError("adjvec must have shape [%d, %d], got %s"
                             % (tokens.shape[0], a, adjvec.shape))
        if tokens.size and (tokens.min() < 0 or
                            np.any(tokens >= np.asarray(self.token_choices))):
            if len(set(self.token_choices)) == 1:
                raise ValueError("tokens must lie in [0, %d)" % self.token_choices[0])
            raise ValueError("token t must lie in [0, choices[t]) with choices %s"
                             % list(self.token_choices))
        if adjvec.size and not np.all((adjvec == 0) | (adjvec == 1)):
            raise ValueError("adjvec entries must be 0 or 1")
        return tokens.astype(np.int64), adjvec.astype(np.int64)

    def learn(self, tokens, adjvec, advantages) -> float:
        """One REINFORCE update with the given advantages (baseline untouched).

        Args:
          tokens: int [B, T]; adjvec: int [B, A]; advantages: float [B].

        Returns:
          The loss before the update (float).
        """
        tokens, adjvec = self._check_vectors(tokens, adjvec)
        adv = np.asarray(advantages, np.float64).reshape(-1)
        if adv.shape[0] != tokens.shape[0]:
            raise ValueError("got %d advantages for %d architectures"
                             % (adv.shape[0], tokens.shape[0]))
        if not np.all(np.isfinite(adv)):
            raise ValueError("advantages must be finite, got %s" % adv.tolist())
        loss, _ = self.alg.learn(tokens, adjvec, adv)
        self.step += 1
        return loss

    def update_baseline(self, rewards) -> np.ndarray:
        """Updates the moving-average baseline with a batch and returns its advantages.

        Args:
          rewards: float [B], finite.

        Returns:
          float64 [B]: ``transform(r - b)`` with the updated baseline b.
        """
        r = np.asarray(rewards, np.float64).reshape(-1)
        if r.size == 0 or not np.all(np.isfinite(r)):
            raise ValueError("rewards must be a non-empty list of finite numbers, got %s"
                             % r.tolist())
        mean = float(r.mean())
        if self.baseline is None:
            self.baseline = mean
        else:
            d = self.config.bl_decay
            self.baseline = d * self.baseline + (1.0 - d) * mean
        return advantage_transform(r - self.baseline, self.config.advantage)

    def learn_from_rewards(self, tokens, adjvec, rewards) -> float:
        """``update_baseline(rewards)`` then ``learn`` with those advantages; returns the loss."""
        self._check_vectors(tokens, adjvec)
        if np.asarray(rewards).reshape(-1).shape[0] != np.asarray(tokens).shape[0]:
            raise ValueError("got %d rewards for %d architectures"
                             % (np.asarray(rewards).size, np.asarray(tokens).shape[0]))
        return self.learn(tokens, adjvec, self.update_baseline(rewards))

    # ------------------------------------------------------------ checkpoints
    def _identity(self) -> dict:
        c = self.config
        if self.alg.model.num_nodes is None:
            out = {"space": self.space.name, "groups": list(self.alg.model.groups),
                   "ops": list(self.ops), "hidden_size": c.hidden_size,
                   "num_layers": c.num_layers}
            if isinstance(self.space, RecipeSpace):
                # The values too: an index means another value if a list changed.
                out["recipe"] = [[d.name, list(d.choices)] for d in self.space.recipe]
            return out
        return {"num_nodes": self.alg.model.num_nodes, "ops": list(self.ops),
                "hidden_size": c.hidden_size, "num_layers": c.num_layers}

    def save(self, path: str):
        """Writes weights, Adam state, baseline, step and RNG state to directory ``path``.

        The directory is written under a temporary name and swapped in with
        ``os.replace``; a previous checkpoint stays at ``path + ".old"`` until
        the swap is done (``restore`` falls back to it if ``path`` is missing).
        """
        path = os.path.abspath(path)
        parent = os.path.dirname(path)
        os.makedirs(parent, exist_ok=True)
        tmp = tempfile.mkdtemp(prefix=".%s.tmp-" % os.path.basename(path), dir=parent)
        try:
            paddle.save(self.alg.model.state_dict(), os.path.join(tmp, "model.pdparams"))
            with warnings.catch_warnings():  # before the first update the state is empty
                warnings.filterwarnings("ignore", message="The input state dict is empty")
                paddle.save(self.alg.optimizer.state_dict(), os.path.join(tmp, "optimizer.pdopt"))
            state = {"format": CHECKPOINT_FORMAT, "controller": self._identity(),
                     "seed": self.seed, "step": self.step, "baseline": self.baseline,
                     "rng": self.rng.bit_generator.state}
            with open(os.path.join(tmp, "state.json"), "w") as f:
                json.dump(state, f, indent=1)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        old = path + ".old"
        if os.path.exists(path):
            shutil.rmtree(old, ignore_errors=True)
            os.replace(path, old)
        os.replace(tmp, path)
        shutil.rmtree(old, ignore_errors=True)

    def restore(self, path: str):
        """Loads a checkpoint written by ``save`` (same controller shape).

        Raises:
          ValueError: the folder is missing, incomplete, or made for another
            controller shape (names what differs).
        """
        path = os.path.abspath(path)
        if not os.path.isdir(path) and os.path.isdir(path + ".old"):
            path = path + ".old"
        files = ["state.json", "model.pdparams", "optimizer.pdopt"]
        missing = [f for f in files if not os.path.isfile(os.path.join(path, f))]
        if missing:
            raise ValueError("agent checkpoint %s is missing %s: pass a folder written by "
                             "ControllerAgent.save" % (path, ", ".join(missing)))
        with open(os.path.join(path, "state.json")) as f:
            try:
                state = json.load(f)
            except json.JSONDecodeError as e:
                raise ValueError("agent checkpoint %s/state.json is not valid JSON: %s"
                                 % (path, e)) from None
        if state.get("format") != CHECKPOINT_FORMAT:
            raise ValueError("agent checkpoint %s has format %r, expected %r"
                             % (path, state.get("format"), CHECKPOINT_FORMAT))
        mine = self._identity()
        diff = [k for k in mine if state["controller"].get(k) != mine[k]]
        if diff:
            raise ValueError("agent checkpoint %s was made for another controller (%s differ: "
                             "%s vs %s)" % (path, ", ".join(diff),
                                            [state["controller"].get(k) for k in diff],
                                            [mine[k] for k in diff]))
        self.alg.model.set_state_dict(paddle.load(os.path.join(path, "model.pdparams")))
        self.alg.optimizer.set_state_dict(paddle.load(os.path.join(path, "optimizer.pdopt")))
        self.step = int(state["step"])
        self.baseline = None if state["baseline"] is None else float(state["baseline"])
        self.seed = int(state["seed"])
        self.rng.bit_generator.state = state["rng"]


# --------------------------------------------------------------------------
# AutoDL Design's pseudo-reward check (simple_main.py, the benchmark, tests).
# --------------------------------------------------------------------------
PSEUDO_WINDOW = 50
PSEUDO_FORMAT = "autodl-design-simple-run/1"


def count_target(tokens: np.ndarray, target: int) -> np.ndarray:
    """AutoDL Design's pseudo reward: int [B] count of tokens equal to ``target``."""
    return np.count_nonzero(np.asarray(tokens) == target, axis=1)


def run_pseudo_reward(config: AgentConfig, num_steps: int, seed: int, target_token: int,
                      log: Optional[Callable[[str], None]] = print,
                      device: str = "cpu") -> Dict:
    """Trains a fresh agent on the pseudo reward and returns the summary and curve.

    One step samples ``config.batch_size`` architectures, rewards each with its
    number of tokens equal to ``target_token`` (at most 2N) and calls
    ``learn_from_rewards``. Progress lines follow AutoDL Design's simple_main:
    "Simple run target is 2N" first, then "mid=%d, average rewards=%.3f" every
    10 steps.

    Args:
      config: the agent settings.
      num_steps: controller steps (sample + reward + learn).
      seed: agent seed.
      target_token: the rewarded token index (into the op list).
      log: called with each progress line (None: silent).
      device: where the controller runs ('cpu' or 'gpu:N').

    Returns:
      dict with ``steps``, ``seed``, ``target_token``, ``target`` (2N),
      ``window`` (50), ``mean_reward_last_50``, ``wall_time_s``,
      ``ms_per_step``, ``sample_ms``, ``learn_ms`` and ``curve`` (the
      batch-mean reward of every step, floats).

    Raises:
      ValueError: ``target_token`` is not an index into the op list.
    """
    agent = ControllerAgent.create(config, seed, device)
    if not 0 <= target_token < len(agent.ops):
        raise ValueError("--target_token=%d is not a token index: use 0..%d (an index into "
                         "--ops)" % (target_token, len(agent.ops) - 1))
    target = 2 * config.num_nodes
    if log:
        log("Simple run target is %d" % target)
    curve: List[float] = []
    t_sample = t_learn = 0.0
    start = time.perf_counter()
    for mid in range(num_steps):
        t0 = time.perf_counter()
        batch = agent.sample()
        t1 = time.perf_counter()
        rewards = count_target(batch.tokens, target_token).astype(np.float64)
        agent.learn_from_rewards(batch.tokens, batch.adjvec, rewards)
        t_learn += time.perf_counter() - t1
        t_sample += t1 - t0
        curve.append(float(rewards.mean()))
        if log and mid % 10 == 0:
            log("mid=%d, average rewards=%.3f" % (mid, rewards.mean()))
    wall = time.perf_counter() - start
    last = curve[-PSEUDO_WINDOW:]
    steps = max(num_steps, 1)
    return {"format": PSEUDO_FORMAT, "steps": num_steps, "seed": seed,
            "target_token": target_token, "target": target, "window": PSEUDO_WINDOW,
            "mean_reward_last_50": float(np.mean(last)) if last else float("nan"),
            "wall_time_s": wall, "ms_per_step": 1e3 * wall / steps,
            "sample_ms": 1e3 * t_sample / steps, "learn_ms": 1e3 * t_learn / steps,
            "curve": curve}

