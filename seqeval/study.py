"""Studies: a TOML spec of agents x datasets x settings x seeds, expanded into runs and recorded.

A study directory (`seqeval sweep SPEC --out STUDY_DIR`) holds

    STUDY_DIR/study.json       the expanded plan and each run's status (replaced atomically)
    STUDY_DIR/runs.csv         every run with its settings and final score / AUC (for pandas)
    STUDY_DIR/runs/DATASET/AGENT[_KEY=VALUE...]_MODE_HASH/   one ordinary run directory per run
    STUDY_DIR/logs/RUN.log     what each run printed
    STUDY_DIR/compile_cache/   JAX's persistent compilation cache, shared by the study's runs
    STUDY_DIR/study.lock       held by the driver while it runs (one driver per study)

    STUDY_DIR/runs_all.csv     the same for every run the folder holds, with its standing

A run is what made its numbers: its key is a SHA-256 of the agent (its whole config, defaults
included, and a hash of every file of its code: the agent's file and the seqeval and user
modules it imports), seqeval's own modules that compute the numbers (checks.EVALUATOR_MODULES),
the dataset (id and a hash of its content), the mode, the seeds and the whole protocol. The key
is part of the run's directory name, so two runs never share one. A changed spec keeps the runs
it shares with the old one; a run of the spec whose code, defaults or data changed gets a new
key, so a new directory, and the old run is kept and marked stale.
Reports on a study read the runs of its current spec. seqeval.spec expands a spec into the
plan; this module checks it against the data and records it; `seqeval.sweep` runs it on Ray.
docs/sweeps.md is the spec reference.
"""

from __future__ import annotations

import collections
import dataclasses
import fcntl
import hashlib
import json
import os
import re
import socket
import sys
import time
from collections import defaultdict
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from seqeval.csvfile import csv_text
from seqeval.errors import UserError
from seqeval.fileio import write_json_atomic, write_text_atomic
from seqeval.results import read_config, read_evaluations, read_status
from seqeval.spec import PlannedRun, format_value, unique_runs

STUDY_FILE = "study.json"
RUNS_CSV = "runs.csv"
ALL_RUNS_CSV = "runs_all.csv"
LOCK_FILE = "study.lock"
RUNS_DIR = "runs"
LOGS_DIR = "logs"
COMPILE_CACHE_DIR = "compile_cache"
STUDY_FORMAT = 2  # 2: full-length keys of the run's whole identity, and each run's standing
# A run's standing in its study: made by the current spec and code, made by other code, data or
# defaults for a run the spec still holds (superseded), or no longer in the spec.
CURRENT, STALE, OUT_OF_SPEC = "current", "stale", "out_of_spec"
# Names a study directory holds (a folder with only these, but no study.json, is a study whose
# study.json was lost: it is rebuilt from the spec and the run directories).
STUDY_NAMES = ("study.json", "runs.csv", "runs_all.csv", "study.lock", "runs", "logs",
               "compile_cache")


# ---------------------------------------------------------------------------------------------
# The plan, checked against its data.


def _cli_words(message: str) -> str:
    """`seqeval run` flags in an engine message as spec keys: --initial-size -> initial_size."""
    return re.sub(r"--([a-z][a-z0-9-]*)", lambda m: m.group(1).replace("-", "_"), message)


def validate_plan(plan: Sequence[PlannedRun], study_dir: Path) -> list[PlannedRun]:
    """Check every run against its data before anything runs (each dataset is loaded once);
    returns the plan with each run's dataset fingerprint."""
    from seqeval.context import check_against_data
    from seqeval.data import dataset_fingerprint, load_datasets
    from seqeval.settings import check_settings

    loaded, fingerprints = {}, {}
    for dataset, env in dict.fromkeys((run.dataset, run.protocol.get("env")) for run in plan):
        try:
            loaded[dataset, env], blocks = load_datasets(dataset, env)
        except UserError as error:
            raise UserError(f"[study] datasets: {error}") from None
        fingerprints[dataset, env] = dataset_fingerprint(loaded[dataset, env], blocks)
    plan = unique_runs([dataclasses.replace(
        run, dataset_fingerprint=fingerprints[run.dataset, run.protocol.get("env")])
        for run in plan])
    for run in plan:
        settings = run.run_settings(study_dir / RUNS_DIR / run.default_id)
        data = loaded[run.dataset, settings.env]
        try:
            if settings.ref_scores is not None:
                data = data.with_reference_scores(*settings.ref_scores)
            check_settings(settings)
            check_against_data(settings, data)
        except UserError as error:
            raise UserError(f"{run.label} on {run.dataset} ({run.mode}): "
                            f"{_cli_words(str(error))}") from None
    return plan


