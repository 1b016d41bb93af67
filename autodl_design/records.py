"""Crash-safe records of a search in its log_dir: trials.jsonl, best.json, config.json.

* ``trials.jsonl``: one JSON object per finished evaluation, appended, flushed
  and fsync'ed as each finishes (``TrialLog``). A SIGKILL mid-write can leave
  an incomplete last line; reading ignores it and opening the log for
  appending truncates it away. Damage anywhere else is an error naming the
  file and line.
* ``best.json`` and ``config.json`` are replaced atomically (temp file in the
  same folder, flush, fsync, ``os.replace``): a reader sees the old or the new
  file, never half of one.
* ``RunState`` rebuilds what a resumed search needs from the trial records.

Record fields: those of ``TrialRecord`` (step, index, arch, arch_hash,
metrics, reward, feasible, status, reason, worker, device, seconds, time, and
``rung`` only with an epoch-budget scheduler).
"""
import dataclasses
import hashlib
import json
import math
import os
import tempfile
import threading
import time as _time
from typing import Any, Dict, Iterable, List, Optional, Sequence, Set, Tuple

import numpy as np

from autodl_design import config as _config

TRIALS_FILE = "trials.jsonl"
BEST_FILE = "best.json"
CONFIG_FILE = "config.json"
STATUSES = ("ok", "failed", "infeasible", "duplicate")
OPTIONAL_FIELDS = ("rung",)  # TrialRecord fields written only when set (not None)
# Settings a resumed run may change: the budget, the folder, and where things run
# (devices.*, except what changes results: deterministic kernels, retries, timeouts).
RESUME_IGNORE = ("search.resume", "search.num_models", "search.max_time", "search.log_dir",
                 "devices.agent_device", "devices.trainer_devices", "devices.threads_per_worker",
                 "devices.cluster", "devices.ray_address", "devices.num_trainers",
                 "devices.cpus_per_trainer", "devices.gpus_per_trainer")


# ---------------------------------------------------------------------------
# JSON encoding
# ---------------------------------------------------------------------------

def to_jsonable(obj: Any, where: str = "value") -> Any:
    """Plain JSON data from ``obj``: NaN/inf -> None, numpy -> Python, tuples -> lists.

    Args:
      obj: dicts (string keys), lists, tuples, str, bool, int, float, None,
        numpy scalars and arrays, or objects with a ``to_dict()`` method.
      where: path used in error messages.

    Raises:
      TypeError: an object that has no JSON form, naming where it is.
    """
    if obj is None or isinstance(obj, (bool, str)):
        return obj
    if isinstance(obj, np.generic):
        obj = obj.item()
        if obj is None or isinstance(obj, (bool, str)):
            return obj
    if isinstance(obj, int):
        return int(obj)
    if isinstance(obj, float):
        return float(obj) if math.isfinite(obj) else None
    if isinstance(obj, np.ndarray):
        return to_jsonable(obj.tolist(), where)
    if isinstance(obj, dict):
        out = {}
        for k, v in obj.items():
            if isinstance(k, np.generic):
                k = k.item()
            if not isinstance(k, str):
                if isinstance(k, (int, float, bool)) or k is None:
                    k = json.dumps(k)
                else:
                    raise TypeError("%s has a key of type %s; JSON keys must be strings"
                                    % (where, type(k).__name__))
            out[k] = to_jsonable(v, "%s[%r]" % (where, k))
        return out
    if isinstance(obj, (list, tuple)):
        return [to_jsonable(v, "%s[%d]" % (where, i)) for i, v in enumerate(obj)]
    if hasattr(obj, "to_dict") and callable(obj.to_dict):
        return to_jsonable(obj.to_dict(), where)
    raise TypeError("%s is a %s, which has no JSON form" % (where, type(obj).__name__))


def dumps(obj: Any, indent: Optional[int] = None, where: str = "value") -> str:
    """``json.dumps(to_jsonable(obj))``, strict (no NaN tokens in the output)."""
    return json.dumps(to_jsonable(obj, where), indent=indent, sort_keys=indent is not None,
                      allow_nan=False)


