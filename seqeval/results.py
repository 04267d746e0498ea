"""A run directory: its files, their formats (writers and strict readers), and resuming.

    RUN_DIR/config.json         what was run (written once; a resumed run must match it)
    RUN_DIR/evaluations.csv     one row per seed and evaluation, appended and flushed at once
    RUN_DIR/training.csv        mean training metrics per seed and chunk
    RUN_DIR/prequential.csv     losses on each chunk before training on it (sequential mode)
    RUN_DIR/summary.json        status and last scores, replaced atomically after each step
    RUN_DIR/checkpoint/         agent states and keys, and progress.json, after the last step
    RUN_DIR/run.lock            held (flock) by the run using the directory

This module is the one owner of these formats: every file is written here and read back here
(`read_config`, `read_status`, `read_evaluations`, `read_training`, `read_prequential`), and
readers refuse damaged files with a `UserError` naming the file and line. It imports JAX only to
save and load checkpoints. It runs a little over 600 lines because a format's writer and its
strict reader belong side by side; the CSV cells themselves are seqeval.csvfile's.
"""

from __future__ import annotations

import csv
import dataclasses
import datetime
import fcntl
import json
import math
import os
import socket
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from seqeval.csvfile import csv_text
from seqeval.errors import UserError
from seqeval.fileio import write_json_atomic, write_npz_atomic, write_text_atomic

CONFIG = "config.json"
SUMMARY = "summary.json"
EVALUATIONS = "evaluations.csv"
TRAINING = "training.csv"
PREQUENTIAL = "prequential.csv"
LOGS = (EVALUATIONS, TRAINING, PREQUENTIAL)
LOCK = "run.lock"
PHASES = ("offline", "online")
EVALUATION_COLUMNS = (
    "samples", "gradient_steps", "seed", "return", "normalized_score", "wall_time", "phase",
)
TRAINING_KEYS = ("samples", "gradient_steps", "seed", "phase")  # then the agent's metrics
PREQUENTIAL_KEYS = ("samples", "seed", "transitions")  # then METRIC, METRIC_cumulative pairs
CUMULATIVE = "_cumulative"


def _damaged(path: Path, line: int | None, problem: str) -> UserError:
    where = f"'{path}' line {line}" if line is not None else f"'{path}'"
    return UserError(f"{where}: {problem}; the file is damaged: restore it, or delete the run "
                     "directory and run again")


# ---------------------------------------------------------------------------------------------
# CSV logs (written by seqeval.csvfile, the one CSV writer): append-only, strict to read.


class CsvLog:
    """An append-only CSV whose rows reach the disk as soon as they are written.

    Its columns are fixed by the first append (later appends must bring the same ones).
    """

    def __init__(self, path: Path):
        self.path = Path(path)

    def exists(self) -> bool:
        return self.path.is_file()

    def lines(self) -> list[str]:
        """Raw lines, header first (ends kept); [] for a missing file."""
        if not self.exists():
            return []
        with open(self.path, newline="") as handle:  # keep the "\r\n" line ends
            return handle.read().splitlines(keepends=True)

    def header(self) -> list[str] | None:
        lines = self.lines()
        return next(csv.reader(lines[:1]), None) if lines else None

    def count(self) -> int:
        """Data rows, including a partial last line."""
        return max(len(self.lines()) - 1, 0)

    def append(self, columns: Sequence[str], rows: Sequence[dict[str, Any]]) -> None:
        header = self.header()
        if header is not None and header != list(columns):
            raise UserError(f"'{self.path}' has columns {','.join(header)}, this run writes "
                            f"{','.join(columns)}; delete the run directory and run again")
        with open(self.path, "a", newline="") as handle:
            handle.write(csv_text(columns if header is None else None,
                                  ([row.get(c) for c in columns] for row in rows)))
            handle.flush()
            os.fsync(handle.fileno())

    def truncate(self, rows: int) -> None:
        """Keep the header and the first `rows` data rows (atomic); no file when 0."""
        lines = self.lines()
        if rows == 0:
            self.path.unlink(missing_ok=True)
        elif len(lines) > rows + 1:
            write_text_atomic(self.path, "".join(lines[:rows + 1]))


