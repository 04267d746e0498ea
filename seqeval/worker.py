"""One run of a study, in a Ray worker (or in the driver's process): the worker's environment,
set before JAX is imported there; the run itself, whose failure is its outcome, never the
study's; its output in its own log file; and what it reports (compile seconds, cache hits, the
node it ran on). seqeval.sweep drives these runs.
"""

from __future__ import annotations

import collections
import math
import os
import socket
import sys
import time
import traceback
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from seqeval.errors import DivergenceError, UserError
from seqeval.fileio import write_json_atomic

GPU_MEMORY_USE = 0.9  # of a run's GPU share, left to JAX's allocator (the rest: CUDA context)
PASSED_ENVIRONMENT = ("MINARI_DATASETS_PATH",)  # paths the runs need, made absolute


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


def run_in_worker(settings: dict[str, Any], compile_cache: str | None,
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
