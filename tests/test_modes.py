"""Protocol modes: online fine-tuning, retrain at each size, full data, distribution shift."""

from __future__ import annotations

import json

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from helpers import EXPERT, MIXED, PROBE, RANDOM, ProbeConfig, identity_data, probe_init

from seqeval import protocol
from seqeval.agents import Spaces, adam, get_agent
from seqeval.cli import main
from seqeval.data import load_dataset
from seqeval.results import RunDir, read_evaluations, read_training
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
    base = probe_init(ProbeConfig(), None, None, None, 0)
    states = jax.tree.map(lambda x: jnp.stack([x] * 3), base)
    keys = jax.random.split(jax.random.PRNGKey(0), 3)
    orders = jnp.tile(jnp.arange(200, dtype=jnp.int32), (3, 1))
    budgets = jnp.array([30, 10, 30], jnp.int32)
    states, *_ = train(states, keys, orders, identity_data(200), jnp.asarray(sizes), budgets)
    seen = np.asarray(states["seen"])
    for member, size in enumerate(sizes):
        trained = seen[member][: int(budgets[member])]
        assert (trained >= 0).all() and (trained < size).all()
        assert len(np.unique(trained)) > min(size, 8) // 2  # the prefix is really sampled
    assert (seen[1][10:30] == -1).all()  # a member past its budget stops updating


BC_PEAK_RATE = 1e-3  # BCConfig.learning_rate


def _bc_schedules(out, members: int, online_count: int | None = None):
    """The final learning-rate schedule state (count, horizon, learning_rate) of each member of
    a BC run, read from its checkpoint."""
    agent = get_agent("bc")
    config = agent.make_config(dict(TINY["agent_overrides"]))
    data = load_dataset(EXPERT)
    keys = jax.random.split(jax.random.PRNGKey(0), members)
    states = protocol.init_states(agent, config, keys, Spaces(3, 1), protocol.dataset_stats(data),
                                  np.ones(members, np.int32))
    like = {"states": states, "train_keys": keys}
    if online_count is not None:
        like["explore_keys"] = keys
        like["online"] = jax.tree.map(
            lambda c: jnp.zeros((members, online_count) + c.shape[1:], c.dtype),
            protocol.device_dataset(data))
    tree, _ = RunDir(out).load_checkpoint(lambda progress: like)
    return tree["states"].actor.opt_state[1]


def _cosine(count, horizon):
    return BC_PEAK_RATE * 0.5 * (1 + np.cos(np.pi * count / horizon))


def test_retrain_mode_trains_each_size_with_its_own_schedule(store, tmp_path):
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
    # Each member's cosine decay spans its own budget and has reached ~0 at its end.
    schedule = _bc_schedules(out, members=6)
    member_budgets = np.array([50, 50, 50, 50, 80, 80])
    np.testing.assert_array_equal(schedule.count, member_budgets)
    np.testing.assert_array_equal(schedule.horizon, member_budgets)
    np.testing.assert_allclose(schedule.learning_rate, _cosine(member_budgets - 1,
                                                               member_budgets), rtol=1e-4)
    assert (np.asarray(schedule.learning_rate) < 0.002 * BC_PEAK_RATE).all()
    # The same as a fresh agent trained alone on that budget.
    alone = tmp_path / "alone"
    run(RunSettings(agent="bc", dataset=EXPERT, out=str(alone), mode="retrain",
                    initial_size=2_000, increment=100, sizes=(500,), retrain_min_steps=50,
                    **TINY))
    single = _bc_schedules(alone, members=1)
    assert int(single.count[0]) == 50
    np.testing.assert_allclose(single.learning_rate[0], schedule.learning_rate[0], rtol=1e-6)


def test_online_steps_leave_the_offline_curve_unchanged(store, tmp_path):
    """Schedules span the offline pass; the online phase trains at the constant peak rate."""
    common = dict(agent="bc", dataset=EXPERT, initial_size=8_000, increment=50,
                  eval_every=1_000, **TINY)
    run(RunSettings(out=str(tmp_path / "offline"), **common))
    run(RunSettings(out=str(tmp_path / "online"), online_steps=300, online_block=300, **common))

    def offline(rows):
        return [{k: v for k, v in r.items() if k != "wall_time"} for r in rows
                if r["phase"] == "offline"]

    alone, continued = tmp_path / "offline", tmp_path / "online"
    assert offline(read_evaluations(continued)) == offline(read_evaluations(alone))
    assert offline(read_training(continued)) == offline(read_training(alone))
    assert len(offline(read_training(alone))) == 2
    schedule = _bc_schedules(continued, members=1, online_count=300)
    assert int(schedule.count[0]) == 40 + 300 and float(schedule.horizon[0]) == 40
    np.testing.assert_allclose(schedule.learning_rate[0], BC_PEAK_RATE, rtol=1e-6)


def test_adam_schedule_is_optax_cosine_decay_then_the_peak_rate():
    params = {"w": jnp.ones(3)}
    grads = {"w": jnp.array([0.1, -0.2, 0.3])}
    ours, reference = adam(1e-3, 10), optax.adam(optax.cosine_decay_schedule(1e-3, 10))
    constant = optax.adam(1e-3)
    step = jax.jit(lambda tx_update, g, s: tx_update(g, s), static_argnums=0)
    ours_state, reference_state = ours.init(params), reference.init(params)
    for _ in range(10):
        ours_update, ours_state = step(ours.update, grads, ours_state)
        reference_update, reference_state = step(reference.update, grads, reference_state)
        np.testing.assert_allclose(ours_update["w"], reference_update["w"], rtol=1e-6)
    # Past the horizon: the constant rate (optax's schedule would stay at 0).
    ours_update, ours_state = step(ours.update, grads, ours_state)
    constant_update, _ = step(constant.update, grads, (reference_state[0], optax.EmptyState()))
    np.testing.assert_allclose(ours_update["w"], constant_update["w"], rtol=1e-6)
    assert float(ours_state[1].learning_rate) == pytest.approx(1e-3)


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


# The modes' code is the engine's, the same for every agent: an actor-only agent and an
# actor-critic one run by default; IQL's and CQL's updates (learning tests in test_agents) are the
# slow cases (40-60 s each here).
@pytest.mark.parametrize("agent", ["bc", "td3_bc",
                                   pytest.param("iql", marks=pytest.mark.slow),
                                   pytest.param("cql", marks=pytest.mark.slow)])
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
