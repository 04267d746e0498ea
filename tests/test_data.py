"""Loading Minari datasets into flat arrays, and the cache beside them."""

from __future__ import annotations

import time

import gymnasium as gym
import minari
import numpy as np
import pytest
from helpers import EXPERT
from pendulum_data import make_pendulum_dataset

from seqeval.data import CACHE_NAME, dataset_root, load_dataset
from seqeval.errors import UserError


def test_round_trip_matches_minari(store):
    data = load_dataset(EXPERT)
    dataset = minari.load_dataset(EXPERT)
    assert data.size == dataset.total_steps == 50 * 200
    assert data.num_episodes == 50
    assert data.observations.dtype == np.float32 and data.observations.shape == (10_000, 3)
    assert data.actions.shape == (10_000, 1)
    episode = next(iter(dataset.iterate_episodes([3])))
    start = data.episode_starts[3]
    np.testing.assert_allclose(data.observations[start:start + 200], episode.observations[:-1])
    np.testing.assert_allclose(data.next_observations[start:start + 200], episode.observations[1:])
    np.testing.assert_allclose(data.rewards[start:start + 200], episode.rewards, rtol=1e-6)
    # Pendulum episodes end by the time limit only: truncated, never terminated.
    assert not data.terminations.any()
    assert data.truncations.sum() == 50
    assert data.truncations[start + 199]
    assert data.ref_min_score is not None and data.ref_max_score is not None
    returns = data.episode_returns()
    np.testing.assert_allclose(
        data.normalized_score(returns) / 100.0,
        minari.get_normalized_score(dataset, returns), rtol=1e-9,
    )


def test_cache_is_used_and_invalidated_when_the_dataset_changes(store):
    dataset_id = "test/pendulum-changing-v0"
    make_pendulum_dataset(dataset_id, episodes=5, expert_fraction=1.0, seed=7)
    first = load_dataset(dataset_id)
    cache = dataset_root(dataset_id) / CACHE_NAME
    assert cache.is_file()
    cached_at = cache.stat().st_mtime_ns
    again = load_dataset(dataset_id)  # served from the cache, not rewritten
    assert cache.stat().st_mtime_ns == cached_at
    np.testing.assert_array_equal(again.rewards, first.rewards)

    minari.delete_dataset(dataset_id)
    time.sleep(0.01)
    make_pendulum_dataset(dataset_id, episodes=7, expert_fraction=0.0, seed=8)
    changed = load_dataset(dataset_id)
    assert changed.size == 7 * 200
    assert not np.array_equal(changed.rewards[:1000], first.rewards[:1000])


@pytest.mark.parametrize("damage", ["garbage", "truncated", "not a zip"])
def test_a_damaged_cache_is_rebuilt_with_a_note(store, capsys, damage):
    dataset_id = f"test/pendulum-cache-{damage.replace(' ', '-')}-v0"
    make_pendulum_dataset(dataset_id, episodes=3, expert_fraction=1.0, seed=9)
    first = load_dataset(dataset_id)
    cache = dataset_root(dataset_id) / CACHE_NAME
    intact = cache.read_bytes()
    cache.write_bytes({"garbage": intact[:40] + b"\xff" * 64 + intact[104:],
                       "truncated": intact[: len(intact) // 2],
                       "not a zip": b"nothing to see"}[damage])
    capsys.readouterr()
    rebuilt = load_dataset(dataset_id)
    note = capsys.readouterr().err
    assert note.count("\n") == 1 and f"the dataset cache '{cache}' cannot be read" in note
    assert "rebuilding it" in note
    np.testing.assert_array_equal(rebuilt.observations, first.observations)
    np.testing.assert_array_equal(rebuilt.rewards, first.rewards)
    assert cache.read_bytes() == intact  # rewritten whole: the next load is quiet
    load_dataset(dataset_id)
    assert capsys.readouterr().err == ""


@pytest.mark.parametrize("damage", ["main_data.hdf5", "metadata.json"])
def test_damaged_dataset_files_name_the_folder_and_the_fix(store, damage):
    dataset_id = f"test/pendulum-damaged-{damage.split('.')[0].replace('_', '-')}-v0"
    make_pendulum_dataset(dataset_id, episodes=3, expert_fraction=1.0, seed=10)
    data_dir = dataset_root(dataset_id) / "data"
    (data_dir / damage).write_bytes(b"{garbage")
    with pytest.raises(UserError, match="are damaged or incomplete: rebuild it") as error:
        load_dataset(dataset_id)
    assert str(data_dir) in str(error.value)


def test_unknown_dataset_names_the_fix(store):
    with pytest.raises(UserError, match="seqeval datasets build"):
        load_dataset("test/nothing-here-v0")


def test_nan_in_data_is_refused(store):
    from minari.data_collector import EpisodeBuffer

    observations = np.zeros((11, 3), np.float32)
    rewards = np.zeros(10)
    rewards[4] = np.nan
    buffer = EpisodeBuffer(id=0, observations=observations, actions=np.zeros((10, 1), np.float32),
                           rewards=rewards, terminations=np.zeros(10, bool),
                           truncations=np.eye(10, dtype=bool)[9])
    minari.create_dataset_from_buffers("test/pendulum-nan-v0", [buffer], env="Pendulum-v1")
    with pytest.raises(UserError, match="NaN/inf values in 'rewards'"):
        load_dataset("test/pendulum-nan-v0")


def test_empty_and_non_box_datasets_are_refused(store):
    minari.create_dataset_from_buffers("test/pendulum-empty-v0", [], env="Pendulum-v1")
    with pytest.raises(UserError, match="is empty"):
        load_dataset("test/pendulum-empty-v0")

    from minari.data_collector import EpisodeBuffer

    env = gym.make("CartPole-v1")
    observation, _ = env.reset(seed=0)
    observations, actions = [observation], []
    for _ in range(5):
        observation, *_ = env.step(0)
        observations.append(observation)
        actions.append(0)
    buffer = EpisodeBuffer(id=0, observations=np.asarray(observations), actions=np.asarray(actions),
                           rewards=np.ones(5), terminations=np.eye(5, dtype=bool)[4],
                           truncations=np.zeros(5, bool))
    minari.create_dataset_from_buffers("test/cartpole-discrete-v0", [buffer], env="CartPole-v1")
    with pytest.raises(UserError, match="Discrete action space"):
        load_dataset("test/cartpole-discrete-v0")
