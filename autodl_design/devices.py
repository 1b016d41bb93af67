"""The one place where devices are parsed, chosen by default, counted, pinned and selected.

GPU workers are pinned for real: a local worker for ``gpu:N`` starts with
``CUDA_VISIBLE_DEVICES`` set to entry N of the parent's visible list (the
user's ``CUDA_VISIBLE_DEVICES``, e.g. ``2,3`` or GPU UUIDs, else 0, 1, ...),
so inside it Paddle sees one GPU, ``gpu:0`` (``worker_device``).
"""
import contextlib
import fcntl
import os
import tempfile
from typing import Dict, Iterator, List, Optional, Sequence, Tuple

VISIBLE_ENV = "CUDA_VISIBLE_DEVICES"
# Set in each local worker: the device as the user named it, with its physical GPU,
# for messages such as "out of memory on gpu:1 (CUDA device 5)" (``device_label``).
LABEL_ENV = "AUTODL_DESIGN_DEVICE"
# Paddle waits this long (ms) for other allocations to free memory before it
# reports out of memory; its default (10 s) makes every too-large candidate slow.
ALLOCATOR_RETRY_MS = "100"


def parse_device(text: str) -> str:
    """Validates one device string: ``cpu`` or ``gpu:N``; returns it normalised.

    Raises:
      ValueError: naming the string and the accepted forms.
    """
    t = text.strip().lower()
    if t == "cpu":
        return t
    if t.startswith("gpu:") and t[4:].isdigit():
        return "gpu:%d" % int(t[4:])
    raise ValueError("unknown device %r: use 'cpu' or 'gpu:N' (N = 0, 1, ...)" % text)


def parse_device_list(text: str) -> List[str]:
    """Validates a comma list of devices (at least one, no empty entry).

    Raises:
      ValueError: the list is empty, an entry is empty (e.g. ``cpu,,cpu``) or
        an entry is not a device; the message names it.
    """
    items = text.split(",")
    if not any(s.strip() for s in items):
        raise ValueError("device list %r is empty: give e.g. 'cpu' or 'gpu:0,gpu:1'" % text)
    for k, s in enumerate(items):
        if not s.strip():
            raise ValueError("device list %r: entry %d of %d is empty; remove the "
                             "extra comma, e.g. %r" % (text, k + 1, len(items), ",".join(
                                 t.strip() for t in items if t.strip())))
    return [parse_device(s) for s in items]


def default_devices(num_gpus: int, cores: int = 1) -> Tuple[str, Tuple[str, ...]]:
    """The one place that picks default devices from the visible GPUs and cores.

    Returns:
      (agent_device, trainer_devices): with two or more GPUs the agent on
      gpu:0 and one trainer on each other GPU (gpu:1 .. gpu:N-1); with one
      GPU the agent and the trainer share gpu:0; without a GPU one
      single-threaded CPU worker per core (on CPU a second thread in one
      process mostly spins, while a second process nearly doubles throughput).
    """
    if num_gpus <= 0:
        return "cpu", ("cpu",) * max(1, cores)
    if num_gpus == 1:
        return "gpu:0", ("gpu:0",)
    return "gpu:0", tuple("gpu:%d" % i for i in range(1, num_gpus))


