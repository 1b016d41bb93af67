"""NAS-Bench-201 (CIFAR-10) as a yardstick: the shipped table, its search space and a table evaluator.

The table (``autodl_design/tables/nb201/``, see its README.md for the
sources and the paper's protocol) has one row per cell of NAS-Bench-201's
space: a fixed 4-node DAG whose 6 edges i -> j (i < j) each carry one of 5
ops. Edges are numbered in NAS-Bench-201's ``arch_str`` order, ``EDGES``:
(0,1), (0,2), (1,2), (0,3), (1,3), (2,3). A cell's *code* is the base-5
number of its 6 op indices (edge 0 most significant); the loader keeps a
code -> row array so a look-up is one numpy index.

Nothing here is loaded at import; ``load_table`` reads the file when asked.
"""
import csv
import dataclasses
import gzip
import hashlib
import io
import os
import zlib
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np

from autodl_design.config import AgentConfig
from autodl_design.interfaces import Decision

OPS: Tuple[str, ...] = ("none", "skip_connect", "nor_conv_1x1", "nor_conv_3x3", "avg_pool_3x3")
EDGES: Tuple[Tuple[int, int], ...] = ((0, 1), (0, 2), (1, 2), (0, 3), (1, 3), (2, 3))
NUM_CELLS = len(OPS) ** len(EDGES)  # 15,625
TABLE_PATH = os.path.join(os.path.dirname(os.path.abspath(__file__)), "tables", "nb201",
                          "nb201_cifar10.csv.gz")
TABLE_SHA256 = "cdb2b08cf8712a5f1d04ed1c1855f34f9643faaf0e56980ceba9c5e922b6510f"
COLUMNS: Tuple[str, ...] = ("index", "arch_str", "val_acc_12ep", "train_s_per_epoch",
                            "val_eval_s", "val_acc_200ep_seeds", "test_acc_200ep", "params_mb",
                            "latency_ms_raspi4", "latency_ms_eyeriss")
FLOAT_COLUMNS: Tuple[str, ...] = ("val_acc_12ep", "train_s_per_epoch", "val_eval_s",
                                  "test_acc_200ep", "params_mb", "latency_ms_raspi4",
                                  "latency_ms_eyeriss")
LATENCY_DEVICES: Tuple[str, ...] = ("raspi4", "eyeriss")
SEARCH_EPOCHS = 12  # the protocol's reward: validation accuracy after 12 epochs
FINAL_EPOCHS = 200  # the table's other fidelity: validation accuracy after 200 epochs (per seed)
FIDELITIES: Tuple[int, ...] = (SEARCH_EPOCHS, FINAL_EPOCHS)  # epochs the table holds
OPTIMUM_INDEX = 6111
# NAS-Bench-201 Table 5 (CIFAR-10 test accuracy %, mean and std over 500 runs).
PAPER_RESULTS: Dict[str, Tuple[float, float]] = {
    "REA": (93.92, 0.30), "REINFORCE": (93.85, 0.37), "random": (93.70, 0.36),
    "BOHB": (93.61, 0.52)}
PAPER_OPTIMUM = 94.37
_POWERS = len(OPS) ** np.arange(len(EDGES) - 1, -1, -1)  # int64 [6]: 5^5 .. 5^0


def arch_str(ops: Sequence[str]) -> str:
    """NAS-Bench-201's notation of a cell given its 6 ops in ``EDGES`` order."""
    groups, k = [], 0
    for j in range(1, 4):
        groups.append("|" + "|".join("%s~%d" % (ops[k + i], i) for i in range(j)) + "|")
        k += j
    return "+".join(groups)


