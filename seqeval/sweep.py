"""`seqeval sweep SPEC --out STUDY_DIR`: a study's runs as Ray tasks, resumable.

Every run is one Ray task reserving `--cpus-per-run` CPUs and `--gpus-per-run` GPUs. CPU runs
share worker processes (JAX starts once per worker, not once per run; a worker is replaced after
RUNS_PER_WORKER runs); a run with a GPU gets a fresh worker, which releases the device's memory
when it ends. The worker's environment is set before JAX is imported there:
XLA:CPU's thread pools are sized to the run's CPU share (`PJRT_NPROC`; Eigen single-threaded for
one CPU), so parallel runs do not oversubscribe the cores; runs sharing a GPU allocate on demand
up to their share of its memory instead of each preallocating most of it. All runs of a study
share a persistent JAX compilation cache, so a program shape compiles once per study.

The driver (this process) validates the whole plan first, holds the study's lock, keeps
study.json and runs.csv current after every change, and shows one study-level progress bar.
A run that fails (diverges, raises, or its worker dies) is recorded with a one-line reason and
never stops the others; a run whose node is lost is put back in the queue and resumes from its
checkpoint on another node. Before any run starts, a probe file written from every node proves
that the nodes see STUDY_DIR. Killed and started again, the driver skips complete runs, resumes
partial ones from their own checkpoints and retries failed ones once.

This module is the driver and the command; a run in its worker is seqeval.worker, Ray itself
(local or a cluster) seqeval.ray_cluster.
"""

from __future__ import annotations

import argparse
import collections
import dataclasses
import json
import math
import os
import shutil
import signal
import statistics
import sys
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from seqeval.errors import UserError
from seqeval.ray_cluster import (
    capacity,
    check_fits_locally,
    check_reachable,
    check_visible,
    ray_session,
)
from seqeval.spec import expand_spec, read_spec
from seqeval.study import (
    OUTCOME_FIELDS,
    StudyDir,
    adopt_run_dirs,
    run_is_complete,
    run_results,
    validate_plan,
)
from seqeval.worker import node_file, one_line, run_environment, run_in_worker

POLL_SECONDS = 1.0  # how often the progress bar is refreshed while runs are in flight
NODE_DEATH_SECONDS = 30.0  # how long a run's failure waits for Ray to say its node is dead
# CPU runs one after another in a worker pay for starting Python, importing JAX and its first
# compilation once (measured in benchmarks/README.md); a fresh worker now and then bounds what
# a long-lived process accumulates.
RUNS_PER_WORKER = 20


# ---------------------------------------------------------------------------------------------
# The driver.


@contextmanager
def _terminate_as_interrupt():
    """SIGTERM (a scheduler stopping the job) ends the driver as Ctrl-C does."""
    def interrupt(signum, frame):
        raise KeyboardInterrupt

    try:
        previous = signal.signal(signal.SIGTERM, interrupt)
    except ValueError:  # not the main thread
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _progress_bar(total: int, initial: int, enabled: bool):
    from tqdm.auto import tqdm

    interactive = sys.stderr.isatty()  # a log file gets a line every 30 s, not every second
    return tqdm(total=total, initial=initial, unit="run", desc="study", disable=not enabled,
                dynamic_ncols=True, file=sys.stderr, mininterval=1 if interactive else 30)


