"""One-shot search (``--method enas`` / ``--method darts``) over one shared-weight supernet.

Phase 1 (on the first trainer device) trains ``trainer.supernet.Supernet``:

* enas: every training minibatch trains the subnetwork of one candidate
  sampled from the PARL controller; after every epoch the controller takes
  ``controller_steps`` REINFORCE steps whose rewards are the critic's
  (``critic.verdict``) on each candidate's accuracy on a validation minibatch
  with the shared weights. A candidate over a hard bound by its cheap metrics
  (params, FLOPs; latency and memory by the latency table or measured) gets
  the infeasible reward without evaluation.
* darts: architecture parameters (softmax over the ops of every node,
  sigmoid per possible edge) and weights take alternating first-order steps:
  the architecture on a validation minibatch, then the weights on a training
  minibatch, through ``Supernet.forward_mixed``. With a latency table and
  ``max_latency_ms``, the architecture loss adds relu(E[latency] / bound - 1),
  E[latency] the table's prediction under the relaxed distribution.

A progress line and a checkpoint (``oneshot_state``) follow every epoch. Then
candidates (enas: sampled from the controller; darts: the most probable cell
and samples of the distribution) are scored on the whole validation split
with the shared weights through the critic; the ``retrain_top`` best are
written to ``oneshot/topk.json``.

Phase 2 retrains those candidates from scratch with the usual pool, loop and
records (``FixedSearcher``); every record's metrics keep ``oneshot_score`` and
``oneshot_val_accuracy`` beside the stand-alone ``val_accuracy``.
"""
import dataclasses
import math
import os
import sys
import time
import warnings
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np

from autodl_design import critic, records
from autodl_design.arch import Architecture, Cell
from autodl_design.config import Config
from autodl_design.search import oneshot_state as state_files
from autodl_design.search.errors import SearchError
from autodl_design.search.run_records import check_log_dir

EVAL_BATCH = 256


def check_config(config: Config) -> None:
    """Raises ValueError (one line) for settings a one-shot run cannot use."""
    s = config.search
    if s.method not in ("enas", "darts"):
        raise ValueError("--method must be multi_trial, enas or darts, got %r" % s.method)
    if s.retrain_top < 1:
        raise ValueError("--retrain_top must be >= 1, got %d" % s.retrain_top)
    if s.method == "darts" and s.searcher != "rl":
        raise ValueError("--method darts has its own searcher (architecture parameters): "
                         "leave --searcher at rl, got %r" % s.searcher)
    if s.method == "enas" and s.searcher != "rl":
        raise ValueError("--method enas samples with the RL controller: leave --searcher at "
                         "rl, got %r" % s.searcher)
    if s.oneshot_epochs < 1 or s.controller_steps < 1:
        raise ValueError("--oneshot_epochs and --controller_steps must be >= 1")
    if not 0 <= s.warmup_epochs < s.oneshot_epochs:
        raise ValueError("--warmup_epochs must be in [0, --oneshot_epochs), got %d (epochs %d)"
                         % (s.warmup_epochs, s.oneshot_epochs))