def _table(path: Path, required: Sequence[str]) -> tuple[list[str], list[tuple[int, list[str]]]]:
    """(header, [(line number, fields)]) of a CSV file, checking the shape of every line."""
    with open(path, newline="") as handle:
        lines = list(csv.reader(handle))
    if not lines:
        raise _damaged(path, 1, "the header is missing")
    header = lines[0]
    missing = [c for c in required if c not in header]
    if missing or len(set(header)) != len(header):
        raise _damaged(path, 1, f"the header lacks {','.join(missing)} or repeats a column"
                       if missing else "the header repeats a column")
    rows = []
    for number, fields in enumerate(lines[1:], start=2):
        if len(fields) != len(header):
            raise _damaged(path, number, f"{len(fields)} fields where the header has "
                           f"{len(header)}")
        rows.append((number, fields))
    return header, rows


def _parse(path: Path, line: int, column: str, text: str, kind: Callable, optional: bool):
    if text == "" and optional:
        return None
    try:
        value = kind(text)
    except ValueError:
        expected = "an integer" if kind is int else "a number"
        raise _damaged(path, line, f"{column} '{text}' is not {expected}") from None
    if kind is float and not math.isfinite(value):
        raise _damaged(path, line, f"{column} '{text}' is not finite")
    return value


def _phase(path: Path, line: int, text: str) -> str:
    if text not in PHASES:
        raise _damaged(path, line, f"phase '{text}' is not one of {', '.join(PHASES)}")
    return text


def read_config(run_dir: Path | str) -> dict | None:
    """RUN_DIR/config.json (None without one); a UserError when it is not a JSON object."""
    path = Path(run_dir) / CONFIG
    if not path.is_file():
        return None
    try:
        config = json.loads(path.read_text())
    except (ValueError, UnicodeDecodeError):
        config = None
    if not isinstance(config, dict):
        raise _damaged(path, None, "it is not a JSON object")
    return config


def read_status(run_dir: Path | str) -> str | None:
    """The status summary.json gives the run (running, complete, diverged, ...); None when it
    is missing or unreadable (a run that has not written one yet, or a damaged one)."""
    try:
        summary = json.loads((Path(run_dir) / SUMMARY).read_text())
    except (OSError, ValueError, UnicodeDecodeError):
        return None
    return summary.get("status") if isinstance(summary, dict) else None


def read_evaluations(run_dir: Path | str) -> list[dict[str, Any]]:
    """Evaluation rows of a run with numbers parsed ([] when the run has none yet).

    Keys: samples, gradient_steps, seed (int), return, normalized_score (float, None when the
    run has no reference scores or the value was not finite), wall_time (float), phase.
    """
    path = Path(run_dir) / EVALUATIONS
    if not path.is_file():
        return []
    header, rows = _table(path, EVALUATION_COLUMNS)
    if header != list(EVALUATION_COLUMNS):
        raise _damaged(path, 1, f"the header is not {','.join(EVALUATION_COLUMNS)}")
    parsed = []
    for line, fields in rows:
        row = dict(zip(header, fields, strict=True))
        parsed.append({
            "samples": _parse(path, line, "samples", row["samples"], int, False),
            "gradient_steps": _parse(path, line, "gradient_steps", row["gradient_steps"], int,
                                     False),
            "seed": _parse(path, line, "seed", row["seed"], int, False),
            "return": _parse(path, line, "return", row["return"], float, True),
            "normalized_score": _parse(path, line, "normalized_score", row["normalized_score"],
                                       float, True),
            "wall_time": _parse(path, line, "wall_time", row["wall_time"], float, False),
            "phase": _phase(path, line, row["phase"]),
        })
    return parsed