@dataclasses.dataclass(frozen=True)
class SweepOptions:
    """How a study's runs are run (the flags of `seqeval sweep`)."""

    address: str | None = None  # Ray cluster; None: a local Ray with this machine's cores
    max_parallel: int | None = None  # runs in flight at most; None: as many as fit
    cpus_per_run: float = 1.0  # CPUs reserved per run; its XLA threads match
    gpus_per_run: float = 0.0  # GPUs per run; a fraction shares a GPU
    compile_cache: bool = True  # share compiled programs through STUDY_DIR/compile_cache
    progress: bool = True  # the study-level progress bar

    def check(self) -> None:
        for flag, value in (("--cpus-per-run", self.cpus_per_run),
                            ("--gpus-per-run", self.gpus_per_run)):
            if not math.isfinite(value):
                raise UserError(f"{flag} {value:g} is not a number of devices; give a finite "
                                "number, e.g. 1 or 0.5")
        if self.cpus_per_run <= 0:
            raise UserError(f"--cpus-per-run must be more than 0 (got {self.cpus_per_run:g})")
        if self.gpus_per_run < 0:
            raise UserError(f"--gpus-per-run must be 0 or more (got {self.gpus_per_run:g})")
        if self.gpus_per_run > 1 and self.gpus_per_run != int(self.gpus_per_run):
            raise UserError(f"--gpus-per-run {self.gpus_per_run:g}: above 1 GPU, give a whole "
                            "number")
        if self.max_parallel is not None and self.max_parallel < 1:
            raise UserError(f"--max-parallel must be at least 1 (got {self.max_parallel})")


def run_study(spec_path: Path | str, out: Path | str, options: SweepOptions = SweepOptions(),
              dry_run: bool = False) -> dict[str, Any]:
    """Expand, validate and run a study; returns study.json's content. Runs of the spec that
    are complete are skipped, partial ones resumed, failed ones retried once; a run made by
    other code, defaults or data is re-run into a new directory (the old one is marked stale).
    A command refused before any run started leaves no new study directory behind."""
    options.check()
    spec_path = Path(spec_path)
    spec = read_spec(spec_path)
    study = StudyDir(Path(out).absolute())
    study.check_usable()
    plan = validate_plan(expand_spec(spec, spec_path.parent), study.path)
    if dry_run:
        state = _load_or_rebuild(study, announce=False)
        planned = study.merge_plan(state, plan, spec_path.absolute(), spec_path.read_text())
        _recognise_finished(study, state)
        for record in planned:
            print(f"{record['status']:9} {record['path']}  ({record['label']}, {record['mode']})")
        _note_left_out(state)
        print(f"{len(planned)} runs")
        return state
    if options.address:
        check_reachable(options.address)
    else:
        check_fits_locally(options.cpus_per_run)

    # A folder that is new or empty now holds only what this command writes into it.
    out_existed = study.path.exists()
    fresh = not study.path.exists() or not any(study.path.iterdir())
    started = False
    try:
        with study.lock():
            state = _load_or_rebuild(study, announce=True)
            planned = study.merge_plan(state, plan, spec_path.absolute(), spec_path.read_text())
            _recognise_finished(study, state)
            todo = [r for r in planned if r["status"] != "complete"]
            if not todo:
                study.save(state)
                _note_left_out(state)
                return state
            by_key = {run.key: run for run in plan}
            # Each run steps its evaluation environments in as many processes as it has CPUs
            # (the returns do not depend on it).
            eval_workers = max(1, int(options.cpus_per_run))
            settings = {r["id"]: by_key[r["key"]].run_settings(study.run_dir(r), eval_workers)
                        for r in todo}
            with ray_session(options.address, study.path) as ray, _terminate_as_interrupt():
                parallel = capacity(ray, options.cpus_per_run, options.gpus_per_run,
                                     options.max_parallel)
                check_visible(ray, study.path, {"env_vars": run_environment(
                    options.cpus_per_run, options.gpus_per_run)})
                _note_left_out(state)
                study.save(state)
                started = True
                _drive(ray, study, state, planned, todo, settings, options, parallel)
            study.save(state)
    except UserError:
        if fresh and study.acquired and not started:  # refused before any run: leave it as it was
            for path in list(study.path.iterdir()):
                if path.is_dir():
                    shutil.rmtree(path, ignore_errors=True)
                else:
                    path.unlink(missing_ok=True)
            if not out_existed and not any(study.path.iterdir()):
                study.path.rmdir()
        raise
    return state