# ---------------------------------------------------------------------------------------------
# The study directory.


def _record(run: PlannedRun) -> dict[str, Any]:
    """What study.json keeps of a planned run (status fields are added by `merge_plan`)."""
    return {
        "key": run.key,
        "slot": run.slot,
        "label": run.label,
        "agent": run.agent,
        "agent_name": run.agent_name,
        "dataset": run.dataset,
        "dataset_fingerprint": run.dataset_fingerprint,
        "mode": run.mode,
        "seeds": run.num_seeds,
        "protocol": run.protocol,
        "agent_settings": run.agent_settings,
        "full_protocol": run.full_protocol,
        "agent_config": run.agent_config,
        "code": run.code,
    }


@dataclasses.dataclass
class RunStatus:
    """Where a run of a study stands: the one definition of the fields study.json keeps for
    each run beside its plan (`_record`). The driver changes them (seqeval.sweep); what a run
    reports when it ends is `OUTCOME_FIELDS` of them."""

    status: str = "pending"  # pending | running | complete | failed
    reason: str | None = None  # one line: why it failed, was interrupted or re-queued
    attempts: int = 0  # times started (a start on a node that was lost does not count)
    requeued: int = 0  # times put back in the queue because its node was lost
    started: float | None = None  # when it was last submitted (seconds since the epoch)
    finished: float | None = None
    node: dict[str, str] | None = None  # the Ray node it last ran on: {"id", "host"}
    pid: int | None = None  # its worker process
    wall_time: float | None = None  # seconds in its worker
    startup_seconds: float | None = None  # submitted -> started in a worker (Ray's part)
    import_seconds: float | None = None  # importing seqeval and JAX in the worker
    compile_seconds: float | None = None  # XLA compile, or loading from the compile cache
    trace_seconds: float | None = None  # tracing and lowering
    cache_hits: int | None = None  # of the study's compilation cache
    cache_misses: int | None = None
    xla_threads: int | None = None  # XLA:CPU's intra-op pool in its worker
    results: dict[str, float | None] | None = None  # final score and AUC (run_results)


# What a run reports when it ends (seqeval.worker.execute_run), copied into its RunStatus.
OUTCOME_FIELDS = ("status", "reason", "pid", "node", "wall_time", "import_seconds",
                  "compile_seconds", "trace_seconds", "cache_hits", "cache_misses",
                  "xla_threads")


def _new_status() -> dict[str, Any]:
    return dataclasses.asdict(RunStatus())


def standing(record: dict[str, Any]) -> str:
    """current, stale or out_of_spec (a study.json of format 1 knew only in_spec)."""
    return record.get("standing") or (CURRENT if record.get("in_spec", True) else OUT_OF_SPEC)


def what_changed(old: dict[str, Any], new: dict[str, Any]) -> str:
    """What differs between two run records of one spec entry, in a few words: settings
    (defaults included), the dataset's content, the agent's code files."""
    changes = []
    for table, prefix in (("agent_config", "agent."), ("full_protocol", "")):
        before, after = old.get(table) or {}, new.get(table) or {}
        for key in sorted(set(before) | set(after)):
            if before.get(key) != after.get(key):
                changes.append(f"{prefix}{key} {format_value(before.get(key))} -> "
                               f"{format_value(after.get(key))}")
    if "code" not in old:  # a study.json of format 1
        changes.append("code and data not recorded (made before seqeval fingerprinted them)")
    else:
        if old.get("dataset_fingerprint") != new.get("dataset_fingerprint"):
            changes.append(f"the content of dataset {new['dataset']}")
        from seqeval.algorithms.checks import EVALUATOR_MODULES

        before, after = old["code"], new.get("code") or {}
        changed = {k for k in set(before) | set(after) if before.get(k) != after.get(k)}
        if not set(EVALUATOR_MODULES) & set(before) and set(EVALUATOR_MODULES) <= set(after):
            changes.append("evaluator code not recorded (made before seqeval fingerprinted it)")
            changed -= set(EVALUATOR_MODULES)
        files = sorted(k or "package version" for k in changed)
        if files:
            changes.append("code of " + ", ".join(files))
    return "; ".join(changes) or "its identity"


