"""The sequential protocol: exact counts, the newest-in-batch rule, compilation, learning."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers import EXPERT, PROBE, ProbeConfig, identity_data, probe_init

from seqeval import protocol
from seqeval.results import read_evaluations
from seqeval.runner import RunSettings, run


def algorithm1_reference(n, t0, gamma, k, eval_every):
    """Algorithm 1 written out literally: one Python iteration per increment."""
    t, steps, evaluations = t0, 0, []
    while t < n:
        previous = t
        t = min(t + gamma, n)
        steps += k
        if t // eval_every > previous // eval_every or t == n:
            evaluations.append((t, steps))
    return evaluations


@pytest.mark.parametrize("n,t0,gamma,k,eval_every", [
    (10_000, 1_000, 1, 1, 1_000),
    (10_000, 1_000, 10, 10, 2_000),
    (10_007, 999, 7, 3, 1_000),  # nothing divides anything
    (5_000, 100, 250, 2, 100),  # increments larger than the evaluation period
    (3_000, 2_999, 5, 1, 5_000),  # a single, partial increment
])
def test_schedule_counts_match_algorithm1(n, t0, gamma, k, eval_every):
    chunks = protocol.sequential_schedule(n, t0, gamma, eval_every)
    steps, points = 0, []
    for chunk in chunks:
        steps += chunk.num_increments * k
        points.append((chunk.end_size, steps))
    assert points == algorithm1_reference(n, t0, gamma, k, eval_every)
    assert steps == math.ceil((n - t0) / gamma) * k
    assert chunks[-1].end_size == n


def test_newest_transitions_are_in_the_first_batch_of_each_increment():
    n, t0, gamma, k, batch = 100, 20, 3, 2, 8
    settings = protocol.SequentialTraining(batch_size=batch, increment=gamma,
                                           steps_per_increment=k, max_increments=10)
    train = protocol.make_sequential_trainer(PROBE, ProbeConfig(), settings)
    state = jax.tree.map(lambda x: x[None], probe_init(ProbeConfig(), None, None, None, 0))
    keys = jax.random.PRNGKey(0)[None]
    order = jnp.arange(n, dtype=jnp.int32)[None]  # identity: position p holds row p
    state, keys, _, finite = train(state, keys, order, identity_data(n), t0, 10)
    seen = np.asarray(state["seen"][0])
    assert bool(finite[0])
    for increment in range(10):
        size = t0 + (increment + 1) * gamma
        first, second = seen[increment * k], seen[increment * k + 1]
        np.testing.assert_array_equal(first[-gamma:], np.arange(size - gamma, size))
        assert first.max() < size and second.max() < size  # never beyond the buffer
        assert (first >= 0).all()


def test_window_restricts_batches_to_recent_transitions():
    n, window = 400, 30
    settings = protocol.SequentialTraining(batch_size=8, increment=10, steps_per_increment=3,
                                           max_increments=20, window=window)
    train = protocol.make_sequential_trainer(PROBE, ProbeConfig(), settings)
    state = jax.tree.map(lambda x: x[None], probe_init(ProbeConfig(), None, None, None, 0))
    order = jnp.arange(n, dtype=jnp.int32)[None]
    key = jax.random.PRNGKey(1)[None]
    state, *_ = train(state, key, order, identity_data(n), 100, 20)
    seen = np.asarray(state["seen"][0])[:60].reshape(20, 3, 8)
    for increment in range(20):
        size = 100 + (increment + 1) * 10
        assert seen[increment].min() >= size - window and seen[increment].max() < size


def test_growing_the_data_never_recompiles(store, tmp_path, monkeypatch):
    compiled = []
    original = protocol.make_sequential_trainer

    def spy(*args, **kwargs):
        function = original(*args, **kwargs)
        compiled.append(function)
        return function

    monkeypatch.setattr(protocol, "make_sequential_trainer", spy)
    # 8 chunks of different lengths (10, 186 or 185 increments, a partial last one).
    summary = run(RunSettings(agent="bc", dataset=EXPERT, out=str(tmp_path / "run"),
                              agent_overrides=(("hidden_dims", "16"),), initial_size=1_234,
                              increment=7, eval_every=1_300, eval_episodes=1, batch_size=32,
                              progress=False))
    rows = read_evaluations(tmp_path / "run")
    assert len(rows) == len(protocol.sequential_schedule(10_000, 1_234, 7, 1_300)) == 8
    assert summary["gradient_steps"] == math.ceil((10_000 - 1_234) / 7)
    assert len(compiled) == 1 and compiled[0]._cache_size() == 1


def test_bc_learns_from_expert_pendulum_data(store, tmp_path):
    """BC on the swing-up controller's data ends far above random (0) and near expert (100)."""
    summary = run(RunSettings(agent="bc", dataset=EXPERT, out=str(tmp_path / "bc"),
                              agent_overrides=(("hidden_dims", "64,64"),), initial_size=1_000,
                              increment=10, steps_per_increment=10, eval_every=3_000,
                              eval_episodes=5, progress=False))
    rows = read_evaluations(tmp_path / "bc")
    assert [r["samples"] for r in rows] == [3_000, 6_000, 9_000, 10_000]
    assert summary["gradient_steps"] == 9_000
    assert summary["last_mean_normalized_score"] > 75.0


def test_vmapped_seeds_equal_seeds_run_alone(store, tmp_path):
    common = dict(agent="bc", dataset=EXPERT, agent_overrides=(("hidden_dims", "32,32"),),
                  initial_size=5_000, increment=50, steps_per_increment=5, eval_every=2_500,
                  eval_episodes=2, batch_size=64, progress=False)
    run(RunSettings(out=str(tmp_path / "together"), seed=3, num_seeds=2, **common))
    run(RunSettings(out=str(tmp_path / "alone"), seed=4, num_seeds=1, **common))
    together = [r for r in read_evaluations(tmp_path / "together") if r["seed"] == 4]
    alone = read_evaluations(tmp_path / "alone")
    assert [r["samples"] for r in together] == [r["samples"] for r in alone]
    np.testing.assert_allclose([r["return"] for r in together], [r["return"] for r in alone],
                               rtol=1e-3, atol=0.5)
