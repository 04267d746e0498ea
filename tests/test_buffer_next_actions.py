"""A next action counts only while the transition that holds it is in the agent's buffer.

A probe agent records, for each dataset row, the first and last gradient step at which a batch
offered that row's action as some transition's next action; the test compares those steps with
when the row entered (and, with a window, left) the buffer of a growing prefix, in sequential,
window, full and retrain mode.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np

from seqeval import protocol
from seqeval.agents import Agent
from seqeval.data import OfflineData

NUM_ROWS = 120  # 20 chained episodes of 6 steps; the observation of row r is r
EPISODE_LENGTH = 6
NEVER = 10**6


def chained_dataset() -> OfflineData:
    rows = np.arange(NUM_ROWS, dtype=np.float32)
    truncations = (np.arange(NUM_ROWS) % EPISODE_LENGTH) == EPISODE_LENGTH - 1
    return OfflineData(
        dataset_id="chained", observations=rows[:, None], actions=rows[:, None] / NUM_ROWS,
        rewards=np.zeros(NUM_ROWS, np.float32), next_observations=rows[:, None] + 1.0,
        terminations=np.zeros(NUM_ROWS, bool), truncations=truncations,
        episode_starts=np.arange(0, NUM_ROWS, EPISODE_LENGTH, dtype=np.int64),
        action_low=np.array([-1.0], np.float32), action_high=np.array([1.0], np.float32),
        ref_min_score=None, ref_max_score=None,
    )


@dataclasses.dataclass(frozen=True)
class ProbeConfig:
    pass


def probe_init(config, key, spaces, stats, total_steps):
    del config, key, spaces, stats, total_steps
    return {"step": jnp.int32(0), "first": jnp.full(NUM_ROWS, NEVER, jnp.int32),
            "last": jnp.full(NUM_ROWS, -1, jnp.int32)}


def probe_update(config, state, batch, key):
    """Row r's next action is row r + 1's action (the episodes are chained)."""
    del config, key
    valid = batch.next_action_valid > 0
    next_rows = jnp.where(valid, jnp.round(batch.observations[:, 0]).astype(jnp.int32) + 1,
                          NUM_ROWS)  # out of range: dropped
    step = state["step"]
    state = {"step": step + 1,
             "first": state["first"].at[next_rows].min(step, mode="drop"),
             "last": state["last"].at[next_rows].max(step, mode="drop")}
    return state, {"valid_fraction": jnp.mean(batch.next_action_valid)}


def probe_act(config, state, observations, key, deterministic):
    return jnp.zeros(observations.shape[:-1] + (1,))


PROBE = Agent(name="probe", config_class=ProbeConfig, init=probe_init, update=probe_update,
              act=probe_act)
BATCH = 32
T0, INCREMENT, K = 20, 10, 3
INCREMENTS = (NUM_ROWS - T0) // INCREMENT


def _states(members: int):
    keys = jax.random.split(jax.random.PRNGKey(0), members)
    return jax.vmap(lambda k: probe_init(None, k, None, None, 0))(keys), keys


def _orders(members: int) -> jax.Array:
    return jnp.stack([jax.random.permutation(jax.random.PRNGKey(10 + m), NUM_ROWS)
                      for m in range(members)]).astype(jnp.int32)


def _used(states, member: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(rows whose action was offered as a next action, first step, last step)."""
    first = np.asarray(states["first"][member])
    last = np.asarray(states["last"][member])
    rows = np.flatnonzero(first < NEVER)
    return rows, first[rows], last[rows]


def _sequential(window: int | None):
    trainer = protocol.make_sequential_trainer(PROBE, ProbeConfig(), protocol.SequentialTraining(
        BATCH, INCREMENT, K, INCREMENTS, window))
    states, keys = _states(2)
    orders = _orders(2)
    states, _, _, _ = trainer(states, keys, orders, protocol.device_data(chained_dataset()),
                              T0, INCREMENTS)
    return states, np.asarray(orders)