class OneShot:
    """What ENAS and DARTS share: the supernet, its optimizer, scoring, checkpoints.

    Args:
      config: the run's configuration.
      data: a loaded ``trainer.data.Dataset``.
      log: callable for progress lines.
    """

    def __init__(self, config: Config, data, log: Callable[[str], None]):
        from autodl_design.backend import paddle
        from trainer import supernet as sn
        self.paddle = paddle
        self.config = config
        self.data = data
        self.log = log
        self.ops = tuple(config.agent.ops)
        self.num_nodes = config.agent.num_nodes
        t = config.trainer
        self.batch = max(1, int(t.train_batch_size))
        sn.check_fits(t, self.ops, self.num_nodes, data.image_shape, self.batch,
                      config.search.method == "darts", _device_memory_mb(paddle))
        paddle.seed(config.search.seed)
        self.rng = np.random.default_rng(config.search.seed)
        self.net = sn.Supernet(t, self.ops, self.num_nodes, data.image_shape, data.num_classes)
        self.optimizer = paddle.optimizer.Momentum(
            learning_rate=t.lr_max, momentum=t.momentum, parameters=self.net.parameters(),
            use_nesterov=True, weight_decay=paddle.regularizer.L2Decay(t.weight_decay))
        self.steps_per_epoch = -(-len(data.train_images) // self.batch)
        self.epoch = 0
        self.history: List[Dict] = []
        self.table = None
        if t.latency_table:
            from trainer.latency_table import LatencyTable
            self.table = LatencyTable.load(t.latency_table)
        self.train_labels = np.asarray(data.train_labels, np.int64).reshape(-1)
        self.val_labels = np.asarray(data.val_labels, np.int64).reshape(-1)

    # ------------------------------------------------------------------ scoring
    def cheap_metrics(self, arch: Architecture) -> Dict:
        """The critic's metrics of ``arch`` without training (counted, table or measured)."""
        from trainer.evaluate import hardware_metrics
        from trainer.metrics import count
        bounds = self.config.constraints.bounds()
        if self.table is not None or {"latency_ms", "memory_mb"} & set(bounds):
            return hardware_metrics(arch, self.config.trainer, self.data.image_shape,
                                    self.data.num_classes, self.table, "cpu")
        c = count(arch, self.config.trainer, self.data.image_shape, self.data.num_classes)
        return {k: int(c[k]) for k in ("params", "trainable_params", "flops")}

    def accuracy(self, arch: Architecture, images: np.ndarray, labels: np.ndarray) -> float:
        """Accuracy of ``arch``'s subnetwork with the shared weights (BN on batch statistics)."""
        paddle = self.paddle
        correct = 0
        self.net.train()
        with paddle.no_grad():
            for b in range(0, len(images), EVAL_BATCH):
                x = paddle.to_tensor(np.ascontiguousarray(images[b:b + EVAL_BATCH], np.float32))
                pred = np.argmax(self.net(x, arch).numpy(), axis=1)
                correct += int(np.sum(pred == labels[b:b + EVAL_BATCH]))
        return correct / max(1, len(images))

    def judge(self, arch: Architecture, images: np.ndarray, labels: np.ndarray
              ) -> Tuple[Optional[float], Dict, critic.Verdict]:
        """(reward, metrics, verdict) of ``arch`` scored on ``images`` with the shared weights.

        A candidate over a hard bound by its cheap metrics is not evaluated.
        """
        metrics = self.cheap_metrics(arch)
        gate = critic.verdict(metrics, self.config.constraints, trained=False)
        if gate.status != "ok":
            return gate.reward, metrics, gate
        metrics["val_accuracy"] = self.accuracy(arch, images, labels)
        v = critic.verdict(metrics, self.config.constraints, trained=True)
        return v.reward, metrics, v

    def val_minibatch(self) -> Tuple[np.ndarray, np.ndarray]:
        idx = self.rng.choice(len(self.data.val_images), size=min(self.batch,
                              len(self.data.val_images)), replace=False)
        return self.data.val_images[idx], self.val_labels[idx]

    # ------------------------------------------------------------------ training
    def lr(self, step: int) -> float:
        t = self.config.trainer
        total = self.steps_per_epoch * self.config.search.oneshot_epochs
        return t.lr_min + 0.5 * (t.lr_max - t.lr_min) * (1 + math.cos(math.pi * step / total))

    def weight_step(self, logits_of: Callable, step: int) -> Tuple[float, np.ndarray]:
        """One SGD step of the shared weights on training minibatch ``step`` of the epoch."""
        paddle = self.paddle
        b = step % self.steps_per_epoch
        if b == 0:
            self.order = self.rng.permutation(len(self.data.train_images))
        idx = self.order[b * self.batch:(b + 1) * self.batch]
        x = self.data.train_images[idx]
        if getattr(self.data, "augment", False):
            from trainer.data import augment_batch
            x = augment_batch(x, self.rng)
        self.net.train()
        self.optimizer.set_lr(self.lr(step))
        logits = logits_of(paddle.to_tensor(np.ascontiguousarray(x, np.float32)))
        loss = paddle.nn.functional.cross_entropy(logits, paddle.to_tensor(self.train_labels[idx]))
        value = float(loss)
        if not math.isfinite(value):
            raise SearchError("the supernet's loss became %s at epoch %d; lower --lr_max"
                              % (value, self.epoch + 1))
        loss.backward()
        self.optimizer.step()
        self.optimizer.clear_grad()
        return value, idx

    def run(self) -> List[Dict]:
        """Trains the remaining epochs, then returns the top candidates (dicts, best first)."""
        method = self.config.search.method
        log_dir = self.config.search.log_dir
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="When training, we now always track")
            while self.epoch < self.config.search.oneshot_epochs:
                t0 = time.perf_counter()
                entry = self.train_epoch()
                self.epoch += 1
                entry.update(epoch=self.epoch, seconds=time.perf_counter() - t0)
                self.history.append(entry)
                self.log("%s epoch %d/%d: loss %.4f, val accuracy %.4f (shared weights), "
                         "best cell %s, %.1f s"
                         % (method, self.epoch, self.config.search.oneshot_epochs,
                            entry["train_loss"], entry["val_accuracy"],
                            _cell_line(entry["best_arch"]), entry["seconds"]))
                state_files.save_checkpoint(log_dir, self.epoch, self.save)
                state_files.write_history(log_dir, self.history)
            return self.top_candidates()

    def top_candidates(self) -> List[Dict]:
        """The ``retrain_top`` best candidates by one-shot score on the whole validation split."""
        scored, seen = [], set()
        for arch in self.final_pool():
            h = arch.hash()
            if h in seen:
                continue
            seen.add(h)
            reward, metrics, v = self.judge(arch, self.data.val_images, self.val_labels)
            if v.status == "ok" and v.feasible and reward is not None:
                scored.append({"arch": arch.to_dict(), "arch_hash": h, "oneshot_score": reward,
                               "oneshot_val_accuracy": metrics["val_accuracy"]})
        scored.sort(key=lambda c: -c["oneshot_score"])
        top = scored[:self.config.search.retrain_top]
        self.log("%s: %d distinct candidates scored with the shared weights, %d feasible; "
                 "retraining the top %d (one-shot scores %s)"
                 % (self.config.search.method, len(seen), len(scored), len(top),
                    ", ".join("%.3f" % c["oneshot_score"] for c in top)))
        return top

    # ------------------------------------------------------------------ checkpoints
    def save(self, folder: str) -> None:
        """Writes the supernet, its optimizer, ``state.json`` and ``save_extra`` to ``folder``."""
        paddle = self.paddle
        paddle.save(self.net.state_dict(), os.path.join(folder, "supernet.pdparams"))
        paddle.save(self.optimizer_state(), os.path.join(folder, "supernet.pdopt"))
        self.save_extra(folder)
        records.atomic_write_json(os.path.join(folder, "state.json"), {
            "epoch": self.epoch, "history": self.history, "rng": self.rng.bit_generator.state,
            "method": self.config.search.method})

    def optimizer_state(self) -> Dict:
        """The weights' optimizer state with a zero velocity for every parameter not yet updated.

        Paddle's optimizer, once given a state dict, requires every
        accumulator it creates later to be in it; a supernet's op that no
        sampled candidate has used yet has none.
        """
        sd = dict(self.optimizer.state_dict())
        for p in self.net.parameters():
            key = "%s_velocity_0" % p.name
            if key not in sd and not p.stop_gradient:
                sd[key] = self.paddle.zeros_like(p)
        return sd

    def restore(self, folder: str) -> None:
        """Loads what ``save`` wrote (the files were verified by their checksums)."""
        import json
        paddle = self.paddle
        self.net.set_state_dict(paddle.load(os.path.join(folder, "supernet.pdparams")))
        self.optimizer.set_state_dict(paddle.load(os.path.join(folder, "supernet.pdopt")))
        self.restore_extra(folder)
        with open(os.path.join(folder, "state.json")) as f:
            st = json.load(f)
        self.epoch = int(st["epoch"])
        self.history = list(st["history"])
        self.rng.bit_generator.state = st["rng"]

    # ------------------------------------------------------------------ per method
    def train_epoch(self) -> Dict:
        raise NotImplementedError

    def final_pool(self) -> List[Architecture]:
        raise NotImplementedError

    def save_extra(self, folder: str) -> None:
        raise NotImplementedError

    def restore_extra(self, folder: str) -> None:
        raise NotImplementedError


