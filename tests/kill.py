"""Test helper: start a search in its own process group and SIGKILL it once it has N records."""
import os
import signal
import subprocess
import time

from autodl_design import records
from tests.conftest import ROOT


def kill_after_records(cmd, log_dir, count: int, timeout: float = 240.0,
                       poll: float = 0.05) -> None:
    """Runs ``cmd`` (cwd = the repository) until ``log_dir/trials.jsonl`` holds ``count``
    records (or it ends, or ``timeout`` seconds pass), then SIGKILLs its process group."""
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    path = os.path.join(str(log_dir), records.TRIALS_FILE)
    deadline = time.time() + timeout
    while time.time() < deadline and proc.poll() is None:
        if os.path.exists(path) and len(records.read_trials(path)) >= count:
            break
        time.sleep(poll)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
