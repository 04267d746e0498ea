"""Experiment trackers: a run's results in TensorBoard and Weights & Biases, as it runs or after.

What a tracker gets is read back from the run's own files (seqeval.results' readers), never
from the training loop: after each checkpoint, the rows the checkpoint accounts for and that a
tracker has not had yet. So a tracker sees exactly the numbers of evaluations.csv,
training.csv and prequential.csv, costs one read of those files per chunk (no device transfer,
nothing per gradient step), and a killed run loses nothing: rows a checkpoint holds are durable,
and RUN_DIR/tracking.json counts the rows each tracker has had (written after they were handed
over), so a resumed run hands over exactly the rest. Rows written after the last checkpoint are
never logged (the resumed run truncates them and writes them again).

    RUN_DIR/tensorboard/   TensorBoard event files (one per session of the run)
    RUN_DIR/wandb/         W&B's files (unless WANDB_DIR is set); offline runs sync later
    RUN_DIR/tracking.json  the W&B run id, and the rows each tracker has had

TensorBoard never gets a step twice: a resumed run reads the event files back and skips any
(tag, step) they hold (a session killed between logging and recording its count would
otherwise log a chunk again). W&B continues the same run (its id is kept in tracking.json).

Steps are samples (transitions in the buffer, data plus environment steps online), the x-axis
of seqeval's curves. A chunk's prequential losses are logged where the chunk has entered the
buffer (prequential.csv's samples + transitions), so every number of a chunk shares its step.
Retrain mode logs each size's training losses against gradient steps (train/size_N/...) and
its evaluations against samples (the sizes). docs/tracking.md is the user's guide.
"""

from __future__ import annotations

import dataclasses
import importlib
import json
import math
import os
import shutil
import struct
import sys
from collections import defaultdict
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from seqeval.errors import UserError

BACKENDS = ("tensorboard", "wandb")
# backend -> (module imported, pip extra)
REQUIREMENTS = {"tensorboard": ("tensorboardX", "tensorboard"), "wandb": ("wandb", "wandb")}
TENSORBOARD_DIR = "tensorboard"
TRACKING_FILE = "tracking.json"
DEFAULT_PROJECT = "seqeval"
SCORE_TAG = "eval/normalized_score"
LOG_FILES = ("evaluations.csv", "training.csv", "prequential.csv")


# ---------------------------------------------------------------------------------------------
# Settings


def parse_backends(text: str) -> tuple[str, ...]:
    """`--log tensorboard,wandb` as ('tensorboard', 'wandb'); unknown names are refused."""
    import argparse

    names = [name.strip() for name in text.split(",") if name.strip()]
    try:
        return check_backend_names(names)
    except UserError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def check_backend_names(names: Iterable[Any], where: str = "--log") -> tuple[str, ...]:
    """The backend names, checked (UserError naming the unknown one)."""
    names = list(names)
    if not names:
        raise UserError(f"{where}: name a tracker ({', '.join(BACKENDS)})")
    for name in names:
        if name not in BACKENDS:
            raise UserError(f"{where}: unknown tracker {name!r}; choose from "
                            f"{', '.join(BACKENDS)} (e.g. --log tensorboard,wandb)")
    return tuple(dict.fromkeys(names))


def check_backends(backends: Sequence[str]) -> None:
    """Refuse, in one line naming the extra to install, a tracker whose package does not
    import (checked before anything is trained)."""
    check_backend_names(backends)
    for backend in backends:
        module, extra = REQUIREMENTS[backend]
        try:
            importlib.import_module(module)
        except Exception as error:  # not installed, or installed but broken
            problem = "is not installed" if isinstance(error, ImportError) else (
                f"does not import ({type(error).__name__}: {error})")
            raise UserError(f"--log {backend} needs the '{module}' package, which {problem}; "
                            f"install it with pip install 'seqeval[{extra}]' or drop --log "
                            f"{backend}") from None


# ---------------------------------------------------------------------------------------------
# What is logged: points read from a run's files


@dataclasses.dataclass
class Point:
    """Scalars logged together at one step of one axis ('samples' or 'gradient_steps')."""

    axis: str
    step: int
    values: dict[str, float]


