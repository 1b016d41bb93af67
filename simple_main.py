"""AutoDL Design's pseudo-reward check of the controller (no network is trained).

Each step samples ``--batch_size`` architectures, rewards each with the number
of its 2N tokens equal to ``--target_token`` (at most 2N = 20), and makes one
REINFORCE update with ``agent.learn_from_rewards``. The average reward should
climb towards 20::

    .venv/bin/python simple_main.py --num_models 300 --seed 0 --result_json /tmp/simple.json

``--num_models`` is the number of steps (default 300 here; the size presets
of the real search do not apply). Same ``--seed``, same reward curve on CPU.

The controller runs with this check's own defaults (``SIMPLE_DEFAULTS``):
with AutoDL Design's ``tanh_constant`` 2.5 a token's probability is at most
1 / (1 + 9 e^-5) = 0.943 with 10 ops, so the expected reward is capped at
18.86 and cannot reach 20; ``--tanh_constant 5 --learning_rate 3e-3`` were
measured to reach a mean of 19.5 within 182-204 steps on 5 seeds. Flags
given explicitly override them; the first line printed names the settings.
"""
import sys
from typing import Callable, Dict, Optional

from absl import flags as absl_flags

import flags  # noqa: F401  (defines the shared flags)
from autodl_design import cli
from autodl_design.records import atomic_write_json

FLAGS = absl_flags.FLAGS
DEFAULT_STEPS = 300
# This check's controller settings (see the module docstring); explicit flags win.
SIMPLE_DEFAULTS = {"tanh_constant": 5.0, "learning_rate": 3e-3}

if "target_token" not in FLAGS:
    absl_flags.DEFINE_integer("target_token", 1, "Token index (into --ops) the pseudo reward "
                              "counts; AutoDL Design's simple_main uses 1.", lower_bound=0)
    absl_flags.DEFINE_string("result_json", "", "If set, write the summary and the whole "
                             "reward curve to this JSON file.")


def simple_run(agent_config, num_steps: int, seed: int, target_token: int,
               log: Optional[Callable[[str], None]] = print, device: str = "cpu") -> Dict:
    """``agent.agent.run_pseudo_reward`` (kept here under AutoDL Design's name)."""
    from agent.agent import run_pseudo_reward
    return run_pseudo_reward(agent_config, num_steps, seed, target_token, log=log,
                             device=device)


def summary_line(result: Dict) -> str:
    return ("steps=%d, mean reward over the last %d steps=%.3f (target %d), wall time=%.1f s "
            "(%.1f ms/step)" % (result["steps"], min(result["window"], result["steps"]),
                                result["mean_reward_last_50"], result["target"],
                                result["wall_time_s"], result["ms_per_step"]))


def main(argv):
    if len(argv) > 1:
        print("error: unexpected arguments %s: simple_main takes only --flags" % argv[1:],
              file=sys.stderr)
        return 2
    import dataclasses
    config = flags.build_config()
    own = {k: v for k, v in SIMPLE_DEFAULTS.items() if not FLAGS[k].present}
    agent_config = dataclasses.replace(config.agent, **own)
    config = dataclasses.replace(config, agent=agent_config)
    steps = config.search.num_models if FLAGS["num_models"].present else DEFAULT_STEPS
    print("simple_main: tanh_constant=%g, learning_rate=%g, batch_size=%d, seed=%d "
          "(%s)" % (agent_config.tanh_constant, agent_config.learning_rate,
                    agent_config.batch_size, config.search.seed,
                    "simple_main's defaults: %s" % ", ".join(sorted(own)) if own
                    else "as given"), flush=True)
    try:
        result = simple_run(config.agent, steps, config.search.seed, FLAGS.target_token,
                            device=config.devices.agent_device)
    except ValueError as e:
        print("error: %s" % e, file=sys.stderr)
        return 2
    print(summary_line(result))
    if FLAGS.result_json:
        result["agent"] = dataclasses.asdict(config.agent)
        atomic_write_json(FLAGS.result_json, result)
    return 0


if __name__ == "__main__":
    cli.run(main)