# ---------------------------------------------------------------------------
# Atomic whole-file writes
# ---------------------------------------------------------------------------

def _fsync_dir(folder: str) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def atomic_write_text(path: str, text: str) -> None:
    """Replaces ``path`` with ``text`` atomically (temp file, flush, fsync, os.replace).

    The temp file is in the same folder (so ``os.replace`` is atomic) and is
    removed if anything fails; the old file, if any, is then left intact. A
    missing parent folder is created.
    """
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix="." + os.path.basename(path) + ".", suffix=".tmp",
                               dir=folder)
    try:
        try:
            mode = os.stat(path).st_mode & 0o777
        except FileNotFoundError:
            mode = 0o644
        os.fchmod(fd, mode)
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    _fsync_dir(folder)


def sha256_file(path: str) -> str:
    """Hex SHA-256 of a file's bytes, read in 1 MiB blocks (checksums of written files)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def atomic_write_json(path: str, obj: Any) -> None:
    """Writes ``obj`` as indented JSON to ``path`` atomically.

    ``obj`` is serialised before any file is touched (NaN/inf -> null, numpy
    -> Python), so an unserialisable object leaves no temp file and the old
    file intact.

    Raises:
      TypeError: naming the path and the unserialisable value.
    """
    try:
        text = dumps(obj, indent=2, where="value")
    except TypeError as e:
        raise TypeError("cannot write %s: %s" % (path, e)) from None
    atomic_write_text(path, text + "\n")


# ---------------------------------------------------------------------------
# trials.jsonl
# ---------------------------------------------------------------------------

def _parse_lines(path: str, data: bytes):
    """Parses JSONL bytes.

    Returns:
      (records, valid_length): the records of all complete lines and the byte
      length of the valid prefix (everything but a torn last line).

    Raises:
      ValueError: a complete line that is not a JSON object, naming path and line.
    """
    records: List[Dict] = []
    pos, lineno = 0, 0
    while pos < len(data):
        lineno += 1
        end = data.find(b"\n", pos)
        last = end < 0 or data[end + 1:].strip(b"\0 \t\r\n") == b""
        raw = data[pos:] if end < 0 else data[pos:end]
        nxt = len(data) if end < 0 else end + 1
        if not raw.strip():
            pos = nxt
            continue
        problem = None
        try:
            obj = json.loads(raw.decode("utf-8"))
            if not isinstance(obj, dict):
                problem = "a %s, not a JSON object" % type(obj).__name__
        except (UnicodeDecodeError, json.JSONDecodeError) as e:
            problem = "not valid JSON (%s)" % (e.msg if hasattr(e, "msg") else e.reason)
        if problem is not None:
            if end < 0 or (last and b"\0" in raw):
                # Torn by a kill (no newline yet) or zero-filled by a crash:
                # drop this last line.
                return records, pos
            raise ValueError("%s line %d is %s; the file is damaged before its end: fix or "
                             "delete that line" % (path, lineno, problem))
        records.append(obj)
        pos = nxt
    return records, len(data)


def read_trials(path: str) -> List[Dict]:
    """All records of a trials.jsonl file, ignoring a torn last line; [] if absent.

    Raises:
      ValueError: a damaged line before the last one, naming file and line.
    """
    try:
        with open(path, "rb") as f:
            data = f.read()
    except FileNotFoundError:
        return []
    return _parse_lines(path, data)[0]


class TrialLog:
    """Append-only trials.jsonl; each ``append`` is one flushed and fsync'ed line.

    Opening repairs a torn last line left by a kill: an incomplete final line
    is truncated away (a complete final object missing only its newline gets
    one), so the file stays valid JSONL. ``records`` holds what was read at
    opening plus what was appended since. Thread-safe.

    Raises (constructor):
      ValueError: the file is damaged before its last line.
    """

    def __init__(self, path: str):
        self.path = path
        folder = os.path.dirname(os.path.abspath(path))
        os.makedirs(folder, exist_ok=True)
        self._lock = threading.Lock()
        self._fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            with open(path, "rb") as f:
                data = f.read()
            self.records, valid = _parse_lines(path, data)
            if valid < len(data):
                os.ftruncate(self._fd, valid)
            elif data and not data.endswith(b"\n"):
                os.lseek(self._fd, 0, os.SEEK_END)
                self._write_all(b"\n")
            os.fsync(self._fd)
        except BaseException:
            os.close(self._fd)
            self._fd = None  # else __del__ would close whatever file reuses the number
            raise
        os.close(self._fd)
        self._fd = None
        self._fd = os.open(path, os.O_WRONLY | os.O_APPEND)
        self._indices: Set[int] = {r["index"] for r in self.records
                                   if isinstance(r.get("index"), int)}

    read_all = staticmethod(read_trials)

    def _write_all(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            n = os.write(self._fd, view)
            view = view[n:]

    def append(self, record: Dict) -> Dict:
        """Appends one record as a JSON line, flushed and fsync'ed before returning.

        Returns:
          The record as written (JSON-safe copy).

        Raises:
          TypeError: the record has no JSON form.
          ValueError: the log is closed, or a record with the same ``index``
            was already written.
        """
        clean = to_jsonable(record, "record")
        line = (json.dumps(clean, allow_nan=False) + "\n").encode("utf-8")
        with self._lock:
            if self._fd is None:
                raise ValueError("%s is closed" % self.path)
            index = clean.get("index")
            if isinstance(index, int):
                if index in self._indices:
                    raise ValueError("%s already has a record with index %d"
                                     % (self.path, index))
                self._indices.add(index)
            self._write_all(line)
            os.fsync(self._fd)
            self.records.append(clean)
        return clean

    def close(self) -> None:
        with self._lock:
            if self._fd is not None:
                os.close(self._fd)
                self._fd = None

    def __enter__(self) -> "TrialLog":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __del__(self):
        fd = getattr(self, "_fd", None)
        if fd is not None:
            try:
                os.close(fd)
            except OSError:
                pass


@dataclasses.dataclass
class TrialRecord:
    """One finished evaluation: a line of trials.jsonl (the one list of record fields).

    Attributes:
      step: controller step (batch) that sampled the candidate, >= 0.
      index: evaluation index, 0-based and unique in a run.
      arch: the candidate's ``to_dict()``.
      arch_hash: the candidate's ``hash()``.
      metrics: metric name -> value (accuracy, params, flops, latency_ms, ...).
      reward: the critic's reward (None for failed).
      feasible: whether the candidate is within all bounds.
      status: one of ``STATUSES``.
      reason: why it failed / was infeasible / which index it duplicates.
      worker, device: where it ran.
      seconds: wall time of the evaluation (its simulated cost in a --benchmark run).
      time: unix time it finished.
      rung: with an epoch-budget scheduler, ``{"bracket", "rung", "epochs",
        "continues"}`` (``continues``: the index whose saved weights it
        continued from, or None); None (not written) without one.
    """
    step: int
    index: int
    arch: Dict[str, Any]
    arch_hash: str
    metrics: Dict[str, Any]
    reward: Optional[float]
    feasible: bool
    status: str
    reason: str
    worker: Any
    device: str
    seconds: Optional[float]
    time: float
    rung: Optional[Dict[str, Any]] = None

    def __post_init__(self):
        if self.status not in STATUSES:
            raise ValueError("record status %r is not one of %s"
                             % (self.status, ", ".join(STATUSES)))
        for name in ("index", "step"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 0:
                raise ValueError("record %s must be an integer >= 0, got %r" % (name, v))
        if not isinstance(self.arch_hash, str) or not self.arch_hash:
            raise ValueError("record index %d needs an arch_hash string, got %r"
                             % (self.index, self.arch_hash))
        if not isinstance(self.metrics, dict):
            raise ValueError("record metrics must be a dict, got %s"
                             % type(self.metrics).__name__)
        self.feasible = bool(self.feasible)

    def to_dict(self) -> Dict[str, Any]:
        """The JSON-safe dict written to trials.jsonl (fields in declaration order; no
        ``rung`` without a scheduler)."""
        return to_jsonable({f.name: getattr(self, f.name) for f in dataclasses.fields(self)
                            if f.name not in OPTIONAL_FIELDS or getattr(self, f.name) is not None},
                           "record")

    @classmethod
    def from_dict(cls, d: Dict[str, Any]) -> "TrialRecord":
        """A record from a trials.jsonl line; ValueError naming a missing field."""
        names = [f.name for f in dataclasses.fields(cls)]
        missing = [n for n in names if n not in d and n not in OPTIONAL_FIELDS]
        if missing:
            raise ValueError("trial record %r lacks %s" % (d.get("index"), ", ".join(missing)))
        return cls(**{n: d[n] for n in names if n in d})


def make_record(*, step: int, index: int, arch: Any, arch_hash: Optional[str] = None,
                metrics: Optional[Dict[str, Any]] = None, reward: Optional[float] = None,
                feasible: bool = False, status: str = "ok", reason: str = "",
                worker: Any = None, device: str = "", seconds: Optional[float] = None,
                time: Optional[float] = None) -> Dict:
    """One trial record (``TrialRecord.to_dict()``), validated and JSON-safe.

    Args:
      arch: a candidate (with ``to_dict()`` and ``hash()``) or its ``to_dict()``.
      arch_hash: the candidate's ``hash()``; computed when omitted and arch is
        a candidate.
      metrics: None means {}.
      time: unix time it finished; now when omitted.
      Others: as the ``TrialRecord`` fields.

    Raises:
      ValueError: bad status, index or step, or a missing arch_hash.
      TypeError: a value with no JSON form.
    """
    if hasattr(arch, "to_dict") and callable(arch.to_dict):
        if arch_hash is None and hasattr(arch, "hash"):
            arch_hash = arch.hash()
        arch = arch.to_dict()
    return TrialRecord(
        step=step, index=index, arch=arch, arch_hash=arch_hash,
        metrics={} if metrics is None else metrics, reward=reward, feasible=feasible,
        status=status, reason=reason, worker=worker, device=device, seconds=seconds,
        time=_time.time() if time is None else time).to_dict()


# ---------------------------------------------------------------------------
# Resume
# ---------------------------------------------------------------------------

class RunState:
    """What a resumed search needs, built from trial records (in file order).

    Attributes:
      records: the records, in order.
      finished: set of finished evaluation indices.
      by_hash: arch_hash -> first finished record of that architecture that
        is not itself a 'duplicate' (for reusing results of duplicates).
      best: the best feasible record: highest reward among status 'ok' and
        feasible with a finite reward; ties go to the higher val_accuracy
        (e.g. equal costs under a cost objective), then the smaller index.
        None if there is none.

    Raises (constructor, ``add``):
      ValueError: a record without an integer index, or a repeated index.
    """

    def __init__(self, records: Iterable[Dict] = ()):
        self.records: List[Dict] = []
        self.finished: Set[int] = set()
        self.by_hash: Dict[str, Dict] = {}
        self.best: Optional[Dict] = None
        for r in records:
            self.add(r)

    @classmethod
    def from_file(cls, path: str) -> "RunState":
        return cls(read_trials(path))

    @property
    def num_done(self) -> int:
        """Number of finished evaluations."""
        return len(self.finished)

    def pending(self, total: int) -> List[int]:
        """Indices in ``range(total)`` not finished yet, ascending."""
        return [i for i in range(total) if i not in self.finished]

    def add(self, record: Dict) -> None:
        """Takes one more finished record into account."""
        index = record.get("index")
        if isinstance(index, bool) or not isinstance(index, int):
            raise ValueError("trial record has no integer index: %r" % (record,))
        if index in self.finished:
            raise ValueError("two trial records have index %d" % index)
        self.records.append(record)
        self.finished.add(index)
        h = record.get("arch_hash")
        if h is not None:
            prev = self.by_hash.get(h)
            if prev is None or (prev.get("status") == "duplicate"
                                and record.get("status") != "duplicate"):
                self.by_hash[h] = record
        if _eligible_for_best(record):
            if self.best is None or _best_key(record) > _best_key(self.best):
                self.best = record


def _best_key(record: Dict) -> Tuple[float, float, int]:
    """(reward, val_accuracy or -inf, -index): the larger, the better the record."""
    metrics = record.get("metrics")
    acc = metrics.get("val_accuracy") if isinstance(metrics, dict) else None
    if isinstance(acc, bool) or not isinstance(acc, (int, float)) or not math.isfinite(acc):
        acc = -math.inf
    return record["reward"], acc, -record["index"]


def _eligible_for_best(record: Dict) -> bool:
    r = record.get("reward")
    return (record.get("status") == "ok" and record.get("feasible") is True
            and isinstance(r, (int, float)) and not isinstance(r, bool) and math.isfinite(r))


def write_best(log_dir: str, record: Dict) -> str:
    """Writes ``record`` to ``log_dir/best.json`` atomically; returns the path."""
    path = os.path.join(log_dir, BEST_FILE)
    atomic_write_json(path, record)
    return path


def write_config(log_dir: str, config_dict: Any) -> str:
    """Writes a run's config (dict or object with ``to_dict``) to ``log_dir/config.json``."""
    path = os.path.join(log_dir, CONFIG_FILE)
    atomic_write_json(path, config_dict)
    return path


