"""Batch.next_actions: the dataset's action at the next state of the same episode, found from
the logged order although the engine samples through a permutation."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from seqeval import protocol
from seqeval.agents import Batch
from seqeval.data import OfflineData

# Three hand-made episodes of a 1-d task, in logged order:
#   rows 0-2: terminated at row 2;  rows 3-4: truncated at row 4;
#   rows 5-7: cut off after row 7 (the dataset's last row), neither terminated nor truncated;
#   and row 5's logged next observation is not row 6's observation (a gap in the log), so row 5
#   has no known next action either.
EPISODES = [(0, 3, "terminated"), (3, 2, "truncated"), (5, 3, "cut")]
EXPECTED_NEXT_ROWS = [1, 2, -1, 4, -1, -1, 7, -1]


def hand_made_dataset() -> OfflineData:
    size = 8
    observations = np.arange(size, dtype=np.float32)[:, None] * 10.0
    next_observations = observations + 10.0
    next_observations[5] = 999.0  # the gap
    terminations = np.zeros(size, bool)
    truncations = np.zeros(size, bool)
    terminations[2] = True
    truncations[4] = True
    # Torques in [-2, 2]: action of row r is -2 + 0.5 r, so row r scales to (-2 + 0.5 r) / 2.
    actions = (-2.0 + 0.5 * np.arange(size, dtype=np.float32))[:, None]
    return OfflineData(
        dataset_id="hand-made", observations=observations, actions=actions,
        rewards=np.arange(size, dtype=np.float32), next_observations=next_observations,
        terminations=terminations, truncations=truncations,
        episode_starts=np.array([start for start, _, _ in EPISODES], np.int64),
        action_low=np.array([-2.0], np.float32), action_high=np.array([2.0], np.float32),
        ref_min_score=None, ref_max_score=None,
    )


def scaled_action(row: int) -> float:
    return (-2.0 + 0.5 * row) / 2.0


def test_next_action_rows_stop_at_episode_ends_truncations_and_gaps():
    np.testing.assert_array_equal(hand_made_dataset().next_action_rows(), EXPECTED_NEXT_ROWS)


def test_device_dataset_carries_next_actions_and_their_mask_in_logged_order():
    batch = protocol.device_dataset(hand_made_dataset())
    valid = np.asarray(batch.next_action_valid)
    np.testing.assert_array_equal(valid, [float(r >= 0) for r in EXPECTED_NEXT_ROWS])
    for row, next_row in enumerate(EXPECTED_NEXT_ROWS):
        expected = scaled_action(next_row) if next_row >= 0 else 0.0
        assert float(batch.next_actions[row, 0]) == expected, row
        assert float(batch.actions[row, 0]) == scaled_action(row)


def test_gathered_batches_keep_each_transitions_own_next_action_through_a_permutation():
    data = hand_made_dataset()
    device = protocol.device_data(data)
    order = jax.random.permutation(jax.random.PRNGKey(0), data.size).astype(jnp.int32)
    positions = jnp.array([0, 1, 2, 3, 4, 5, 6, 7, 3, 3])
    batch = protocol.gather(device, order, positions, data.size)  # the whole dataset held
    for i, position in enumerate(np.asarray(positions)):
        row = int(order[position])
        # The transition is identified by its own observation; its next action comes from the
        # logged successor, not from the permuted neighbour.
        assert float(batch.observations[i, 0]) == 10.0 * row
        next_row = EXPECTED_NEXT_ROWS[row]
        assert float(batch.next_action_valid[i]) == float(next_row >= 0)
        assert float(batch.next_actions[i, 0]) == (scaled_action(next_row) if next_row >= 0
                                                   else 0.0)


def test_online_transitions_have_no_next_action():
    data = hand_made_dataset()
    device = protocol.device_data(data)
    order = jnp.arange(data.size, dtype=jnp.int32)
    # An online buffer as the collector builds it (no next actions given: mask 0) ...
    online = Batch(observations=np.full((4, 1), 7.0, np.float32),
                   actions=np.full((4, 1), 0.5, np.float32), rewards=np.ones(4, np.float32),
                   next_observations=np.zeros((4, 1), np.float32),
                   terminals=np.zeros(4, np.float32))
    assert np.all(online.next_action_valid == 0.0) and online.next_actions.shape == (4, 1)
    # ... and one whose stored fields claim otherwise: gather masks online rows regardless.
    claimed = jax.tree.map(jnp.asarray, online)._replace(
        next_actions=jnp.ones((4, 1)), next_action_valid=jnp.ones(4))
    for buffer in (jax.tree.map(jnp.asarray, online), claimed):
        batch = protocol.gather(device, order, jnp.array([0, 8, 9, 1]), data.size + 4,
                                online=buffer)
        np.testing.assert_array_equal(np.asarray(batch.observations[:, 0]), [0.0, 7.0, 7.0, 10.0])
        np.testing.assert_array_equal(np.asarray(batch.next_action_valid), [1.0, 0.0, 0.0, 1.0])
        np.testing.assert_array_equal(np.asarray(batch.next_actions[:, 0]),
                                      [scaled_action(1), 0.0, 0.0, scaled_action(2)])
