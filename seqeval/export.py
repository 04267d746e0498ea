"""`seqeval export RUN_OR_STUDY_DIR --to tensorboard|wandb`: finished runs to a tracker.

Runs made without --log (offline, on a cluster, before the tracker existed) reach a dashboard
after the fact: every row of their CSV files (read with seqeval.results' readers) is logged
as a live run would have logged it (seqeval.tracking), into RUN_DIR/tensorboard or a W&B run.
Exporting again adds nothing: the rows a tracker has had are counted in RUN_DIR/tracking.json,
which a run resumed later with --log shares.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Any

from seqeval.errors import UserError
from seqeval.tracking import (
    BACKENDS,
    LOG_FILES,
    TENSORBOARD_DIR,
    Tracking,
    check_backends,
)


def finished_runs(paths: list[str]) -> list[Path]:
    """The run directories behind `paths` (a study stands for its complete runs); a run that
    is not complete is refused."""
    from seqeval.study import StudyDir, expand_run_dirs, run_is_complete

    runs = []
    for path in paths:
        if StudyDir.is_study(path):
            runs.extend(expand_run_dirs([path]))
            continue
        run_dir = Path(path)
        if not (run_dir / "config.json").is_file():
            raise UserError(f"'{path}' is neither a run nor a study directory (no config.json "
                            "or study.json); pass the --out of 'seqeval run' or 'seqeval sweep'")
        if not run_is_complete(run_dir):
            raise UserError(f"run '{path}' is not complete; finish it with the same 'seqeval "
                            "run' command (with --log to track it as it goes), then export it")
        runs.append(run_dir)
    return runs


def export_run(run_dir: Path, backend: str, project: str | None) -> int:
    """Log a finished run's rows that the tracker has not had; returns how many values."""
    from seqeval.results import CsvLog, RunDir
    from seqeval.runs import load_run

    load_run(run_dir)  # one line naming a damaged file, before anything is logged
    directory = RunDir(run_dir)
    directory.lock()  # no run may write while its rows are exported
    try:
        tracking = Tracking(run_dir, [backend], project).start(resuming=True)
        with tracking:
            rows = {name: CsvLog(run_dir / name).count() for name in LOG_FILES}
            return tracking.log_checkpoint(_AllRows(rows)).get(backend, 0)
    finally:
        directory.unlock()


class _AllRows:
    """A checkpoint's progress standing for every row of a finished run."""

    def __init__(self, log_rows: dict[str, int]):
        self.log_rows = log_rows
        self.gradient_steps, self.train_time = 0, 0.0  # no speed: the CSVs hold no train time


def handler(args: argparse.Namespace) -> int:
    check_backends([args.to])
    runs = finished_runs(args.paths)
    for run_dir in runs:
        count = export_run(run_dir, args.to, args.wandb_project)
        where = run_dir / TENSORBOARD_DIR if args.to == "tensorboard" else "W&B"
        print(f"{run_dir}: {count} values to {where}")
    if args.to == "tensorboard":
        print(f"view: tensorboard --logdir {' '.join(args.paths)}")
    elif os.environ.get("WANDB_MODE") in ("offline", "dryrun"):
        print("W&B offline: upload with wandb sync RUN_DIR/wandb/offline-run-* (docs/tracking.md)")
    return 0


def register(subparsers: Any) -> None:
    """Add `seqeval export` to the CLI's subparsers."""
    parser = subparsers.add_parser(
        "export", help="write finished runs to TensorBoard or Weights & Biases",
        description="Log finished runs (from their CSV files) to a tracker, as 'seqeval run "
                    "--log' would have: TensorBoard event files under RUN_DIR/tensorboard, or "
                    "a W&B run per run. A study directory stands for its complete runs. "
                    "Exporting again adds nothing. See docs/tracking.md.")
    parser.add_argument("paths", nargs="+", metavar="RUN_OR_STUDY_DIR",
                        help="run directories (seqeval run) or study directories (seqeval "
                        "sweep)")
    parser.add_argument("--to", required=True, choices=BACKENDS, help="the tracker")
    parser.add_argument("--wandb-project", default=None, metavar="PROJECT",
                        help="W&B project (default: $WANDB_PROJECT, else seqeval)")
    parser.set_defaults(func=handler)