def _cell_line(arch_dict: Optional[Dict]) -> str:
    if not arch_dict:
        return "-"
    a = Architecture.from_dict(arch_dict)
    return "normal [%s] reduction [%s]" % (",".join(a.normal.ops), ",".join(a.reduction.ops))


def _device_memory_mb(paddle) -> float:
    """Memory the supernet may use on the current device (MB)."""
    from trainer.supernet import available_memory_mb
    place = paddle.get_device()
    if place.startswith("gpu"):
        props = paddle.device.cuda.get_device_properties(int(place.split(":")[1]))
        return props.total_memory / 2 ** 20
    return available_memory_mb()


class Enas(OneShot):
    """ENAS: the PARL controller samples the subnetwork of every training minibatch."""

    def __init__(self, config: Config, data, log: Callable[[str], None]):
        super().__init__(config, data, log)
        from agent.agent import ControllerAgent
        self.agent = ControllerAgent.create(config.agent, config.search.seed,
                                            config.devices.trainer_devices[0])

    def train_epoch(self) -> Dict:
        """One epoch of weight steps, then the controller steps (none while warming up).

        During the first ``warmup_epochs`` each minibatch trains a subnetwork
        drawn uniformly from the cell space, and the controller only
        samples (its candidates are scored for the progress line, not
        learned from).
        """
        warm = self.epoch < self.config.search.warmup_epochs
        if warm:
            from autodl_design.spaces import CellSpace
            space = CellSpace(self.num_nodes, self.ops)
        losses = []
        for b in range(self.steps_per_epoch):
            arch = space.sample(self.rng) if warm else self.agent.sample(1).archs[0]
            loss, _ = self.weight_step(lambda x, a=arch: self.net(x, a),
                                       self.epoch * self.steps_per_epoch + b)
            losses.append(loss)
        accs, rewards, best = [], [], (-1.0, None)
        for _ in range(1 if warm else self.config.search.controller_steps):
            sample = self.agent.sample()
            x, y = self.val_minibatch()
            scored = [self.judge(a, x, y) for a in sample.archs]
            keep = [k for k, (r, _, _) in enumerate(scored) if r is not None]
            for k in keep:
                r, m, _ = scored[k]
                rewards.append(r)
                if "val_accuracy" in m:
                    accs.append(m["val_accuracy"])
                if r > best[0]:
                    best = (r, sample.archs[k].to_dict())
            if keep and not warm:
                self.agent.learn_from_rewards(sample.tokens[keep], sample.adjvec[keep],
                                              np.asarray([scored[k][0] for k in keep]))
        return {"train_loss": float(np.mean(losses)),
                "val_accuracy": float(np.mean(accs)) if accs else 0.0,
                "mean_reward": float(np.mean(rewards)) if rewards else 0.0,
                "best_reward": best[0], "best_arch": best[1]}

    def final_pool(self) -> List[Architecture]:
        n = max(4 * self.config.search.retrain_top, 20)
        return list(self.agent.sample(n).archs)

    def save_extra(self, folder: str) -> None:
        self.agent.save(os.path.join(folder, "controller"))

    def restore_extra(self, folder: str) -> None:
        self.agent.restore(os.path.join(folder, "controller"))