def _mean(values: Iterable[float | None]) -> float | None:
    kept = [v for v in values if v is not None and math.isfinite(v)]
    return sum(kept) / len(kept) if kept else None


def _put(values: dict[str, float], key: str, value: float | None) -> None:
    if value is not None and math.isfinite(value):
        values[key] = float(value)


def evaluation_points(rows: Sequence[dict[str, Any]]) -> list[Point]:
    """Each evaluation (all seeds at one samples and phase): score and return per seed and their
    means over seeds, the gradient steps (mean over seeds) and the phase (1: online)."""
    groups: dict[tuple[int, str], list[dict[str, Any]]] = defaultdict(list)
    for row in rows:
        groups[(row["samples"], row["phase"])].append(row)
    points = []
    for (samples, phase), members in groups.items():
        values: dict[str, float] = {}
        for key in ("normalized_score", "return"):
            _put(values, f"eval/{key}", _mean(r[key] for r in members))
            for row in members:
                _put(values, f"eval/{key}/seed_{row['seed']}", row[key])
        _put(values, "gradient_steps", _mean(r["gradient_steps"] for r in members))
        values["phase/online"] = float(phase == "online")
        points.append(Point("samples", samples, values))
    return points


def training_points(rows: Sequence[dict[str, Any]], retrain: bool) -> list[Point]:
    """Training losses per chunk, means over seeds (retrain: per size, against gradient
    steps)."""
    groups: dict[tuple[int, int], list[dict[str, Any]]] = defaultdict(list)
    for row in rows:
        groups[(row["samples"], row["gradient_steps"])].append(row)
    points = []
    for (samples, gradient_steps), members in groups.items():
        metrics = [k for k in members[0] if k not in ("samples", "gradient_steps", "seed",
                                                       "phase")]
        prefix = f"train/size_{samples}/" if retrain else "train/"
        values: dict[str, float] = {}
        for metric in metrics:
            _put(values, prefix + metric, _mean(r.get(metric) for r in members))
        if retrain:
            points.append(Point("gradient_steps", gradient_steps, values))
        else:
            points.append(Point("samples", samples, values))
    return points


def prequential_points(rows: Sequence[Any]) -> list[Point]:
    """Each scored chunk's losses and running totals, means over seeds, at the samples after
    the chunk entered the buffer."""
    groups: dict[int, list[Any]] = defaultdict(list)
    for row in rows:
        groups[row.samples + row.transitions].append(row)
    points = []
    for samples, members in groups.items():
        values: dict[str, float] = {}
        for metric in members[0].losses:
            _put(values, f"prequential/{metric}", _mean(r.losses[metric] for r in members))
            _put(values, f"prequential/{metric}_cumulative",
                 _mean(r.cumulative[metric] for r in members))
        points.append(Point("samples", samples, values))
    return points


def merge_points(points: Iterable[Point]) -> list[Point]:
    """Points of one axis and step merged, in step order (samples before gradient steps)."""
    merged: dict[tuple[str, int], Point] = {}
    for point in points:
        key = (point.axis, point.step)
        if key in merged:
            merged[key].values.update(point.values)
        else:
            merged[key] = Point(point.axis, point.step, dict(point.values))
    return [merged[k] for k in sorted(merged)]


def read_rows(run_dir: Path) -> dict[str, list]:
    """Every row of the run's log files, by file name (seqeval.results' strict readers)."""
    from seqeval.results import read_evaluations, read_prequential, read_training

    return {"evaluations.csv": read_evaluations(run_dir), "training.csv": read_training(run_dir),
            "prequential.csv": read_prequential(run_dir)}


def rows_to_points(rows: dict[str, list], start: dict[str, int], end: dict[str, int],
                   retrain: bool) -> list[Point]:
    """The points of the rows [start, end) of each log file."""
    def part(name: str) -> list:
        return rows[name][start.get(name, 0):end.get(name, 0)]

    return merge_points([*evaluation_points(part("evaluations.csv")),
                         *training_points(part("training.csv"), retrain),
                         *prequential_points(part("prequential.csv"))])


# ---------------------------------------------------------------------------------------------
# The run's identity: config, label, group, tags


