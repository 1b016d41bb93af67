"""The one place where devices are parsed, chosen by default, counted and selected."""
from typing import List, Tuple


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
      (agent_device, trainer_devices): gpu:0 for the agent when a GPU is
      present; trainers on gpu:1 with two or more GPUs, else gpu:0, else one
      single-threaded CPU worker per core (on CPU a second thread in one
      process mostly spins, while a second process nearly doubles throughput).
    """
    if num_gpus <= 0:
        return "cpu", ("cpu",) * max(1, cores)
    if num_gpus == 1:
        return "gpu:0", ("gpu:0",)
    return "gpu:0", ("gpu:1",)


def threads_per_worker(devices: Tuple[str, ...], cores: int, requested: int = 0) -> int:
    """CPU threads for each trainer worker: cores shared evenly among CPU workers."""
    if requested > 0:
        return requested
    cpu_workers = sum(1 for d in devices if d == "cpu")
    if cpu_workers == 0:
        return 1
    return max(1, cores // cpu_workers)


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
        index = int(device[4:])
        n = count_gpus()
        if index >= n:
            raise RuntimeError("device %s requested but Paddle sees %d GPU(s): use "
                               "--trainer_devices/--agent_device cpu or an index below %d"
                               % (device, n, max(n, 1)))
    paddle.device.set_device(device)
    return device
