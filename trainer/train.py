"""Trains one candidate network and evaluates it: the reward signal of the search.

``train_and_evaluate`` is the one entry the search uses. Training follows
AutoDL Design: SGD with Nesterov momentum, a cosine learning rate from
``lr_max`` to ``lr_min`` over all steps, L2 weight decay, ``early_stop``
epochs over the training chunk. A recipe (``autodl_design.recipe``) may
choose Adam or RMSProp instead (``TrainerConfig.optimizer``, same schedule
and L2 decay), a global gradient-norm clip (``grad_clip``), the head's
dropout and the input resolution (every split resized once,
``trainer.data.at_resolution``). Validation accuracy (the reward) is measured
on the validation chunk, test accuracy on the held-out split. A candidate
whose loss becomes NaN/inf, or whose own Paddle ops raise (out of memory
included), is reported as ``status: 'failed'`` with the reason; any other
exception (the caller's ``on_epoch``, a bug of the code around the candidate)
propagates with its traceback.

Data is duck-typed: any object with ``train_images``/``val_images``/
``test_images`` (float32 [N, C, H, W], normalised), ``train_labels``/
``val_labels``/``test_labels`` (int64 [N]) and ``augment`` (bool; if true,
``trainer.data.augment_batch`` is applied to every training batch).
"""
import contextlib
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
from autodl_design.recipe import OPTIMIZERS
from trainer.metrics import sync
from trainer.network import Network, build_network

EVAL_BATCH = 512
EXPORT_PREFIX = "model"


class Diverged(Exception):
    """The loss or the network's outputs became NaN or infinite."""


class CandidateError(Exception):
    """The candidate's own Paddle ops raised (its forward, backward or optimizer step).

    ``str`` of it is the one-line reason of the failed record; ``__cause__``
    is the Paddle error.
    """


# What Paddle raises from its ops: its C++ errors are translated to these
# builtins (InvalidArgument -> ValueError, OutOfRange -> IndexError,
# ResourceExhausted -> MemoryError, Unimplemented -> NotImplementedError,
# External -> OSError, Fatal -> SystemError, the rest RuntimeError) or come as
# ``EnforceNotMet``; its Python checks raise ValueError. Others (TypeError,
# AttributeError, KeyError, NameError, ...) are bugs of our code and propagate.
PADDLE_ERRORS = (ValueError, IndexError, RuntimeError, MemoryError, NotImplementedError,
                 OSError, SystemError, paddle.base.core.EnforceNotMet)


