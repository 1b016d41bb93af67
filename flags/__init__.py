"""All absl flags of autodl-design, defined once, and ``build_config()``.

Entry points import this package (which defines the flags), let absl parse
them (``autodl_design.cli.run(main)``: exit code 2 and one ``error:`` line on
a bad flag), and call ``build_config()``; the library only ever sees the
returned ``autodl_design.config.Config``. Defaults are the dataclass defaults
of ``autodl_design.config`` (``CONFIG_FLAGS``) and its ``SIZE_PRESETS``.
"""
import os
from typing import Any, Dict, Optional, Tuple

from absl import flags as absl_flags
from absl import logging as _absl_logging  # noqa: F401  (defines --log_dir, reused below)

from autodl_design import config as cfg
from autodl_design import critic, devices, nb201, recipe
from autodl_design.ops import OP_NAMES, parse_ops

FLAGS = absl_flags.FLAGS
_SIZE_HELP = " (default: %s on the cpu preset, %s on the gpu preset)"

# Flags that set one config setting as given: flag -> (Config section, setting).
# Their defaults are the dataclass defaults in autodl_design/config.py. The
# other settings come from the size presets (SIZE_KEYS), --ops (parsed),
# --preset (resolved) and the device defaults (devices.default_devices).
CONFIG_FLAGS: Dict[str, Tuple[str, str]] = {
    "data_path": ("data", "data_path"),
    **{k: ("agent", k) for k in (
        "num_nodes", "hidden_size", "num_layers", "learning_rate", "bl_decay", "batch_size",
        "temperature", "tanh_constant", "entropy_weight", "advantage")},
    **{k: ("trainer", k) for k in (
        "ratio", "dropout", "train_batch_size", "lr_max", "lr_min", "momentum",
        "weight_decay", "latency_batch", "latency_table", "optimizer", "grad_clip")},
    **{k: ("search", k) for k in (
        "max_time", "log_dir", "resume", "seed", "lookahead", "searcher", "population",
        "sample_size", "early_termination", "tensorboard_dir", "cull_start_epoch",
        "method", "retrain_top", "oneshot_epochs", "controller_steps", "arch_learning_rate",
        "warmup_epochs")},
    **{k: ("constraints", k) for k in (
        "max_params", "max_flops", "max_latency_ms", "max_memory_mb", "soft_alpha",
        "soft_beta", "infeasible_reward")},
    "constraint_mode": ("constraints", "mode"),
    **{k: ("constraints", k) for k in ("min_accuracy", "objective", "pareto_cost")},
    **{k: ("devices", k) for k in (
        "threads_per_worker", "cluster", "ray_address", "num_trainers", "cpus_per_trainer",
        "max_retries", "trial_timeout", "gpus_per_trainer", "deterministic")},
    "amp": ("trainer", "amp"),
    **{k: ("search", k) for k in ("benchmark", "benchmark_table", "latency_device")},
    "evaluator": ("search", "evaluator"),
    **{k: ("search", k) for k in ("scheduler", "min_epochs", "eta")},
}

# Flags of the cell space and its trainer, refused with --benchmark (a table
# look-up has no data, network, training, FLOPs, memory or worker processes).
CELL_SPACE_FLAGS: Tuple[str, ...] = (
    "data_path", "images_per_class", "num_nodes", "ops", "width", "num_stages", "num_cells",
    "ratio", "dropout", "early_stop", "train_batch_size", "lr_max", "lr_min", "momentum",
    "weight_decay", "optimizer", "grad_clip", "latency_batch", "latency_repeats", "latency_table",
    "max_flops",
    "max_memory_mb", "early_termination", "cull_start_epoch", "trainer_devices",
    "threads_per_worker", "cluster", "ray_address", "num_trainers", "cpus_per_trainer",
    "max_retries", "trial_timeout", "gpus_per_trainer", "deterministic", "amp", "export_best",
    "final_epochs", "method", "retrain_top", "oneshot_epochs", "controller_steps",
    "arch_learning_rate", "search_space", "evaluator", "warmup_epochs")