def read_training(run_dir: Path | str) -> list[dict[str, Any]]:
    """Training rows: samples, gradient_steps, seed (int), phase, then each metric's mean over
    the chunk (float; None where it was not finite)."""
    path = Path(run_dir) / TRAINING
    if not path.is_file():
        return []
    header, rows = _table(path, TRAINING_KEYS)
    parsed = []
    for line, fields in rows:
        item: dict[str, Any] = {}
        for column, text in zip(header, fields, strict=True):
            if column == "phase":
                item[column] = _phase(path, line, text)
            elif column in TRAINING_KEYS:
                item[column] = _parse(path, line, column, text, int, False)
            else:
                item[column] = _parse(path, line, column, text, float, True)
        parsed.append(item)
    return parsed


@dataclasses.dataclass(frozen=True)
class PrequentialRow:
    """One seed's losses on one chunk, scored before training on it.

    `losses[m]` is the mean of metric m per transition of the chunk; `cumulative[m]` the sum of
    m over every transition scored so far by this seed, this chunk included (the prequential
    description length when m is a negative log-likelihood). None: not finite.
    """

    samples: int  # transitions in the buffer before the chunk (the chunk's first position)
    seed: int
    transitions: int  # transitions in the chunk
    losses: dict[str, float | None]
    cumulative: dict[str, float | None]


def prequential_columns(metric_names: Sequence[str]) -> list[str]:
    return [*PREQUENTIAL_KEYS, *(c for name in sorted(metric_names)
                                 for c in (name, name + CUMULATIVE))]


def read_prequential(run_dir: Path | str) -> list[PrequentialRow]:
    """Rows of RUN_DIR/prequential.csv in file order ([] without one), checked: each metric has
    its cumulative column, chunks of a seed follow each other, and each cumulative value is the
    previous one plus this chunk's loss times its transitions."""
    path = Path(run_dir) / PREQUENTIAL
    if not path.is_file():
        return []
    header, rows = _table(path, PREQUENTIAL_KEYS)
    names = [c for c in header[len(PREQUENTIAL_KEYS):] if not c.endswith(CUMULATIVE)]
    if header != prequential_columns(names):
        raise _damaged(path, 1, "the header is not samples,seed,transitions then METRIC,"
                       "METRIC_cumulative pairs")
    parsed: list[PrequentialRow] = []
    last: dict[int, PrequentialRow] = {}
    for line, fields in rows:
        row = dict(zip(header, fields, strict=True))
        item = PrequentialRow(
            samples=_parse(path, line, "samples", row["samples"], int, False),
            seed=_parse(path, line, "seed", row["seed"], int, False),
            transitions=_parse(path, line, "transitions", row["transitions"], int, False),
            losses={n: _parse(path, line, n, row[n], float, True) for n in names},
            cumulative={n: _parse(path, line, n + CUMULATIVE, row[n + CUMULATIVE], float, True)
                        for n in names},
        )
        if item.transitions < 1:
            raise _damaged(path, line, f"transitions {item.transitions} is not positive")
        before = last.get(item.seed)
        if before is not None and item.samples != before.samples + before.transitions:
            raise _damaged(path, line, f"seed {item.seed}'s chunk starts at {item.samples}, "
                           f"not where its previous chunk ended "
                           f"({before.samples + before.transitions})")
        for name in names:
            previous = 0.0 if before is None else before.cumulative[name]
            loss, total = item.losses[name], item.cumulative[name]
            if None in (previous, loss, total):
                continue
            expected = previous + loss * item.transitions
            # Each number is stored to 6 significant digits, so the tolerance scales with the
            # terms, not the total: a metric that changes sign (q_value) can sum to near zero.
            scale = abs(previous) + abs(loss * item.transitions) + abs(total)
            if abs(total - expected) > 1e-5 * scale + 1e-9:
                raise _damaged(path, line, f"{name}{CUMULATIVE} {total:g} is not the previous "
                               f"total plus {name} x transitions ({expected:g})")
        last[item.seed] = item
        parsed.append(item)
    return parsed