class Darts(OneShot):
    """DARTS (first order): softmax over ops per node, sigmoid per possible edge."""

    def __init__(self, config: Config, data, log: Callable[[str], None]):
        super().__init__(config, data, log)
        paddle = self.paddle
        n, k = self.num_nodes, len(self.ops)
        init = paddle.nn.initializer.Constant(0.0)
        self.alpha = {c: (paddle.create_parameter([n, k], "float32", default_initializer=init),
                          paddle.create_parameter([n, n], "float32", default_initializer=init))
                      for c in ("normal", "reduction")}
        self.arch_params = [p for pair in self.alpha.values() for p in pair]
        self.arch_optimizer = paddle.optimizer.Adam(
            learning_rate=config.search.arch_learning_rate, parameters=self.arch_params,
            beta1=0.5, beta2=0.999, weight_decay=paddle.regularizer.L2Decay(1e-3))
        self.last_expected_ms = None
        self.setup_latency()

    def setup_latency(self) -> None:
        """With a latency table and --max_latency_ms: the per-choice latencies of the penalty."""
        self.latency = None
        if self.table is None or self.config.constraints.max_latency_ms <= 0:
            return
        from trainer.supernet import node_latencies
        self.latency = node_latencies(self.table, self.config.trainer, self.ops,
                                      self.num_nodes, self.data.image_shape)

    def _node_part(self, relaxed: Dict[str, Tuple]):
        """Expected table latency (ms, uncalibrated) of every node of every cell.

        Node j costs compress + sum_k w_k src_k with the probability s_j that
        it is a source, else BN-ReLU + sum_k w_k inner_k (as ``forward_mixed``).
        """
        paddle = self.paddle
        total = paddle.zeros([])
        for sup, lat in zip(self.net.cells, self.latency):
            w, p = relaxed["reduction" if sup.shape.reduction else "normal"]
            src = paddle.to_tensor(lat["src"].astype(np.float32))
            inner = paddle.to_tensor(lat["inner"].astype(np.float32))
            for j in range(self.num_nodes):
                as_src = float(lat["compress"][j]) + paddle.sum(w[j] * src[j])
                if j == 0:
                    total = total + as_src
                    continue
                s = paddle.prod(paddle.stack([1 - p[i, j] for i in range(j)]))
                as_inner = float(lat["bnrelu"][j]) + paddle.sum(w[j] * inner[j])
                total = total + s * as_src + (1 - s) * as_inner
        return total

    def expected_latency(self, relaxed: Dict[str, Tuple], arch: Architecture):
        """Expected latency (ms, calibrated as the table predicts) of the relaxed cells.

        The stem, head, projections and additions are those of ``arch`` (the
        current final cell); the nodes are the expectation of ``_node_part``.
        Equals ``table.predict(arch)`` when ``relaxed`` is ``arch`` one-hot.
        """
        paddle = self.paddle
        one_hot = {}
        for name, cell in (("normal", arch.normal), ("reduction", arch.reduction)):
            w = np.zeros((self.num_nodes, len(self.ops)), np.float32)
            w[np.arange(self.num_nodes), [self.ops.index(o) for o in cell.ops]] = 1
            one_hot[name] = (paddle.to_tensor(w),
                             paddle.to_tensor(cell.matrix.astype(np.float32)))
        t = self.config.trainer
        rest = self.table.block_sum(arch, t, self.data.image_shape, self.data.num_classes) - \
            float(self._node_part(one_hot))
        cal = self.table.calibration
        return float(cal["scale"]) * (rest + self._node_part(relaxed)) + float(cal["offset_ms"])

    def relaxed(self) -> Dict[str, Tuple]:
        """{"normal"/"reduction": (op weights [N, K], edge probabilities [N, N])}."""
        F = self.paddle.nn.functional
        return {c: (F.softmax(ops, axis=-1), F.sigmoid(edges))
                for c, (ops, edges) in self.alpha.items()}

    def arch_step(self) -> None:
        """One first-order step of the architecture parameters on a validation minibatch."""
        paddle = self.paddle
        x, y = self.val_minibatch()
        self.net.train()
        logits = self.net.forward_mixed(paddle.to_tensor(np.ascontiguousarray(x, np.float32)),
                                        self.relaxed())
        loss = paddle.nn.functional.cross_entropy(logits, paddle.to_tensor(y))
        if self.latency is not None:
            bound = self.config.constraints.max_latency_ms
            expected = self.expected_latency(self.relaxed(), self.derived())
            self.last_expected_ms = float(expected)
            loss = loss + paddle.nn.functional.relu(expected / bound - 1).sum()
        loss.backward()
        self.arch_optimizer.step()
        self.arch_optimizer.clear_grad()
        self.optimizer.clear_grad()  # the weights' gradients of this step are not used

    def train_epoch(self) -> Dict:
        losses = []
        for b in range(self.steps_per_epoch):
            self.arch_step()
            loss, _ = self.weight_step(lambda x: self.net.forward_mixed(x, self.relaxed()),
                                       self.epoch * self.steps_per_epoch + b)
            losses.append(loss)
        arch = self.derived()
        x, y = self.val_minibatch()
        acc = self.accuracy(arch, x, y)
        return {"train_loss": float(np.mean(losses)), "val_accuracy": acc,
                "best_arch": arch.to_dict(), "expected_latency_ms": self.last_expected_ms}

    def probabilities(self) -> Dict[str, Tuple[np.ndarray, np.ndarray]]:
        return {c: (w.numpy(), p.numpy()) for c, (w, p) in self.relaxed().items()}

    def derived(self) -> Architecture:
        """The final cell: most probable op per node, edges with probability > 0.5.

        Every node is on a path from the cell input to the output: a node
        without predecessor reads the input and one without successor feeds
        the output, so no node is dropped.
        """
        cells = []
        for c in ("normal", "reduction"):
            w, p = self.probabilities()[c]
            m = np.triu((p > 0.5).astype(np.int8), k=1)
            cells.append(Cell([self.ops[int(i)] for i in np.argmax(w, axis=1)], m))
        return Architecture(*cells)

    def final_pool(self) -> List[Architecture]:
        """The derived cell and samples of the architecture distribution."""
        n = max(4 * self.config.search.retrain_top, 20)
        probs = self.probabilities()
        pool = [self.derived()]
        for _ in range(n - 1):
            cells = []
            for c in ("normal", "reduction"):
                w, p = probs[c]
                ops = [self.ops[int(self.rng.choice(len(self.ops), p=row / row.sum()))]
                       for row in w.astype(np.float64)]
                m = np.triu((self.rng.random(p.shape) < p).astype(np.int8), k=1)
                cells.append(Cell(ops, m))
            pool.append(Architecture(*cells))
        return pool

    def save_extra(self, folder: str) -> None:
        paddle = self.paddle
        paddle.save({"%s_%d" % (c, i): t for c, pair in self.alpha.items()
                     for i, t in enumerate(pair)}, os.path.join(folder, "arch.pdparams"))
        paddle.save(self.arch_optimizer.state_dict(), os.path.join(folder, "arch.pdopt"))

    def restore_extra(self, folder: str) -> None:
        paddle = self.paddle
        saved = paddle.load(os.path.join(folder, "arch.pdparams"))
        for c, pair in self.alpha.items():
            for i, t in enumerate(pair):
                t.set_value(saved["%s_%d" % (c, i)])
        self.arch_optimizer.set_state_dict(paddle.load(os.path.join(folder, "arch.pdopt")))