def _recognise_finished(study: StudyDir, state: dict[str, Any]) -> None:
    """Runs that finished while a killed driver could not record it (or whose study.json was
    rebuilt) are complete, by their own summary.json; runs a killed driver left running are
    pending again (they resume)."""
    for record in state["runs"]:
        if record["status"] != "complete" and run_is_complete(study.run_dir(record)):
            record.update(status="complete", reason=None)
            _attach_results(study, record)
        elif record["status"] == "running":
            record["status"] = "pending"


def _load_or_rebuild(study: StudyDir, announce: bool) -> dict[str, Any]:
    """study.json, or, for a study that lost it, a new one holding its run directories (the
    plan merged next finds its own runs among them by their keys)."""
    state = study.load()
    if not study.lost_its_study_file(study.path):
        return state
    adopted = adopt_run_dirs(study, state)
    if announce:
        print(f"seqeval: note: '{study.path}' has no {study.study_file.name}; rebuilding it from "
              f"the spec and its {adopted} run directories", file=sys.stderr)
    return state


def _note_left_out(state: dict[str, Any]) -> None:
    """Say which runs of the folder are not the spec's (stale ones: what changed)."""
    from seqeval.study import STALE, standing

    stale = [r for r in state["runs"] if standing(r) == STALE]
    others = sum(1 for r in state["runs"] if standing(r) not in (STALE, "current"))
    for record in stale:
        print(f"seqeval: note: {record['path']} is stale ({record['stale_reason']}); "
              f"re-run as {record['superseded_by']}", file=sys.stderr)
    if others:
        print(f"seqeval: note: {others} runs of the folder are no longer in the spec; they are "
              "kept and left out of runs.csv (runs_all.csv lists every run)", file=sys.stderr)


