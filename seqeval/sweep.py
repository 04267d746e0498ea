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
"""

from __future__ import annotations

import argparse
import collections
import dataclasses
import json
import math
import os
import secrets
import shutil
import signal
import socket
import statistics
import sys
import tempfile
import time
import traceback
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from seqeval.errors import DivergenceError, UserError
from seqeval.fileio import write_json_atomic
from seqeval.spec import expand_spec, read_spec
from seqeval.study import (
    OUTCOME_FIELDS,
    StudyDir,
    adopt_run_dirs,
    run_is_complete,
    run_results,
    validate_plan,
)

GPU_MEMORY_USE = 0.9  # of a run's GPU share, left to JAX's allocator (the rest: CUDA context)
RAY_OBJECT_STORE_BYTES = 128 * 1024**2  # runs return small dicts; keep /dev/shm use small
PASSED_ENVIRONMENT = ("MINARI_DATASETS_PATH",)  # paths the runs need, made absolute
SOCKET_PATH_ROOM = 45  # Ray's socket paths add ~62 characters to its temp dir (limit 107)
POLL_SECONDS = 1.0  # how often the progress bar is refreshed while runs are in flight
NODE_DEATH_SECONDS = 30.0  # how long a run's failure waits for Ray to say its node is dead
# CPU runs one after another in a worker pay for starting Python, importing JAX and its first
# compilation once (measured in benchmarks/README.md); a fresh worker now and then bounds what
# a long-lived process accumulates.
RUNS_PER_WORKER = 20


# ---------------------------------------------------------------------------------------------
# One run, in a worker (or in this process).


def run_environment(cpus_per_run: float, gpus_per_run: float,
                    environ: dict[str, str] | None = None) -> dict[str, str]:
    """Environment variables of a run's worker, set before JAX is imported there."""
    environ = dict(os.environ if environ is None else environ)
    threads = max(1, math.ceil(cpus_per_run))
    env = {
        # Size of XLA:CPU's client and intra-op (Eigen) thread pools; default: every core.
        "PJRT_NPROC": str(threads),
        "OMP_NUM_THREADS": str(threads),
    }
    flags = environ.get("XLA_FLAGS", "")
    if threads == 1:
        flags = f"{flags} --xla_cpu_multi_thread_eigen=false"
    if flags.strip():
        env["XLA_FLAGS"] = flags.strip()
    if gpus_per_run == 0:
        # A run that reserved no GPU must not take one (JAX would grab a visible device).
        env["JAX_PLATFORMS"] = environ.get("JAX_PLATFORMS", "cpu")
    elif gpus_per_run < 1:
        # Runs sharing a device: allocate on demand, up to this run's share of its memory.
        env["XLA_PYTHON_CLIENT_PREALLOCATE"] = "false"
        env["XLA_PYTHON_CLIENT_MEM_FRACTION"] = f"{GPU_MEMORY_USE * gpus_per_run:.3f}"
    for name in PASSED_ENVIRONMENT:
        if environ.get(name):
            env[name] = os.path.abspath(environ[name])
    return env


def use_compile_cache(path: Path | str) -> None:
    """Persist every compiled program in `path`, however small or quick to compile (the
    defaults skip programs compiled in under a second, which is most CPU programs here)."""
    import jax

    jax.config.update("jax_compilation_cache_dir", str(path))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", -1)


class CompileMeter:
    """Seconds JAX spends compiling (XLA compile, or loading from the persistent cache) and
    tracing/lowering, and cache hits/misses, from jax.monitoring events."""

    _active: CompileMeter | None = None
    _installed = False

    def __init__(self) -> None:
        self.totals: dict[str, float] = collections.defaultdict(float)

    @classmethod
    def _install(cls) -> None:
        if cls._installed:
            return
        from jax import monitoring

        def on_duration(event: str, duration: float, **_: Any) -> None:
            if cls._active is not None:
                cls._active.totals[event] += duration

        def on_event(event: str, **_: Any) -> None:
            if cls._active is not None:
                cls._active.totals[event] += 1

        monitoring.register_event_duration_secs_listener(on_duration)
        monitoring.register_event_listener(on_event)
        cls._installed = True

    @contextmanager
    def measure(self):
        self._install()
        previous, CompileMeter._active = CompileMeter._active, self
        try:
            yield self
        finally:
            CompileMeter._active = previous

    def summary(self) -> dict[str, float]:
        totals = self.totals
        return {
            "compile_seconds": totals["/jax/core/compile/backend_compile_duration"],
            "trace_seconds": totals["/jax/core/compile/jaxpr_trace_duration"]
            + totals["/jax/core/compile/jaxpr_to_mlir_module_duration"],
            "cache_hits": int(totals["/jax/compilation_cache/cache_hits"]),
            "cache_misses": int(totals["/jax/compilation_cache/cache_misses"]),
        }