def worker_threads(devices: Sequence[str], cores: int, requested: int = 0) -> Tuple[int, ...]:
    """CPU threads of each trainer worker, by device kind.

    A GPU worker gets one thread (its host side only feeds the GPU); the
    cores left after one per GPU worker are shared evenly among the CPU
    workers (at least one each). ``requested`` > 0 gives every worker that many.
    """
    if requested > 0:
        return tuple(requested for _ in devices)
    gpu_workers = sum(1 for d in devices if d != "cpu")
    cpu_workers = len(devices) - gpu_workers
    cpu_threads = max(1, (cores - gpu_workers) // cpu_workers) if cpu_workers else 1
    return tuple(cpu_threads if d == "cpu" else 1 for d in devices)


def threads_per_worker(devices: Tuple[str, ...], cores: int, requested: int = 0) -> int:
    """The largest of ``worker_threads`` (one number for callers that run one worker)."""
    return max(worker_threads(devices, cores, requested) or (1,))


def visible_gpus(environ: Optional[Dict[str, str]] = None) -> Optional[List[str]]:
    """The entries of ``CUDA_VISIBLE_DEVICES`` (indices or UUIDs), or None when it is unset.

    CUDA stops at the first empty entry; so does this.
    """
    env = os.environ if environ is None else environ
    if VISIBLE_ENV not in env:
        return None
    out = []
    for item in env[VISIBLE_ENV].split(","):
        if not item.strip():
            break
        out.append(item.strip())
    return out


def physical_gpu(device: str, visible: Optional[Sequence[str]]) -> str:
    """The ``CUDA_VISIBLE_DEVICES`` entry of ``gpu:N`` for a child: entry N of ``visible``.

    Raises:
      ValueError: N is beyond the visible list (one line naming both).
    """
    index = int(device[4:])
    if visible is None:
        return str(index)
    if index >= len(visible):
        raise ValueError("device %s requested but %s=%s makes %d GPU(s) visible: use an index "
                         "below %d" % (device, VISIBLE_ENV, ",".join(visible), len(visible),
                                       max(len(visible), 1)))
    return visible[index]


def worker_env(device: str, visible: Optional[Sequence[str]], deterministic: bool = False
               ) -> Dict[str, str]:
    """Environment a local worker for ``device`` starts with (before Paddle is imported).

    GPU: ``CUDA_VISIBLE_DEVICES`` = its physical GPU (``physical_gpu``), the
    label for messages, Paddle's allocator retry time (unless the user set
    it) and with ``deterministic`` ``FLAGS_cudnn_deterministic=1``.
    """
    env = {LABEL_ENV: device}
    if device.startswith("gpu:"):
        physical = physical_gpu(device, visible)
        env[VISIBLE_ENV] = physical
        env[LABEL_ENV] = "%s (CUDA device %s)" % (device, physical)
        env["FLAGS_gpu_allocator_retry_time"] = os.environ.get(
            "FLAGS_gpu_allocator_retry_time", ALLOCATOR_RETRY_MS)
        if deterministic:
            env["FLAGS_cudnn_deterministic"] = "1"
    return env


def worker_device(device: str) -> str:
    """The device name inside a pinned worker: ``gpu:0`` for any GPU (it sees one), else cpu."""
    return "gpu:0" if device.startswith("gpu:") else device


def device_label(device: str) -> str:
    """How messages name this process's device: the pool's label if set, else ``device``."""
    return os.environ.get(LABEL_ENV, device)


def check_devices(wanted: Sequence[str], num_gpus: int) -> None:
    """Refuses GPU devices beyond the ``num_gpus`` GPUs Paddle sees.

    Raises:
      ValueError: one line naming the first absent device.
    """
    for device in wanted:
        if device.startswith("gpu:") and int(device[4:]) >= num_gpus:
            raise ValueError("device %s requested but Paddle sees %d GPU(s): use "
                             "--trainer_devices/--agent_device cpu or an index below %d"
                             % (device, num_gpus, max(num_gpus, 1)))


@contextlib.contextmanager
def measuring(device: str) -> Iterator[None]:
    """Holds a lock per physical GPU while latency/memory are measured on ``device``.

    Workers of one machine sharing a GPU then measure one at a time (an
    ``fcntl`` lock on a file in the temporary folder named after the GPU's
    ``CUDA_VISIBLE_DEVICES`` entry); nothing to do on CPU.
    """
    if not device.startswith("gpu:"):
        yield
        return
    visible = visible_gpus()
    physical = physical_gpu(device, visible)
    name = "".join(c if c.isalnum() or c in "-_" else "_" for c in physical)
    path = os.path.join(tempfile.gettempdir(), "autodl-design-gpu-%s.lock" % name)
    with open(path, "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def count_gpus() -> int:
    """GPUs Paddle can use (0 on a CPU-only build or machine); imports Paddle."""
    from autodl_design.backend import paddle
    if not paddle.device.is_compiled_with_cuda():
        return 0
    return int(paddle.device.cuda.device_count())


def use_device(device: str) -> str:
    """Makes ``device`` ('cpu' or 'gpu:N', validated by ``parse_device``) current; imports Paddle.

    Raises:
      RuntimeError: a GPU device on a machine where Paddle sees fewer GPUs.
    """
    from autodl_design.backend import paddle
    if device.startswith("gpu:"):
        try:
            check_devices([device], count_gpus())
        except ValueError as e:
            raise RuntimeError(str(e)) from None
    paddle.device.set_device(device)
    return device