# The cell space's controller settings, refused with --benchmark --searcher rl
# (the controller there uses NAS-Bench-201's own settings, see searchers.py).
CONTROLLER_FLAGS: Tuple[str, ...] = (
    "hidden_size", "num_layers", "learning_rate", "bl_decay", "batch_size", "temperature",
    "tanh_constant", "entropy_weight", "advantage")


def _default(flag: str) -> Any:
    """The dataclass default of the setting ``flag`` sets (see CONFIG_FLAGS)."""
    return cfg.default(*CONFIG_FLAGS[flag])


def _size_help(text: str, key: str) -> str:
    return text + _SIZE_HELP % (cfg.SIZE_PRESETS["cpu"][key], cfg.SIZE_PRESETS["gpu"][key])


def _config_flag(define, name: str, *args, **kwargs):
    """``define(name, default, *args, **kwargs)`` with the dataclass default (CONFIG_FLAGS)."""
    define(name, _default(name), *args, **kwargs)


def _define():
    """Defines every flag of the project, section by section."""
    d = absl_flags
    cf = _config_flag
    _define_data(d, cf)
    _define_agent(d, cf)
    _define_trainer(d, cf)
    _define_search(d, cf)
    _define_constraints(d, cf)
    _define_objective(d, cf)
    _define_devices(d, cf)
    _define_benchmark(d, cf)
    _define_export(d, cf)
    _register_validators(d)
    _define_gpu(d, cf)
    _define_oneshot(d, cf)
    _define_search_space()
    _define_scheduler(d, cf)


def _define_data(d, cf) -> None:
    """Flags of the dataset."""
    cf(d.DEFINE_string, "data_path", "Dataset folder made by dataset_maker.py; empty = the "
       "embedded default (real Fashion-MNIST, prepared on first use).")
    d.DEFINE_integer("images_per_class", None, _size_help(
        "Images of each class over all 10 chunks of the embedded default dataset (AutoDL "
        "Design's chunk_size; 9 chunks train, 1 validates).", "images_per_class"),
        lower_bound=1)


def _define_agent(d, cf) -> None:
    """Flags of the controller (agent/)."""
    cf(d.DEFINE_integer, "num_nodes", "Nodes per cell (AutoDL Design: 10).", lower_bound=2)
    d.DEFINE_list("ops", parse_ops(cfg.default("agent", "ops")), "Op subset the controller "
                  "chooses from; the number of tokens is its length (AutoDL Design's "
                  "num_tokens = 10). Valid: " + ", ".join(OP_NAMES))
    cf(d.DEFINE_integer, "hidden_size", "LSTM hidden size of the controller.", lower_bound=1)
    cf(d.DEFINE_integer, "num_layers", "LSTM layers of the controller.", lower_bound=1)
    cf(d.DEFINE_float, "learning_rate", "Adam learning rate of the controller.", lower_bound=0)
    cf(d.DEFINE_float, "bl_decay", "Decay of the moving-average reward baseline.",
       lower_bound=0, upper_bound=1)
    cf(d.DEFINE_integer, "batch_size", "Architectures sampled per controller step.",
       lower_bound=1)
    cf(d.DEFINE_float, "temperature", "T in the controller logits tanh(l / T) * C.",
       lower_bound=1e-6)
    cf(d.DEFINE_float, "tanh_constant", "C in the controller logits tanh(l / T) * C.",
       lower_bound=1e-6)
    cf(d.DEFINE_float, "entropy_weight", "Weight of the entropy bonus in the REINFORCE loss.",
       lower_bound=0)
    cf(d.DEFINE_enum, "advantage", ["identity", "cube"], "Advantage from reward r and "
       "baseline b: r - b, or AutoDL Design's (r - b)^3.")