def _flatten(d: Any, prefix: str, out: Dict[str, Any]) -> Dict[str, Any]:
    if isinstance(d, dict) and d:
        for k, v in d.items():
            _flatten(v, "%s.%s" % (prefix, k) if prefix else k, out)
    else:
        out[prefix] = d
    return out


def _ignored(key: str, ignore: Sequence[str]) -> bool:
    return any(key == p or key.startswith(p + ".") for p in ignore)


def check_resume_config(log_dir: str, config_dict: Any,
                        ignore: Sequence[str] = RESUME_IGNORE) -> None:
    """Checks that a resumed run uses the settings saved in ``log_dir/config.json``.

    Args:
      log_dir: the run's folder.
      config_dict: the new run's config (dict or object with ``to_dict``).
      ignore: dotted setting names (or section prefixes) that may differ
        because they do not change results (budget, resume flag, folder).

    A setting added to the project after the run started (absent from its
    config.json) is accepted at its default (``config.defaults_dict``): new
    settings default to the behaviour before them.

    Raises:
      ValueError: one line naming config.json if it is missing or unreadable,
        or the first differing setting (in sorted order) with both values.
    """
    path = os.path.join(log_dir, CONFIG_FILE)
    try:
        with open(path, encoding="utf-8") as f:
            saved = json.load(f)
    except FileNotFoundError:
        raise ValueError("cannot resume: %s not found; start a new run without resume "
                         "or point log_dir at an existing run" % path) from None
    except (OSError, json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ValueError("cannot resume: %s is unreadable (%s)" % (path, e)) from None
    if not isinstance(saved, dict):
        raise ValueError("cannot resume: %s is not a JSON object" % path)
    old = _flatten(saved, "", {})
    new = _flatten(json.loads(dumps(config_dict, where="config")), "", {})
    defaults = _flatten(json.loads(dumps(_config.defaults_dict(), where="config")), "", {})
    missing = object()

    def show(v: Any) -> str:
        return "(absent)" if v is missing else json.dumps(v)

    for key in sorted(set(old) | set(new)):
        if _ignored(key, ignore):
            continue
        a, b = old.get(key, missing), new.get(key, missing)
        if a is missing and key in defaults and b == defaults[key]:
            continue  # added after the run started, and at its default
        if (a is missing or b is missing or a != b
                or isinstance(a, bool) != isinstance(b, bool)):
            raise ValueError("cannot resume %s: setting %s was %s, now %s; use the saved "
                             "settings or a new log_dir" % (log_dir, key, show(a), show(b)))