# ---------------------------------------------------------------------- phase 2

class FixedSearcher:
    """Proposes exactly the given candidates, in order (the retraining of the top k)."""

    STATE_FILE = "fixed_searcher.json"

    def __init__(self, candidates: Sequence[Architecture]):
        self.candidates = list(candidates)
        self.proposed = 0
        self.step = 0

    def propose(self, n: int) -> List[Architecture]:
        out = self.candidates[self.proposed:self.proposed + n]
        self.proposed += len(out)
        return out

    def observe(self, archs, rewards) -> None:
        self.step += 1

    def save(self, folder: str) -> None:
        os.makedirs(folder, exist_ok=True)
        records.atomic_write_json(os.path.join(folder, self.STATE_FILE),
                                  {"step": self.step, "proposed": self.proposed})

    def restore(self, folder: str) -> None:
        import json
        path = os.path.join(folder, self.STATE_FILE)
        if not os.path.exists(path):
            path = os.path.join(folder + ".old", self.STATE_FILE)
        with open(path) as f:
            st = json.load(f)
        self.step, self.proposed = int(st["step"]), int(st["proposed"])


@dataclasses.dataclass
class ScoredEvaluator:
    """An evaluator that adds each candidate's one-shot scores to its metrics.

    Attributes:
      inner: the real evaluator (``trainer.evaluate.TrainerEvaluator``).
      scores: arch_hash -> {"oneshot_score", "oneshot_val_accuracy"}.
    """
    inner: object
    scores: Dict[str, Dict]

    def setup(self, device: str, threads: int) -> None:
        self.inner.setup(device, threads)

    def evaluate(self, candidate: Dict, index: int, seed: int, options: Dict) -> Dict:
        metrics = self.inner.evaluate(candidate, index, seed, options)
        metrics.update(self.scores[Architecture.from_dict(candidate).hash()])
        return metrics


