"""Ray for a sweep: a local instance on this machine's cores (its files in a short temp dir,
its token kept out of the user's home) or an existing cluster; how many runs fit on it at once;
and proof that every node sees the study directory.
"""

from __future__ import annotations

import hashlib
import math
import os
import secrets
import shutil
import socket
import sys
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from seqeval.errors import UserError
from seqeval.worker import one_line

RAY_OBJECT_STORE_BYTES = 128 * 1024**2  # runs return small dicts; keep /dev/shm use small
SOCKET_PATH_ROOM = 45  # Ray's socket paths add ~62 characters to its temp dir (limit 107)


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


def _ray_temp_root(study_dir: Path) -> Path:
    """A short, study-specific temp dir for Ray (its socket paths must stay under ~107
    characters): RAY_TMPDIR or the system's temp dir, else /tmp."""
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
        _LOCAL_TOKEN = secrets.token_hex(32)  # one per process: Ray caches the token it read
    os.environ["RAY_AUTH_MODE"] = "token"
    os.environ["RAY_AUTH_TOKEN"] = _LOCAL_TOKEN
    if "ray._raylet" in sys.modules:  # Ray read its configuration already: read it again
        sys.modules["ray._raylet"].Config.initialize("")


def check_reachable(address: str) -> None:
    """A HOST:PORT address answers, or a one-line error now (Ray itself keeps retrying)."""
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
            check_reachable(address)
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
                ray.init(num_cpus=local_cpus(), include_dashboard=False,
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


def local_cpus() -> int:
    """The CPUs a local Ray gets: the cores this process may run on."""
    return len(os.sched_getaffinity(0))


def _check_cpus(cpus_per_run: float, cpus: float) -> None:
    if cpus_per_run > cpus:
        raise UserError(f"--cpus-per-run {cpus_per_run:g} is more than the Ray cluster's "
                        f"{cpus:g} CPUs; lower it")


def check_fits_locally(cpus_per_run: float) -> None:
    """Refuse --cpus-per-run beyond this machine's cores before a local Ray is started for
    nothing (~7 s); `capacity` checks GPUs and clusters once Ray runs."""
    _check_cpus(cpus_per_run, local_cpus())


def capacity(ray: Any, cpus_per_run: float, gpus_per_run: float,
              max_parallel: int | None) -> int:
    """How many runs fit on the cluster at once (at most --max-parallel)."""
    resources = ray.cluster_resources()
    cpus, gpus = resources.get("CPU", 0.0), resources.get("GPU", 0.0)
    _check_cpus(cpus_per_run, cpus)
    if gpus_per_run > gpus:
        raise UserError(f"--gpus-per-run {gpus_per_run:g} but the Ray cluster has {gpus:g} "
                        "GPUs; lower it, or use --address of a cluster with GPUs")
    fits = math.floor(cpus / cpus_per_run + 1e-9)
    if gpus_per_run:
        fits = min(fits, math.floor(gpus / gpus_per_run + 1e-9))
    return max(1, min(fits, max_parallel or fits))