def _define_trainer(d, cf) -> None:
    """Flags of the trainer and its network sizes."""
    d.DEFINE_enum("preset", "auto", ["auto", "cpu", "gpu"], "Size preset for the network and "
                  "search budget: auto = gpu when Paddle sees a GPU, else cpu. Every size flag "
                  "given explicitly overrides the preset.")
    d.DEFINE_integer("width", None, _size_help("Channels after the stem.", "width"),
                     lower_bound=1)
    d.DEFINE_integer("num_stages", None, _size_help("Stages of cells; each after the first "
                     "starts with a reduction cell.", "num_stages"), lower_bound=1)
    d.DEFINE_integer("num_cells", None, _size_help("Normal cells per stage.", "num_cells"),
                     lower_bound=1)
    cf(d.DEFINE_integer, "ratio", "A source node compresses the cell input to C/ratio channels.",
       lower_bound=1)
    cf(d.DEFINE_float, "dropout", "Dropout before the classifier.", lower_bound=0,
       upper_bound=0.99)
    d.DEFINE_integer("early_stop", None, _size_help("Training epochs per candidate (AutoDL "
                     "Design's early_stop).", "early_stop"), lower_bound=1)
    cf(d.DEFINE_integer, "train_batch_size", "Images per training step.", lower_bound=1)
    cf(d.DEFINE_float, "lr_max", "Start of the cosine learning-rate schedule.", lower_bound=0)
    cf(d.DEFINE_float, "lr_min", "End of the cosine learning-rate schedule.", lower_bound=0)
    cf(d.DEFINE_float, "momentum", "Nesterov momentum.", lower_bound=0, upper_bound=1)
    cf(d.DEFINE_float, "weight_decay", "L2 weight decay.", lower_bound=0)
    cf(d.DEFINE_enum, "optimizer", list(recipe.OPTIMIZERS), "Training optimizer: sgd (Nesterov "
       "momentum), adam or rmsprop (a --search_space file may search it).")
    cf(d.DEFINE_float, "grad_clip", "Clip the gradients' global norm to this (0 = off).",
       lower_bound=0)
    cf(d.DEFINE_integer, "latency_batch", "Batch size of the latency measurement.", lower_bound=1)
    d.DEFINE_integer("latency_repeats", None, _size_help("Timed runs of the latency "
                     "measurement (after warm-up).", "latency_repeats"), lower_bound=1)


def _define_search(d, cf) -> None:
    """Flags of the search loop and its searchers."""
    d.DEFINE_integer("num_models", None, _size_help("Evaluations in the search.", "num_models"),
                     lower_bound=1)
    cf(d.DEFINE_float, "max_time", "Stop the search after this many seconds (0 = no limit; "
       "simulated seconds with --benchmark, where it is the budget and --num_models, unless "
       "given, becomes %d)." % cfg.BENCHMARK_NUM_MODELS,
       lower_bound=0)
    # absl.logging already defines --log_dir (used only if absl writes log files,
    # which this project never asks it to); give it AutoDL Design's default and
    # this project's meaning instead of defining a second flag.
    if "log_dir" not in FLAGS:
        d.DEFINE_string("log_dir", _default("log_dir"), "")
    FLAGS.set_default("log_dir", _default("log_dir"))
    FLAGS["log_dir"].help = "Folder for records, checkpoints and the report (--resume reads it)."
    cf(d.DEFINE_boolean, "resume", "Continue the search recorded in --log_dir.")
    cf(d.DEFINE_integer, "seed", "Random seed (same seed, same result on CPU).", lower_bound=0)
    cf(d.DEFINE_integer, "lookahead", "Batches proposed ahead of learning, so that trainers never "
       "wait for the slowest candidate of a batch (0 = AutoDL Design's strict "
       "sample/train/learn alternation). Batch s + 1 + lookahead is sampled after "
       "learning from batch s, whatever the timing: runs stay reproducible.",
       lower_bound=0)
    cf(d.DEFINE_enum, "searcher", ["rl", "random", "evolution", "tpe", "nsga2"], "Who proposes "
       "architectures: the RL controller, uniform random sampling, or regularized "
       "evolution (baselines sharing the same trainers, critic, records and resume); "
       "tpe and nsga2: Optuna's TPE (multivariate; bounds as constraints in hard mode) and "
       "NSGA-II (with --objective pareto: accuracy against --pareto_cost).")
    cf(d.DEFINE_integer, "population", "Regularized evolution: population size (the first "
       "--population candidates are random).", lower_bound=1)
    cf(d.DEFINE_integer, "sample_size", "Regularized evolution: tournament size.", lower_bound=1)
    cf(d.DEFINE_enum, "early_termination", ["none", "median"], "median: stop a candidate "
       "whose validation accuracy is below the median of earlier candidates at the "
       "same epoch; its reward is its accuracy at that point.")
    cf(d.DEFINE_string, "tensorboard_dir", "If set, write TensorBoard scalars (reward, "
       "validation accuracy, best reward per evaluation) to this folder.")
    cf(d.DEFINE_integer, "cull_start_epoch", "First epoch at which --early_termination=median "
       "may stop a candidate.", lower_bound=1)


