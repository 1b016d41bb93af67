"""REINFORCE for the controller: policy-gradient loss, entropy bonus and Adam."""
from typing import Tuple

import numpy as np

from autodl_design.backend import paddle, parl
from agent.model import ControllerModel


class Reinforce(parl.Algorithm):
    """REINFORCE (Williams, 1992) with an optional entropy bonus.

    ``loss = mean_b[-log pi(tokens_b, adjvec_b) * advantage_b]
    - entropy_weight * mean_b[entropy_b]``, minimised by Adam. The advantages
    come from the caller (the agent subtracts its baseline).

    Args:
      model: the controller.
      learning_rate: Adam learning rate (AutoDL Design: 1e-3).
      entropy_weight: weight of the entropy bonus (0 = plain REINFORCE).
    """

    def __init__(self, model: ControllerModel, learning_rate: float = 1e-3,
                 entropy_weight: float = 0.0):
        super().__init__(model)
        self.learning_rate = float(learning_rate)
        self.entropy_weight = float(entropy_weight)
        self.optimizer = paddle.optimizer.Adam(learning_rate=self.learning_rate,
                                               parameters=model.parameters())

    def sample(self, u_tokens: np.ndarray, u_adj: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
        """See ``ControllerModel.sample``."""
        return self.model.sample(u_tokens, u_adj)

    def predict(self, u_tokens: np.ndarray, u_adj: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
        """Same as ``sample`` (the policy has no separate greedy mode here)."""
        return self.model.sample(u_tokens, u_adj)

    @paddle.no_grad()
    def log_prob(self, tokens: np.ndarray, adjvec: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
        """(log_prob float32 [B], entropy float32 [B]) of given architectures."""
        logp, ent = self.model.log_prob_entropy(tokens, adjvec)
        return logp.numpy(), ent.numpy()

    def learn(self, tokens: np.ndarray, adjvec: np.ndarray,
              advantages: np.ndarray) -> Tuple[float, float]:
        """One Adam step on the REINFORCE loss.

        Args:
          tokens: int [B, 2N]; adjvec: int [B, N(N-1)] (flat controller order).
          advantages: float [B], the weight of each architecture's log-prob.

        Returns:
          (loss, mean entropy) as Python floats, before the update.
        """
        logp, ent = self.model.log_prob_entropy(tokens, adjvec)
        adv = paddle.to_tensor(np.asarray(advantages, np.float32).reshape(-1))
        return self._minimise(-(logp * adv).mean(), ent)

    def _minimise(self, loss, ent) -> Tuple[float, float]:
        """One Adam step on ``loss - entropy_weight * mean(ent)``; (loss, mean entropy) before it."""
        mean_ent = ent.mean()
        if self.entropy_weight:
            loss = loss - self.entropy_weight * mean_ent
        self.optimizer.clear_grad()
        loss.backward()
        # Adam creates its moments on the first step with globally numbered
        # names; a fresh name scope makes them the same in every process, so
        # a saved optimizer state always matches (see ControllerModel).
        with paddle.utils.unique_name.guard("controller_opt_"):
            self.optimizer.step()
        return float(loss), float(mean_ent)

    def learn_clipped(self, tokens: np.ndarray, adjvec: np.ndarray, advantages: np.ndarray,
                      old_log_prob: np.ndarray, clip: float) -> Tuple[float, float]:
        """One Adam step on PPO's clipped objective (Schulman et al., 2017).

        ``loss = -mean_b[min(rho_b * A_b, clip(rho_b, 1 - eps, 1 + eps) * A_b)]
        - entropy_weight * mean_b[entropy_b]`` with ``rho_b = pi(x_b) /
        pi_old(x_b)``; repeated on one batch it takes several bounded steps.

        Args:
          tokens: int [B, T]; adjvec: int [B, A] (flat controller order).
          advantages: float [B].
          old_log_prob: float [B], log pi_old of the batch (when sampled).
          clip: eps > 0.

        Returns:
          (loss, mean entropy) as Python floats, before the update.
        """
        logp, ent = self.model.log_prob_entropy(tokens, adjvec)
        adv = paddle.to_tensor(np.asarray(advantages, np.float32).reshape(-1))
        old = paddle.to_tensor(np.asarray(old_log_prob, np.float32).reshape(-1))
        ratio = paddle.exp(logp - old)
        clipped = paddle.clip(ratio, 1.0 - clip, 1.0 + clip)
        return self._minimise(-paddle.minimum(ratio * adv, clipped * adv).mean(), ent)
