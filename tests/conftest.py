"""Shared fixtures: a session-wide temporary Minari store with small real Pendulum datasets, and
one tiny real study swept on a local Ray, shared by the sweep and select tests."""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import io
import os
import shutil
import tempfile
import warnings
from pathlib import Path

import pytest
from suite_flags import set_suite_flags

# Many tests compile the same small programs (the same agent, sizes and shapes): one persistent
# JAX compilation cache for the whole session serves them from disk after the first compile. The
# variables are set before JAX is first imported (helpers imports it), and pytest-xdist's workers
# and the tests' `seqeval` subprocesses inherit them, so all share one cache. A cache the user
# set is respected and kept.
_SESSION_CACHE = "SEQEVAL_TEST_COMPILATION_CACHE"
if "JAX_COMPILATION_CACHE_DIR" not in os.environ:
    os.environ[_SESSION_CACHE] = tempfile.mkdtemp(prefix="seqeval-test-jax-cache-")
    os.environ["JAX_COMPILATION_CACHE_DIR"] = os.environ[_SESSION_CACHE]
    os.environ["JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"] = "0"
    os.environ["JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES"] = "-1"

# The suite's programs are tiny and each runs briefly: XLA:CPU's compile time, not run time,
# dominates it, so the suite compiles without LLVM's optimisation passes and without the new
# fusion emitters (tests/suite_flags.py has the measurements). Workers, CLI subprocesses and
# Ray runs inherit the flags; pytest-xdist's workers find them set by the controller.
set_suite_flags()

# Ray runs its workers at nice 15, so a test's runs on a local Ray got the cores only when the
# other xdist worker left them idle: the Ray group (the longest a worker takes) waited on the
# rest. At nice 0 both workers share the cores fairly. (Tests only; a user's sweep keeps Ray's.)
os.environ.setdefault("RAY_worker_niceness", "0")

# helpers and pendulum_data (which import JAX) are imported where used: pytest-xdist's
# controller runs no test, and its start-up delays every worker's.

warnings.filterwarnings("ignore", module="minari")


# Tests that start a local Ray run on one pytest-xdist worker (`make test` runs `--dist
# loadgroup`): two Ray instances starting side by side would compete for the same cores, and the
# session's tiny study is then swept once, not once per worker.
_RAY_MODULES = {"test_sweep.py", "test_study_identity.py"}


def _module_fixture_group(item: pytest.Item) -> str | None:
    """The module's name when the test asks for a module-scoped fixture of its module (a built
    dataset store, a reference run): such tests run on one worker, so the fixture is built once
    rather than once per worker. Autouse fixtures (cheap settings) do not count."""
    info = getattr(item, "_fixtureinfo", None)  # pytest's own record of the test's fixtures
    if info is None:
        return None
    autouse = set(info.initialnames) - set(info.argnames)
    for name in info.names_closure:
        definitions = info.name2fixturedefs.get(name)
        if name not in autouse and definitions and definitions[-1].scope == "module":
            return item.path.name
    return None


# tryfirst: pytest-xdist reads the xdist_group marks in its own collection hook (suffixing each
# test id with its group for --dist loadgroup); marks added after it are ignored.
@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    ray = [item for item in items
           if "tiny_study" in getattr(item, "fixturenames", ()) or item.path.name in _RAY_MODULES]
    for item in ray:
        item.add_marker(pytest.mark.xdist_group("ray"))
    chosen = set(ray)
    for item in items:
        group = None if item in chosen else _module_fixture_group(item)
        if group is not None:
            item.add_marker(pytest.mark.xdist_group(group))
    # The Ray group is the longest unit a worker takes (~5 min here): first, so that the other
    # worker runs the rest beside it instead of waiting for it at the end.
    items[:] = ray + [item for item in items if item not in chosen]


def pytest_unconfigure(config: pytest.Config) -> None:
    # Only the process that made the cache (the controller, or a run without workers) removes it.
    if os.environ.get(_SESSION_CACHE) and not hasattr(config, "workerinput"):
        shutil.rmtree(os.environ.pop(_SESSION_CACHE), ignore_errors=True)


def _build_pendulum_store(store: Path) -> None:
    from helpers import EXPERT, MIXED, RANDOM
    from pendulum_data import make_pendulum_dataset

    previous = os.environ.get("MINARI_DATASETS_PATH")
    os.environ["MINARI_DATASETS_PATH"] = str(store)
    try:
        make_pendulum_dataset(EXPERT, episodes=50, expert_fraction=1.0, action_noise=0.1)
        make_pendulum_dataset(MIXED, episodes=50, expert_fraction=0.5, seed=2)
        make_pendulum_dataset(RANDOM, episodes=50, expert_fraction=0.0, seed=1)
    finally:
        if previous is None:
            del os.environ["MINARI_DATASETS_PATH"]
        else:
            os.environ["MINARI_DATASETS_PATH"] = previous


@pytest.fixture(scope="session")
def pendulum_store(tmp_path_factory) -> Path:
    """A Minari store holding expert (50 episodes), mixed and random Pendulum datasets.

    Under pytest-xdist the workers share one store in the session's base folder: the first
    builds it under a lock, the others wait for it (tests only read it)."""
    if "PYTEST_XDIST_WORKER" not in os.environ:
        store = tmp_path_factory.mktemp("minari")
        _build_pendulum_store(store)
        return store
    session_root = tmp_path_factory.getbasetemp().parent  # one folder per session, all workers
    store = session_root / "minari"
    with open(session_root / "minari.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not (session_root / "minari.built").exists():
            shutil.rmtree(store, ignore_errors=True)  # a worker that died while building
            store.mkdir()
            _build_pendulum_store(store)
            (session_root / "minari.built").touch()
    return store


@pytest.fixture
def store(pendulum_store, monkeypatch) -> Path:
    """Point Minari at the session's Pendulum store for one test."""
    monkeypatch.setenv("MINARI_DATASETS_PATH", str(pendulum_store))
    return pendulum_store


@dataclasses.dataclass(frozen=True)
class TinyStudy:
    """The session's tiny study: read it in place; copy it (shutil.copytree) to change it."""

    path: Path  # the study directory
    spec: Path  # its spec (helpers.TINY_STUDY_SPEC)
    printed: str  # what `seqeval sweep` printed on stdout
    home_files: list[Path]  # what appeared in $HOME while it ran


@pytest.fixture(scope="session")
def tiny_study(pendulum_store, tmp_path_factory) -> TinyStudy:
    """helpers.TINY_STUDY_SPEC swept once on a local Ray (its own temporary $HOME)."""
    from helpers import TINY_STUDY_SPEC

    from seqeval.cli import main

    root = tmp_path_factory.mktemp("tiny_study")
    home = root / "home"
    home.mkdir()
    spec = root / "spec.toml"
    spec.write_text(TINY_STUDY_SPEC)
    out = root / "study"
    printed = io.StringIO()
    with pytest.MonkeyPatch.context() as patch, warnings.catch_warnings():
        # Ray starts its processes by fork + exec, which runs no Python in the child, so JAX's
        # warning about forking a multithreaded process does not apply.
        warnings.filterwarnings("ignore", r"os\.fork\(\) was called", RuntimeWarning)
        patch.setenv("MINARI_DATASETS_PATH", str(pendulum_store))
        patch.setenv("HOME", str(home))
        with contextlib.redirect_stdout(printed):
            code = main(["sweep", str(spec), "--out", str(out), "--no-progress"])
    assert code == 0, printed.getvalue()
    return TinyStudy(out, spec, printed.getvalue(), sorted(home.iterdir()))