def xla_cpu_threads() -> int | None:
    """Threads of XLA:CPU's intra-op (Eigen) pool in this process (Linux), None elsewhere."""
    tasks = Path("/proc/self/task")
    if not tasks.is_dir():
        return None
    count = 0
    for task in tasks.iterdir():
        try:
            count += "XLAEigen" in (task / "comm").read_text()
        except OSError:
            continue
    return count


def one_line(text: str, limit: int = 400) -> str:
    """The first non-empty line of `text`, shortened."""
    line = next((ln.strip() for ln in str(text).splitlines() if ln.strip()), "")
    return line if len(line) <= limit else line[:limit - 3] + "..."


def execute_run(settings: Any, compile_cache: str | None) -> dict[str, Any]:
    """Run (or resume) one run in this process; its outcome, never an exception (except a
    KeyboardInterrupt): status complete or failed, a one-line reason, and compile seconds.
    `settings`: a RunSettings, or a dict of its fields (JAX is then imported here, timed)."""
    started = time.time()
    if compile_cache:
        use_compile_cache(compile_cache)
    from seqeval.runner import RunSettings, run

    if isinstance(settings, dict):
        settings = RunSettings(**settings)
    outcome: dict[str, Any] = {"status": "complete", "reason": None, "pid": os.getpid(),
                               "import_seconds": time.time() - started}
    meter = CompileMeter()
    try:
        with meter.measure():
            run(settings)
    except DivergenceError as error:
        outcome.update(status="failed", reason=one_line(f"diverged: {error}"))
    except UserError as error:
        outcome.update(status="failed", reason=one_line(str(error)))
    except Exception as error:  # any crash of one run is that run's failure, not the study's
        traceback.print_exc()
        outcome.update(status="failed", reason=one_line(f"{type(error).__name__}: {error}"))
    outcome.update(meter.summary(), wall_time=time.time() - started,
                   xla_threads=xla_cpu_threads())
    return outcome


@contextmanager
def _output_to(log_file: Path):
    """Send this process's stdout and stderr (Python's and XLA's) to `log_file` meanwhile."""
    log_file.parent.mkdir(parents=True, exist_ok=True)
    sys.stdout.flush()
    sys.stderr.flush()
    saved = os.dup(1), os.dup(2)
    with open(log_file, "a") as log:
        os.dup2(log.fileno(), 1)
        os.dup2(log.fileno(), 2)
    try:
        yield
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        for fd, copy in zip((1, 2), saved, strict=True):
            os.dup2(copy, fd)
            os.close(copy)


def this_node() -> dict[str, Any]:
    """The Ray node this process runs on: its id and host name."""
    import ray

    return {"id": ray.get_runtime_context().get_node_id(), "host": socket.gethostname()}


def _run_in_worker(settings: dict[str, Any], compile_cache: str | None,
                   log_file: str) -> dict[str, Any]:
    """The Ray task: one run (RunSettings fields), its output in its log file; the node it
    runs on is written beside the log first (`node_file`), for the driver to record."""
    began = time.time()
    node = this_node()
    Path(log_file).parent.mkdir(parents=True, exist_ok=True)
    write_json_atomic(node_file(log_file), {**node, "pid": os.getpid(), "began": began})
    with _output_to(Path(log_file)):
        print(f"seqeval sweep: {settings['agent']} on {settings['dataset']} "
              f"({settings['mode']}) -> {settings['out']}, pid {os.getpid()}, "
              f"{time.strftime('%Y-%m-%d %H:%M:%S')}", flush=True)
        outcome = {**execute_run(settings, compile_cache), "began": began, "node": node}
        print(f"seqeval sweep: {outcome['status']}"
              + (f": {outcome['reason']}" if outcome["reason"] else ""), flush=True)
    return outcome