def compile_friendly_order(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Runs in an order where runs started together compile different programs: the first run
    of every group of runs that share compiled programs, then the second of each, and so on
    (a group: the same agent, agent settings, mode, seeds and protocol, any first seed or
    dataset). The later runs of a group then find its programs in the compilation cache."""
    groups: dict[str, list[dict[str, Any]]] = {}
    for record in records:
        protocol = {k: v for k, v in record["protocol"].items() if k != "seed"}
        key = json.dumps([record["agent"], record["agent_settings"], record["mode"],
                          record["seeds"], protocol], sort_keys=True)
        groups.setdefault(key, []).append(record)
    longest = max((len(group) for group in groups.values()), default=0)
    return [group[rank] for rank in range(longest) for group in groups.values()
            if rank < len(group)]


def _drive(ray: Any, study: StudyDir, state: dict, planned: list[dict], todo: list[dict],
           settings: dict[str, Any], options: SweepOptions, parallel: int) -> None:
    """Keep up to `parallel` runs in flight until every run of `todo` has an outcome."""
    cpus, gpus = options.cpus_per_run, options.gpus_per_run
    compile_cache = str(study.compile_cache) if options.compile_cache else None
    # A GPU run's worker ends with the run: Ray sets the run's devices per task, and JAX keeps
    # the devices (and memory) it started with for the life of the process.
    runs_per_worker = 1 if gpus else RUNS_PER_WORKER
    task = ray.remote(max_calls=runs_per_worker, max_retries=0)(run_in_worker).options(
        num_cpus=cpus, num_gpus=gpus, runtime_env={"env_vars": run_environment(cpus, gpus)},
    )
    queue = collections.deque(compile_friendly_order(todo))
    in_flight: dict[Any, dict[str, Any]] = {}
    done_before = len(planned) - len(todo)
    bar = _progress_bar(len(planned), done_before, options.progress)
    failed = 0
    try:
        while queue or in_flight:
            while queue and len(in_flight) < parallel:
                record = queue.popleft()
                node_file(study.log_file(record)).unlink(missing_ok=True)
                # Plain fields: the worker imports seqeval.runner (and JAX) inside the run.
                ref = task.remote(dataclasses.asdict(settings[record["id"]]), compile_cache,
                                  str(study.log_file(record)))
                record.update(status="running", reason=None, attempts=record["attempts"] + 1,
                              started=time.time(), finished=None, node=None)
                in_flight[ref] = record
                study.save(state)
            ready, _ = ray.wait(list(in_flight), num_returns=1, timeout=POLL_SECONDS)
            if _note_nodes(study, in_flight.values()):
                study.save(state)
            for ref in ready:
                record = in_flight.pop(ref)
                try:
                    outcome = ray.get(ref)
                except ray.exceptions.RayError as error:  # the worker died or was lost
                    _note_nodes(study, [record])
                    if _node_lost(ray, record):
                        # Not the run's fault: it resumes from its checkpoint elsewhere.
                        record.update(status="pending", attempts=record["attempts"] - 1,
                                      requeued=(record.get("requeued") or 0) + 1,
                                      reason=f"its node {record['node']['host']} "
                                             f"({record['node']['id'][:12]}) was lost; re-queued")
                        queue.appendleft(record)
                        study.save(state)
                        continue
                    outcome = {"status": "failed",
                               "reason": one_line(f"{type(error).__name__}: {error}")}
                _record_outcome(study, record, outcome)
                failed += record["status"] == "failed"
                study.save(state)
                bar.update(1)
            bar.set_postfix_str(f"running {len(in_flight)}, failed {failed}", refresh=False)
            bar.update(0)  # redraws (elapsed time, ETA) at most every `mininterval`
    except BaseException:
        for ref, record in in_flight.items():
            ray.cancel(ref, force=True)
            record.update(status="pending", reason="interrupted; run the sweep again to "
                                                   "resume it")
        try:
            study.save(state)
        except UserError:
            pass  # the disk refuses: the last study.json written stands (runs resume)
        raise
    finally:
        bar.close()


MAX_REQUEUES = 3  # a run whose node is lost more often than this fails (a node that keeps dying)


def _note_nodes(study: StudyDir, records: Any) -> bool:
    """Record the node of each run in flight that has reported it; True if any did."""
    changed = False
    for record in records:
        if record.get("node") is None:
            try:
                found = json.loads(node_file(study.log_file(record)).read_text())
            except (OSError, ValueError):
                continue
            record["node"] = {"id": found["id"], "host": found["host"]}
            changed = True
    return changed


def _node_lost(ray: Any, record: dict[str, Any]) -> bool:
    """The run's task ended with a system error because the node it ran on is gone."""
    if (record.get("requeued") or 0) >= MAX_REQUEUES:
        return False
    node = record.get("node")
    if node is None:
        return False
    deadline = time.monotonic() + NODE_DEATH_SECONDS
    while True:  # Ray marks a node dead a moment after its tasks fail
        alive = {n["NodeID"] for n in ray.nodes() if n.get("Alive")}
        if node["id"] not in alive:
            return True
        if time.monotonic() > deadline:
            return False
        time.sleep(0.5)


def _record_outcome(study: StudyDir, record: dict[str, Any], outcome: dict[str, Any]) -> None:
    node = record.get("node")  # as the run reported it starting, if the outcome lacks it
    record.update({k: outcome.get(k) for k in OUTCOME_FIELDS}, finished=time.time())
    record["node"] = outcome.get("node") or node
    if outcome.get("began") is not None:  # submitted -> the task began: Ray's part of startup
        record["startup_seconds"] = outcome["began"] - record["started"]
    if record["status"] == "complete":
        _attach_results(study, record)


def _attach_results(study: StudyDir, record: dict[str, Any]) -> None:
    """A complete run's final score and AUC into its record (failed if they are unreadable)."""
    try:
        record["results"] = run_results(study.run_dir(record))
    except (OSError, ValueError, KeyError, UserError) as error:
        record.update(status="failed", reason=one_line(f"results unreadable: {error}"))


# ---------------------------------------------------------------------------------------------
# Command line.


def _compile_note(records: list[dict[str, Any]]) -> str | None:
    timed = sorted((r for r in records if r.get("compile_seconds") is not None
                    and r.get("started")), key=lambda r: r["started"])
    if not timed:
        return None
    first, later = timed[0], [r["compile_seconds"] for r in timed[1:]]
    text = f"compile seconds: first run {first['compile_seconds']:.1f}"
    if later:
        text += f", later runs median {statistics.median(later):.1f}"
    hits = sum(r.get("cache_hits") or 0 for r in timed)
    misses = sum(r.get("cache_misses") or 0 for r in timed)
    if hits + misses:
        text += f" (compilation cache: {hits} hits, {misses} misses)"
    return text


def handler(args: argparse.Namespace) -> int:
    # Ray Jobs run the sweep with the cluster's address in RAY_ADDRESS.
    address = args.address or os.environ.get("RAY_ADDRESS") or None
    options = SweepOptions(address=address, max_parallel=args.max_parallel,
                           cpus_per_run=args.cpus_per_run, gpus_per_run=args.gpus_per_run,
                           compile_cache=not args.no_compile_cache,
                           progress=not args.no_progress)
    began = time.time()
    state = run_study(args.spec, args.out, options, dry_run=args.dry_run)
    if args.dry_run:
        return 0
    planned = [r for r in state["runs"] if r.get("in_spec")]
    complete = [r for r in planned if r["status"] == "complete"]
    failed = [r for r in planned if r["status"] != "complete"]
    others = len(state["runs"]) - len(planned)
    print(f"{args.out}: {len(complete)} of {len(planned)} runs complete (study.json, runs.csv)"
          + (f"; the folder holds {others} other runs (runs_all.csv)" if others else ""))
    # Compile times of the runs this command ran (none when everything was complete).
    note = _compile_note([r for r in complete if (r.get("started") or 0) >= began])
    if note:
        print(note)
    if not failed:
        return 0
    print(f"seqeval: {len(failed)} of {len(planned)} runs did not complete (run the same "
          "command again to retry them once more):", file=sys.stderr)
    for record in failed:
        print(f"  {record['path']}: {record['reason'] or record['status']}", file=sys.stderr)
    return 1


def register(subparsers: Any) -> None:
    """Add `seqeval sweep` to the CLI's subparsers."""
    parser = subparsers.add_parser(
        "sweep", help="run a study (agents x datasets x settings x seeds) on Ray",
        description="Expand a TOML study spec into runs and run them as Ray tasks, on a local "
                    "Ray with this machine's cores or on a cluster (--address). Re-running "
                    "resumes: complete runs are skipped, partial ones resumed, failed ones "
                    "retried once. See docs/sweeps.md.")
    parser.add_argument("spec", metavar="SPEC", help="study spec (TOML)")
    parser.add_argument("--out", required=True, metavar="STUDY_DIR",
                        help="study directory (created; resumed when it exists)")
    parser.add_argument("--address", default=None,
                        help="Ray cluster to run on (default: a local Ray with this machine's "
                        "cores)")
    parser.add_argument("--max-parallel", type=int, default=None, metavar="N",
                        help="at most N runs at once (default: as many as the cluster fits)")
    parser.add_argument("--cpus-per-run", type=float, default=1.0, metavar="C",
                        help="CPUs reserved by each run; its XLA threads match (default 1)")
    parser.add_argument("--gpus-per-run", type=float, default=0.0, metavar="G",
                        help="GPUs per run; a fraction shares a GPU (default 0: CPU only)")
    parser.add_argument("--no-compile-cache", action="store_true",
                        help="do not share compiled programs between runs")
    parser.add_argument("--dry-run", action="store_true",
                        help="validate the spec and list its runs, run nothing")
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    parser.set_defaults(func=handler)