# ---------------------------------------------------------------------------------------------
# Rows and summaries.


def evaluation_rows(samples: int, gradient_steps: int, seeds: Sequence[int],
                    returns: np.ndarray, scores: np.ndarray | None, wall_time: float,
                    phase: str) -> list[dict[str, Any]]:
    return [
        {"samples": samples, "gradient_steps": gradient_steps, "seed": seed,
         "return": float(returns[i]),
         "normalized_score": None if scores is None else float(scores[i]),
         "wall_time": wall_time, "phase": phase}
        for i, seed in enumerate(seeds)
    ]


def training_columns(metric_names: Sequence[str]) -> list[str]:
    return [*TRAINING_KEYS, *sorted(metric_names)]


def training_rows(samples: Sequence[int], gradient_steps: Sequence[int], seeds: Sequence[int],
                  phase: str, metrics: dict[str, np.ndarray]) -> list[dict[str, Any]]:
    """One row per member: its samples, steps, seed and mean metrics over the chunk."""
    return [
        {"samples": int(samples[i]), "gradient_steps": int(gradient_steps[i]), "seed": seed,
         "phase": phase, **{k: float(np.asarray(v)[i]) for k, v in metrics.items()}}
        for i, seed in enumerate(seeds)
    ]


def prequential_rows(sums: dict[str, np.ndarray], seeds: Sequence[int], start_size: int,
                     transitions: int, totals: dict[str, dict[str, float]]
                     ) -> list[dict[str, Any]]:
    """Rows of one scored chunk; adds the chunk's sums to `totals` (seed -> metric -> sum,
    kept in the checkpoint's progress at full precision)."""
    rows = []
    for i, seed in enumerate(seeds):
        seed_totals = totals.setdefault(str(seed), {})
        row: dict[str, Any] = {"samples": start_size, "seed": seed, "transitions": transitions}
        for name, values in sums.items():
            total = float(np.asarray(values)[i])
            seed_totals[name] = seed_totals.get(name, 0.0) + total
            row[name] = total / transitions
            row[name + CUMULATIVE] = seed_totals[name]
        rows.append(row)
    return rows


@dataclasses.dataclass
class Progress:
    """Where a run stands at its last checkpoint (saved as checkpoint/progress.json)."""

    segment: int = 0  # steps of the run finished (the index of the next one)
    samples: int = 0  # x value of the last evaluation (T0 before the first)
    gradient_steps: int = 0  # per member, both phases (retrain: of the longest budget)
    online_count: int = 0  # environment transitions in each member's online buffer
    wall_time: float = 0.0  # seconds, over every session of the run
    train_time: float = 0.0  # compiled training, prequential scoring included
    prequential_time: float = 0.0
    log_rows: dict[str, int] = dataclasses.field(default_factory=dict)  # file -> data rows
    prequential_totals: dict[str, dict[str, float]] = dataclasses.field(
        default_factory=dict)  # seed -> metric -> sum over the scored transitions
    last_returns: list[float] | None = None  # each member's mean return, last evaluation
    last_scores: list[float] | None = None  # the same, normalized (None without references)

    @classmethod
    def from_json(cls, payload: Any, path: Path) -> Progress:
        names = {f.name for f in dataclasses.fields(cls)}
        if not isinstance(payload, dict) or set(payload) != names | {"arrays"}:
            raise _damaged(path, None, "it does not hold this version's progress fields")
        try:
            progress = cls(**{k: v for k, v in payload.items() if k != "arrays"})
            progress.segment, progress.samples = int(progress.segment), int(progress.samples)
            if not all(isinstance(v, int) for v in progress.log_rows.values()):
                raise TypeError
        except (TypeError, ValueError, AttributeError):
            raise _damaged(path, None, "a progress field has the wrong type") from None
        return progress