def _define_constraints(d, cf) -> None:
    """Flags of the bounds and the critic's modes."""
    cf(d.DEFINE_float, "max_params", "Bound on parameters (0 = none).", lower_bound=0)
    cf(d.DEFINE_float, "max_flops", "Bound on multiply-adds per image (0 = none).", lower_bound=0)
    cf(d.DEFINE_float, "max_latency_ms", "Bound on inference latency in ms (0 = none).",
       lower_bound=0)
    cf(d.DEFINE_float, "max_memory_mb", "Bound on peak inference memory in MB (0 = none).",
       lower_bound=0)
    cf(d.DEFINE_string, "latency_table", "Latency table of the target device made there by "
       "'python -m trainer.profile --output TABLE.json': latency and memory are "
       "then predicted from it instead of measured on the trainer's device "
       "(empty = measure). See docs/latency_table.md.")
    cf(d.DEFINE_enum, "constraint_mode", ["hard", "soft"], "hard: a candidate over a bound "
       "gets --infeasible_reward and is never trained; soft: MnasNet's "
       "accuracy * prod (m/T)^w.")
    cf(d.DEFINE_float, "soft_alpha", "Soft mode exponent when a metric is within its bound.")
    cf(d.DEFINE_float, "soft_beta", "Soft mode exponent when a metric is over its bound.")
    cf(d.DEFINE_float, "infeasible_reward", "Reward of an infeasible candidate: over a bound "
       "(hard mode) or, once trained, under --min_accuracy (both modes).")


def _define_objective(d, cf) -> None:
    """Flags of the accuracy floor and the objective (autodl_design/critic.py)."""
    cf(d.DEFINE_float, "min_accuracy", "Floor on validation accuracy in [0, 1] (0 = none): a "
       "trained candidate under it is infeasible, in both constraint modes.",
       lower_bound=0, upper_bound=1)
    cf(d.DEFINE_enum, "objective", list(critic.OBJECTIVES), "What 'best' means: accuracy = "
       "maximise validation accuracy; latency, params or flops = minimise that cost among "
       "candidates within every bound and --min_accuracy; pareto = the front of validation "
       "accuracy against --pareto_cost.")
    cf(d.DEFINE_enum, "pareto_cost", [""] + list(critic.COST_METRICS), "With --objective "
       "pareto: the cost traded against accuracy.")


