"""Benchmark of the controller on AutoDL Design's pseudo reward: learning speed and ms per step.

For each of ``--bench_seeds`` seeds it runs ``simple_main.simple_run``
(``--bench_steps`` steps of sample + reward + learn, reward = tokens equal to
token 1, at most 2N = 20) and records the steps needed until the mean reward
over the last 50 steps reaches each of ``--thresholds``, the mean over the
last 50 steps, and the wall time per step. A cProfile run of one more seed
shows where a step's time goes. Prints a table, writes JSON::

    flock /tmp/bench.lock .venv/bin/python benchmarks/bench_controller.py
    flock /tmp/bench.lock .venv/bin/python benchmarks/bench_controller.py \
        --advantage cube --bench_out benchmarks/results/controller_cube.json

The shared flags (``--advantage``, ``--learning_rate``, ``--tanh_constant``,
...) set the controller, as for simple_main.py.
"""
import cProfile
import math
import os
import pstats
import sys
import time

from absl import app
from absl import flags as absl_flags

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import flags  # noqa: E402  (defines the shared flags)
import simple_main  # noqa: E402  (defines --target_token, --result_json; unused here)

FLAGS = absl_flags.FLAGS
WINDOW = 50  # steps averaged, as agent.agent.PSEUDO_WINDOW
DEFAULT_OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results",
                           "controller.json")

absl_flags.DEFINE_integer("bench_seeds", 5, "Seeds 0..n-1 to run.", lower_bound=1)
absl_flags.DEFINE_integer("bench_steps", 300, "Controller steps per seed.", lower_bound=1)
absl_flags.DEFINE_list("thresholds", ["19.5", "18", "17", "16"], "Mean rewards over 50 steps "
                       "whose first step is reported (the issue's target is 19.5).")
absl_flags.DEFINE_integer("profile_steps", 100, "Steps of the cProfile run (0 = none).",
                          lower_bound=0)
absl_flags.DEFINE_string("bench_out", DEFAULT_OUT, "Where the JSON results go.")

# Functions reported by the profile: label -> (file suffix, function name).
PROFILE_POINTS = {
    "sample: ControllerModel.sample": ("agent/model.py", "sample"),
    "sample: LSTM step calls (rnn op)": ("paddle/nn/layer/rnn.py", "_cudnn_impl"),
    "sample: Architecture.from_vectors": ("autodl_design/arch.py", "from_vectors"),
    "learn: Reinforce.learn (total)": ("agent/algorithm.py", "learn"),
    "learn: forward (log_prob_entropy)": ("agent/model.py", "log_prob_entropy"),
    "learn: backward": ("paddle/base/dygraph/tensor_patch_methods.py", "backward"),
    "learn: Adam step": ("paddle/optimizer/adam.py", "step"),
}


def steps_to(curve, threshold, window=WINDOW):
    """Steps run until the mean of the last ``window`` batch means first reaches ``threshold``."""
    total = 0.0
    for i, r in enumerate(curve):
        total += r
        if i >= window:
            total -= curve[i - window]
        if i >= window - 1 and total / window >= threshold - 1e-9:
            return i + 1
    return None


def reward_ceiling(num_nodes: int, num_tokens: int, tanh_constant: float) -> float:
    """Largest expected pseudo reward the squashed logits allow.

    A logit lies in (-C, C), so a token's probability is at most
    ``1 / (1 + (K - 1) exp(-2C))`` and the expected count over 2N tokens at
    most 2N times that.
    """
    return 2 * num_nodes / (1.0 + (num_tokens - 1) * math.exp(-2.0 * tanh_constant))


def profile_run(agent_config, steps: int):
    prof = cProfile.Profile()
    prof.enable()
    simple_main.simple_run(agent_config, steps, 1000, 1, log=None)
    prof.disable()
    stats = pstats.Stats(prof).stats
    total = sum(v[2] for v in stats.values())  # tottime sum = profiled time
    out = {}
    for label, (suffix, func) in PROFILE_POINTS.items():
        cum = sum(v[3] for (fn, _, name), v in stats.items()
                  if fn.endswith(suffix) and name == func)
        out[label] = round(1e3 * cum / steps, 3)
    out["total (under cProfile)"] = round(1e3 * total / steps, 3)
    return out


