"""Shared fixtures: a session-wide temporary Minari store with small real Pendulum datasets, and
one tiny real study swept on a local Ray, shared by the sweep and select tests."""

from __future__ import annotations

import contextlib
import dataclasses
import io
import os
import warnings
from pathlib import Path

import pytest
from helpers import EXPERT, MIXED, RANDOM, TINY_STUDY_SPEC
from pendulum_data import make_pendulum_dataset

warnings.filterwarnings("ignore", module="minari")


@pytest.fixture(scope="session")
def pendulum_store(tmp_path_factory) -> Path:
    """A Minari store holding expert (50 episodes), mixed and random Pendulum datasets."""
    store = tmp_path_factory.mktemp("minari")
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