# ---------------------------------------------------------------------- the run

def run(config: Config, log: Callable[[str], None]) -> int:
    """Runs the one-shot phase, then retrains its top candidates; returns the exit code.

    ``config.data.data_path`` must be resolved (``driver._resolve_data``).
    Exit codes as ``driver.run_from_config``: 0, 2 (bad input: one line on
    stderr, records intact), 130 after Ctrl-C.
    """
    try:
        check_config(config)
        top = search_phase(config, log)
    except (SearchError, ValueError) as e:  # DatasetError, SupernetTooLarge are ValueErrors
        print("error: %s" % e, file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        log("interrupted: the one-shot phase continues from its last epoch with --resume")
        return 130
    if not top:
        log("%s: no candidate within the bounds; nothing to retrain" % config.search.method)
        return 0
    return retrain(config, top, log)


def _open_log_dir(config: Config) -> Optional[List[Dict]]:
    """Prepares log_dir; returns the saved top candidates when the one-shot phase is done.

    Raises:
      SearchError: log_dir unusable, holds another search (new run) or other
        settings / a damaged top-k file (--resume).
    """
    log_dir, resume = config.search.log_dir, config.search.resume
    check_log_dir(log_dir, resume)
    if resume:
        try:
            records.check_resume_config(log_dir, config.to_dict())
        except ValueError as e:
            raise SearchError("--resume: %s" % e) from None
        topk = state_files.read_topk(log_dir)
        return None if topk is None else topk["candidates"]
    trials = os.path.join(log_dir, records.TRIALS_FILE)
    if os.path.exists(trials) and os.path.getsize(trials) > 0:
        raise SearchError("%s already holds a search (%s); pass --resume to continue it or "
                          "choose another --log_dir" % (log_dir, trials))
    try:
        os.makedirs(log_dir, exist_ok=True)
        state_files.clear(log_dir)
        records.write_config(log_dir, config.to_dict())
    except OSError as e:
        raise SearchError("cannot write to --log_dir %s (%s); choose another --log_dir"
                          % (log_dir, e.strerror)) from None
    return None


def search_phase(config: Config, log: Callable[[str], None]) -> List[Dict]:
    """Trains the supernet (continuing from its checkpoint with --resume); the top candidates."""
    from autodl_design.backend import paddle
    from autodl_design.devices import threads_per_worker, use_device
    from trainer.data import load_dataset
    done = _open_log_dir(config)
    if done is not None:
        log("Resuming %s: the one-shot phase is done; retraining its top %d"
            % (config.search.log_dir, len(done)))
        return done
    device = config.devices.trainer_devices[0]
    use_device(device)
    paddle.base.core.set_num_threads(threads_per_worker(
        (device,), os.cpu_count() or 1, config.devices.threads_per_worker))
    data = load_dataset(config.data.data_path)
    kind = Enas if config.search.method == "enas" else Darts
    engine = kind(config, data, log)
    ckpt = state_files.latest_checkpoint(config.search.log_dir) if config.search.resume else None
    if ckpt is not None:
        engine.restore(ckpt["folder"])
        log("Resuming %s: one-shot phase after epoch %d of %d"
            % (config.search.log_dir, engine.epoch, config.search.oneshot_epochs))
    log("%s on %s: supernet of %d parameters, %d epochs of %d steps"
        % (config.search.method, device, sum(int(np.prod(p.shape))
                                             for p in engine.net.parameters()),
           config.search.oneshot_epochs, engine.steps_per_epoch))
    top = engine.run()
    state_files.write_topk(config.search.log_dir, config.search.method, top)
    return top


def retrain(config: Config, top: List[Dict], log: Callable[[str], None]) -> int:
    """Trains ``top`` from scratch with the usual pool, loop and records (exit code)."""
    from autodl_design.search import driver
    from autodl_design.search.run_records import PENDING_FILE
    from autodl_design.search.pools import make_pool
    from autodl_design.search.searchers import make_space
    from trainer.evaluate import TrainerEvaluator
    log_dir = config.search.log_dir
    started = any(os.path.exists(os.path.join(log_dir, f))
                  for f in (PENDING_FILE, records.TRIALS_FILE))
    config = dataclasses.replace(config, search=dataclasses.replace(
        config.search, num_models=len(top), resume=started))
    space = make_space(config)
    searcher = FixedSearcher([space.from_dict(c["arch"]) for c in top])
    scores = {c["arch_hash"]: {"oneshot_score": c["oneshot_score"],
                               "oneshot_val_accuracy": c["oneshot_val_accuracy"]} for c in top}
    try:
        pool = make_pool(config, ScoredEvaluator(
            TrainerEvaluator(config.data.data_path, config.to_dict()), scores), log)
    except (SearchError, ValueError) as e:
        print("error: %s" % e, file=sys.stderr)
        return 2
    log("retraining the top %d one-shot candidates from scratch" % len(top))
    return driver.execute(config, space, searcher, pool, log)
