"""Plain configuration objects handed to the library (only entry points read FLAGS)."""
import dataclasses
import json
from typing import Any, Dict, Tuple

# Network and search sizes per preset. "gpu" follows AutoDL Design; "cpu" is
# small enough for a complete real search in about 15 minutes on 2 cores.
SIZE_PRESETS: Dict[str, Dict[str, float]] = {
    "gpu": dict(width=64, num_stages=3, num_cells=3, early_stop=20, num_models=400,
                images_per_class=100, latency_repeats=50),
    "cpu": dict(width=8, num_stages=2, num_cells=1, early_stop=8, num_models=30,
                images_per_class=300, latency_repeats=20),
}
SIZE_KEYS: Tuple[str, ...] = tuple(SIZE_PRESETS["gpu"])
_GPU = SIZE_PRESETS["gpu"]  # the dataclass defaults of the size settings


# A --benchmark run with --max_time but without --num_models ends at this many
# evaluations (repeats included) if its budget of simulated time lasts longer:
# a searcher that only repeats itself spends no simulated time.
BENCHMARK_NUM_MODELS = 10_000
BENCHMARKS: Tuple[str, ...] = ("nb201",)
SCHEDULERS: Tuple[str, ...] = ("none", "successive_halving", "hyperband")  # search/schedulers.py


@dataclasses.dataclass
class DataConfig:
    """Where the dataset folder is (made by dataset_maker.py)."""
    data_path: str = ""          # "" = the embedded default (Fashion-MNIST)
    images_per_class: int = _GPU["images_per_class"]  # for the embedded default dataset


@dataclasses.dataclass
class AgentConfig:
    """Controller (LSTM policy) and REINFORCE settings."""
    num_nodes: int = 10
    ops: Tuple[str, ...] = ()
    hidden_size: int = 64
    num_layers: int = 2
    learning_rate: float = 1e-3
    bl_decay: float = 0.9
    batch_size: int = 10
    temperature: float = 5.0
    tanh_constant: float = 2.5
    entropy_weight: float = 0.0
    advantage: str = "identity"

    @property
    def num_tokens(self) -> int:
        return len(self.ops)


@dataclasses.dataclass
class TrainerConfig:
    """Network size, training schedule and hardware measurement."""
    width: int = _GPU["width"]
    num_stages: int = _GPU["num_stages"]
    num_cells: int = _GPU["num_cells"]
    ratio: int = 4
    dropout: float = 0.0
    early_stop: int = _GPU["early_stop"]
    train_batch_size: int = 128
    lr_max: float = 0.1
    lr_min: float = 1e-4
    momentum: float = 0.9
    weight_decay: float = 1e-4
    latency_batch: int = 1
    latency_repeats: int = _GPU["latency_repeats"]
    latency_table: str = ""      # profiled table of the target device ("" = measure here)
    amp: bool = False            # GPU trainers: automatic mixed precision (O1) in training
    optimizer: str = "sgd"       # "sgd" (Nesterov momentum), "adam" or "rmsprop"
    grad_clip: float = 0.0       # global gradient-norm clip, 0 = off
    resolution: int = 0          # input side in pixels (images resized), 0 = as made


@dataclasses.dataclass
class ConstraintConfig:
    """Hardware bounds (0 = no bound), the accuracy floor and objective, and how the critic
    applies them."""
    max_params: float = 0
    max_flops: float = 0
    max_latency_ms: float = 0
    max_memory_mb: float = 0
    mode: str = "hard"
    soft_alpha: float = 0.0
    soft_beta: float = -0.07
    infeasible_reward: float = 0.0
    # What "best" means (critic.py): a floor on validation accuracy in [0, 1]
    # (0 = none), the objective (accuracy | latency | params | flops | pareto)
    # and, with pareto only, its cost (latency | params | flops).
    min_accuracy: float = 0.0
    objective: str = "accuracy"
    pareto_cost: str = ""

    def bounds(self) -> Dict[str, float]:
        """Metric name -> bound, only for the bounds that are set."""
        named = {"params": self.max_params, "flops": self.max_flops,
                 "latency_ms": self.max_latency_ms, "memory_mb": self.max_memory_mb}
        return {k: v for k, v in named.items() if v > 0}


@dataclasses.dataclass
class DeviceConfig:
    """Where the controller and the trainer workers run."""
    agent_device: str = "cpu"
    trainer_devices: Tuple[str, ...] = ("cpu",)
    threads_per_worker: int = 0  # 0 = cores / CPU workers
    cluster: str = "local"       # "local" processes or "ray" actors
    ray_address: str = "auto"    # "auto", "HOST:PORT", or "local" (private 127.0.0.1 instance)
    num_trainers: int = 0        # Ray actors, 0 = as many as the cluster holds
    cpus_per_trainer: int = 1    # CPUs (threads) per Ray CPU actor
    max_retries: int = 2         # retries of a candidate whose worker/actor died
    trial_timeout: float = 0     # seconds before a running candidate's worker is killed
    gpus_per_trainer: float = 1.0  # GPUs per Ray GPU actor (fractions share a GPU)
    deterministic: bool = False  # GPU workers: FLAGS_cudnn_deterministic=1


