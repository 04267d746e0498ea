"""Protocol modes: online fine-tuning, retrain at each size, full data, distribution shift."""

from __future__ import annotations

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import EXPERT, MIXED, RANDOM
from test_protocol import PROBE, ProbeConfig, _identity_data, _probe_init

from seqeval import protocol
from seqeval.agents import get_agent
from seqeval.cli import main
from seqeval.results import read_evaluations
from seqeval.runner import RunSettings, run

TINY = dict(agent_overrides=(("hidden_dims", "16,16"),), eval_episodes=1, batch_size=32,
            progress=False)


def test_online_phase_appends_exactly_m_transitions_and_continues_the_axis(store, tmp_path):
    out = tmp_path / "online"
    summary = run(RunSettings(agent="bc", dataset=EXPERT, out=str(out), initial_size=8_000,
                              increment=50, eval_every=1_000, online_steps=700,
                              online_block=300, num_seeds=2, **TINY))
    rows = read_evaluations(out)
    offline = [r for r in rows if r["phase"] == "offline"]
    online = [r for r in rows if r["phase"] == "online"]
    assert max(r["samples"] for r in offline) == 10_000
    # The x-axis continues: samples = dataset + environment steps, evaluated every 1000 samples.
    assert sorted({r["samples"] for r in online}) == [10_700]
    assert summary["samples"] == 10_700
    assert summary["gradient_steps"] == 40 + 700  # 2000/50 offline increments, 1 per env step
    progress = json.loads((out / "checkpoint" / "progress.json").read_text())
    assert progress["online_count"] == 700
    with np.load(out / "checkpoint" / progress["arrays"]) as stored:
        shapes = sorted({stored[k].shape for k in stored.files if stored[k].ndim >= 2
                         and stored[k].shape[:2] == (2, 700)})
    assert shapes, "the checkpoint holds each seed's 700 online transitions"


def test_online_phase_runs_with_environment_data_in_the_buffer(store, tmp_path):
    """Online transitions really enter the batches: a probe run on an all-zero-reward dataset
    sees the environment's (negative) Pendulum rewards during the online phase."""
    out = tmp_path / "online-training"
    run(RunSettings(agent="bc", dataset=EXPERT, out=str(out), initial_size=9_000,
                    increment=100, eval_every=500, online_steps=1_000, online_block=250, **TINY))
    online = [r for r in read_evaluations(out) if r["phase"] == "online"]
    assert [r["samples"] for r in online] == [10_500, 11_000]


def test_retrain_members_never_sample_beyond_their_prefix():
    sizes = np.array([5, 40, 120], np.int32)
    train = protocol.make_retrain_trainer(PROBE, ProbeConfig(),
                                          protocol.RetrainTraining(batch_size=8, max_steps=30))
    base = _probe_init(ProbeConfig(), None, None, None, 0)
    states = jax.tree.map(lambda x: jnp.stack([x] * 3), base)
    keys = jax.random.split(jax.random.PRNGKey(0), 3)
    orders = jnp.tile(jnp.arange(200, dtype=jnp.int32), (3, 1))
    budgets = jnp.array([30, 10, 30], jnp.int32)
    states, *_ = train(states, keys, orders, _identity_data(200), jnp.asarray(sizes), budgets)
    seen = np.asarray(states["seen"])
    for member, size in enumerate(sizes):
        trained = seen[member][: int(budgets[member])]
        assert (trained >= 0).all() and (trained < size).all()
        assert len(np.unique(trained)) > min(size, 8) // 2  # the prefix is really sampled
    assert (seen[1][10:30] == -1).all()  # a member past its budget stops updating


def test_retrain_mode_trains_each_size(store, tmp_path):
    out = tmp_path / "retrain"
    summary = run(RunSettings(agent="bc", dataset=EXPERT, out=str(out), mode="retrain",
                              initial_size=2_000, increment=100, sizes=(500, 2_000, 10_000),
                              retrain_min_steps=50, num_seeds=2, **TINY))
    rows = read_evaluations(out)
    assert sorted({r["samples"] for r in rows}) == [500, 2_000, 10_000]
    budgets = {r["samples"]: r["gradient_steps"] for r in rows}
    # default budget: the sequential run's steps at that size, floored at 50
    assert budgets == {500: 50, 2_000: 50, 10_000: 80}
    assert len(rows) == 6 and summary["status"] == "complete"


def test_full_mode_matches_the_sequential_step_count(store, tmp_path):
    common = dict(agent="bc", dataset=EXPERT, initial_size=4_000, increment=20,
                  steps_per_increment=2, eval_every=2_000, **TINY)
    run(RunSettings(out=str(tmp_path / "seq"), **common))
    run(RunSettings(out=str(tmp_path / "full"), mode="full", **common))
    sequential = read_evaluations(tmp_path / "seq")
    full = read_evaluations(tmp_path / "full")
    assert [(r["samples"], r["gradient_steps"]) for r in full] == [
        (r["samples"], r["gradient_steps"]) for r in sequential]
    assert full[-1]["gradient_steps"] == (10_000 - 4_000) // 20 * 2
    assert not (tmp_path / "full" / "prequential.csv").exists()
    assert (tmp_path / "seq" / "prequential.csv").exists()


def test_distribution_shift_feeds_blocks_in_order():
    key = jax.random.PRNGKey(3)
    order = np.asarray(protocol.block_permutation(key, (100, 50, 70)))
    assert sorted(order[:100]) == list(range(100))
    assert sorted(order[100:150]) == list(range(100, 150))
    assert sorted(order[150:]) == list(range(150, 220))
    assert not np.array_equal(order[:100], np.arange(100))  # shuffled within the block


def test_distribution_shift_run_with_window(store, tmp_path):
    out = tmp_path / "shift"
    dataset = f"{RANDOM},{MIXED},{EXPERT}"
    run(RunSettings(agent="bc", dataset=dataset, out=str(out), initial_size=2_000,
                    increment=100, eval_every=7_000, window=3_000, **TINY))
    config = json.loads((out / "config.json").read_text())
    assert config["dataset_info"]["transitions"] == 30_000
    assert config["protocol"]["window"] == 3_000
    assert [r["samples"] for r in read_evaluations(out)] == [7_000, 14_000, 21_000, 28_000,
                                                             30_000]


@pytest.mark.parametrize("agent", ["bc", "td3_bc", "iql", "cql"])
def test_every_mode_runs_through_the_cli_with_every_agent(store, tmp_path, agent):
    small = [item for key, value in get_agent(agent).network_overrides("8,8")
             for item in (f"--agent.{key}", value)]
    common = ["--agent", agent, "--dataset", EXPERT, "--initial-size", "9600",
              "--increment", "20", "--eval-every", "200", "--eval-episodes", "1",
              "--batch-size", "16", "--no-progress", *small]
    modes = {
        "sequential": ["--online-steps", "200", "--online-block", "100"],
        "full": [],
        "retrain": ["--sizes", "1000,10000", "--retrain-steps", "10"],
    }
    for mode, extra in modes.items():
        out = tmp_path / mode
        assert main(["run", "--out", str(out), "--mode", mode, *common, *extra]) == 0, mode
        rows = read_evaluations(out)
        assert rows and all(r["normalized_score"] is not None for r in rows)
    assert {r["phase"] for r in read_evaluations(tmp_path / "sequential")} == {"offline",
                                                                              "online"}
