"""The one place where Paddle devices are counted and selected."""
from autodl_design.backend import paddle


def count_gpus() -> int:
    """GPUs Paddle can use (0 on a CPU-only build or machine)."""
    if not paddle.device.is_compiled_with_cuda():
        return 0
    return int(paddle.device.cuda.device_count())


def use_device(device: str) -> str:
    """Makes ``device`` ('cpu' or 'gpu:N', validated by config.parse_device) current.

    Raises:
      RuntimeError: a GPU device on a machine where Paddle sees fewer GPUs.
    """
    if device.startswith("gpu:"):
        index = int(device[4:])
        n = count_gpus()
        if index >= n:
            raise RuntimeError("device %s requested but Paddle sees %d GPU(s): use --trainer_devices/"
                               "--agent_device cpu or an index below %d" % (device, n, max(n, 1)))
    paddle.device.set_device(device)
    return device