def _define_devices(d, cf) -> None:
    """Flags of the devices, local workers and Ray."""
    d.DEFINE_string("agent_device", None, "Device of the controller: cpu or gpu:N "
                    "(default: gpu:0 when Paddle sees a GPU, else cpu).")
    d.DEFINE_string("trainer_devices", None, "Comma list of trainer devices, one worker "
                    "process each, e.g. cpu,cpu or gpu:0,gpu:1; gpu:N is entry N of "
                    "CUDA_VISIBLE_DEVICES when it is set (default: with N >= 2 GPUs one worker on "
                    "each of gpu:1 .. gpu:N-1, the agent keeping gpu:0; with one GPU gpu:0, "
                    "shared with the agent; else one 'cpu' worker per core).")
    cf(d.DEFINE_integer, "threads_per_worker", "CPU threads per trainer worker (0 = by device "
       "kind: 1 per GPU worker, the remaining cores shared by the CPU workers).",
       lower_bound=0)

    cf(d.DEFINE_enum, "cluster", ["local", "ray"], "local: one trainer process per "
       "--trainer_devices entry on this machine; ray: trainer actors on a Ray cluster "
       "(install with WITH_RAY=1 bash setup.sh).")
    cf(d.DEFINE_string, "ray_address", "Ray cluster to use with --cluster ray: 'auto' (the "
       "cluster this machine joined with 'ray start'), HOST:PORT, or 'local' (a "
       "private Ray instance on 127.0.0.1).")
    cf(d.DEFINE_integer, "num_trainers", "Ray trainer actors (0 = as many as the cluster "
       "holds: one per --gpus_per_trainer GPUs on nodes with GPUs, one per "
       "--cpus_per_trainer CPUs on the others).", lower_bound=0)
    cf(d.DEFINE_integer, "cpus_per_trainer", "CPUs (and threads) per Ray trainer actor.",
       lower_bound=1)
    cf(d.DEFINE_integer, "max_retries", "With --cluster ray: times a candidate whose actor "
       "or node was lost is retried on another actor before it is recorded as "
       "failed (a local worker that dies fails its candidate at once).", lower_bound=0)
    cf(d.DEFINE_float, "trial_timeout", "Seconds a candidate may run before its worker is "
       "killed and replaced (0 = no limit).", lower_bound=0)


def _define_benchmark(d, cf) -> None:
    """Flags of a --benchmark run (NAS-Bench-201)."""
    cf(d.DEFINE_enum, "benchmark", [""] + list(cfg.BENCHMARKS), "nb201: search NAS-Bench-201's "
       "cell space (CIFAR-10) by table look-up through the same loop, records, resume, "
       "constraints and report; --max_time then counts simulated seconds (each evaluated cell "
       "costs 12 epochs of training plus validation). Empty = the cell space, trained here.")
    cf(d.DEFINE_string, "benchmark_table", "With --benchmark nb201: another table with the "
       "shipped table's columns (empty = autodl_design/tables/nb201/nb201_cifar10.csv.gz, "
       "checksummed).")
    cf(d.DEFINE_enum, "latency_device", list(nb201.LATENCY_DEVICES), "With --benchmark "
       "nb201: whose measured latency --max_latency_ms bounds (HW-NAS-Bench's Raspberry Pi 4 "
       "or Eyeriss).")


def _define_export(d, cf) -> None:
    """Flags of --export_best."""
    d.DEFINE_string("export_best", "", "main.py: after the search, retrain the best candidate "
                    "for --final_epochs on all chunks and export it to this folder (Paddle "
                    "inference model, ONNX checked with onnxruntime, standalone model.py); must "
                    "not exist or be empty.")
    d.DEFINE_integer("final_epochs", 20, "Epochs of the retraining done by --export_best.",
                     lower_bound=1)


def _register_validators(d) -> None:
    """Validators of single flags and of flags across sections."""
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


def _define_gpu(d, cf) -> None:
    """Flags of GPU trainers."""
    cf(d.DEFINE_float, "gpus_per_trainer", "With --cluster ray: GPUs per GPU trainer actor; "
       "a fraction (e.g. 0.5) puts several actors on one GPU. Nodes without a GPU get "
       "CPU actors of --cpus_per_trainer CPUs.", lower_bound=0.01)
    cf(d.DEFINE_boolean, "deterministic", "GPU trainers start with "
       "FLAGS_cudnn_deterministic=1 (slower, repeatable cuDNN kernels).")
    cf(d.DEFINE_boolean, "amp", "GPU trainers train with automatic mixed precision "
       "(paddle.amp O1 + GradScaler; latency, memory and evaluation stay float32). "
       "Ignored with a note on CPU trainers.")


