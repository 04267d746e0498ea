"""The benchmark scripts still run (slow: `pytest -m slow`). They import the engine's and the
agents' internals, so a refactor can break them without any other test noticing: bench_agents
did, for a session, after the TD3 family's pieces moved to td3_family."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


def _run(script: str, *args: str) -> str:
    """The script's output; it runs with the suite's XLA flags (its numbers mean nothing)."""
    done = subprocess.run([sys.executable, str(BENCHMARKS / script), *args],
                          capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout


@pytest.mark.slow
def test_bench_agents_costs_and_times_every_kind_of_update():
    # TD3+BC and ReBRAC cost their delayed actor apart (td3_family's critic and actor steps).
    out = _run("bench_agents.py", "--agents", "td3_bc,rebrac,bc", "--seconds", "0.3",
               "--rounds", "1")
    rows = [line.split("|") for line in out.splitlines()
            if line.startswith("| ") and not line.startswith("| agent")]
    assert [row[1].strip() for row in rows] == ["td3_bc", "rebrac", "bc"], out
    assert all(float(row[6]) > 0 for row in rows), out  # GFLOP per update, from XLA's analysis


@pytest.mark.slow
def test_bench_eval_returns_agree_across_worker_counts():
    out = _run("bench_eval.py", "--envs", "halfcheetah", "--workers", "1,2", "--rounds", "1")
    rows = [line for line in out.splitlines() if line.startswith("| halfcheetah")]
    assert len(rows) == 2 and all(row.rstrip(" |").endswith("yes") for row in rows), out


@pytest.mark.slow
def test_bench_sac_times_the_builder_against_a_git_revision_and_steps_environments():
    # HEAD's builder trained against itself, interleaved: its --baseline path had broken when
    # the builder moved to the shared SAC agent, unnoticed until run.
    out = _run("bench_sac.py", "--envs", "pendulum", "--baseline", "HEAD", "--updates", "50",
               "--rounds", "2", "--env-steps", "200")
    rates = [line for line in out.splitlines() if "updates/s" in line]
    assert len(rates) == 2 and "HEAD:" in rates[1], out
    assert any("env steps/s with  4 envs" in line for line in out.splitlines()), out
