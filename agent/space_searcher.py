"""The PARL controller as a ``Searcher`` over any space ``space_layout`` accepts (NB201, recipes)."""
import json
import os
from typing import List, Optional, Sequence

import numpy as np

from agent.agent import ControllerAgent
from autodl_design import records
from autodl_design.config import AgentConfig
from autodl_design.interfaces import Candidate, SearchSpace
from autodl_design.spaces import encode_batch

ADVANTAGES = ("baseline", "normalize", "rank", "quantile")


def batch_advantages(rewards: np.ndarray, kind: str) -> np.ndarray:
    """Advantages from a batch alone: "normalize" (z-scores) or "rank" (centred ranks).

    Args:
      rewards: float [B].
      kind: "normalize": ``(r - mean) / std`` (0 when std is 0); "rank":
        ``rank / (B - 1) - 0.5`` in [-0.5, 0.5] (ties share their mean rank;
        0 for B = 1).

    Returns:
      float64 [B].
    """
    r = np.asarray(rewards, np.float64)
    if kind == "normalize":
        std = r.std()
        return (r - r.mean()) / std if std > 0 else np.zeros_like(r)
    if kind == "rank":
        if r.size < 2:
            return np.zeros_like(r)
        order = np.argsort(r, kind="stable")
        ranks = np.empty(r.size)
        ranks[order] = np.arange(r.size)
        for v in np.unique(r):  # ties: mean rank
            same = r == v
            ranks[same] = ranks[same].mean()
        return ranks / (r.size - 1) - 0.5
    raise ValueError("unknown batch advantage %r: use normalize or rank" % kind)