def _define_oneshot(d, cf) -> None:
    """Flags of the one-shot methods (ENAS, DARTS)."""
    cf(d.DEFINE_enum, "method", ["multi_trial", "enas", "darts"], "multi_trial: train every "
       "candidate (the search above); enas: the controller samples subnetworks of one "
       "shared-weight supernet, rewarded by their validation accuracy with the shared "
       "weights; darts: softmax over ops and sigmoid over edges trained by gradient "
       "(first order). One-shot methods then retrain the --retrain_top best candidates "
       "from scratch with the trainers. Runs on the first --trainer_devices device.")
    cf(d.DEFINE_integer, "retrain_top", "One-shot: candidates (best one-shot score first) "
       "retrained from scratch and recorded.", lower_bound=1)
    cf(d.DEFINE_integer, "oneshot_epochs", "One-shot: epochs of supernet training over the "
       "training split.", lower_bound=1)
    cf(d.DEFINE_integer, "controller_steps", "enas: controller steps (--batch_size "
       "candidates each) after every supernet epoch.", lower_bound=1)
    cf(d.DEFINE_integer, "warmup_epochs", "enas: the first epochs train the supernet on "
       "uniformly sampled subnetworks, without controller steps (< --oneshot_epochs).",
       lower_bound=0)
    cf(d.DEFINE_float, "arch_learning_rate", "darts: Adam learning rate of the architecture "
       "parameters.", lower_bound=0)
    d.register_multi_flags_validator(
        ["warmup_epochs", "oneshot_epochs"], lambda f: f["warmup_epochs"] < f["oneshot_epochs"],
        "--warmup_epochs must be less than --oneshot_epochs")
    d.register_multi_flags_validator(
        ["method", "searcher"], lambda f: f["method"] != "darts" or f["searcher"] == "rl",
        "--method darts has its own searcher (architecture parameters): leave --searcher "
        "at rl")


def _define_search_space():
    """--search_space and --evaluator: search decisions beyond the cell (recipe.py)."""
    d = absl_flags
    d.DEFINE_string("search_space", "", "JSON file of search decisions beyond the cell "
                    "(scale: width_mult, depth, resolution; training: learning_rate, "
                    "weight_decay, optimizer, batch_size, grad_clip, dropout), each a list of "
                    "choices, and \"cell\": \"search\" or a fixed architecture; see README "
                    "\"Searching the recipe\" and examples/*.json. Empty = only the cell is "
                    "searched. Every searcher (rl, random, evolution, tpe) covers the decisions.")
    _config_flag(d.DEFINE_enum, "evaluator", ["trainer", "toy"], "trainer: train every "
                 "candidate on the data; toy: a cheap synthetic objective with a known optimum "
                 "(autodl_design/toy.py; no data, no training) to try searchers in seconds.")
    d.register_validator("search_space", _valid_search_space)
    d.register_multi_flags_validator(
        ["method", "search_space", "evaluator"],
        lambda f: f["method"] == "multi_trial" or (not f["search_space"]
                                                   and f["evaluator"] == "trainer"),
        "--search_space and --evaluator toy apply to multi-trial searches; --method enas and "
        "darts search only the cell with their supernet: remove one")
    d.register_multi_flags_validator(
        ["export_best", "evaluator"],
        lambda f: not f["export_best"] or f["evaluator"] == "trainer",
        "--export_best retrains a candidate on the data: it does not apply with --evaluator toy")


def _valid_search_space(path: str) -> bool:
    """Validator of --search_space; raises ValidationError naming the problem in the file."""
    if path:
        try:
            recipe.load_search_space(path)
        except recipe.SearchSpaceError as e:  # absl names the flag and file already
            raise absl_flags.ValidationError(
                str(e).replace("--search_space %s: " % path, "", 1)) from None
    return True


def _search_space_settings(f, search: Dict[str, Any]) -> None:
    """Reads --search_space into ``search["search_space"]`` (its normalised content).

    Raises:
      absl.flags.ValidationError: the file cannot be read or lists a bad decision
        (one line naming it).
    """
    if not f.search_space:
        search["search_space"] = {}
        return
    try:
        decisions, cell = recipe.load_search_space(f.search_space)
    except recipe.SearchSpaceError as e:
        raise absl_flags.ValidationError(str(e)) from None
    search["search_space"] = recipe.space_to_dict(decisions, cell)