@contextlib.contextmanager
def candidate_ops():
    """Turns an error of the Paddle ops run inside into ``CandidateError``.

    Wraps only code that runs the candidate's network: building it, its
    forward/loss, backward and optimizer step, its evaluation. An out of
    memory error (MemoryError, Paddle's ResourceExhausted) is one of these.
    """
    try:
        yield
    except PADDLE_ERRORS as e:
        raise CandidateError(_one_line("%s: %s" % (type(e).__name__, e))) from e


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
      CandidateError: the network's forward pass raised a Paddle error.
    """
    if len(images) == 0:
        return 0.0
    with candidate_ops():
        logits = predict(model, images)
    if not np.all(np.isfinite(logits)):
        raise Diverged("network outputs are NaN/inf on evaluation")
    return float(np.mean(np.argmax(logits, axis=1) == np.asarray(labels).reshape(-1)))


def _fresh_result(result: Dict[str, Any]):
    result.update(val_accuracy=0.0, test_accuracy=0.0, train_loss=float("nan"), epochs=0,
                  stopped_early=False, val_history=[])


def fit(arch: Architecture, config: TrainerConfig, data, *, seed: int,
        on_epoch: Optional[Callable[[int, float], bool]] = None,
        static_graph: bool = False, amp: bool = False, continuation=None
        ) -> Tuple[Dict[str, Any], Optional[Network]]:
    """``train_and_evaluate`` that also returns the trained model (None if failed).

    Used by ``python -m trainer`` to export the model; see
    ``train_and_evaluate`` for the arguments and the result.
    """
    start = time.perf_counter()
    if config.optimizer not in OPTIMIZERS:
        raise ValueError("TrainerConfig.optimizer %r is not one of %s"
                         % (config.optimizer, ", ".join(OPTIMIZERS)))
    from trainer.data import at_resolution
    data = at_resolution(data, config)
    result: Dict[str, Any] = {"status": "ok", "reason": "", "seed": int(seed),
                              "static_graph": bool(static_graph)}
    if amp:
        result["amp"] = True
    model, train_seconds, train_images = None, 0.0, 0
    while True:
        _fresh_result(result)
        try:
            model, train_seconds, train_images = _train_and_measure(arch, config, data, on_epoch,
                                                                    result, continuation)
        except Diverged as e:
            result.update(status="failed", reason=str(e), val_accuracy=0.0, test_accuracy=0.0)
            model = None
        except CandidateError as e:
            if result["static_graph"] and result["epochs"] == 0:
                # to_static could not convert or run this network: train it in dygraph.
                result.update(static_graph=False, static_graph_error=str(e))
                continue
            result.update(status="failed", reason=str(e), val_accuracy=0.0, test_accuracy=0.0)
            model = None
        break
    result["seconds"] = time.perf_counter() - start
    result["images_per_second"] = train_images / train_seconds if train_seconds > 0 else 0.0
    return result, model


def _train_and_measure(arch: Architecture, config: TrainerConfig, data, on_epoch,
                       result: Dict[str, Any], continuation=None
                       ) -> Tuple[Network, float, int]:
    """Trains, then fills the final validation and test accuracy into ``result``."""
    with warnings.catch_warnings():
        # Paddle warns on every BatchNorm forward in training mode.
        warnings.filterwarnings("ignore", message="When training, we now always track")
        warnings.filterwarnings("ignore", message="Tensor do not have 'place' interface")
        model, train_seconds, train_images = _train(arch, config, data, on_epoch, result,
                                                    continuation)
        # the last epoch's validation (when on_epoch asked for it) is the final one
        result["val_accuracy"] = (result["val_history"][-1] if result["val_history"]
                                  else accuracy(model, data.val_images, data.val_labels))
        result["test_accuracy"] = accuracy(model, data.test_images, data.test_labels)
    return model, train_seconds, train_images


def _one_line(text: str, limit: int = 600) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[:limit - 3] + "..."


def _check_data(data):
    """Raises ValueError for an empty training split, Diverged for NaN/inf images."""
    if len(data.train_images) == 0:
        raise ValueError("the training split is empty")
    for split in ("train", "val", "test"):
        x = getattr(data, split + "_images")
        if len(x) and not np.all(np.isfinite(x)):
            raise Diverged("the %s images contain NaN or inf values" % split)


def _build(arch: Architecture, config: TrainerConfig, data, static_graph: bool):
    """(model, optimizer) of the candidate on the current device."""
    with candidate_ops():
        model = build_network(arch, config, data.train_images.shape[1:], _num_classes(data))
        if static_graph:
            # No input_spec: a program per (mode, batch shape) is compiled on first use
            # (a dynamic batch dimension made the programs ~30% slower on CPU).
            model = paddle.jit.to_static(model, full_graph=True)
        params = [p for p in model.parameters() if not p.stop_gradient]
        optimizer = make_optimizer(config, params)
    return model, optimizer


def make_optimizer(config: TrainerConfig, params):
    """The optimizer of ``config.optimizer`` over ``params``, at ``lr_max``.

    ``sgd``: SGD with Nesterov momentum ``config.momentum`` (the trainer's
    optimizer since the start; unchanged). ``adam``: Adam (beta1 0.9, beta2
    0.999, epsilon 1e-8). ``rmsprop``: RMSProp (rho 0.95, epsilon 1e-6, no
    momentum; Paddle's defaults). All three add L2 decay
    ``config.weight_decay`` to the gradients, and with ``config.grad_clip`` >
    0 clip the gradients to that global norm first
    (``paddle.nn.ClipGradByGlobalNorm``; Paddle adds the decay after the clip).
    """
    common = dict(learning_rate=config.lr_max, parameters=params,
                  weight_decay=paddle.regularizer.L2Decay(config.weight_decay),
                  grad_clip=(paddle.nn.ClipGradByGlobalNorm(config.grad_clip)
                             if config.grad_clip > 0 else None))
    if config.optimizer == "sgd":
        return paddle.optimizer.Momentum(momentum=config.momentum, use_nesterov=True, **common)
    if config.optimizer == "adam":
        return paddle.optimizer.Adam(beta1=0.9, beta2=0.999, epsilon=1e-8, **common)
    if config.optimizer == "rmsprop":
        return paddle.optimizer.RMSProp(rho=0.95, epsilon=1e-6, momentum=0.0, **common)
    raise ValueError("unknown optimizer %r" % config.optimizer)


def _step(model: Network, optimizer, x, y, lr: float, scaler=None):
    """One optimizer step of the candidate on device tensors ``x`` [B, C, H, W], ``y`` [B].

    Returns the loss as a device tensor: nothing is copied back to the host
    (``_epoch`` checks the loss once per epoch). With ``scaler`` (a
    ``paddle.amp.GradScaler``) the forward pass and loss run under
    ``paddle.amp.auto_cast`` O1 and the gradients are scaled.

    Raises:
      CandidateError: a Paddle op of the step raised.
    """
    with candidate_ops():
        optimizer.set_lr(lr)
        if scaler is None:
            loss = paddle.nn.functional.cross_entropy(model(x), y)
            loss.backward()
            optimizer.step()
        else:
            with paddle.amp.auto_cast(level="O1"):
                loss = paddle.nn.functional.cross_entropy(model(x), y)
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
        optimizer.clear_grad()
    return loss


def _device_split(data, augment: bool):
    """(images or None, labels): the training split copied to the current device once.

    Images stay on the host (None) when augmenting: ``augment_batch`` is numpy.
    """
    labels = np.asarray(data.train_labels, np.int64).reshape(-1)
    with candidate_ops():
        images = None if augment else paddle.to_tensor(np.ascontiguousarray(
            data.train_images, np.float32))
        return images, paddle.to_tensor(labels)


def _epoch(model: Network, optimizer, config: TrainerConfig, data, rng: np.random.Generator,
           epoch: int, step: int, on_device, scaler=None) -> Tuple[float, int, int]:
    """One epoch over the training split; (mean loss, steps done in total, images seen).

    Batches are gathered on the device from ``on_device`` (``_device_split``)
    by a permutation copied once per epoch; the loss is summed there (in
    float64, in the order a host sum would use) and read once at the end.

    Raises:
      Diverged: the epoch's loss is NaN/inf.
      CandidateError: a Paddle op of the candidate raised.
    """
    images = data.train_images
    batch = max(1, int(config.train_batch_size))
    steps_per_epoch = -(-len(images) // batch)
    total_steps = steps_per_epoch * config.early_stop
    augment = bool(getattr(data, "augment", False))
    if augment:
        from trainer.data import augment_batch
    model.train()
    order = rng.permutation(len(images))
    x_all, y_all = on_device
    with candidate_ops():
        order_t = paddle.to_tensor(order)
        loss_sum = paddle.zeros([], "float64")
    seen, lr = 0, config.lr_max
    for b in range(steps_per_epoch):
        idx = order[b * batch:(b + 1) * batch]
        with candidate_ops():
            part = order_t[b * batch:(b + 1) * batch]
            x = (paddle.to_tensor(augment_batch(images[idx], rng)) if augment
                 else paddle.gather(x_all, part))
            y = paddle.gather(y_all, part)
        lr = cosine_lr(step, total_steps, config.lr_max, config.lr_min)
        loss = _step(model, optimizer, x, y, lr, scaler)
        with candidate_ops():
            loss_sum = loss_sum + loss.astype("float64") * len(idx)
        step += 1
        seen += len(idx)
    with candidate_ops():
        value = float(loss_sum)
    if not math.isfinite(value):
        raise Diverged("loss is %s in epoch %d (lr %.3g at its end)" % (value, epoch, lr))
    return value / len(images), step, seen


def _train(arch: Architecture, config: TrainerConfig, data, on_epoch,
           result: Dict[str, Any], continuation=None) -> Tuple[Network, float, int]:
    """Trains ``early_stop`` epochs (fewer if ``on_epoch`` says stop); (model, seconds, images).

    With ``continuation`` (``trainer.continuation.Continuation``): from its
    saved state, up to its epoch, then saved (``_continue``, ``_save``).
    """
    seed = result["seed"]
    paddle.seed(seed)
    rng = np.random.default_rng(seed)
    _check_data(data)
    model, optimizer = _build(arch, config, data, result["static_graph"])
    on_device = _device_split(data, bool(getattr(data, "augment", False)))
    scaler = paddle.amp.GradScaler() if result.get("amp") else None
    step, train_seconds, seen = 0, 0.0, 0
    start, stop = 0, config.early_stop
    if continuation is not None:
        start, step, stop = _continue(continuation, model, optimizer, rng, result)
    for epoch in range(start + 1, stop + 1):
        sync(paddle)  # before every clock read: GPU kernels run asynchronously
        t0 = time.perf_counter()
        loss, step, images = _epoch(model, optimizer, config, data, rng, epoch, step,
                                    on_device, scaler)
        sync(paddle)
        train_seconds += time.perf_counter() - t0
        seen += images
        with candidate_ops():
            bad = _non_finite_parameter(model)
        if bad:
            raise Diverged("parameter %s became NaN/inf in epoch %d" % (bad, epoch))
        result["epochs"] = epoch
        result["train_loss"] = loss
        if on_epoch is not None:
            val = accuracy(model, data.val_images, data.val_labels)
            result["val_history"].append(val)
            keep_going = on_epoch(epoch, val)
            if keep_going is not None and not keep_going and epoch < stop:
                result["stopped_early"] = True
                break
    if continuation is not None and continuation.save_state:
        _save(continuation, model, optimizer, rng, result, step)
    return model, train_seconds, seen


def _continue(continuation, model: Network, optimizer, rng: np.random.Generator,
              result: Dict[str, Any]) -> Tuple[int, int, int]:
    """(epoch reached, steps done, epoch to stop at) of a continued candidate, state loaded."""
    from trainer.continuation import load_state
    start, step = 0, 0
    if continuation.continue_from:
        start, step, history = load_state(continuation.continue_from, model, optimizer, rng)
        result["val_history"] = history
    result.update(epochs=start, resumed_at_epoch=start)
    return start, step, continuation.epochs


def _save(continuation, model: Network, optimizer, rng: np.random.Generator,
          result: Dict[str, Any], step: int) -> None:
    """Saves the state a promotion of this candidate continues from."""
    from trainer.continuation import save_state
    save_state(continuation.save_state, model, optimizer, result["epochs"], step, rng,
               result["val_history"])


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


def train_and_evaluate(arch: Architecture, config: TrainerConfig, data, *, seed: int,
                       on_epoch: Optional[Callable[[int, float], bool]] = None,
                       static_graph: bool = False, amp: bool = False,
                       continuation=None) -> Dict[str, Any]:
    """Trains ``arch`` on the training chunk and measures its accuracies.

    Deterministic on CPU for a given ``seed``. Runs on the current Paddle
    device (``autodl_design.devices.use_device``).

    Args:
      arch: the candidate.
      config: network sizes, the training schedule (early_stop epochs), the
        optimizer, grad_clip, dropout and input resolution.
      data: a dataset (see the module docstring).
      seed: the seed of this evaluation (the search passes the candidate's
        seed, ``python -m trainer`` its ``--seed``): ``paddle.seed`` (initial
        weights, dropout) and the numpy generator of shuffling and
        augmentation.
      on_epoch: optional ``on_epoch(epoch, val_accuracy) -> bool`` called after
        every epoch (1-based) with the validation accuracy; returning False
        stops training (status 'ok', ``stopped_early`` True). Exceptions it
        raises propagate to the caller.
      static_graph: run the network as a compiled Paddle program
        (``paddle.jit.to_static(full_graph=True)``: same numbers, ~1.4x the
        training images/s on CPU, ~1 s to compile per network) instead of
        dygraph (the default). If the compiled network raises a Paddle error
        (``CandidateError``) before the first epoch ends, the candidate is
        trained in dygraph instead (``static_graph_error`` says why).
      amp: train with automatic mixed precision (``paddle.amp.auto_cast`` O1
        and a ``GradScaler``; for GPU devices, the caller decides); the result
        then has ``amp`` True. Evaluation stays float32.
      continuation: a ``trainer.continuation.Continuation`` (epoch-budget
        schedulers): train from its saved state up to its epoch of the
        ``early_stop``-epoch schedule and save the state; the result then
        has ``resumed_at_epoch``. None: all ``early_stop`` epochs.

    Failures: NaN/inf (``Diverged``) and errors of the candidate's own Paddle
    ops (``CandidateError``: building its network, forward, loss, backward,
    optimizer step, evaluation; out of memory among them) give ``status
    'failed'``. Anything else raises: the callback's exceptions, an empty
    training split (ValueError), and bugs of the code around the candidate.

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
    result, _ = fit(arch, config, data, seed=seed, on_epoch=on_epoch, static_graph=static_graph,
                    amp=amp, continuation=continuation)
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
        diff = _check_reload(model, prefix, check_images)
        if os.path.isdir(folder):
            os.rmdir(folder)  # empty (checked before training)
        os.replace(tmp, folder)
        tmp = None
        return diff
    finally:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)


def _check_reload(model: Network, prefix: str, images: np.ndarray) -> float:
    """Max |logit difference| of ``paddle.jit.load(prefix)`` against ``model`` on ``images``.

    Raises:
      RuntimeError: the predicted classes differ or the logits differ by more
        than 1e-3 of their scale.
    """
    expected = predict(model, images)
    loaded = paddle.jit.load(prefix)
    loaded.eval()
    with paddle.no_grad():
        got = loaded(paddle.to_tensor(np.ascontiguousarray(images))).numpy()
    diff = float(np.max(np.abs(got - expected))) if len(expected) else 0.0
    same = np.array_equal(np.argmax(got, 1), np.argmax(expected, 1))
    if not same or diff > 1e-3 * max(1.0, float(np.max(np.abs(expected)))):
        raise RuntimeError("the reloaded model's predictions differ (max |diff| %.3g)" % diff)
    return diff