@dataclasses.dataclass
class SearchConfig:
    """Budget, records and reproducibility of a search."""
    num_models: int = _GPU["num_models"]
    max_time: float = 0  # seconds, 0 = no limit
    log_dir: str = "./log"
    resume: bool = False
    seed: int = 0
    preset: str = "gpu"
    searcher: str = "rl"
    lookahead: int = 1  # batches proposed before the oldest open one is learned from
    population: int = 20   # regularized evolution: population size
    early_termination: str = "none"  # "none" or "median"
    tensorboard_dir: str = ""        # TensorBoard scalars per evaluation ("" = none)
    cull_start_epoch: int = 2        # first epoch at which the median rule may stop a candidate
    sample_size: int = 5   # regularized evolution: tournament size
    benchmark: str = ""    # "" = the cell space with the trainer; "nb201" = NAS-Bench-201's table
    benchmark_table: str = ""  # another table with the shipped one's columns ("" = the shipped)
    latency_device: str = "raspi4"  # the benchmark table's latency column: raspi4 or eyeriss
    method: str = "multi_trial"  # "multi_trial" (train every candidate), "enas" or "darts"
    retrain_top: int = 5         # one-shot: candidates retrained from scratch
    oneshot_epochs: int = 6      # one-shot: epochs over the training split
    controller_steps: int = 5    # enas: controller steps after every epoch
    warmup_epochs: int = 0       # enas: first epochs on uniformly sampled subnetworks, no controller steps
    arch_learning_rate: float = 3e-3  # darts: Adam learning rate of the architecture
    # Search decisions beyond the cell (--search_space FILE.json, autodl_design/recipe.py):
    # the file's parsed content (recipe.space_to_dict), {} = only the cell is searched.
    search_space: Dict[str, Any] = dataclasses.field(default_factory=dict)
    evaluator: str = "trainer"  # "trainer" (train on the data) or "toy" (autodl_design/toy.py)
    # Epoch budgets (autodl_design/search/schedulers.py); the top budget is trainer.early_stop.
    scheduler: str = "none"      # "none", "successive_halving" or "hyperband"
    min_epochs: int = 1          # the first rung's epochs
    eta: int = 3                 # reduction factor: 1/eta promoted, eta x the epochs


@dataclasses.dataclass
class Config:
    data: DataConfig
    agent: AgentConfig
    trainer: TrainerConfig
    constraints: ConstraintConfig
    devices: DeviceConfig
    search: SearchConfig

    def to_dict(self) -> Dict:
        return dataclasses.asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)

    @classmethod
    def from_dict(cls, d: Dict) -> "Config":
        """Rebuilds a Config from ``to_dict`` output (e.g. a run's config.json)."""
        def make(kind, values):
            fields = {f.name for f in dataclasses.fields(kind)}
            unknown = set(values) - fields
            if unknown:
                raise ValueError("unknown %s settings: %s" % (kind.__name__, sorted(unknown)))
            values = dict(values)
            for k, v in values.items():
                if isinstance(v, list):
                    values[k] = tuple(v)
            return kind(**values)
        return cls(data=make(DataConfig, d["data"]), agent=make(AgentConfig, d["agent"]),
                   trainer=make(TrainerConfig, d["trainer"]),
                   constraints=make(ConstraintConfig, d["constraints"]),
                   devices=make(DeviceConfig, d["devices"]), search=make(SearchConfig, d["search"]))


def default(section: str, name: str) -> Any:
    """The default of setting ``name`` of ``Config.<section>``, e.g. ``("agent", "ops")``.

    Flags take their defaults from here, so that each default is written once.

    Raises:
      KeyError: naming the unknown section or setting.
    """
    sections = {f.name: f.type for f in dataclasses.fields(Config)}
    if section not in sections:
        raise KeyError("unknown config section %r: use one of %s" % (section, sorted(sections)))
    for f in dataclasses.fields(sections[section]):
        if f.name == name:
            return f.default
    raise KeyError("unknown %s setting %r" % (section, name))


def defaults_dict() -> Dict:
    """``Config.to_dict()`` of every setting at its dataclass default (the gpu preset's sizes).

    ``--resume`` reads it to accept a setting added after a run started: absent
    from its config.json and at its default now, it runs as before.
    """
    return Config(DataConfig(), AgentConfig(), TrainerConfig(), ConstraintConfig(),
                  DeviceConfig(), SearchConfig()).to_dict()