def _define_scheduler(d, cf) -> None:
    """Flags of the epoch-budget schedulers (autodl_design/search/schedulers.py)."""
    cf(d.DEFINE_enum, "scheduler", list(cfg.SCHEDULERS), "Epoch budgets per candidate: none "
       "(every candidate trains --early_stop epochs), successive_halving (start eta^s "
       "candidates at --min_epochs, promote the best 1/eta to eta x the epochs, up to "
       "--max_epochs; a promoted candidate continues from its saved weights and optimizer "
       "state) or hyperband (brackets from that to plain evaluation). With --benchmark "
       "nb201 the rungs are the table's %s epochs." % " and ".join(map(str, nb201.FIDELITIES)))
    cf(d.DEFINE_integer, "min_epochs", "With --scheduler: epochs of the first rung.",
       lower_bound=1)
    cf(d.DEFINE_integer, "eta", "With --scheduler: reduction factor (the best 1/eta of a "
       "rung are promoted to eta x its epochs).", lower_bound=2)
    d.DEFINE_alias("max_epochs", "early_stop")
    d.register_multi_flags_validator(
        ["scheduler", "method"], lambda f: f["scheduler"] == "none"
        or f["method"] == "multi_trial", "--scheduler applies to --method multi_trial (which "
        "trains every candidate); one-shot methods train a supernet: drop --scheduler")


def _benchmark_settings(f, search: Dict[str, Any]) -> None:
    """Checks the flags of a --benchmark run and resolves its table path and budget.

    Raises:
      absl.flags.ValidationError: a flag that has no meaning with (or
        without) --benchmark was given.
    """
    if not f.benchmark:
        given = [n for n in ("benchmark_table", "latency_device") if f[n].present]
        if given:
            raise absl_flags.ValidationError(
                "%s only apply with --benchmark nb201" % ", ".join("--" + n for n in given))
        return
    refused = [n for n in CELL_SPACE_FLAGS if f[n].present]
    if refused:
        raise absl_flags.ValidationError(
            "--benchmark %s looks cells up in a table: %s apply only to the cell space and "
            "its trainer; remove them" % (f.benchmark, ", ".join("--" + n for n in refused)))
    if f["min_epochs"].present:  # --scheduler and --eta apply: the rungs are the table's
        raise absl_flags.ValidationError(
            "--benchmark %s: the table holds figures after %s epochs, the rungs of --scheduler; "
            "remove --min_epochs" % (f.benchmark, " and ".join(map(str, nb201.FIDELITIES))))
    refused = [n for n in CONTROLLER_FLAGS if f[n].present] if f.searcher == "rl" else []
    if refused:
        raise absl_flags.ValidationError(
            "--benchmark %s --searcher rl uses NAS-Bench-201's own controller settings: %s "
            "set the cell space's controller; remove them" % (
                f.benchmark, ", ".join("--" + n for n in refused)))
    if f.benchmark_table:
        search["benchmark_table"] = os.path.abspath(f.benchmark_table)
    if f.max_time > 0 and not f["num_models"].present:
        search["num_models"] = cfg.BENCHMARK_NUM_MODELS