class SpaceRLSearcher:
    """REINFORCE (or clipped PPO steps) with the LSTM controller over a ``SearchSpace``.

    Args:
      space: the search space (``ControllerAgent.create_for_space``).
      agent_config: controller size and REINFORCE settings (``ops``/
        ``num_nodes`` are not used; its ``advantage``, identity or cube, is
        applied to ``r - b`` with ``advantage="baseline"``, so that the
        defaults update as ``ControllerAgent.learn_from_rewards`` does).
      seed: seeds the controller weights and its sampling.
      advantage: "baseline" (``r - b``, the agent's moving-average
        baseline), "normalize" or "rank" (``batch_advantages``), or
        "quantile" (the share of all rewards observed so far, this batch
        included, below r, minus 0.5: the run's median is the baseline).
      reward_scale: rewards are multiplied by this first.
      ppo_epochs: 1 = one REINFORCE step per batch; k > 1 = k steps of the
        clipped PPO objective on the batch.
      ppo_clip: PPO's epsilon.
      unique: ``propose`` resamples (at most ``unique_tries`` batches) so
        that a batch holds no candidate proposed before.
      unique_tries: see ``unique``.
      learn_batch: 0 = one update per observed batch; n > 0 = the learned-from
        candidates (reward not None) of observed batches are gathered until
        there are at least n, then one update uses them all (so that a batch
        whose candidates mostly were not learned from, e.g. over a hard
        bound with reward None, still makes a full-sized update).
      device: where the controller runs ('cpu' or 'gpu:N').

    Failed candidates (reward None) are left out of the update; a batch in
    which every candidate failed still counts as a step.
    """

    STATE_FILE = "space_rl_searcher.json"

    def __init__(self, space: SearchSpace, agent_config: AgentConfig, seed: int,
                 advantage: str = "baseline", reward_scale: float = 1.0, ppo_epochs: int = 1,
                 ppo_clip: float = 0.2, unique: bool = False, unique_tries: int = 20,
                 learn_batch: int = 0, device: str = "cpu"):
        if advantage not in ADVANTAGES:
            raise ValueError("unknown advantage %r: use %s" % (advantage, ", ".join(ADVANTAGES)))
        if ppo_epochs < 1:
            raise ValueError("ppo_epochs must be >= 1, got %d" % ppo_epochs)
        self.space = space
        self.agent = ControllerAgent.create_for_space(agent_config, space, seed, device)
        self.advantage = advantage
        self.reward_scale = float(reward_scale)
        self.ppo_epochs = int(ppo_epochs)
        self.ppo_clip = float(ppo_clip)
        self.unique = bool(unique)
        self.unique_tries = int(unique_tries)
        self.learn_batch = int(learn_batch)
        self.pending: List[List] = []  # [tokens list, adjvec list, reward] gathered (learn_batch)
        self.seen = set()
        self.history: List[float] = []
        self.losses: List[float] = []

    @property
    def step(self) -> int:
        return self.agent.step

    def propose(self, n: int) -> List[Candidate]:
        """``n`` candidates from the policy (new ones only, as far as possible, with ``unique``)."""
        if not self.unique:
            out = self.agent.sample(n).archs
            self.seen.update(c.hash() for c in out)
            return out
        out: List[Candidate] = []
        spare: List[Candidate] = []
        for _ in range(self.unique_tries):
            for c in self.agent.sample(n).archs:
                h = c.hash()
                if h in self.seen:
                    spare.append(c)
                elif len(out) < n:
                    self.seen.add(h)
                    out.append(c)
            if len(out) == n:
                return out
        return out + spare[:n - len(out)]

    def observe(self, candidates: Sequence[Candidate], rewards: Sequence[Optional[float]]):
        keep = [k for k, r in enumerate(rewards) if r is not None]
        if self.learn_batch > 0:
            if keep:
                tokens, adjvec = encode_batch(self.space, [candidates[k] for k in keep])
                self.pending.extend([t.tolist(), a.tolist(), float(rewards[k])]
                                    for t, a, k in zip(tokens, adjvec, keep))
            if len(self.pending) < self.learn_batch:
                self.agent.step += 1  # a step (an observed batch) without an update
                return
            tokens = np.asarray([p[0] for p in self.pending], np.int32)
            adjvec = np.asarray([p[1] for p in self.pending], np.int32).reshape(len(tokens), -1)
            self._learn(tokens, adjvec, [p[2] for p in self.pending])
            self.pending = []
            return
        if not keep:
            self.agent.step += 1
            return
        tokens, adjvec = encode_batch(self.space, [candidates[k] for k in keep])
        self._learn(tokens, adjvec, [rewards[k] for k in keep])

    def _learn(self, tokens: np.ndarray, adjvec: np.ndarray, rewards: Sequence[float]):
        """One update (REINFORCE or ``ppo_epochs`` clipped steps) on tokens [B, T], adjvec [B, A]."""
        r = self.reward_scale * np.asarray(rewards, np.float64)
        if self.advantage == "baseline":
            adv = self.agent.update_baseline(r)
        elif self.advantage == "quantile":
            self.history.extend(r.tolist())
            past = np.sort(np.asarray(self.history))
            below = np.searchsorted(past, r, side="left")
            upto = np.searchsorted(past, r, side="right")
            adv = (below + upto) / (2.0 * past.size) - 0.5
        else:
            adv = batch_advantages(r, self.advantage)
        if self.ppo_epochs == 1:
            self.losses.append(self.agent.learn(tokens, adjvec, adv))
            return
        tokens, adjvec = tokens.astype(np.int64), adjvec.astype(np.int64)
        old = self.agent.alg.log_prob(tokens, adjvec)[0]
        for _ in range(self.ppo_epochs):
            loss, _ = self.agent.alg.learn_clipped(tokens, adjvec, adv, old, self.ppo_clip)
        self.losses.append(loss)
        self.agent.step += 1

    def save(self, folder: str):
        self.agent.save(os.path.join(folder, "agent"))
        records.atomic_write_json(os.path.join(folder, self.STATE_FILE),
                                  {"seen": sorted(self.seen), "history": self.history,
                                   "pending": self.pending})

    def restore(self, folder: str):
        self.agent.restore(os.path.join(folder, "agent"))
        with open(os.path.join(folder, self.STATE_FILE)) as f:
            state = json.load(f)
        self.seen = set(state["seen"])
        self.history = list(state["history"])
        self.pending = list(state.get("pending", []))  # written since learn_batch exists
