"""A cheap, deterministic stand-in for the real trainer, for testing the search loop.

Metrics are simple functions of the architecture, so tests know what to
expect; ``faults`` (index -> 'raise' | 'nan' | 'die' | 'hang') injects the
failures a real trainer can have.
"""
import math
import os
import signal
import time

from autodl_design.arch import Architecture
from autodl_design.config import Config
from autodl_design.evaluation import evaluate_candidate, median_stopper


def setup(device, threads, config_dict, faults=None, delay=0.0, **unused):
    return {"config": Config.from_dict(config_dict), "device": device, "threads": threads,
            "faults": {int(k): v for k, v in (faults or {}).items()}, "delay": delay}


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


def evaluate(arch_dict, index, seed, ctx, options):
    time.sleep(ctx["delay"])
    fault = ctx["faults"].get(index)
    if fault == "die":
        os.kill(os.getpid(), signal.SIGKILL)
    if fault == "hang":
        time.sleep(3600)
    arch = Architecture.from_dict(arch_dict)

    def train(a):
        if fault == "raise":
            raise RuntimeError("injected trainer crash")
        if fault == "nan":
            return {"status": "failed", "reason": "loss is nan at epoch 1",
                    "val_accuracy": math.nan}
        # A learning curve that reaches accuracy(a) at the last epoch.
        epochs = ctx["config"].trainer.early_stop
        on_epoch = None
        if "cull" in options:
            on_epoch = median_stopper(options["cull"], options["cull_start_epoch"])
        history = []
        for e in range(1, epochs + 1):
            history.append(accuracy(a) * (0.5 + 0.5 * e / epochs))
            if on_epoch is not None and not on_epoch(e, history[-1]):
                break
        return {"status": "ok", "val_accuracy": history[-1],
                "test_accuracy": history[-1] - 0.01, "epochs": len(history),
                "stopped_early": len(history) < epochs, "val_history": history,
                "seed": seed, "pid": os.getpid()}

    return evaluate_candidate(arch, ctx["config"].constraints, hardware, train)