def sequential_summary(progress: Progress, seeds: Sequence[int], status: str) -> dict[str, Any]:
    """summary.json of a sequential or full run (with its online phase)."""
    train_time = max(progress.train_time, 1e-9)
    summary: dict[str, Any] = {
        "status": status,
        "samples": progress.samples,
        "gradient_steps": progress.gradient_steps,
        "wall_time": progress.wall_time,
        "train_time": progress.train_time,
        "prequential_time": progress.prequential_time,  # included in train_time
        "updates_per_second": progress.gradient_steps * len(seeds) / train_time,
    }
    returns, scores = progress.last_returns, progress.last_scores
    if returns is not None:
        summary["last"] = {
            str(seed): {"return": returns[i],
                        "normalized_score": None if scores is None else scores[i]}
            for i, seed in enumerate(seeds)
        }
        summary["last_mean_normalized_score"] = None if scores is None \
            else float(np.mean(scores))
        summary["last_mean_return"] = float(np.mean(returns))
    return summary


def retrain_summary(progress: Progress, sizes: Sequence[int], budgets: Sequence[int],
                    seeds: Sequence[int], dataset_size: int, status: str,
                    computed_updates: int) -> dict[str, Any]:
    """summary.json of a retrain run; the last scores are those of the largest size.
    `computed_updates`: per seed, what the compiled programs compute (seqeval.retrain)."""
    train_time = max(progress.train_time, 1e-9)
    summary: dict[str, Any] = {
        "status": status,
        "mode": "retrain",
        "sizes": list(sizes),
        "budgets": list(budgets),
        "wall_time": progress.wall_time,
        "train_time": progress.train_time,
        # useful updates (each member's own budget) and what the programs computed
        "updates_per_second": float(np.sum(budgets)) * len(seeds) / train_time,
        "vmapped_updates_per_second": computed_updates * len(seeds) / train_time,
        "samples": dataset_size,
        "gradient_steps": progress.gradient_steps,
    }
    if progress.last_returns is not None:
        largest = slice(-len(seeds), None)
        summary["last_mean_return"] = float(np.mean(progress.last_returns[largest]))
        summary["last_mean_normalized_score"] = None if progress.last_scores is None \
            else float(np.mean(progress.last_scores[largest]))
    return summary


# ---------------------------------------------------------------------------------------------
# The directory.


