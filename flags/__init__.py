"""All absl flags of autodl-design, defined once, and ``build_config()``.

Entry points import this package (which defines the flags), let absl parse
them, and call ``build_config()``; the library only ever sees the returned
``autodl_design.config.Config``.
"""
import os
from typing import Optional

from absl import flags as absl_flags
from absl import logging as _absl_logging  # noqa: F401  (defines --log_dir, reused below)

from autodl_design import config as cfg
from autodl_design.ops import OP_NAMES, parse_ops

FLAGS = absl_flags.FLAGS
_SIZE_HELP = " (default: %s on the cpu preset, %s on the gpu preset)"


def _size_help(text: str, key: str) -> str:
    return text + _SIZE_HELP % (cfg.SIZE_PRESETS["cpu"][key], cfg.SIZE_PRESETS["gpu"][key])


def _define():
    d = absl_flags
    # ---------------- data ----------------
    d.DEFINE_string("data_path", "", "Dataset folder made by dataset_maker.py; empty = the "
                    "embedded default (real Fashion-MNIST, prepared on first use).")
    d.DEFINE_integer("images_per_class", None, _size_help(
        "Images of each class over all 10 chunks of the embedded default dataset (AutoDL "
        "Design's chunk_size; 9 chunks train, 1 validates).", "images_per_class"),
        lower_bound=1)
    # ---------------- agent ----------------
    d.DEFINE_integer("num_nodes", 10, "Nodes per cell (AutoDL Design: 10).", lower_bound=2)
    d.DEFINE_list("ops", list(OP_NAMES), "Op subset the controller chooses from; the number of "
                  "tokens is its length (AutoDL Design's num_tokens = 10). Valid: "
                  + ", ".join(OP_NAMES))
    d.DEFINE_integer("hidden_size", 64, "LSTM hidden size of the controller.", lower_bound=1)
    d.DEFINE_integer("num_layers", 2, "LSTM layers of the controller.", lower_bound=1)
    d.DEFINE_float("learning_rate", 1e-3, "Adam learning rate of the controller.", lower_bound=0)
    d.DEFINE_float("bl_decay", 0.9, "Decay of the moving-average reward baseline.",
                   lower_bound=0, upper_bound=1)
    d.DEFINE_integer("batch_size", 10, "Architectures sampled per controller step.",
                     lower_bound=1)
    d.DEFINE_float("temperature", 5.0, "T in the controller logits tanh(l / T) * C.",
                   lower_bound=1e-6)
    d.DEFINE_float("tanh_constant", 2.5, "C in the controller logits tanh(l / T) * C.",
                   lower_bound=1e-6)
    d.DEFINE_float("entropy_weight", 0.0, "Weight of the entropy bonus in the REINFORCE loss.",
                   lower_bound=0)
    d.DEFINE_enum("advantage", "identity", ["identity", "cube"], "Advantage from reward r and "
                  "baseline b: r - b, or AutoDL Design's (r - b)^3.")
    # ---------------- trainer ----------------
    d.DEFINE_enum("preset", "auto", ["auto", "cpu", "gpu"], "Size preset for the network and "
                  "search budget: auto = gpu when Paddle sees a GPU, else cpu. Every size flag "
                  "given explicitly overrides the preset.")
    d.DEFINE_integer("width", None, _size_help("Channels after the stem.", "width"),
                     lower_bound=1)
    d.DEFINE_integer("num_stages", None, _size_help("Stages of cells; each after the first "
                     "starts with a reduction cell.", "num_stages"), lower_bound=1)
    d.DEFINE_integer("num_cells", None, _size_help("Normal cells per stage.", "num_cells"),
                     lower_bound=1)
    d.DEFINE_integer("ratio", 4, "A source node compresses the cell input to C/ratio channels.",
                     lower_bound=1)
    d.DEFINE_float("dropout", 0.0, "Dropout before the classifier.", lower_bound=0,
                   upper_bound=0.99)
    d.DEFINE_integer("early_stop", None, _size_help("Training epochs per candidate (AutoDL "
                     "Design's early_stop).", "early_stop"), lower_bound=1)
    d.DEFINE_integer("train_batch_size", 128, "Images per training step.", lower_bound=1)
    d.DEFINE_float("lr_max", 0.1, "Start of the cosine learning-rate schedule.", lower_bound=0)
    d.DEFINE_float("lr_min", 1e-4, "End of the cosine learning-rate schedule.", lower_bound=0)
    d.DEFINE_float("momentum", 0.9, "Nesterov momentum.", lower_bound=0, upper_bound=1)
    d.DEFINE_float("weight_decay", 1e-4, "L2 weight decay.", lower_bound=0)
    d.DEFINE_integer("latency_batch", 1, "Batch size of the latency measurement.", lower_bound=1)
    d.DEFINE_integer("latency_repeats", None, _size_help("Timed runs of the latency "
                     "measurement (after warm-up).", "latency_repeats"), lower_bound=1)
    # ---------------- search ----------------
    d.DEFINE_integer("num_models", None, _size_help("Evaluations in the search.", "num_models"),
                     lower_bound=1)
    d.DEFINE_float("max_time", 0, "Stop the search after this many seconds (0 = no limit).",
                   lower_bound=0)
    # absl.logging already defines --log_dir (used only if absl writes log files,
    # which this project never asks it to); give it AutoDL Design's default and
    # this project's meaning instead of defining a second flag.
    if "log_dir" not in FLAGS:
        d.DEFINE_string("log_dir", "./log", "")
    FLAGS.set_default("log_dir", "./log")
    FLAGS["log_dir"].help = "Folder for records, checkpoints and the report (--resume reads it)."
    d.DEFINE_boolean("resume", False, "Continue the search recorded in --log_dir.")
    d.DEFINE_integer("seed", 0, "Random seed (same seed, same result on CPU).", lower_bound=0)
    d.DEFINE_integer("lookahead", 1, "Batches proposed ahead of learning, so that trainers never "
                     "wait for the slowest candidate of a batch (0 = AutoDL Design's strict "
                     "sample/train/learn alternation). Batch s + 1 + lookahead is sampled after "
                     "learning from batch s, whatever the timing: runs stay reproducible.",
                     lower_bound=0)
    d.DEFINE_enum("searcher", "rl", ["rl", "random", "evolution"], "Who proposes "
                  "architectures: the RL controller, uniform random sampling, or regularized "
                  "evolution (baselines sharing the same trainers, critic, records and resume).")
    d.DEFINE_integer("population", 20, "Regularized evolution: population size (the first "
                     "--population candidates are random).", lower_bound=1)
    d.DEFINE_integer("sample_size", 5, "Regularized evolution: tournament size.", lower_bound=1)
    d.DEFINE_enum("early_termination", "none", ["none", "median"], "median: stop a candidate "
                  "whose validation accuracy is below the median of earlier candidates at the "
                  "same epoch; its reward is its accuracy at that point.")
    d.DEFINE_string("tensorboard_dir", "", "If set, write TensorBoard scalars (reward, "
                    "validation accuracy, best reward per evaluation) to this folder.")
    d.DEFINE_integer("cull_start_epoch", 2, "First epoch at which --early_termination=median "
                     "may stop a candidate.", lower_bound=1)
    # ---------------- constraints ----------------
    d.DEFINE_float("max_params", 0, "Bound on parameters (0 = none).", lower_bound=0)
    d.DEFINE_float("max_flops", 0, "Bound on multiply-adds per image (0 = none).", lower_bound=0)
    d.DEFINE_float("max_latency_ms", 0, "Bound on inference latency in ms (0 = none).",
                   lower_bound=0)
    d.DEFINE_float("max_memory_mb", 0, "Bound on peak inference memory in MB (0 = none).",
                   lower_bound=0)
    d.DEFINE_string("latency_table", "", "Latency table of the target device made there by "
                    "'python -m trainer.profile --output TABLE.json': latency and memory are "
                    "then predicted from it instead of measured on the trainer's device "
                    "(empty = measure). See docs/latency_table.md.")
    d.DEFINE_enum("constraint_mode", "hard", ["hard", "soft"], "hard: a candidate over a bound "
                  "gets --infeasible_reward and is never trained; soft: MnasNet's "
                  "accuracy * prod (m/T)^w.")
    d.DEFINE_float("soft_alpha", 0.0, "Soft mode exponent when a metric is within its bound.")
    d.DEFINE_float("soft_beta", -0.07, "Soft mode exponent when a metric is over its bound.")
    d.DEFINE_float("infeasible_reward", 0.0, "Hard mode reward of a candidate over a bound.")
    # ---------------- devices ----------------
    d.DEFINE_string("agent_device", None, "Device of the controller: cpu or gpu:N "
                    "(default: gpu:0 when Paddle sees a GPU, else cpu).")
    d.DEFINE_string("trainer_devices", None, "Comma list of trainer devices, one worker "
                    "process each, e.g. cpu,cpu or gpu:0,gpu:1 (default: gpu:1 with two GPUs, "
                    "else gpu:0, else one 'cpu' worker per core).")
    d.DEFINE_integer("threads_per_worker", 0, "CPU threads per trainer worker (0 = cores / "
                     "CPU workers).", lower_bound=0)

    d.DEFINE_enum("cluster", "local", ["local", "ray"], "local: one trainer process per "
                  "--trainer_devices entry on this machine; ray: trainer actors on a Ray cluster "
                  "(install with WITH_RAY=1 bash setup.sh).")
    d.DEFINE_string("ray_address", "auto", "Ray cluster to use with --cluster ray: 'auto' (the "
                    "cluster this machine joined with 'ray start'), HOST:PORT, or 'local' (a "
                    "private Ray instance on 127.0.0.1).")
    d.DEFINE_integer("num_trainers", 0, "Ray trainer actors (0 = as many as the cluster "
                     "holds: one per GPU, else one per --cpus_per_trainer CPUs).", lower_bound=0)
    d.DEFINE_integer("cpus_per_trainer", 1, "CPUs (and threads) per Ray CPU trainer actor.",
                     lower_bound=1)
    d.DEFINE_integer("max_retries", 2, "With --cluster ray: times a candidate whose actor "
                     "or node was lost is retried on another actor before it is recorded as "
                     "failed (a local worker that dies fails its candidate at once).", lower_bound=0)
    d.DEFINE_float("trial_timeout", 0, "Seconds a candidate may run before its worker is "
                   "killed and replaced (0 = no limit).", lower_bound=0)

    d.register_validator("agent_device", _valid_device_or_none,
                         "must be 'cpu' or 'gpu:N'")
    d.register_validator("trainer_devices", _valid_device_list_or_none,
                         "must be a comma list of 'cpu' or 'gpu:N'")
    d.register_validator("ops", _valid_ops, "must be op names from the registry: "
                         + ", ".join(OP_NAMES))
    d.register_validator("data_path", lambda p: not p or os.path.isdir(p),
                         "must be an existing dataset folder (make one with dataset_maker.py)")
    d.register_validator("latency_table", lambda p: not p or os.path.isfile(p),
                         "must be an existing latency table file (make one on the target "
                         "device with python -m trainer.profile --output TABLE.json)")
    d.register_multi_flags_validator(
        ["population", "sample_size"], lambda f: f["sample_size"] <= f["population"],
        "--sample_size must not exceed --population")
    d.register_multi_flags_validator(
        ["lr_max", "lr_min"], lambda f: f["lr_min"] <= f["lr_max"],
        "--lr_min must not exceed --lr_max")