def seqeval_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("seqeval")
    except PackageNotFoundError:
        return "unknown"


def run_identity(run_dir: Path) -> dict[str, Any]:
    """What a tracker shows of a run: its config (config.json and the seqeval version), its
    label (the study's label of the run, or the agent; then the dataset, and the mode unless
    sequential), its group (the study directory's name, for a run of a study) and tags."""
    from seqeval.results import read_config

    config = read_config(run_dir) or {}
    study_dir, record = _study_record(run_dir)
    base = (record or {}).get("label") or config.get("agent_name") or config["agent"]
    label = f"{base} on {config['dataset']}"
    if config.get("mode", "sequential") != "sequential":
        label += f" ({config['mode']})"
    tags = [config.get("agent_name") or config["agent"], *config["dataset"].split(","),
            config.get("mode", "sequential")]
    return {"config": {**config, "seqeval_version": seqeval_version()}, "label": label,
            "group": None if study_dir is None else study_dir.name,
            "tags": [t[:64] for t in dict.fromkeys(tags)]}


def _study_record(run_dir: Path) -> tuple[Path | None, dict[str, Any] | None]:
    """The study directory holding `run_dir` and its record of the run (None, None when the run
    is not part of a study)."""
    from seqeval.study import STUDY_FILE

    run_dir = run_dir.absolute()
    for parent in run_dir.parents:
        if (parent / STUDY_FILE).is_file():
            try:
                runs = json.loads((parent / STUDY_FILE).read_text()).get("runs", [])
            except (OSError, ValueError, AttributeError):
                return parent, None
            relative = str(run_dir.relative_to(parent))
            return parent, next((r for r in runs if isinstance(r, dict)
                                 and r.get("path") == relative), None)
    return None, None


def _flat(config: dict[str, Any], prefix: str = "") -> dict[str, bool | str | float | int]:
    """Nested config as TensorBoard's hyperparameters: dotted keys, lists and None as text."""
    flat: dict[str, bool | str | float | int] = {}
    for key, value in config.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(_flat(value, name + "."))
        elif isinstance(value, bool | str | int | float):
            flat[name] = value
        else:
            flat[name] = json.dumps(value)
    return flat


# ---------------------------------------------------------------------------------------------
# Backends


class TensorBoardBackend:
    """tensorboardX's writer into RUN_DIR/tensorboard (or `log_dir`); skips (tag, step) pairs
    its event files hold already."""

    name = "tensorboard"

    def __init__(self, log_dir: Path, identity: dict[str, Any]):
        from tensorboardX import SummaryWriter

        self.log_dir = log_dir
        self.logged = read_tensorboard_steps(log_dir)
        # One file per session, numbered: two sessions in one second would otherwise share a
        # name (time and host), and the second would overwrite the first.
        sessions = len(list(log_dir.glob("events.out.tfevents.*")))
        self.writer = SummaryWriter(str(log_dir), flush_secs=3600,
                                    filename_suffix=f".{sessions + 1:04d}")
        if not any(tag.startswith("_hparams_/") for tag, _ in self.logged):
            self._write_config(identity["config"])

    def _write_config(self, config: dict[str, Any]) -> None:
        from tensorboardX.summary import hparams

        self.writer.add_text("config", "```\n" + json.dumps(config, indent=2) + "\n```", 0)
        file_writer = self.writer._get_file_writer()
        for summary in hparams(_flat(config), {SCORE_TAG: float("nan")}):
            file_writer.add_summary(summary)

    def log(self, points: Sequence[Point], first_step: int = 0) -> int:
        written = 0
        for point in points:
            for tag, value in point.values.items():
                if (tag, point.step) not in self.logged:
                    self.writer.add_scalar(tag, value, point.step)
                    self.logged.add((tag, point.step))
                    written += 1
        self.writer.flush()
        return written

    def close(self, failed: bool) -> None:
        self.writer.close()