def parse_arch_str(text: str) -> Tuple[str, ...]:
    """The 6 ops (``EDGES`` order) of an ``arch_str``.

    Raises:
      ValueError: ``text`` is not a cell of this space (names the problem).
    """
    if not isinstance(text, str):
        raise ValueError("arch_str must be a string, got %r" % (text,))
    groups = text.split("+")
    if len(groups) != 3:
        raise ValueError("arch_str %r must have 3 '+'-separated node groups" % text)
    ops = []
    for j, group in enumerate(groups, start=1):
        if not (group.startswith("|") and group.endswith("|")):
            raise ValueError("arch_str %r: group %r must be enclosed in '|'" % (text, group))
        items = group[1:-1].split("|")
        if len(items) != j:
            raise ValueError("arch_str %r: node %d must have %d inputs, got %d"
                             % (text, j, j, len(items)))
        for i, item in enumerate(items):
            op, sep, src = item.partition("~")
            if not sep or src != str(i):
                raise ValueError("arch_str %r: %r must be 'op~%d'" % (text, item, i))
            if op not in OPS:
                raise ValueError("arch_str %r: unknown op %r (ops: %s)"
                                 % (text, op, ", ".join(OPS)))
            ops.append(op)
    return tuple(ops)


def codes_of_tokens(tokens: np.ndarray) -> np.ndarray:
    """int64 [...] base-5 codes of op-index vectors int [..., 6]."""
    return np.asarray(tokens, np.int64) @ _POWERS