def _valid_device_or_none(value) -> bool:
    if value is None:
        return True
    try:
        cfg.parse_device(value)
        return True
    except ValueError:
        return False


def _valid_device_list_or_none(value) -> bool:
    if value is None:
        return True
    try:
        cfg.parse_device_list(value)
        return True
    except ValueError:
        return False


def _valid_ops(value) -> bool:
    try:
        parse_ops(value)
        return True
    except ValueError:
        return False


if "num_nodes" not in FLAGS:
    _define()


def build_config(flag_values=None, num_gpus: Optional[int] = None,
                 cores: Optional[int] = None) -> cfg.Config:
    """Turns parsed flags into a ``Config``.

    Args:
      flag_values: parsed absl FlagValues (default: the global FLAGS).
      num_gpus: GPUs Paddle sees; None asks Paddle (``autodl_design.devices``).
      cores: CPU cores for the default CPU workers; None = os.cpu_count().

    Returns:
      The resolved configuration: preset sizes filled in where a size flag
      was not given, default devices chosen from ``num_gpus``.
    """
    f = FLAGS if flag_values is None else flag_values
    if num_gpus is None:
        from autodl_design.devices import count_gpus  # imports Paddle; only when asked
        num_gpus = count_gpus()
    preset = f.preset if f.preset != "auto" else ("gpu" if num_gpus > 0 else "cpu")
    sizes = {k: (getattr(f, k) if getattr(f, k) is not None else cfg.SIZE_PRESETS[preset][k])
             for k in cfg.SIZE_KEYS}
    if cores is None:
        cores = os.cpu_count() or 1
    agent_default, trainer_default = cfg.default_devices(num_gpus, cores)
    agent_device = cfg.parse_device(f.agent_device) if f.agent_device else agent_default
    trainer_devices = (tuple(cfg.parse_device_list(f.trainer_devices)) if f.trainer_devices
                       else trainer_default)
    return cfg.Config(
        data=cfg.DataConfig(data_path=f.data_path,
                            images_per_class=int(sizes["images_per_class"])),
        agent=cfg.AgentConfig(
            num_nodes=f.num_nodes, ops=tuple(parse_ops(f.ops)), hidden_size=f.hidden_size,
            num_layers=f.num_layers, learning_rate=f.learning_rate, bl_decay=f.bl_decay,
            batch_size=f.batch_size, temperature=f.temperature, tanh_constant=f.tanh_constant,
            entropy_weight=f.entropy_weight, advantage=f.advantage, device=agent_device),
        trainer=cfg.TrainerConfig(
            width=int(sizes["width"]), num_stages=int(sizes["num_stages"]),
            num_cells=int(sizes["num_cells"]), ratio=f.ratio, dropout=f.dropout,
            early_stop=int(sizes["early_stop"]), train_batch_size=f.train_batch_size,
            lr_max=f.lr_max, lr_min=f.lr_min, momentum=f.momentum, weight_decay=f.weight_decay,
            latency_batch=f.latency_batch, latency_repeats=int(sizes["latency_repeats"]),
            seed=f.seed,
            latency_table=os.path.abspath(f.latency_table) if f.latency_table else ""),
        constraints=cfg.ConstraintConfig(
            max_params=f.max_params, max_flops=f.max_flops, max_latency_ms=f.max_latency_ms,
            max_memory_mb=f.max_memory_mb, mode=f.constraint_mode, soft_alpha=f.soft_alpha,
            soft_beta=f.soft_beta, infeasible_reward=f.infeasible_reward),
        devices=cfg.DeviceConfig(agent_device=agent_device, trainer_devices=trainer_devices,
                                 threads_per_worker=f.threads_per_worker, cluster=f.cluster,
                                 ray_address=f.ray_address, num_trainers=f.num_trainers,
                                 cpus_per_trainer=f.cpus_per_trainer, max_retries=f.max_retries,
                                 trial_timeout=f.trial_timeout),
        search=cfg.SearchConfig(num_models=int(sizes["num_models"]), max_time=f.max_time,
                                log_dir=f.log_dir, resume=f.resume, seed=f.seed, preset=preset,
                                searcher=f.searcher, lookahead=f.lookahead,
                                population=f.population, sample_size=f.sample_size,
                                early_termination=f.early_termination,
                                tensorboard_dir=f.tensorboard_dir,
                                cull_start_epoch=f.cull_start_epoch),
    )