def read_tensorboard_steps(log_dir: Path) -> set[tuple[str, int]]:
    """(tag, step) of every value in the event files of `log_dir` (TFRecord framing: length,
    its CRC, an Event, its CRC); a record cut short by a kill ends its file."""
    from tensorboardX.proto.event_pb2 import Event

    found: set[tuple[str, int]] = set()
    for path in sorted(log_dir.glob("events.out.tfevents.*")):
        data = path.read_bytes()
        position = 0
        while position + 12 <= len(data):
            (length,) = struct.unpack_from("<Q", data, position)
            end = position + 12 + length + 4
            if end > len(data):
                break
            event = Event()
            try:
                event.ParseFromString(data[position + 12:end - 4])
            except Exception:  # a damaged record: nothing after it is trusted
                break
            for value in event.summary.value:
                found.add((value.tag, event.step))
            position = end
    return found


def _new_run_id() -> str:
    import secrets
    import string

    return "".join(secrets.choice(string.ascii_lowercase + string.digits) for _ in range(8))


class WandbBackend:
    """A W&B run: the run's label, the study as group, agent/dataset/mode tags, config.json as
    config; resumed under the id kept in tracking.json."""

    name = "wandb"

    def __init__(self, run_dir: Path, identity: dict[str, Any], project: str | None,
                 run_id: str | None, retrain: bool):
        import wandb

        self.id = run_id or _new_run_id()
        directory = os.environ.get("WANDB_DIR") or str(run_dir)
        try:
            self.run = wandb.init(
                project=project or os.environ.get("WANDB_PROJECT") or DEFAULT_PROJECT,
                name=identity["label"], group=identity["group"], tags=identity["tags"],
                config=identity["config"], id=self.id, resume="allow", dir=directory,
                reinit="create_new",
                # the run's own output stays the terminal's; no code, git or system probes
                settings=wandb.Settings(console="off", disable_git=True, save_code=False,
                                        x_disable_stats=True, x_save_requirements=False,
                                        silent=True),
            )
        except Exception as error:
            first = next((ln for ln in str(error).splitlines() if ln.strip()), type(error).__name__)
            raise UserError(f"--log wandb: W&B could not start ({first.strip()}); run 'wandb "
                            "login' or set WANDB_API_KEY, or set WANDB_MODE=offline to log "
                            "locally and 'wandb sync' later") from None
        self.run.define_metric("samples")
        self.run.define_metric("gradient_steps")
        for prefix in ("eval", "prequential", "phase"):
            self.run.define_metric(f"{prefix}/*", step_metric="samples")
        for prefix in ("train", "perf"):
            self.run.define_metric(f"{prefix}/*",
                                   step_metric="gradient_steps" if retrain else "samples")

    def log(self, points: Sequence[Point], first_step: int) -> int:
        """Point i as W&B's history step `first_step + i`: a step W&B has already (a resumed
        run offering a chunk again) is the same row, dropped by a resumed online run."""
        for index, point in enumerate(points):
            self.run.log({point.axis: point.step, **point.values}, step=first_step + index)
        return sum(len(point.values) for point in points)

    def close(self, failed: bool) -> None:
        self.run.finish(exit_code=1 if failed else 0)


# ---------------------------------------------------------------------------------------------
# A run's trackers