def _entry_step(position: np.ndarray) -> np.ndarray:
    """First gradient step whose buffer holds `position`: increment i trains on the first
    T0 + (i + 1) * INCREMENT positions, K steps each."""
    increment = np.maximum(np.ceil((position + 1 - T0) / INCREMENT) - 1, 0)
    return (increment * K).astype(int)


def test_sequential_growth_never_offers_a_next_action_before_its_transition_arrives():
    states, orders = _sequential(window=None)
    for member in range(2):
        rows, first, _ = _used(states, member)
        positions = np.argsort(orders[member])[rows]
        assert np.all(first >= _entry_step(positions)), member
        # Not a blanket mask: next actions already in the buffer are used, early and late.
        assert np.any((positions < T0) & (first == 0))
        assert np.any(positions >= NUM_ROWS - INCREMENT)


def test_a_sliding_window_offers_a_next_action_only_while_its_transition_is_inside():
    window = 30
    states, orders = _sequential(window=window)
    for member in range(2):
        rows, first, last = _used(states, member)
        positions = np.argsort(orders[member])[rows]
        assert np.all(first >= _entry_step(positions))
        # Increment i holds positions [size_i - window, size_i): position p leaves after the
        # last increment with size_i <= p + window.
        last_increment = (positions + window - T0) // INCREMENT - 1
        assert np.all(last <= last_increment * K + K - 1), member
        assert np.any(last >= last_increment * K)  # used up to the increment it leaves in


def test_full_mode_offers_every_next_action_from_the_first_step():
    trainer = protocol.make_full_data_trainer(PROBE, ProbeConfig(), protocol.FullDataTraining(
        BATCH, K, INCREMENTS))
    states, keys = _states(1)
    orders = _orders(1)
    states, _, _, _ = trainer(states, keys, orders, protocol.device_data(chained_dataset()),
                              INCREMENTS)
    rows, first, _ = _used(states, 0)
    positions = np.argsort(np.asarray(orders[0]))[rows]
    assert np.any((positions >= NUM_ROWS - INCREMENT) & (first < K))


def test_each_retrain_member_sees_only_next_actions_of_its_own_prefix():
    sizes = np.array([20, 20, 60, 60], np.int32)
    trainer = protocol.make_retrain_trainer(PROBE, ProbeConfig(), protocol.RetrainTraining(
        BATCH, 40))
    states, keys = _states(4)
    orders = _orders(2)[np.array([0, 1, 0, 1])]
    states, _, _, _ = trainer(states, keys, orders, protocol.device_data(chained_dataset()),
                              jnp.asarray(sizes), jnp.full(4, 40, jnp.int32))
    for member, size in enumerate(sizes):
        rows, _, _ = _used(states, member)
        positions = np.argsort(np.asarray(orders[member]))[rows]
        assert positions.size and np.all(positions < size), member
    assert np.any(np.argsort(np.asarray(orders[2]))[_used(states, 2)[0]] >= 20)


def test_gather_masks_next_actions_outside_the_buffer():
    data = chained_dataset()
    device = protocol.device_data(data)
    order = jnp.arange(NUM_ROWS, dtype=jnp.int32)[::-1]  # position p holds row 119 - p
    # Positions 1, 7 and 8 hold rows 118, 112 and 111, whose next rows 119, 113 and 112 are
    # at positions 0, 6 and 7; row 119 (position 0) ends its episode.
    positions = jnp.array([1, 7, 8, 0])
    for (low, size), expected in [((0, 8), [1, 1, 1, 0]), ((0, 1), [1, 0, 0, 0]),
                                  ((1, 8), [0, 1, 1, 0]), ((7, 9), [0, 0, 1, 0])]:
        batch = protocol.gather(device, order, positions, size, low)
        np.testing.assert_array_equal(np.asarray(batch.next_action_valid), expected)
        rows = np.array([118, 112, 111, 119])
        np.testing.assert_allclose(np.asarray(batch.next_actions[:, 0]),
                                   np.where(expected, (rows + 1) / NUM_ROWS, 0.0), rtol=1e-6)