def tokens_of_codes(codes: np.ndarray) -> np.ndarray:
    """int32 [..., 6] op indices of base-5 codes int [...] (inverse of ``codes_of_tokens``)."""
    codes = np.asarray(codes, np.int64)
    return ((codes[..., None] // _POWERS) % len(OPS)).astype(np.int32)


# --------------------------------------------------------------------------
# The table
# --------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True, eq=False)
class NB201Table:
    """The NAS-Bench-201 CIFAR-10 table, one entry per row (NAS-Bench-201 index order).

    Attributes:
      path: the file it was read from.
      sha256: hex SHA-256 of that file.
      arch_strs: str [R], each row's ``arch_str``.
      codes: int64 [R], each row's base-5 code (``codes_of_tokens``).
      row_of_code: int64 [15625], the row of each code (a bijection).
      columns: column name -> float64 [R] for ``FLOAT_COLUMNS``, ``index`` and
        ``val_acc_200ep`` (the mean of ``val_acc_200ep_seeds``).
    """
    path: str
    sha256: str
    arch_strs: Tuple[str, ...]
    codes: np.ndarray
    row_of_code: np.ndarray
    columns: Dict[str, np.ndarray]

    def __len__(self) -> int:
        return len(self.arch_strs)

    def column(self, name: str) -> np.ndarray:
        """float64 [R] values of a numeric column (``index`` included)."""
        if name not in self.columns:
            raise ValueError("no numeric column %r in %s (columns: %s)"
                             % (name, self.path, ", ".join(sorted(self.columns))))
        return self.columns[name]

    @property
    def cost_s(self) -> np.ndarray:
        """float64 [R]: simulated seconds of one search evaluation, ``12 * epoch + eval``."""
        return self.cost(SEARCH_EPOCHS)

    def val_acc(self, epochs: int) -> np.ndarray:
        """float64 [R] validation accuracy (%) after ``epochs`` (one of ``FIDELITIES``).

        12: ``val_acc_12ep``; 200: the mean of ``val_acc_200ep_seeds``.
        """
        _check_fidelity(epochs)
        return self.columns["val_acc_12ep" if epochs == SEARCH_EPOCHS else "val_acc_200ep"]

    def cost(self, epochs: int, resumed_at: int = 0) -> np.ndarray:
        """float64 [R] simulated seconds of training epochs ``resumed_at`` .. ``epochs``, then
        validating: ``(epochs - resumed_at) * train_s_per_epoch + val_eval_s``."""
        _check_fidelity(epochs)
        return ((epochs - resumed_at) * self.columns["train_s_per_epoch"]
                + self.columns["val_eval_s"])

    def rows(self, tokens: np.ndarray) -> np.ndarray:
        """int64 [...] table rows of op-index vectors int [..., 6]."""
        return self.row_of_code[codes_of_tokens(tokens)]

    def latency_ms(self, device: str) -> np.ndarray:
        """float64 [R] inference latency on ``device`` (one of ``LATENCY_DEVICES``)."""
        if device not in LATENCY_DEVICES:
            raise ValueError("unknown latency device %r: use %s"
                             % (device, " or ".join(LATENCY_DEVICES)))
        return self.columns["latency_ms_" + device]

    def best_test(self, max_latency_ms: float = 0.0, device: str = "raspi4") -> Tuple[int, float]:
        """(row, test_acc_200ep) of the best cell within a latency bound (0 = no bound)."""
        test = self.columns["test_acc_200ep"]
        ok = np.ones(len(self), bool) if max_latency_ms <= 0 else (
            self.latency_ms(device) <= max_latency_ms)
        if not ok.any():
            raise ValueError("no cell of %s runs within %g ms on %s"
                             % (self.path, max_latency_ms, device))
        row = int(np.flatnonzero(ok)[np.argmax(test[ok])])
        return row, float(test[row])


def _check_fidelity(epochs: int) -> None:
    """ValueError unless the table holds figures after ``epochs`` (``FIDELITIES``)."""
    if epochs not in FIDELITIES:
        raise ValueError("the NAS-Bench-201 table holds figures after %s epochs, not %r"
                         % (" and ".join(map(str, FIDELITIES)), epochs))


def _seeds_mean(text: str) -> float:
    """The mean of ';'-separated numbers (``val_acc_200ep_seeds``); ValueError if not that."""
    values = [float(v) for v in text.split(";")]
    if not all(np.isfinite(values)):
        raise ValueError(text)
    return float(np.mean(values))


def _bad(path: str, problem: str) -> ValueError:
    return ValueError("%s: not the NAS-Bench-201 CIFAR-10 table: %s" % (path, problem))


def load_table(path: Optional[str] = None, expected_sha256: Optional[str] = None) -> NB201Table:
    """Reads and checks a NAS-Bench-201 table (gzipped CSV with ``COLUMNS``).

    Args:
      path: the ``.csv.gz`` file; None reads the shipped copy (``TABLE_PATH``)
        and then checks it against ``TABLE_SHA256``.
      expected_sha256: hex SHA-256 the file must have (None: the shipped
        copy's when ``path`` is None, else no checksum check).

    Returns:
      The table, its rows in file order.

    Raises:
      ValueError: one line naming the file and the problem (missing or
        unreadable file, not gzip, checksum, columns, row count, a bad
        value, a cell outside the space or repeated).
    """
    if path is None:
        path = TABLE_PATH
        if expected_sha256 is None:
            expected_sha256 = TABLE_SHA256
    try:
        with open(path, "rb") as f:
            raw = f.read()
    except OSError as e:
        raise _bad(path, "cannot read it (%s)" % e.strerror) from None
    digest = hashlib.sha256(raw).hexdigest()
    if expected_sha256 is not None and digest != expected_sha256:
        raise _bad(path, "SHA-256 %s... differs from the expected %s... (damaged or replaced)"
                   % (digest[:12], expected_sha256[:12]))
    try:
        text = gzip.decompress(raw).decode("utf-8")
    except (OSError, EOFError, zlib.error) as e:
        raise _bad(path, "not a complete gzip file (%s)" % e) from None
    except UnicodeDecodeError:
        raise _bad(path, "not UTF-8 text") from None
    try:
        lines = list(csv.reader(io.StringIO(text)))
    except csv.Error as e:
        raise _bad(path, "not CSV (%s)" % e) from None
    if not lines or tuple(lines[0]) != COLUMNS:
        header = lines[0] if lines else []
        missing = [c for c in COLUMNS if c not in header]
        raise _bad(path, "columns %s, expected %s%s" % (
            ",".join(header)[:120], ",".join(COLUMNS),
            " (missing %s)" % ", ".join(missing) if missing else ""))
    body = lines[1:]
    if len(body) != NUM_CELLS:
        raise _bad(path, "%d rows, expected %d (truncated?)" % (len(body), NUM_CELLS))
    col = {name: k for k, name in enumerate(COLUMNS)}
    values = {name: np.empty(NUM_CELLS, np.float64) for name in FLOAT_COLUMNS + ("index",)}
    seeds_200 = np.empty(NUM_CELLS, np.float64)
    arch_strs: List[str] = []
    codes = np.empty(NUM_CELLS, np.int64)
    op_index = {op: k for k, op in enumerate(OPS)}
    for r, row in enumerate(body):
        if len(row) != len(COLUMNS):
            raise _bad(path, "row %d has %d fields, expected %d" % (r + 1, len(row), len(COLUMNS)))
        for name, v in values.items():
            try:
                v[r] = float(row[col[name]])
            except ValueError:
                raise _bad(path, "row %d: %s is %r, not a number"
                           % (r + 1, name, row[col[name]])) from None
            if not np.isfinite(v[r]):
                raise _bad(path, "row %d: %s is %r" % (r + 1, name, row[col[name]]))
        try:
            seeds_200[r] = _seeds_mean(row[col["val_acc_200ep_seeds"]])
        except ValueError:
            raise _bad(path, "row %d: val_acc_200ep_seeds is %r, not ';'-separated numbers"
                       % (r + 1, row[col["val_acc_200ep_seeds"]])) from None
        try:
            ops = parse_arch_str(row[col["arch_str"]])
        except ValueError as e:
            raise _bad(path, "row %d: %s" % (r + 1, e)) from None
        arch_strs.append(row[col["arch_str"]])
        codes[r] = codes_of_tokens([op_index[op] for op in ops])
    if not np.array_equal(values["index"], np.arange(NUM_CELLS)):
        raise _bad(path, "the index column is not 0..%d in order" % (NUM_CELLS - 1))
    row_of_code = np.full(NUM_CELLS, -1, np.int64)
    row_of_code[codes] = np.arange(NUM_CELLS)
    if (row_of_code < 0).any():
        code = int(np.flatnonzero(row_of_code < 0)[0])
        raise _bad(path, "cell %s is missing (some cell is listed twice)"
                   % arch_str([OPS[k] for k in tokens_of_codes(code)]))
    values["val_acc_200ep"] = seeds_200
    return NB201Table(path=os.path.abspath(path), sha256=digest, arch_strs=tuple(arch_strs),
                      codes=codes, row_of_code=row_of_code, columns=values)


# --------------------------------------------------------------------------
# The search space
# --------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class NB201Cell:
    """A NAS-Bench-201 cell: its 6 ops in ``EDGES`` order (a ``Candidate``).

    Every cell is its own candidate (NAS-Bench-201's protocol counts each
    index as an architecture), so ``hash`` is based on the exact ``arch_str``.
    """
    ops: Tuple[str, ...]

    def __post_init__(self):
        if len(self.ops) != len(EDGES) or any(op not in OPS for op in self.ops):
            raise ValueError("a NAS-Bench-201 cell has %d ops from %s, got %r"
                             % (len(EDGES), ", ".join(OPS), self.ops))

    @property
    def arch_str(self) -> str:
        return arch_str(self.ops)

    @property
    def tokens(self) -> np.ndarray:
        """int32 [6] op indices."""
        return np.array([OPS.index(op) for op in self.ops], np.int32)

    @property
    def code(self) -> int:
        """The base-5 code (``codes_of_tokens``)."""
        return int(codes_of_tokens(self.tokens))

    def hash(self) -> str:
        return hashlib.sha256(self.arch_str.encode()).hexdigest()[:32]

    def to_dict(self) -> Dict:
        return {"space": NB201Space.name, "arch_str": self.arch_str}

    def describe(self) -> str:
        lines = ["NAS-Bench-201 cell %s" % self.arch_str]
        lines += ["  node %d <- %s" % (j, ", ".join(
            "%s(%d)" % (self.ops[k], i) for k, (i, jj) in enumerate(EDGES) if jj == j))
            for j in range(1, 4)]
        return "\n".join(lines)


class NB201Space:
    """NAS-Bench-201's space: one op of ``OPS`` on each of the 6 edges of a fixed DAG.

    Controller vectors: ``tokens`` int32 [6] (op index per edge, ``EDGES``
    order) and an empty ``adjvec`` int32 [0] (the topology is fixed).
    """

    name = "nb201"

    def decisions(self) -> List[Decision]:
        return [Decision("edge.%d.%d" % e, OPS) for e in EDGES]

    def sample(self, rng: np.random.Generator) -> NB201Cell:
        """Uniform over the 15,625 cells (one ``rng.integers`` call)."""
        return self.cell_of_tokens(rng.integers(0, len(OPS), len(EDGES)))

    def mutate(self, cell: NB201Cell, rng: np.random.Generator) -> NB201Cell:
        """One edge (uniform) gets another op (uniform over the other 4)."""
        edge = int(rng.integers(len(EDGES)))
        choices = [op for op in OPS if op != cell.ops[edge]]
        ops = list(cell.ops)
        ops[edge] = choices[int(rng.integers(len(choices)))]
        return NB201Cell(tuple(ops))

    def encode(self, cell: NB201Cell) -> Tuple[np.ndarray, np.ndarray]:
        return cell.tokens, np.zeros(0, np.int32)

    def decode(self, tokens: np.ndarray, adjvec: np.ndarray) -> NB201Cell:
        tokens, adjvec = np.asarray(tokens), np.asarray(adjvec)
        if adjvec.size:
            raise ValueError("NAS-Bench-201 has no edge decisions; got adjvec %s"
                             % adjvec.tolist())
        return self.cell_of_tokens(tokens)

    def cell_of_tokens(self, tokens: np.ndarray) -> NB201Cell:
        """The cell of op indices int [6]; ValueError outside the space."""
        tokens = np.asarray(tokens)
        if tokens.shape != (len(EDGES),) or tokens.min() < 0 or tokens.max() >= len(OPS):
            raise ValueError("NAS-Bench-201 tokens must be %d op indices in [0, %d), got %s"
                             % (len(EDGES), len(OPS), tokens.tolist()))
        return NB201Cell(tuple(OPS[int(k)] for k in tokens))

    def from_dict(self, d: Dict) -> NB201Cell:
        if not isinstance(d, dict) or "arch_str" not in d:
            raise ValueError("a NAS-Bench-201 cell is a dict with 'arch_str', got %r" % (d,))
        if d.get("space", self.name) != self.name:
            raise ValueError("candidate of space %r, not %r" % (d["space"], self.name))
        return NB201Cell(parse_arch_str(d["arch_str"]))

    def from_arch_str(self, text: str) -> NB201Cell:
        return NB201Cell(parse_arch_str(text))


# --------------------------------------------------------------------------
# The evaluator
# --------------------------------------------------------------------------
class TableEvaluator:
    """Evaluates NAS-Bench-201 cells by looking them up in the table (an ``Evaluator``).

    Args:
      table_path: the table file; "" or None = the shipped copy (checksummed).
      latency_device: whose latency is reported as ``latency_ms``
        (``raspi4`` or ``eyeriss``).
    """

    def __init__(self, table_path: Optional[str] = None, latency_device: str = "raspi4"):
        if latency_device not in LATENCY_DEVICES:
            raise ValueError("unknown latency device %r: use %s"
                             % (latency_device, " or ".join(LATENCY_DEVICES)))
        self.table_path = table_path if table_path else None
        self.latency_device = latency_device
        self.space = NB201Space()
        self.table: Optional[NB201Table] = None

    def setup(self, device: str, threads: int) -> None:
        """Loads the table (``device`` and ``threads`` are not needed for a look-up)."""
        self.table = load_table(self.table_path)

    def evaluate(self, candidate: Dict, index: int, seed: int, options: Dict) -> Dict:
        """The table's figures of one cell (``seed`` is not used).

        Args:
          candidate: the cell's dict (``NB201Cell.to_dict``).
          options: {} (the protocol's 12-epoch evaluation) or an epoch-budget
            scheduler's ``{"epochs", "save_state", "continue_from"}``: the
            figures after ``epochs`` (one of ``FIDELITIES``), and with a
            non-empty ``continue_from`` the cost of the epochs beyond the
            fidelity below only (a promoted cell continues its training).
            No state file is read or written.

        Returns:
          dict: ``status`` 'ok', ``val_accuracy`` (val_acc_12ep / 100; at 200
          epochs the mean of val_acc_200ep_seeds / 100), ``test_accuracy``
          (test_acc_200ep / 100), ``params`` (count), ``latency_ms`` (on
          ``latency_device``), ``simulated_seconds`` (the epochs trained +
          validation), ``nb201_index``; with ``options["epochs"]`` also
          ``epochs`` and ``resumed_at_epoch`` (0, or the fidelity continued
          from), like the trainer's metrics.

        Raises:
          ValueError: ``options["epochs"]`` is not one of ``FIDELITIES``, or
            the lowest fidelity continues from a state (a caller's bug).
        """
        if self.table is None:
            raise RuntimeError("TableEvaluator.setup must run before evaluate")
        cell = self.space.from_dict(candidate)
        row = int(self.table.rows(cell.tokens))
        c = self.table.columns
        epochs = int(options["epochs"]) if "epochs" in options else SEARCH_EPOCHS
        resumed = _resumed_at(epochs, bool(options.get("continue_from", "")))
        out = {"status": "ok", "val_accuracy": float(self.table.val_acc(epochs)[row]) / 100.0,
               "test_accuracy": float(c["test_acc_200ep"][row]) / 100.0,
               "params": float(c["params_mb"][row]) * 1e6,
               "latency_ms": float(self.table.latency_ms(self.latency_device)[row]),
               "simulated_seconds": float(self.table.cost(epochs, resumed)[row]),
               "nb201_index": row}
        if "epochs" in options:
            out.update(epochs=epochs, resumed_at_epoch=resumed)
        return out


def _resumed_at(epochs: int, continued: bool) -> int:
    """The epoch a cell trained for ``epochs`` resumes at: 0, or the fidelity below if continued.

    Raises:
      ValueError: ``epochs`` is not one of ``FIDELITIES``, or is the lowest and continued.
    """
    _check_fidelity(epochs)
    k = FIDELITIES.index(epochs)
    if not continued:
        return 0
    if k == 0:
        raise ValueError("a NAS-Bench-201 cell cannot continue to %d epochs, the table's "
                         "lowest fidelity" % epochs)
    return FIDELITIES[k - 1]


# --------------------------------------------------------------------------
# The paper's search protocol
# --------------------------------------------------------------------------
@dataclasses.dataclass
class ProtocolResult:
    """One search run under NAS-Bench-201's protocol.

    Attributes:
      best_row: table row of the best-reward feasible cell evaluated (-1: none).
      test_acc: its ``test_acc_200ep`` (%), NaN when there is none.
      val_acc: its ``val_acc_12ep`` (%), NaN when there is none.
      evaluations: cells evaluated (each new feasible cell once).
      proposals: cells proposed, repeated and infeasible ones included.
      spent_s: simulated seconds spent (<= budget).
      curve_t: float64 [E] simulated time after each evaluation.
      curve_test: float64 [E] test accuracy of the best cell at that time.
      stalled: True when ``max_idle_proposals`` free proposals in a row
        ended the run before the budget.
    """
    best_row: int
    test_acc: float
    val_acc: float
    evaluations: int
    proposals: int
    spent_s: float
    curve_t: np.ndarray
    curve_test: np.ndarray
    stalled: bool

    @property
    def feasible(self) -> bool:
        return self.best_row >= 0


INFEASIBLE_RULES: Tuple[str, ...] = ("constant", "batch_min", "violation", "soft")


def _infeasible_rewards(rewards: List[Optional[float]], over: List[float], rule: str,
                        infeasible_reward: Optional[float]) -> List[Optional[float]]:
    """The round's rewards with those of cells over the bound (``over[k]`` > 0) filled in.

    ``over[k]`` is ``latency / bound - 1`` for a cell over the bound, 0 for a
    feasible one (whose reward is already in ``rewards``); see ``run_protocol``.
    """
    if rule == "constant" or infeasible_reward is None:
        return [infeasible_reward if o > 0 else r for r, o in zip(rewards, over)]
    if rule == "violation":
        return [infeasible_reward - o if o > 0 else r for r, o in zip(rewards, over)]
    ok = [r for r, o in zip(rewards, over) if o <= 0]
    low = (min(ok) if ok else infeasible_reward) - 0.01  # batch_min
    return [low if o > 0 else r for r, o in zip(rewards, over)]


def run_protocol(searcher, table: NB201Table, batch_size: int, budget_s: float = 12000.0,
                 max_latency_ms: float = 0.0, latency_device: str = "raspi4",
                 infeasible_reward: Optional[float] = 0.0, max_idle_proposals: int = 300,
                 infeasible_rule: str = "constant", soft_beta: float = -0.07) -> ProtocolResult:
    """Runs one searcher under NAS-Bench-201's protocol (simulated time budget).

    Each round the searcher proposes ``batch_size`` cells; in order, each is:

    * over the latency bound (hard mode; ``max_latency_ms`` > 0): no cost (a
      real search never trains it), never the answer, and a reward by
      ``infeasible_rule``: "constant": ``infeasible_reward`` (None: not
      learned from, like a failed cell); "batch_min": the round's lowest
      feasible reward - 0.01 (``infeasible_reward`` - 0.01 when it has
      none); "violation": ``infeasible_reward - (latency / bound - 1)``;
      "soft" (MnasNet's soft constraint): the cell is trained like a
      feasible one (it costs its time) and its reward is ``val_acc_12ep /
      100 * (latency / bound) ** soft_beta``, but it still is never the
      answer;
    * evaluated before in this run: its reward again, no cost (reuse);
    * new: costs ``12 * train_s_per_epoch + val_eval_s`` simulated seconds
      and returns ``val_acc_12ep / 100``; a cell that would overrun the
      budget ends the run unevaluated.

    Then the searcher observes the round's rewards (all of them, up to the
    cell that ended the run). The answer is the feasible evaluated cell with
    the best reward (the first one on ties), reported by ``test_acc_200ep``.

    Args:
      searcher: a ``Searcher`` over ``NB201Space`` (candidates with ``tokens``).
      table: the table.
      batch_size: cells per ``propose`` call.
      budget_s: simulated seconds (the paper: 12,000).
      max_latency_ms: latency bound on ``latency_device`` (0 = none).
      latency_device: ``raspi4`` or ``eyeriss``.
      infeasible_reward: see ``infeasible_rule``.
      max_idle_proposals: ends a run whose searcher proposed this many
        free (repeated or infeasible) cells in a row; ``stalled`` says it
        happened.
      infeasible_rule: one of ``INFEASIBLE_RULES`` (above).
      soft_beta: the exponent of the "soft" rule.

    Returns:
      A ProtocolResult.
    """
    if infeasible_rule not in INFEASIBLE_RULES:
        raise ValueError("unknown infeasible_rule %r: use %s"
                         % (infeasible_rule, ", ".join(INFEASIBLE_RULES)))
    val = table.columns["val_acc_12ep"]
    test = table.columns["test_acc_200ep"]
    cost = table.cost_s
    over = (np.zeros(len(table)) if max_latency_ms <= 0
            else np.maximum(table.latency_ms(latency_device) / max_latency_ms - 1.0, 0.0))
    soft = infeasible_rule == "soft"
    evaluated = set()
    spent, proposals, idle = 0.0, 0, 0
    best_row, best_val = -1, -np.inf
    curve_t: List[float] = []
    curve_test: List[float] = []
    done = False
    while not done:
        if idle >= max_idle_proposals:
            break
        cands = searcher.propose(batch_size)
        rows = table.rows(np.stack([c.tokens for c in cands]))
        rewards: List[Optional[float]] = []
        for row in rows.tolist():
            proposals += 1
            idle += 1
            if over[row] > 0 and not soft:
                rewards.append(None)
                continue
            if row not in evaluated:
                if spent + cost[row] > budget_s:
                    done = True
                    break
                spent += cost[row]
                idle = 0
                evaluated.add(row)
                if over[row] <= 0 and val[row] > best_val:
                    best_row, best_val = row, val[row]
                curve_t.append(spent)
                curve_test.append(test[best_row] if best_row >= 0 else np.nan)
            rewards.append(val[row] / 100.0 * (1.0 + over[row]) ** (soft_beta if over[row] > 0
                                                                    else 0.0))
        if soft:
            over_round = [0.0] * len(rewards)
        else:
            over_round = over[rows[:len(rewards)]].tolist()
        rewards = _infeasible_rewards(rewards, over_round, infeasible_rule, infeasible_reward)
        if rewards:
            searcher.observe(cands[:len(rewards)], rewards)
    return ProtocolResult(
        best_row=best_row, test_acc=float(test[best_row]) if best_row >= 0 else float("nan"),
        val_acc=float(val[best_row]) if best_row >= 0 else float("nan"),
        evaluations=len(evaluated), proposals=proposals, spent_s=spent,
        curve_t=np.asarray(curve_t), curve_test=np.asarray(curve_test),
        stalled=not done)


# --------------------------------------------------------------------------
# Controller settings for this space
# --------------------------------------------------------------------------
AGENT_FIELDS = tuple(f.name for f in dataclasses.fields(AgentConfig)
                     if f.name not in ("num_nodes", "ops", "advantage", "device"))


@dataclasses.dataclass(frozen=True)
class ControllerSettings:
    """The PARL controller's settings on NAS-Bench-201 (see docs/nb201.md for the tuning).

    Attributes:
      agent: overrides of ``AgentConfig``'s controller fields
        (``AGENT_FIELDS``: hidden_size, num_layers, learning_rate, bl_decay,
        batch_size, temperature, tanh_constant, entropy_weight); the rest
        are AgentConfig's defaults (AutoDL Design's).
      advantage: "baseline" (r - moving average), "normalize" ((r - batch
        mean) / batch std), "rank" (centred ranks in the batch, in [-0.5,
        0.5]) or "quantile" (r's quantile among all rewards of the run - 0.5).
      reward_scale: rewards are multiplied by this before the advantage
        (val accuracy as a fraction; matters for "baseline" only).
      ppo_epochs: gradient steps per batch; more than 1 uses the clipped
        PPO ratio objective against the sampling policy.
      ppo_clip: the PPO clip epsilon.
      unique: resample (up to ``unique_tries`` batches) so a batch holds no
        cell proposed before in this run.
      unique_tries: see ``unique``.
      learn_batch: 0 = one update per proposed batch; n > 0 = an update once
        n learned-from rewards are gathered (``SpaceRLSearcher``).
      skip_infeasible: cells over a hard bound are not learned from (reward
        None, like a failed cell) instead of getting the infeasible reward
        (``run_protocol``'s ``infeasible_reward=None``); not a searcher option.
    """
    agent: Dict[str, Any] = dataclasses.field(default_factory=dict)
    advantage: str = "baseline"
    reward_scale: float = 1.0
    ppo_epochs: int = 1
    ppo_clip: float = 0.2
    unique: bool = False
    unique_tries: int = 20
    learn_batch: int = 0
    skip_infeasible: bool = False

    def __post_init__(self):
        unknown = sorted(set(self.agent) - set(AGENT_FIELDS))
        if unknown:
            raise ValueError("controller settings: %s are not controller fields of AgentConfig "
                             "(%s)" % (", ".join(unknown), ", ".join(AGENT_FIELDS)))

    def agent_config(self) -> AgentConfig:
        """``AgentConfig`` with ``agent`` applied (identity advantage: the searcher makes its own)."""
        return dataclasses.replace(AgentConfig(), advantage="identity", **self.agent)

    @property
    def batch_size(self) -> int:
        return self.agent_config().batch_size

    def replace(self, **overrides) -> "ControllerSettings":
        """A copy with flat overrides: AgentConfig's controller fields go to ``agent``."""
        agent = dict(self.agent)
        agent.update({k: v for k, v in overrides.items() if k in AGENT_FIELDS})
        rest = {k: v for k, v in overrides.items() if k not in AGENT_FIELDS}
        return dataclasses.replace(self, agent=agent, **rest)

    def searcher_options(self) -> Dict[str, Any]:
        """Keyword arguments of ``agent.space_searcher.SpaceRLSearcher`` besides the AgentConfig."""
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)
                if f.name not in ("agent", "skip_infeasible")}

    def flat(self) -> Dict[str, Any]:
        """Every setting in one dict (AgentConfig's controller fields included)."""
        c = self.agent_config()
        out = {k: getattr(c, k) for k in AGENT_FIELDS}
        out.update(self.searcher_options())
        out["skip_infeasible"] = self.skip_infeasible
        return out


# AutoDL Design's defaults (AgentConfig) as the starting point of the tuning.
DEFAULT_CONTROLLER = ControllerSettings()
# The tuned settings (docs/nb201.md).
NB201_CONTROLLER = ControllerSettings(agent={"learning_rate": 0.03}, advantage="rank",
                                      ppo_epochs=8)
# The tuned settings under a hard latency bound (docs/nb201.md, "Constrained levers"): learn
# only from feasible cells, a full batch of them per update, no repeated proposals.
NB201_CONSTRAINED_CONTROLLER = NB201_CONTROLLER.replace(unique=True, learn_batch=10,
                                                        skip_infeasible=True)
