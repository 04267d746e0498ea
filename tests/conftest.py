"""Shared fixtures: a session-wide temporary Minari store with small real Pendulum datasets."""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import pytest
from helpers import EXPERT, MIXED, RANDOM
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
