"""Trains one candidate network and evaluates it: the reward signal of the search.

``train_and_evaluate`` is the one entry the search uses. Training follows
AutoDL Design: SGD with Nesterov momentum, a cosine learning rate from
``lr_max`` to ``lr_min`` over all steps, L2 weight decay, ``early_stop``
epochs over the training chunk. Validation accuracy (the reward) is measured
on the validation chunk, test accuracy on the held-out split. A candidate
whose loss becomes NaN/inf, or whose training raises, is reported as
``status: 'failed'`` with the reason; the caller never sees an exception
(except one raised by its own ``on_epoch`` callback).

Data is duck-typed: any object with ``train_images``/``val_images``/
``test_images`` (float32 [N, C, H, W], normalised), ``train_labels``/
``val_labels``/``test_labels`` (int64 [N]) and ``augment`` (bool; if true,
``trainer.data.augment_batch`` is applied to every training batch).
"""
import dataclasses
import json
import math
import os
import shutil
import tempfile
import time
import warnings
from typing import Any, Callable, Dict, Optional, Sequence, Tuple

import numpy as np

from autodl_design.backend import paddle
from autodl_design.arch import Architecture
from autodl_design.config import TrainerConfig
from trainer.network import Network, build_network

EVAL_BATCH = 512
EXPORT_PREFIX = "model"


class Diverged(Exception):
    """The loss or the network's outputs became NaN or infinite."""


def effective_seed(config: TrainerConfig, seed: Optional[int] = None) -> int:
    """The seed of one evaluation: ``config.seed``, mixed with ``seed`` if given.

    Distinct (config.seed, seed) pairs give distinct streams (SeedSequence).
    """
    if seed is None:
        return int(config.seed)
    return int(np.random.SeedSequence([int(config.seed), int(seed)]).generate_state(1)[0]
               & 0x7FFFFFFF)


def cosine_lr(step: int, total_steps: int, lr_max: float, lr_min: float) -> float:
    """Learning rate at ``step`` (0-based) of ``total_steps``: lr_max down to lr_min."""
    if total_steps <= 1:
        return lr_max
    return lr_min + 0.5 * (lr_max - lr_min) * (1.0 + math.cos(math.pi * step / total_steps))


def predict(model: Network, images: np.ndarray, batch_size: int = EVAL_BATCH) -> np.ndarray:
    """Eval-mode logits, float32 [N, num_classes], for float32 [N, C, H, W] images."""
    model.eval()
    out = []
    with paddle.no_grad():
        for start in range(0, len(images), batch_size):
            x = paddle.to_tensor(np.ascontiguousarray(images[start:start + batch_size]))
            out.append(model(x).numpy())
    if not out:
        return np.zeros((0, model.num_classes), np.float32)
    return np.concatenate(out)


def accuracy(model: Network, images: np.ndarray, labels: np.ndarray) -> float:
    """Top-1 accuracy in [0, 1] (0.0 for an empty split).

    Raises:
      Diverged: the network outputs NaN or inf.
    """
    if len(images) == 0:
        return 0.0
    logits = predict(model, images)
    if not np.all(np.isfinite(logits)):
        raise Diverged("network outputs are NaN/inf on evaluation")
    return float(np.mean(np.argmax(logits, axis=1) == np.asarray(labels).reshape(-1)))


def fit(arch: Architecture, config: TrainerConfig, data, *, seed: Optional[int] = None,
        on_epoch: Optional[Callable[[int, float], bool]] = None,
        static_graph: Optional[bool] = None) -> Tuple[Dict[str, Any], Optional[Network]]:
    """``train_and_evaluate`` that also returns the trained model (None if failed).

    Used by ``python -m trainer`` to export the model; see
    ``train_and_evaluate`` for the arguments and the result.
    """
    start = time.perf_counter()
    used_seed = effective_seed(config, seed)
    if static_graph is None:
        static_graph = bool(getattr(config, "static_graph", False))
    result: Dict[str, Any] = {"status": "ok", "reason": "", "seed": used_seed,
                              "static_graph": static_graph}
    model, train_seconds, train_images = None, 0.0, 0
    while True:
        result.update(val_accuracy=0.0, test_accuracy=0.0, train_loss=float("nan"), epochs=0,
                      stopped_early=False, val_history=[])
        try:
            with warnings.catch_warnings():
                # Paddle warns on every BatchNorm forward in training mode.
                warnings.filterwarnings("ignore", message="When training, we now always track")
                warnings.filterwarnings("ignore", message="Tensor do not have 'place' interface")
                model, train_seconds, train_images = _train(
                    arch, config, data, used_seed, on_epoch, result, result["static_graph"])
                # the last epoch's validation (when on_epoch asked for it) is the final one
                result["val_accuracy"] = (result["val_history"][-1] if result["val_history"]
                                          else accuracy(model, data.val_images, data.val_labels))
                result["test_accuracy"] = accuracy(model, data.test_images, data.test_labels)
        except Diverged as e:
            result.update(status="failed", reason=str(e), val_accuracy=0.0, test_accuracy=0.0)
            model = None
        except _CallbackError as e:
            raise e.__cause__ from None
        except Exception as e:  # a training error is the candidate's failure, not the caller's
            reason = _one_line("%s: %s" % (type(e).__name__, e))
            if result["static_graph"] and result["epochs"] == 0:
                # to_static could not convert or run this network: train it in dygraph.
                result.update(static_graph=False, static_graph_error=reason)
                continue
            result.update(status="failed", reason=reason, val_accuracy=0.0, test_accuracy=0.0)
            model = None
        break
    result["seconds"] = time.perf_counter() - start
    result["images_per_second"] = train_images / train_seconds if train_seconds > 0 else 0.0
    return result, model


