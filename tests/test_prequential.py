"""Prequential scoring: each chunk is scored before training on it, with exact sums."""

from __future__ import annotations

import csv

import jax
import jax.numpy as jnp
import numpy as np
from helpers import MIXED

from seqeval import protocol
from seqeval.agents import Spaces, get_agent
from seqeval.data import load_dataset
from seqeval.runner import RunSettings, run


def _direct_mse(agent, config, state, data, order, start, end):
    """The BC score computed directly: actions of the chunk's transitions, one batch."""
    batch = protocol.gather(protocol.device_data(data), order, jnp.arange(start, end), end)
    return float(agent.score(config, state, batch)["action_mse"]) * (end - start)


def test_scorer_sums_equal_direct_losses(store):
    data = load_dataset(MIXED)
    agent = get_agent("bc")
    config = agent.make_config({"hidden_dims": "16,16"})
    keys = jax.random.split(jax.random.PRNGKey(0), 2)
    states = protocol.init_states(agent, config, keys, Spaces(3, 1),
                                  protocol.dataset_stats(data), 100)
    orders = jnp.stack([jax.random.permutation(k, data.size) for k in keys]).astype(jnp.int32)
    scorer = protocol.make_prequential_scorer(agent, config, length=700)
    sums = scorer(states, orders, protocol.device_data(data), 1_000, 613)
    for member in range(2):
        state = jax.tree.map(lambda x, m=member: x[m], states)
        expected = _direct_mse(agent, config, state, data, orders[member], 1_000, 1_613)
        np.testing.assert_allclose(float(sums["action_mse"][member]), expected, rtol=1e-4)


def test_run_records_losses_before_training_on_each_chunk(store, tmp_path):
    out = tmp_path / "run"
    run(RunSettings(agent="bc", dataset=MIXED, out=str(out), initial_size=2_000,
                    increment=20, eval_every=3_000, eval_episodes=1, batch_size=64,
                    agent_overrides=(("hidden_dims", "16,16"),), progress=False))
    with open(out / "prequential.csv") as handle:
        rows = list(csv.DictReader(handle))
    assert [int(r["samples"]) for r in rows] == [2_000, 3_000, 6_000, 9_000]
    assert [int(r["transitions"]) for r in rows] == [1_000, 3_000, 3_000, 1_000]
    # The first chunk is scored by the untrained agent: recompute it from the seed's keys.
    data = load_dataset(MIXED)
    agent = get_agent("bc")
    config = agent.make_config({"hidden_dims": "16,16"})
    permutation_key, init_key, _ = protocol.seed_keys(0)
    order = protocol.block_permutation(permutation_key, (data.size,))
    state = jax.tree.map(lambda x: x[0], protocol.init_states(
        agent, config, init_key[None], Spaces(3, 1), protocol.dataset_stats(data),
        (10_000 - 2_000) // 20))
    expected = _direct_mse(agent, config, state, data, order, 2_000, 3_000)
    np.testing.assert_allclose(float(rows[0]["action_mse_cumulative"]), expected, rtol=1e-4)
    np.testing.assert_allclose(float(rows[0]["action_mse"]), expected / 1_000, rtol=1e-4)
    cumulative = np.cumsum([float(r["action_mse"]) * int(r["transitions"]) for r in rows])
    np.testing.assert_allclose([float(r["action_mse_cumulative"]) for r in rows], cumulative,
                               rtol=1e-4)
    # Learning happened: later chunks are predicted better (half the actions are random, so
    # the loss cannot fall much below the variance of uniform actions, 1/3).
    assert float(rows[-1]["action_mse"]) < 0.8 * float(rows[0]["action_mse"])