class StudyDir:
    """The files of a study directory (see the module docstring)."""

    def __init__(self, path: Path | str):
        self.path = Path(path)
        self.acquired = False  # `lock` was taken by this process at some point

    @property
    def study_file(self) -> Path:
        return self.path / STUDY_FILE

    @property
    def compile_cache(self) -> Path:
        return self.path / COMPILE_CACHE_DIR

    def run_dir(self, record: dict[str, Any]) -> Path:
        return self.path / record["path"]

    def log_file(self, record: dict[str, Any]) -> Path:
        return self.path / LOGS_DIR / (record["id"].replace("/", "__") + ".log")

    @staticmethod
    def is_study(path: Path | str) -> bool:
        return (Path(path) / STUDY_FILE).is_file()

    @staticmethod
    def lost_its_study_file(path: Path | str) -> bool:
        """A folder with run directories under runs/ and only a study's names, but no
        study.json (deleted or moved away): the spec and the run directories rebuild it."""
        path = Path(path)
        try:
            names = {p.name for p in path.iterdir()}
        except OSError:
            return False
        return (not StudyDir.is_study(path) and (path / RUNS_DIR).is_dir()
                and names <= set(STUDY_NAMES))

    def check_usable(self) -> None:
        """Refuse a --out that is a file or a non-empty directory that is not a study."""
        if self.path.exists() and not self.path.is_dir():
            raise UserError(f"--out '{self.path}' is a file; pass a directory for the study")
        if (self.path.is_dir() and not self.is_study(self.path)
                and not self.lost_its_study_file(self.path) and any(self.path.iterdir())):
            raise UserError(f"'{self.path}' exists and is not a study directory (no "
                            f"{STUDY_FILE}); choose another --out")

    @contextmanager
    def lock(self) -> Iterator[None]:
        """Hold STUDY_DIR/study.lock (an flock, released by the system if the driver dies)."""
        try:
            self.path.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.path / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as error:
            raise unwritable(self.path, error) from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            holder = os.pread(fd, 200, 0).decode(errors="replace").strip() or "unknown"
            os.close(fd)
            raise UserError(f"study '{self.path}' is in use by another seqeval sweep "
                            f"({holder}); wait for it to finish or stop it, then run "
                            "again") from None
        self.acquired = True  # this process held the lock (even if writing in it fails)
        try:
            try:
                os.ftruncate(fd, 0)
                os.pwrite(fd, f"pid {os.getpid()} on {socket.gethostname()} since "
                              f"{time.strftime('%Y-%m-%d %H:%M:%S')}".encode(), 0)
            except OSError as error:
                raise unwritable(self.path, error) from None
            yield
        finally:
            try:
                os.ftruncate(fd, 0)
            except OSError:
                pass  # a full or read-only disk: the lock is released all the same
            fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)

    def load(self) -> dict[str, Any]:
        """study.json (an empty study when there is none yet)."""
        if not self.study_file.is_file():
            return {"format": STUDY_FORMAT, "runs": []}
        try:
            state = json.loads(self.study_file.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as error:
            raise UserError(f"'{self.study_file}' is damaged ({error}); restore it, or move "
                            "it away to rebuild the study from the spec") from None
        if not isinstance(state, dict) or not isinstance(state.get("runs"), list):
            raise UserError(f"'{self.study_file}' is not a seqeval study file; restore it, or "
                            "move it away to rebuild the study from the spec")
        return state

    def records(self, all_runs: bool = False) -> list[dict[str, Any]]:
        """study.json's run records: those of the current spec, or every one (`all_runs`)."""
        runs = self.load()["runs"]
        return runs if all_runs else [r for r in runs if standing(r) == CURRENT]

    def save(self, state: dict[str, Any]) -> None:
        """study.json, runs.csv and runs_all.csv, each replaced atomically (UserError when
        the disk refuses: the previous files stay whole)."""
        state["updated"] = time.strftime("%Y-%m-%d %H:%M:%S")
        try:
            write_json_atomic(self.study_file, state)
            self.write_runs_csv(state["runs"])
        except OSError as error:
            raise unwritable(self.path, error) from None

    def merge_plan(self, state: dict[str, Any], plan: Sequence[PlannedRun],
                   spec_path: Path, spec_text: str) -> list[dict[str, Any]]:
        """Add the plan's new runs to `state` and set every run's standing: the plan's runs
        are current; a run the spec still asks for but made by other code, defaults or data
        is stale (kept, with what changed and the run that supersedes it); any other is
        out of the spec. Returns the records of the plan's runs, in plan order."""
        by_key = {record["key"]: record for record in state["runs"]}
        planned, by_slot = [], {}
        for run in plan:
            record = by_key.get(run.key)
            if record is None:
                record = {"id": run.default_id, "path": f"{RUNS_DIR}/{run.default_id}",
                          **_record(run), **_new_status()}
                state["runs"].append(record)
                by_key[run.key] = record
            else:  # the same run (same identity) under the new spec: keep its status
                record.update(_record(run))
            record.update(standing=CURRENT, in_spec=True, stale_reason=None,
                          superseded_by=None)
            planned.append(record)
            by_slot[run.slot] = record
            by_slot[_legacy_slot(record)] = record
        current = {id(record) for record in planned}
        for record in state["runs"]:
            if id(record) in current:
                continue
            successor = by_slot.get(record.get("slot") or _legacy_slot(record))
            if successor is None:
                record.update(standing=OUT_OF_SPEC, in_spec=False, stale_reason=None,
                              superseded_by=None)
            else:
                record.update(standing=STALE, in_spec=False,
                              stale_reason=what_changed(record, successor),
                              superseded_by=successor["id"])
        state["format"] = STUDY_FORMAT
        state["spec"] = {"path": str(spec_path), "text": spec_text}
        return planned

    def write_runs_csv(self, records: Sequence[dict[str, Any]]) -> None:
        """STUDY_DIR/runs.csv: one row per run of the current spec, settings then results;
        STUDY_DIR/runs_all.csv: every run the folder holds, with its standing (atomic)."""
        current = [r for r in records if standing(r) == CURRENT]
        write_text_atomic(self.path / RUNS_CSV, _runs_table(current))
        write_text_atomic(self.path / ALL_RUNS_CSV, _runs_table(records, all_runs=True))


def _legacy_slot(record: dict[str, Any]) -> str:
    """What a run record asks for, as a study.json of format 1 can tell it (it kept no code):
    a planned run with the same settings supersedes such a record."""
    asked = [record.get(k) for k in ("agent", "dataset", "mode", "seeds", "full_protocol",
                                     "agent_config")]
    return "legacy:" + hashlib.sha256(json.dumps(asked, sort_keys=True).encode()).hexdigest()


def _runs_table(records: Sequence[dict[str, Any]], all_runs: bool = False) -> str:
    fixed = ["id", "label", "status", "reason", "attempts", "agent", "dataset",
             "mode", "seeds", "final_score", "auc", "final_return", "final_online_score",
             "wall_time", "compile_seconds", "node", "path"]
    if all_runs:
        fixed[5:5] = ["standing", "stale_reason", "superseded_by"]
    protocol_keys = sorted({k for r in records for k in r.get("full_protocol", {})})
    agent_keys = sorted({k for r in records for k in r.get("agent_config", {})})
    rows = []
    for record in records:
        results = record.get("results") or {}
        values = {**record, **results, "agent": record["agent_name"],
                  "standing": standing(record)}
        row = [values.get(k) for k in fixed]
        row += [record.get("full_protocol", {}).get(k) for k in protocol_keys]
        row += [record.get("agent_config", {}).get(k) for k in agent_keys]
        rows.append(row)
    return csv_text(fixed + protocol_keys + [f"agent.{k}" for k in agent_keys], rows)


def unwritable(path: Path, error: OSError) -> UserError:
    """The one line for a study directory the disk will not write (read-only, full, ...)."""
    reason = error.strerror or type(error).__name__
    return UserError(f"cannot write the study in '{path}' ({reason}); free space or choose a "
                     "writable --out, then run the sweep again (it resumes where it stopped)")


def run_is_complete(run_dir: Path) -> bool:
    """The run's own summary.json says it finished."""
    return read_status(run_dir) == "complete"


def run_results(run_dir: Path) -> dict[str, float | None]:
    """Final score and AUC of a finished run, means over its seeds (the report's measures:
    last offline evaluation; normalized area under the curve on samples 0..N)."""
    import numpy as np

    from seqeval.stats import normalized_auc

    config = read_config(run_dir) or {}
    transitions = int(config["dataset_info"]["transitions"])
    by_seed: dict[int, list[dict[str, Any]]] = defaultdict(list)
    for row in read_evaluations(run_dir):
        if row.get("samples") is not None:
            by_seed[row["seed"]].append(row)
    finals, aucs, returns, online_finals = [], [], [], []
    for rows in by_seed.values():
        rows.sort(key=lambda r: r["samples"])
        offline = [r for r in rows if r.get("phase") != "online"]
        online = [r for r in rows if r.get("phase") == "online"]
        if offline:
            returns.append(offline[-1]["return"])
            scores = [r["normalized_score"] for r in offline]
            if all(s is not None for s in scores):
                finals.append(scores[-1])
                samples = [r["samples"] for r in offline]
                aucs.append(normalized_auc(samples, scores, end=max(transitions, max(samples))))
        if online and online[-1]["normalized_score"] is not None:
            online_finals.append(online[-1]["normalized_score"])

    def mean(values: list) -> float | None:
        values = [v for v in values if v is not None]
        return float(np.mean(values)) if values else None

    return {"final_score": mean(finals), "auc": mean(aucs), "final_return": mean(returns),
            "final_online_score": mean(online_finals)}


def add_all_runs_flag(parser: Any) -> None:
    """`--all-runs` of the commands that read a study (report, plot, select)."""
    parser.add_argument("--all-runs", action="store_true",
                        help="with a study directory: every complete run it holds, also those "
                             "made by other code or settings (stale) or no longer in its spec "
                             "(default: the current spec's runs)")


_NOTED_LEFT_OUT: set[Path] = set()


def expand_run_dirs(paths: Sequence[str | Path], all_runs: bool = False) -> list[Path]:
    """Run directories behind `paths`: a study directory becomes the directories of its
    complete runs of the current spec (in plan order), or of every complete run it holds
    (`all_runs`); any other path is kept as it is. A study that holds runs left out says so
    on stderr."""
    expanded: list[Path] = []
    for item in paths:
        path = Path(item)
        if not StudyDir.is_study(path):
            if StudyDir.lost_its_study_file(path):
                raise UserError(f"study '{path}' has no {STUDY_FILE}; rebuild it with "
                                f"'seqeval sweep SPEC --out {path}' (its run directories are "
                                "kept and found again)")
            expanded.append(path)
            continue
        study = StudyDir(path)
        records = study.records(all_runs=True)
        chosen = records if all_runs else [r for r in records if standing(r) == CURRENT]
        left_out = collections.Counter(standing(r) for r in records if standing(r) != CURRENT)
        if left_out and not all_runs and path.resolve() not in _NOTED_LEFT_OUT:
            _NOTED_LEFT_OUT.add(path.resolve())  # said once, however often a command asks
            words = {STALE: "stale (made by other code, defaults or data)",
                     OUT_OF_SPEC: "no longer in the spec"}
            kinds = ", ".join(f"{n} {words.get(kind, kind)}" for kind, n in sorted(
                left_out.items()))
            print(f"seqeval: note: study '{path}' also holds {sum(left_out.values())} runs "
                  f"left out ({kinds}); --all-runs includes them", file=sys.stderr)
        complete = [study.run_dir(r) for r in chosen
                    if r.get("status") == "complete" or run_is_complete(study.run_dir(r))]
        if not complete:
            raise UserError(f"study '{path}' has no complete runs yet; run 'seqeval sweep' "
                            "on it to finish them")
        expanded.extend(complete)
    return expanded


def adopt_run_dirs(study: StudyDir, state: dict[str, Any]) -> int:
    """Records for the run directories under STUDY_DIR/runs that `state` does not list (a
    study.json lost or moved away): each run's settings from its config.json, its key from
    its directory name, its status pending (`seqeval sweep` then finds the complete ones, and
    a planned run its own directory by its key). Returns how many were adopted."""
    known = {record["path"] for record in state["runs"]}
    adopted = 0
    for config_path in sorted((study.path / RUNS_DIR).glob("*/*/config.json")):
        run_dir = config_path.parent
        relative = run_dir.relative_to(study.path).as_posix()
        if relative in known:
            continue
        try:
            config = read_config(run_dir) or {}
            protocol = dict(config.get("protocol") or {})
            record = {
                "id": relative.removeprefix(f"{RUNS_DIR}/"), "path": relative,
                "key": run_dir.name.rpartition("_")[2], "slot": None,
                "label": config["agent_name"], "agent": config["agent"],
                "agent_name": config["agent_name"], "dataset": config["dataset"],
                "mode": config.get("mode", "sequential"),
                "seeds": len(protocol.get("seeds") or [0]), "protocol": {},
                "agent_settings": {}, "full_protocol": protocol,
                "agent_config": dict(config.get("agent_config") or {}),
                **_new_status(),
            }
        except (OSError, UserError, KeyError, TypeError, AttributeError):
            continue  # not a run seqeval wrote: left where it is, unlisted
        state["runs"].append(record)
        adopted += 1
    return adopted
