"""A cheap, deterministic stand-in for the real trainer, for testing the search loop.

Metrics are simple functions of the architecture, so tests know what to
expect; ``faults`` (index -> 'raise' | 'nan' | 'die' | 'hang' | 'bug' |
'oom' | 'cuda') injects the failures a real trainer can have ('bug': an
exception escaping the evaluator, i.e. a bug of ours; 'oom': the
candidate's ops raise MemoryError; 'cuda': they raise a CUDA-style OSError).
``setup_faults`` (start number -> 'crash' | 'hang') breaks the set-up of a
worker's n-th start (1 = first), counted in ``counter_file``.
"""
import dataclasses
import json
import math
import os
import signal
import time
from typing import Dict, Optional

from autodl_design import records
from autodl_design.arch import Architecture
from autodl_design.config import Config
from autodl_design.devices import device_label
from autodl_design.evaluation import device_failures, evaluate_candidate, median_stopper


def hardware(arch: Architecture):
    convs = sum(op.startswith(("conv", "dilated")) for c in arch.cells for op in c.ops)
    edges = int(sum(c.matrix.sum() for c in arch.cells))
    params = 1000 * convs + 10 * edges
    return {"params": params, "flops": 50 * params, "latency_ms": params / 1000.0,
            "memory_mb": params * 4 / 1e6, "memory_source": "fake"}


def accuracy(arch: Architecture) -> float:
    """Rewards conv_3x3 everywhere: the best cell is all conv_3x3."""
    ops = [op for c in arch.cells for op in c.ops]
    return 0.5 + 0.4 * sum(op == "conv_3x3" for op in ops) / len(ops)


@dataclasses.dataclass
class FakeEvaluator:
    """An ``interfaces.Evaluator`` with the fake metrics above.

    Attributes:
      config_dict: the run's ``Config.to_dict()``.
      faults: evaluation index -> fault (keys may be strings, as from JSON).
      delay: seconds each evaluation sleeps first.
      setup_faults: start number (1-based, over all workers) -> 'crash' | 'hang'.
      counter_file: where starts are counted (needed with ``setup_faults``).
      report_device: add the ``CUDA_VISIBLE_DEVICES`` and device the set-up
        saw, Paddle's allocator retry time and the pid to every result.
    """
    config_dict: Dict
    faults: Dict[int, str] = dataclasses.field(default_factory=dict)
    delay: float = 0.0
    setup_faults: Dict[int, str] = dataclasses.field(default_factory=dict)
    counter_file: str = ""
    report_device: bool = False
    _config: Optional[Config] = dataclasses.field(default=None, init=False, repr=False,
                                                  compare=False)
    _device: str = dataclasses.field(default="", init=False, repr=False, compare=False)
    _visible: Optional[str] = dataclasses.field(default=None, init=False, repr=False,
                                                compare=False)

    def __post_init__(self):
        self.faults = {int(k): v for k, v in self.faults.items()}

    def setup(self, device: str, threads: int) -> None:
        self._config = Config.from_dict(self.config_dict)
        self._device = device
        self._visible = os.environ.get("CUDA_VISIBLE_DEVICES")  # as the set-up saw it
        if self.counter_file:
            with open(self.counter_file, "a") as f:
                f.write("%d\n" % os.getpid())
            with open(self.counter_file) as f:
                start = len(f.read().split())
            fault = self.setup_faults.get(start)
            if fault == "crash":
                os._exit(3)
            if fault == "hang":
                time.sleep(3600)

    def evaluate(self, candidate: Dict, index: int, seed: int, options: Dict) -> Dict:
        time.sleep(self.delay)
        fault = self.faults.get(index)
        if fault == "die":
            os.kill(os.getpid(), signal.SIGKILL)
        if fault == "hang":
            time.sleep(3600)
        if fault == "bug":
            raise KeyError("injected evaluator bug")
        arch = Architecture.from_dict(candidate)
        try:
            metrics = evaluate_candidate(arch, self._config.constraints, hardware,
                                         lambda a: self._train(a, fault, seed, options))
        except (RuntimeError, MemoryError, OSError) as e:  # the candidate's own (fake) ops
            metrics = {"status": "failed", "reason": "%s: %s" % (type(e).__name__, e)}
        if self.report_device:
            metrics.update(visible_devices=self._visible, worker_device=self._device,
                           pid=os.getpid(), allocator_retry_ms=os.environ.get(
                               "FLAGS_gpu_allocator_retry_time"))
        return device_failures(metrics, device_label(self._device), lambda: None)

    def _train(self, a: Architecture, fault: Optional[str], seed: int, options: Dict) -> Dict:
        if fault == "raise":
            raise RuntimeError("injected trainer crash")
        if fault == "oom":
            raise MemoryError("ResourceExhausted: Out of memory error on GPU 0")
        if fault == "cuda":
            raise OSError("(External) CUDA error(700), an illegal memory access was "
                          "encountered")
        if fault == "nan":
            return {"status": "failed", "reason": "loss is nan at epoch 1",
                    "val_accuracy": math.nan}
        # A learning curve that reaches accuracy(a) at the last epoch; with a
        # scheduler's options, up to options["epochs"], continuing the saved
        # history of options["continue_from"] and saving to options["save_state"].
        epochs = self._config.trainer.early_stop
        stop = options.get("epochs", epochs)
        on_epoch = None
        if "cull" in options:
            on_epoch = median_stopper(options["cull"], options["cull_start_epoch"])
        history = []
        if options.get("continue_from"):
            with open(options["continue_from"]) as f:
                history = json.load(f)["history"]
        resumed = len(history)
        for e in range(resumed + 1, stop + 1):
            history.append(accuracy(a) * (0.5 + 0.5 * e / epochs))
            if on_epoch is not None and not on_epoch(e, history[-1]):
                break
        if options.get("save_state"):
            records.atomic_write_json(options["save_state"], {"history": history})
        out = {"status": "ok", "val_accuracy": history[-1],
               "test_accuracy": history[-1] - 0.01, "epochs": len(history),
               "stopped_early": len(history) < stop, "val_history": history,
               "seed": seed, "pid": os.getpid()}
        if "epochs" in options:
            out["resumed_at_epoch"] = resumed
        return out