def check_out_path(path: Path | str) -> None:
    """Refuse a run directory that can never hold a run (a file, a folder of other files, a
    place that cannot be written), before anything is loaded; creates nothing."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise UserError(f"--out '{path}' is a file; pass a directory")
    if path.is_dir() and not (path / CONFIG).exists() and not (
            path / LOCK).exists() and any(path.iterdir()):
        raise UserError(f"'{path}' exists and is not a seqeval run; choose another --out")
    existing = next(p for p in (path, *path.absolute().parents) if p.exists())
    if not existing.is_dir():
        raise UserError(f"cannot create the run directory '{path}' ('{existing}' is a file); "
                        "choose another --out")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise UserError(f"cannot create the run directory '{path}' ('{existing}' is not "
                        "writable); choose another --out or fix its permissions")


class RunDir:
    """Files of one run. Creating it over an existing run of a different config is refused."""

    def __init__(self, path: Path | str):
        self.path = Path(path)
        self.checkpoint_dir = self.path / "checkpoint"
        self._lock_fd: int | None = None

    @property
    def config_path(self) -> Path:
        return self.path / CONFIG

    def log(self, name: str) -> CsvLog:
        return CsvLog(self.path / name)

    # Locking -----------------------------------------------------------------------------

    def lock(self) -> None:
        """Hold the directory for this process (released by `unlock` or when it exits).

        A second run into the same directory would interleave rows; it is refused, naming
        the holder.
        """
        check_out_path(self.path)
        try:
            self.path.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.path / LOCK, os.O_RDWR | os.O_CREAT, 0o666)
        except OSError as error:
            raise UserError(f"cannot create the run directory '{self.path}' "
                            f"({error.strerror}); choose another --out") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(fd, 4096).decode(errors="replace")
            os.close(fd)
            try:
                info = json.loads(holder)
                who = f"pid {info['pid']} on {info['host']}, started {info['started']}"
            except (ValueError, KeyError, TypeError):
                who = "a process that is just starting"
            raise UserError(f"'{self.path}' is in use by another seqeval run ({who}); wait for "
                            "it to finish or stop it, or choose another --out") from None
        holder = json.dumps({"pid": os.getpid(), "host": socket.gethostname(),
                             "started": datetime.datetime.now().isoformat(timespec="seconds")})
        os.ftruncate(fd, 0)
        os.pwrite(fd, holder.encode() + b"\n", 0)
        self._lock_fd = fd

    def unlock(self) -> None:
        if self._lock_fd is not None:
            os.close(self._lock_fd)  # closing the descriptor releases the flock
            self._lock_fd = None

    # Config ------------------------------------------------------------------------------

    def read_config(self) -> dict | None:
        return read_config(self.path)

    def open(self, config: dict) -> bool:
        """Prepare the (locked) directory for `config`; True when it holds a run to resume."""
        existing = self.read_config()
        if existing is not None:
            wanted = json.loads(json.dumps(config))
            code, evaluator = "agent_fingerprint", "evaluator_fingerprint"
            same_otherwise = ({k: v for k, v in existing.items() if k not in (code, evaluator)}
                              == {k: v for k, v in wanted.items() if k not in (code, evaluator)})
            if same_otherwise and existing.get(code) != wanted.get(code):
                raise UserError(
                    f"'{self.path}' was started with other code of agent "
                    f"'{wanted.get('agent_name')}' (fingerprint {existing.get(code)}, now "
                    f"{wanted.get(code)}); resuming would mix two versions: restore that code, or "
                    "start fresh with another --out (or delete the run directory)"
                )
            if same_otherwise and existing.get(evaluator) != wanted.get(evaluator):
                before = (f"fingerprint {existing[evaluator]}" if evaluator in existing
                          else "not recorded by that seqeval")
                raise UserError(
                    f"'{self.path}' was started by other seqeval code (its modules that compute "
                    f"a run's numbers: {before}, now {wanted.get(evaluator)}); resuming would mix "
                    "two versions: restore that seqeval, or start fresh with another --out (or "
                    "delete the run directory)"
                )
            data = "dataset_fingerprint"
            if existing.get("dataset") == wanted.get("dataset") and (
                    existing.get(data) != wanted.get(data)):
                raise UserError(
                    f"the dataset '{wanted.get('dataset')}' changed since '{self.path}' was "
                    f"started on it (content fingerprint {existing.get(data)}, now "
                    f"{wanted.get(data)}); resuming would mix two datasets: restore the data, "
                    "or start fresh with another --out (or delete the run directory)"
                )
            if existing != wanted:
                raise UserError(
                    f"'{self.path}' holds a run with a different config; choose another --out "
                    "or delete it"
                )
            # A process killed inside an atomic write leaves its temporary file behind.
            for folder in (self.path, self.checkpoint_dir):
                for stale in folder.glob(".*.tmp"):
                    stale.unlink(missing_ok=True)
            return True
        if any(p.name != LOCK for p in self.path.iterdir()):
            raise UserError(f"'{self.path}' holds files but no {CONFIG} (not a seqeval run, "
                            "or a damaged one); choose another --out or delete it")
        write_json_atomic(self.config_path, config)
        return False

    def write_summary(self, summary: dict) -> None:
        write_json_atomic(self.path / SUMMARY, summary)

    # Checkpoints -------------------------------------------------------------------------

    def save_checkpoint(self, tree: Any, progress: Progress) -> None:
        """Save a pytree of arrays and the progress it corresponds to, atomically.

        The arrays go first; the progress file, written last, is what makes them current. It
        records how many rows each log had, so a resumed run drops rows written after it.
        """
        import jax

        progress.log_rows = {name: self.log(name).count() for name in LOGS}
        self.checkpoint_dir.mkdir(exist_ok=True)
        leaves = [np.asarray(leaf) for leaf in jax.tree.leaves(tree)]
        arrays_path = self.checkpoint_dir / f"state-{progress.segment:06d}.npz"
        write_npz_atomic(arrays_path, {f"leaf_{i:04d}": v for i, v in enumerate(leaves)})
        write_json_atomic(self.checkpoint_dir / "progress.json",
                      {**dataclasses.asdict(progress), "arrays": arrays_path.name})
        for old in self.checkpoint_dir.glob("state-*.npz"):
            if old.name != arrays_path.name:
                old.unlink(missing_ok=True)

    def load_checkpoint(self, like: Callable[[Progress], Any]) -> tuple[Any, Progress] | None:
        """(tree, progress) of the last checkpoint, or None without one.

        `like(progress)` is a tree of the shapes and dtypes the checkpoint must hold.
        """
        import jax

        progress_path = self.checkpoint_dir / "progress.json"
        if not progress_path.is_file():
            return None
        try:
            payload = json.loads(progress_path.read_text())
        except (ValueError, UnicodeDecodeError):
            raise _damaged(progress_path, None, "it is not JSON") from None
        progress = Progress.from_json(payload, progress_path)
        arrays_path = self.checkpoint_dir / str(payload["arrays"])
        try:
            with np.load(arrays_path) as stored:
                leaves = [stored[f"leaf_{i:04d}"] for i in range(len(stored.files))]
        except Exception as error:  # a missing or damaged archive fails in many ways
            raise _damaged(arrays_path, None, f"it cannot be read ({type(error).__name__})") \
                from None
        like_leaves, treedef = jax.tree.flatten(like(progress))
        if len(leaves) != len(like_leaves) or any(
                np.shape(v) != np.shape(x) for v, x in zip(leaves, like_leaves, strict=True)):
            raise UserError(f"the checkpoint in '{self.checkpoint_dir}' does not fit this agent "
                            "and settings; delete the run directory and run again")
        leaves = [np.asarray(v, dtype=np.asarray(x).dtype)
                  for v, x in zip(leaves, like_leaves, strict=True)]
        return jax.tree.unflatten(treedef, leaves), progress

    def restore_logs(self, progress: Progress | None, rows_before_checkpoint: int) -> None:
        """Make the logs agree with the checkpoint before resuming.

        Rows written after the checkpoint are dropped (the resumed run writes them again,
        identically). Rows the checkpoint accounts for must all be there and readable, else
        the directory is inconsistent and the run stops. Without a checkpoint, at most
        `rows_before_checkpoint` evaluation rows can have been written.
        """
        for name in LOGS:
            log = self.log(name)
            expected = progress.log_rows.get(name, 0) if progress is not None else 0
            found = log.count()
            if progress is None and name == EVALUATIONS and found > rows_before_checkpoint:
                raise UserError(
                    f"'{log.path}' has {found} rows but '{self.checkpoint_dir}' holds no "
                    f"checkpoint; the run directory is inconsistent: delete '{self.path}' and "
                    "run again")
            if found < expected:
                what = "is missing" if not log.exists() else f"has {found} rows"
                raise UserError(
                    f"'{log.path}' {what} but the checkpoint accounts for {expected}; the run "
                    f"directory is inconsistent (a file was deleted or cut): restore it, or "
                    f"delete '{self.path}' and run again")
            log.truncate(expected)
        read_evaluations(self.path), read_training(self.path), read_prequential(self.path)