def objective_problem(f) -> Optional[str]:
    """The one check of --objective, --pareto_cost and --min_accuracy against the other flags.

    (The range of --min_accuracy and the names of --objective and --pareto_cost are checked
    by their flag definitions.)

    Args:
      f: parsed flag values (``objective``, ``pareto_cost``, ``min_accuracy``, ``searcher``,
        ``benchmark``, ``method``).

    Returns:
      None, or one line naming the problem and the fix.
    """
    cost = f.pareto_cost if f.objective == "pareto" else f.objective
    if f.objective == "pareto" and not f.pareto_cost:
        return ("--objective pareto needs the cost traded against accuracy: add --pareto_cost "
                "latency, params or flops")
    if f.pareto_cost and f.objective != "pareto":
        return ("--pareto_cost applies only with --objective pareto: add --objective pareto "
                "or remove --pareto_cost")
    if f.searcher == "nsga2" and f.objective != "pareto":
        return ("--searcher nsga2 searches the Pareto front of accuracy and a cost: add "
                "--objective pareto --pareto_cost latency, params or flops")
    if f.benchmark and cost == "flops":
        return ("--benchmark %s: the table has no FLOPs, the metric of the objective; use "
                "latency or params" % f.benchmark)
    if f.method != "multi_trial" and (f.objective != "accuracy" or f.min_accuracy > 0):
        return ("--method %s ranks candidates by their accuracy with shared weights: "
                "--objective and --min_accuracy apply only to --method multi_trial"
                % f.method)
    return None


def _valid_device_or_none(value) -> bool:
    """Validator of --agent_device; raises ValidationError naming the bad device."""
    if value is None:
        return True
    try:
        devices.parse_device(value)
    except ValueError as e:
        raise absl_flags.ValidationError(str(e)) from None
    return True


def _valid_device_list_or_none(value) -> bool:
    """Validator of --trainer_devices; raises ValidationError naming the bad entry."""
    if value is None:
        return True
    try:
        devices.parse_device_list(value)
    except ValueError as e:
        raise absl_flags.ValidationError(str(e)) from None
    return True


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

    Raises:
      absl.flags.ValidationError: flags that do not go together (see
        ``_benchmark_settings`` and ``objective_problem``).
    """
    f = FLAGS if flag_values is None else flag_values
    problem = objective_problem(f)  # before Paddle is imported to count GPUs
    if problem:
        raise absl_flags.ValidationError(problem)
    if num_gpus is None:
        num_gpus = devices.count_gpus()  # imports Paddle; only when asked
    preset = f.preset if f.preset != "auto" else ("gpu" if num_gpus > 0 else "cpu")
    sizes = {k: (getattr(f, k) if getattr(f, k) is not None else cfg.SIZE_PRESETS[preset][k])
             for k in cfg.SIZE_KEYS}
    if cores is None:
        cores = os.cpu_count() or 1
    agent_default, trainer_default = devices.default_devices(num_gpus, cores)
    values: Dict[str, Dict[str, Any]] = {section: {} for section in (
        "data", "agent", "trainer", "constraints", "devices", "search")}
    for flag, (section, name) in CONFIG_FLAGS.items():
        values[section][name] = f[flag].value
    values["data"]["images_per_class"] = int(sizes["images_per_class"])
    values["agent"]["ops"] = tuple(parse_ops(f.ops))
    for k in ("width", "num_stages", "num_cells", "early_stop", "latency_repeats"):
        values["trainer"][k] = int(sizes[k])
    if f.latency_table:
        values["trainer"]["latency_table"] = os.path.abspath(f.latency_table)
    values["devices"]["agent_device"] = (devices.parse_device(f.agent_device) if f.agent_device
                                         else agent_default)
    values["devices"]["trainer_devices"] = (tuple(devices.parse_device_list(f.trainer_devices))
                                            if f.trainer_devices else trainer_default)
    values["search"]["num_models"] = int(sizes["num_models"])
    values["search"]["preset"] = preset
    _benchmark_settings(f, values["search"])
    _search_space_settings(f, values["search"])
    if f.min_epochs > values["trainer"]["early_stop"]:
        raise absl_flags.ValidationError(
            "--min_epochs %d exceeds --max_epochs (= --early_stop) %d: lower --min_epochs or "
            "raise --max_epochs" % (f.min_epochs, values["trainer"]["early_stop"]))
    return cfg.Config(data=cfg.DataConfig(**values["data"]),
                      agent=cfg.AgentConfig(**values["agent"]),
                      trainer=cfg.TrainerConfig(**values["trainer"]),
                      constraints=cfg.ConstraintConfig(**values["constraints"]),
                      devices=cfg.DeviceConfig(**values["devices"]),
                      search=cfg.SearchConfig(**values["search"]))