def node_file(log_file: str | Path) -> Path:
    """Where a run's task writes the node it runs on: RUN.node.json beside RUN.log."""
    return Path(str(log_file).removesuffix(".log") + ".node.json")


def _write_probe(path: str, token: str) -> str | None:
    """A task's part of `check_visible`: write `token` into the file `path` (never creating
    a folder); the error in one line, or None."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        with os.fdopen(fd, "w") as handle:
            handle.write(token)
        return None
    except OSError as error:
        return error.strerror or type(error).__name__


def check_visible(ray: Any, study_path: Path, runtime_env: dict[str, Any] | None = None,
                  timeout: float = 120.0) -> None:
    """Refuse a STUDY_DIR that a node of the cluster cannot see: a task on every node with
    CPUs writes a probe file into it, which this process must then read (a node whose
    folder of that name is its own, or missing, would lose its runs' results)."""
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    token = secrets.token_hex(8)
    nodes = [n for n in ray.nodes() if n.get("Alive") and n.get("Resources", {}).get("CPU")]
    probe = ray.remote(num_cpus=0, max_retries=0)(_write_probe)
    refs = {}
    for node in nodes:
        path = study_path / f".probe-{token}-{node['NodeID'][:12]}"
        strategy = NodeAffinitySchedulingStrategy(node["NodeID"], soft=False)
        refs[path] = (node, probe.options(scheduling_strategy=strategy,
                                          runtime_env=runtime_env).remote(str(path), token))
    try:
        problems = []
        for path, (node, ref) in refs.items():
            host = node.get("NodeManagerHostname") or node.get("NodeManagerAddress")
            error = ray.get(ref, timeout=timeout)
            try:
                seen = path.read_text() == token
            except OSError:
                seen = False
            if error or not seen:
                problems.append(f"node {host} ({node['NodeID'][:12]}) "
                                + (f"cannot write there ({error})" if error else
                                   "writes to a folder of that name this machine cannot see"))
    finally:
        for path in refs:
            path.unlink(missing_ok=True)
    if problems:
        raise UserError(f"study directory '{study_path}' is not shared with the Ray cluster: "
                        f"{problems[0]}; put --out on storage every node mounts at the same "
                        "path")


# ---------------------------------------------------------------------------------------------
# Ray.


def _ray_temp_root(study_dir: Path) -> Path:
    """A short, study-specific temp dir for Ray (its socket paths must stay under ~107
    characters): RAY_TMPDIR or the system's temp dir, else /tmp."""
    import hashlib

    parent = os.environ.get("RAY_TMPDIR") or tempfile.gettempdir()
    if len(parent) > SOCKET_PATH_ROOM - 28:
        parent = "/tmp"
    digest = hashlib.sha256(str(study_dir).encode()).hexdigest()[:8]
    return Path(parent) / f"seqeval-ray-{os.getuid()}-{digest}"


def _fresh_dir(path: Path) -> Path:
    """`path` emptied (leftovers of a killed driver of this study), or a new temp dir when
    `path` is not ours to use."""
    try:
        if path.is_symlink() or (path.exists() and path.stat().st_uid != os.getuid()):
            raise PermissionError(path)
        shutil.rmtree(path, ignore_errors=True)
        path.mkdir(mode=0o700, parents=True)
        return path
    except OSError:
        return Path(tempfile.mkdtemp(prefix="seqeval-ray-"))


_LOCAL_TOKEN: str | None = None


def _local_token_auth() -> None:
    """Ray >= 2.5x protects a new local cluster with a token it writes to ~/.ray/auth_token;
    give it one in the environment instead, so a sweep writes nothing in the user's home."""
    global _LOCAL_TOKEN
    names = ("RAY_AUTH_MODE", "RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH")
    if any(os.environ.get(n) for n in names) and _LOCAL_TOKEN is None:
        return  # the user's own setting
    if (Path.home() / ".ray" / "auth_token").is_file() and _LOCAL_TOKEN is None:
        return  # the user's own token
    if _LOCAL_TOKEN is None:
        import secrets

        _LOCAL_TOKEN = secrets.token_hex(32)  # one per process: Ray caches the token it read
    os.environ["RAY_AUTH_MODE"] = "token"
    os.environ["RAY_AUTH_TOKEN"] = _LOCAL_TOKEN
    if "ray._raylet" in sys.modules:  # Ray read its configuration already: read it again
        sys.modules["ray._raylet"].Config.initialize("")


def _check_reachable(address: str) -> None:
    """A HOST:PORT address answers, or a one-line error now (Ray itself keeps retrying)."""
    import socket

    host, sep, port = address.rpartition(":")
    if not sep or "://" in address or not port.isdigit():
        return  # "auto", "ray://...": Ray resolves them
    try:
        socket.create_connection((host, int(port)), timeout=10).close()
    except OSError as error:
        raise UserError(f"cannot reach a Ray cluster at '{address}' ({error}); check the "
                        "address ('ray status' on the head node) or drop --address to run "
                        "locally") from None


@contextmanager
def ray_session(address: str | None, study_dir: Path):
    """Ray, connected: an existing cluster at `address`, or a local instance with this
    machine's cores whose files live in a temp dir removed afterwards."""
    import logging

    if not address:
        _local_token_auth()  # before Ray reads its configuration
    try:
        import ray
    except ImportError:
        raise UserError("seqeval sweep needs Ray; install it with pip install 'seqeval[ray]' "
                        "(make test installs it)") from None
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    temp_dir = None
    try:
        if address:
            _check_reachable(address)
            try:
                ray.init(address=address, log_to_driver=False, logging_level=logging.WARNING)
            except (ConnectionError, RuntimeError, ValueError,
                    ray.exceptions.RayError) as error:  # AuthenticationError: a wrong token
                raise UserError(f"cannot connect to Ray at '{address}' ({one_line(error)}); "
                                "check the address ('ray status' on the head node) or drop "
                                "--address to run locally") from None
        else:
            temp_dir = _fresh_dir(_ray_temp_root(study_dir))
            try:
                ray.init(num_cpus=len(os.sched_getaffinity(0)), include_dashboard=False,
                         log_to_driver=False, logging_level=logging.WARNING,
                         object_store_memory=RAY_OBJECT_STORE_BYTES, _temp_dir=str(temp_dir))
            except (ConnectionError, RuntimeError, OSError) as error:
                raise UserError(f"could not start a local Ray ({one_line(error)}); check free "
                                "memory and disk in /tmp and /dev/shm, or run on a cluster "
                                "with --address") from None
        yield ray
    finally:
        if ray.is_initialized():
            ray.shutdown()
        if temp_dir is not None:
            shutil.rmtree(temp_dir, ignore_errors=True)


def _capacity(ray: Any, cpus_per_run: float, gpus_per_run: float,
              max_parallel: int | None) -> int:
    """How many runs fit on the cluster at once (at most --max-parallel)."""
    resources = ray.cluster_resources()
    cpus, gpus = resources.get("CPU", 0.0), resources.get("GPU", 0.0)
    if cpus_per_run > cpus:
        raise UserError(f"--cpus-per-run {cpus_per_run:g} is more than the Ray cluster's "
                        f"{cpus:g} CPUs; lower it")
    if gpus_per_run > gpus:
        raise UserError(f"--gpus-per-run {gpus_per_run:g} but the Ray cluster has {gpus:g} "
                        "GPUs; lower it, or use --address of a cluster with GPUs")
    fits = math.floor(cpus / cpus_per_run + 1e-9)
    if gpus_per_run:
        fits = min(fits, math.floor(gpus / gpus_per_run + 1e-9))
    return max(1, min(fits, max_parallel or fits))


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
        _check_reachable(options.address)

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
            settings = {r["id"]: by_key[r["key"]].run_settings(study.run_dir(r)) for r in todo}
            with ray_session(options.address, study.path) as ray, _terminate_as_interrupt():
                parallel = _capacity(ray, options.cpus_per_run, options.gpus_per_run,
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
    task = ray.remote(max_calls=runs_per_worker, max_retries=0)(_run_in_worker).options(
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