def fmt(v):
    return "-" if v is None else str(v)


def main(argv):
    if len(argv) > 1:
        print("error: unexpected arguments %s" % argv[1:], file=sys.stderr)
        return 2
    try:
        thresholds = [float(t) for t in FLAGS.thresholds]
    except ValueError:
        print("error: --thresholds must be numbers, got %s" % FLAGS.thresholds, file=sys.stderr)
        return 2
    config = flags.build_config()
    agent_config = config.agent
    from autodl_design.backend import paddle  # after build_config, which imported it anyway
    ceiling = reward_ceiling(agent_config.num_nodes, agent_config.num_tokens,
                             agent_config.tanh_constant)
    rows = []
    for seed in range(FLAGS.bench_seeds):
        r = simple_main.simple_run(agent_config, FLAGS.bench_steps, seed, 1, log=None)
        rows.append({"seed": seed,
                     "steps_to": {str(t): steps_to(r["curve"], t) for t in thresholds},
                     "mean_reward_last_50": round(r["mean_reward_last_50"], 3),
                     "ms_per_step": round(r["ms_per_step"], 2),
                     "sample_ms": round(r["sample_ms"], 2), "learn_ms": round(r["learn_ms"], 2),
                     "curve": r["curve"]})
    profile = profile_run(agent_config, FLAGS.profile_steps) if FLAGS.profile_steps else {}

    head = ["seed"] + ["to %g" % t for t in thresholds] + ["last-50 mean", "ms/step",
                                                          "sample ms", "learn ms"]
    print("controller pseudo-reward benchmark: %d steps, advantage=%s, lr=%g, batch=%d, "
          "hidden=%d x %d layers, T=%g, C=%g" % (
              FLAGS.bench_steps, agent_config.advantage, agent_config.learning_rate,
              agent_config.batch_size, agent_config.hidden_size, agent_config.num_layers,
              agent_config.temperature, agent_config.tanh_constant))
    print("reward ceiling with C=%g and %d ops: %.3f of %d" % (
        agent_config.tanh_constant, agent_config.num_tokens, ceiling, 2 * agent_config.num_nodes))
    print(" | ".join(head))
    for row in rows:
        print(" | ".join([str(row["seed"])] + [fmt(row["steps_to"][str(t)]) for t in thresholds]
                         + ["%.3f" % row["mean_reward_last_50"], "%.2f" % row["ms_per_step"],
                            "%.2f" % row["sample_ms"], "%.2f" % row["learn_ms"]]))
    ms = sorted(row["ms_per_step"] for row in rows)
    median_ms = ms[len(ms) // 2]
    reached = {str(t): all(row["steps_to"][str(t)] is not None for row in rows)
               for t in thresholds}
    print("median ms/step %.2f; every seed reached: %s" % (
        median_ms, ", ".join("%g: %s" % (t, reached[str(t)]) for t in thresholds)))
    if profile:
        print("profile (ms per step, cumulative, %d steps under cProfile):" % FLAGS.profile_steps)
        for k, v in profile.items():
            print("  %-40s %8.3f" % (k, v))
    result = {
        "benchmark": "controller", "format": 1,
        "when": time.strftime("%Y-%m-%d %H:%M:%S"),
        "host": {"cpus": os.cpu_count(), "load_avg_1min": os.getloadavg()[0],
                 "paddle": paddle.__version__,
                 "omp_num_threads": os.environ.get("OMP_NUM_THREADS", "")},
        "agent": {k: (list(v) if isinstance(v, tuple) else v)
                  for k, v in vars(agent_config).items()},
        "steps": FLAGS.bench_steps, "window": WINDOW,
        "reward_max": 2 * agent_config.num_nodes, "reward_ceiling": round(ceiling, 4),
        "thresholds": thresholds, "every_seed_reached": reached,
        "median_ms_per_step": median_ms, "profile_ms_per_step": profile, "seeds": rows,
    }
    simple_main.atomic_write_json(FLAGS.bench_out, result)
    print("wrote %s" % FLAGS.bench_out)
    return 0


if __name__ == "__main__":
    app.run(main)