def _one_line(text: str, limit: int = 600) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[:limit - 3] + "..."


class _CallbackError(Exception):
    """Wraps an exception raised by the caller's ``on_epoch`` (re-raised as is)."""


def _train(arch: Architecture, config: TrainerConfig, data, seed: int, on_epoch,
           result: Dict[str, Any], static_graph: bool) -> Tuple[Network, float, int]:
    paddle.seed(seed)
    rng = np.random.default_rng(seed)
    images, labels = data.train_images, np.asarray(data.train_labels, np.int64).reshape(-1)
    if len(images) == 0:
        raise ValueError("the training split is empty")
    for split in ("train", "val", "test"):
        x = getattr(data, split + "_images")
        if len(x) and not np.all(np.isfinite(x)):
            raise Diverged("the %s images contain NaN or inf values" % split)
    augment = bool(getattr(data, "augment", False))
    if augment:
        from trainer.data import augment_batch
    model = build_network(arch, config, images.shape[1:], _num_classes(data))
    if static_graph:
        # No input_spec: a program per (mode, batch shape) is compiled on first use
        # (a dynamic batch dimension made the programs ~30% slower on CPU).
        model = paddle.jit.to_static(model, full_graph=True)
    params = [p for p in model.parameters() if not p.stop_gradient]
    optimizer = paddle.optimizer.Momentum(
        learning_rate=config.lr_max, momentum=config.momentum, parameters=params,
        use_nesterov=True, weight_decay=paddle.regularizer.L2Decay(config.weight_decay))
    batch = max(1, int(config.train_batch_size))
    steps_per_epoch = -(-len(images) // batch)
    total_steps = steps_per_epoch * config.early_stop
    step, train_seconds, seen = 0, 0.0, 0
    for epoch in range(1, config.early_stop + 1):
        model.train()
        order = rng.permutation(len(images))
        t0 = time.perf_counter()
        loss_sum = 0.0
        for b in range(steps_per_epoch):
            idx = order[b * batch:(b + 1) * batch]
            x = images[idx]
            if augment:
                x = augment_batch(x, rng)
            optimizer.set_lr(cosine_lr(step, total_steps, config.lr_max, config.lr_min))
            logits = model(paddle.to_tensor(np.ascontiguousarray(x, np.float32)))
            loss = paddle.nn.functional.cross_entropy(logits, paddle.to_tensor(labels[idx]))
            value = float(loss)
            if not math.isfinite(value):
                raise Diverged("loss is %s at epoch %d step %d (lr %.3g)"
                               % (value, epoch, b + 1, optimizer.get_lr()))
            loss.backward()
            optimizer.step()
            optimizer.clear_grad()
            loss_sum += value * len(idx)
            step += 1
            seen += len(idx)
        train_seconds += time.perf_counter() - t0
        bad = _non_finite_parameter(model)
        if bad:
            raise Diverged("parameter %s became NaN/inf in epoch %d" % (bad, epoch))
        result["epochs"] = epoch
        result["train_loss"] = loss_sum / len(images)
        if on_epoch is not None:
            val = accuracy(model, data.val_images, data.val_labels)
            result["val_history"].append(val)
            try:
                keep_going = on_epoch(epoch, val)
            except Exception as e:
                raise _CallbackError() from e
            if keep_going is not None and not keep_going and epoch < config.early_stop:
                result["stopped_early"] = True
                break
    return model, train_seconds, seen


def _non_finite_parameter(model: Network) -> str:
    """Name of the first parameter (incl. BN statistics) holding NaN/inf, or ''."""
    for name, p in model.named_parameters():
        if not bool(paddle.isfinite(p).all()):
            return name
    return ""


def _num_classes(data) -> int:
    if hasattr(data, "num_classes"):
        return int(data.num_classes)
    return int(np.max(data.train_labels)) + 1


def train_and_evaluate(arch: Architecture, config: TrainerConfig, data, *,
                       seed: Optional[int] = None,
                       on_epoch: Optional[Callable[[int, float], bool]] = None,
                       static_graph: Optional[bool] = None) -> Dict[str, Any]:
    """Trains ``arch`` on the training chunk and measures its accuracies.

    Deterministic on CPU for a given (config.seed, seed). Runs on the current
    Paddle device (``autodl_design.devices.use_device``).

    Args:
      arch: the candidate.
      config: network sizes and the training schedule (early_stop epochs).
      data: a dataset (see the module docstring).
      seed: optional per-candidate seed, mixed with ``config.seed``.
      on_epoch: optional ``on_epoch(epoch, val_accuracy) -> bool`` called after
        every epoch (1-based) with the validation accuracy; returning False
        stops training (status 'ok', ``stopped_early`` True). Exceptions it
        raises propagate to the caller.
      static_graph: run the network as a compiled Paddle program
        (``paddle.jit.to_static(full_graph=True)``: same numbers, ~1.4x the
        training images/s on CPU, ~1 s to compile per network) instead of
        dygraph; None = ``config.static_graph`` if that field exists, else
        False. If conversion fails before the first epoch ends, the candidate
        is trained in dygraph instead (``static_graph_error`` says why).

    Returns:
      dict with ``status`` ('ok' | 'failed'), ``reason`` ('' when ok; what went
      wrong otherwise), ``val_accuracy`` and ``test_accuracy`` (in [0, 1]; 0.0
      when failed), ``train_loss`` (mean loss of the last epoch), ``epochs``
      (epochs completed), ``seconds`` (wall time of the whole call),
      ``images_per_second`` (training images per second of training steps),
      ``stopped_early`` (bool), ``val_history`` (per-epoch validation accuracy,
      only filled when ``on_epoch`` is given), ``seed`` (the seed used) and
      ``static_graph`` (whether the compiled program was used).
    """
    result, _ = fit(arch, config, data, seed=seed, on_epoch=on_epoch, static_graph=static_graph)
    return result


def export_model(model: Network, image_shape: Sequence[int], folder: str, arch: Architecture,
                 trainer_config: TrainerConfig, class_names: Sequence[str],
                 check_images: np.ndarray) -> float:
    """Saves ``model`` with paddle.jit.save into ``folder`` and checks the reload.

    Writes into a temporary folder beside ``folder`` and renames it into place
    only after ``paddle.jit.load`` of the saved files reproduced the logits of
    ``check_images``. The folder gets ``model.*`` (the inference program and
    parameters; load with ``paddle.jit.load(os.path.join(folder, 'model'))``),
    ``arch.json`` and ``export.json`` (input shape, class names, sizes).

    Args:
      model: the trained network.
      image_shape: (C, H, W) of the inputs.
      folder: where the export goes; must not exist or be an empty folder.
      arch: the architecture (saved beside the model).
      trainer_config: the sizes used (saved beside the model).
      class_names: names of the classes, in label order.
      check_images: float32 [N, C, H, W] images for the round-trip check.

    Returns:
      The largest absolute difference of the reloaded model's logits.

    Raises:
      RuntimeError: the reloaded model disagrees (nothing is left behind).
      OSError: the folder is not empty or cannot be written.
    """
    folder = os.path.abspath(folder)
    parent = os.path.dirname(folder)
    os.makedirs(parent, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=".export-", dir=parent)
    try:
        model.eval()
        prefix = os.path.join(tmp, EXPORT_PREFIX)
        spec = paddle.static.InputSpec([None] + list(image_shape), "float32", "image")
        paddle.jit.save(model, prefix, input_spec=[spec])
        with open(os.path.join(tmp, "arch.json"), "w") as f:
            f.write(arch.to_json())
        with open(os.path.join(tmp, "export.json"), "w") as f:
            json.dump({"image_shape": list(image_shape), "class_names": list(class_names),
                       "trainer": dataclasses.asdict(trainer_config),
                       "load": "paddle.jit.load(os.path.join(folder, %r))" % EXPORT_PREFIX},
                      f, indent=2)
        expected = predict(model, check_images)
        loaded = paddle.jit.load(prefix)
        loaded.eval()
        with paddle.no_grad():
            got = loaded(paddle.to_tensor(np.ascontiguousarray(check_images))).numpy()
        diff = float(np.max(np.abs(got - expected))) if len(expected) else 0.0
        same = np.array_equal(np.argmax(got, 1), np.argmax(expected, 1))
        if not same or diff > 1e-3 * max(1.0, float(np.max(np.abs(expected)))):
            raise RuntimeError("the reloaded model's predictions differ (max |diff| %.3g)" % diff)
        if os.path.isdir(folder):
            os.rmdir(folder)  # empty (checked before training)
        os.replace(tmp, folder)
        tmp = None
        return diff
    finally:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)