class Tracking:
    """The trackers of one run: started before training, given the rows of each checkpoint."""

    def __init__(self, run_dir: Path, backends: Sequence[str] | None, project: str | None = None,
                 members: int = 1):
        self.run_dir = Path(run_dir)
        self.names = tuple(backends or ())
        self.project = project
        self.members = members  # programs' members, for updates per second
        self.backends: list[Any] = []
        self.state: dict[str, Any] = {}
        self._last: tuple[int, float] | None = None  # gradient steps, train time
        self._retrain_mode: bool | None = None

    @property
    def state_path(self) -> Path:
        return self.run_dir / TRACKING_FILE

    def start(self, resuming: bool) -> Tracking:
        """Open every backend (UserError when one cannot start: the files this start created
        are removed, and a fresh run's config.json too, so the run is left as it was)."""
        if not self.names:
            return self
        created = [p for p in (self.run_dir / TENSORBOARD_DIR, self.run_dir / "wandb",
                               self.state_path) if not p.exists()]
        self.state = self._read_state()
        identity = run_identity(self.run_dir)
        retrain = identity["config"].get("mode") == "retrain"
        try:
            for name in self.names:
                if name == "tensorboard":
                    self.backends.append(TensorBoardBackend(self.run_dir / TENSORBOARD_DIR,
                                                            identity))
                    # Its event files say what it holds: every row is offered again, so
                    # event files deleted or never written are rebuilt.
                    self.state["logged_rows"].pop(name, None)
                else:
                    backend = WandbBackend(self.run_dir, identity, self.project,
                                           self.state.get("wandb_run_id"), retrain)
                    self.backends.append(backend)
                    self.state["wandb_run_id"] = backend.id
                    self._write_state()
        except BaseException:
            self.close(failed=True)
            for path in created:
                if path.is_dir():
                    shutil.rmtree(path, ignore_errors=True)
                else:
                    path.unlink(missing_ok=True)
            if not resuming:
                (self.run_dir / "config.json").unlink(missing_ok=True)
            raise
        return self

    def _read_state(self) -> dict[str, Any]:
        try:
            state = json.loads(self.state_path.read_text())
        except (OSError, ValueError):
            return {"logged_rows": {}}
        if not isinstance(state, dict) or not isinstance(state.get("logged_rows"), dict):
            return {"logged_rows": {}}
        return state

    def _write_state(self) -> None:
        from seqeval.fileio import write_json_atomic

        write_json_atomic(self.state_path, self.state)

    def log_checkpoint(self, progress: Any) -> dict[str, int]:
        """Hand every tracker the rows the checkpoint `progress` accounts for that it has not
        had yet; once per chunk, after the checkpoint (host values read from the files).
        Returns how many values each tracker logged."""
        logged: dict[str, int] = {}
        if not self.backends:
            return logged
        retrain = self._retrain()
        end = dict(progress.log_rows)
        perf = self._updates_per_second(progress)
        rows = None
        for backend in list(self.backends):
            start = self.state["logged_rows"].get(backend.name, {})
            if all(start.get(name, 0) >= end.get(name, 0) for name in LOG_FILES):
                continue
            rows = read_rows(self.run_dir) if rows is None else rows
            points = rows_to_points(rows, start, end, retrain)
            if perf is not None and points:  # the chunk's speed, at its last point
                points[-1].values["perf/updates_per_second"] = perf
            try:
                logged[backend.name] = backend.log(points, self.state.get("wandb_steps", 0))
            except Exception as error:  # a tracker that fails mid-run never stops the run
                print(f"seqeval: warning: --log {backend.name} stopped logging "
                      f"({type(error).__name__}: {error}); the run goes on, and 'seqeval "
                      f"export {self.run_dir} --to {backend.name}' logs it later",
                      file=sys.stderr)
                self.backends.remove(backend)
                backend.close(failed=True)
                continue
            self.state["logged_rows"][backend.name] = end
            if backend.name == "wandb":
                self.state["wandb_steps"] = self.state.get("wandb_steps", 0) + len(points)
            self._write_state()
        return logged

    def _retrain(self) -> bool:
        if self._retrain_mode is None:
            from seqeval.results import read_config

            config = read_config(self.run_dir) or {}
            self._retrain_mode = config.get("mode") == "retrain"
        return self._retrain_mode

    def _updates_per_second(self, progress: Any) -> float | None:
        """Gradient steps per second of the chunk just trained (all members), from two
        successive checkpoints of this session; None for the first."""
        now = (progress.gradient_steps, progress.train_time)
        last, self._last = self._last, now
        if last is None or now[1] <= last[1]:
            return None
        return (now[0] - last[0]) * self.members / (now[1] - last[1])

    def close(self, failed: bool = False) -> None:
        for backend in self.backends:
            try:
                backend.close(failed)
            except Exception:  # a tracker never fails a run once its results are written
                pass
        self.backends = []

    def __enter__(self) -> Tracking:
        return self

    def __exit__(self, kind, error, traceback) -> bool:
        self.close(failed=kind is not None)
        return False


def start_tracking(settings: Any, run_dir: Path, resuming: bool, members: int) -> Tracking:
    """The trackers `settings.log` names, started (a context manager; no-op without --log)."""
    return Tracking(run_dir, settings.log, settings.wandb_project, members).start(resuming)
