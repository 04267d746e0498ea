"""The environment-stepping loop shared by evaluation, online collection and the builder."""

from __future__ import annotations

import dataclasses
import functools

import gymnasium as gym
import numpy as np
import pytest

from seqeval.envs.rollout import (
    EnvGroup,
    EnvPool,
    ProcessEnvGroup,
    make_env_group,
    run_episodes,
    to_env_actions,
    to_unit_actions,
)


def test_action_rescaling_pair_is_linear_clipped_and_inverse():
    low, high = np.array([-2.0, 0.0], np.float32), np.array([2.0, 10.0], np.float32)
    unit = np.array([[-1.0, -1.0], [0.0, 0.5], [1.0, 1.0], [3.0, -7.0]], np.float32)
    env = to_env_actions(unit, low, high)
    assert env.dtype == np.float32
    np.testing.assert_allclose(env, [[-2.0, 0.0], [0.0, 7.5], [2.0, 10.0], [2.0, 0.0]])
    np.testing.assert_allclose(to_unit_actions(env, low, high), np.clip(unit, -1, 1), atol=1e-6)
    assert to_unit_actions(np.array([[5.0, -1.0]]), low, high).tolist() == [[1.0, -1.0]]


def test_run_episodes_returns_whole_episodes_as_stepping_by_hand():
    seeds = [3, 11, 29]
    group = EnvGroup([gym.make("Pendulum-v1") for _ in range(4)])  # one spare environment
    policy = lambda observations: np.tanh(observations[:, :1] - observations[:, 2:3])  # noqa: E731
    returns = run_episodes(group, policy, seeds)
    expected = []
    env = gym.make("Pendulum-v1")
    for seed in seeds:
        observation, _ = env.reset(seed=seed)
        total, done = 0.0, False
        while not done:
            action = to_env_actions(policy(observation[None].astype(np.float32)),
                                    env.action_space.low, env.action_space.high)[0]
            observation, reward, terminated, truncated, _ = env.step(action)
            total += float(reward)
            done = terminated or truncated
        expected.append(total)
    np.testing.assert_array_equal(returns, expected)
    assert group.env_steps == 3 * 200


def _pool_run(pool: EnvPool, rounds: int, rng: np.random.Generator) -> list:
    finished = []
    for _ in range(rounds):
        _, _, done = pool.step(rng.uniform(-1, 1, (pool.num_envs, pool.action_dim)))
        finished.extend(done)
    return finished


def test_a_restored_pool_continues_exactly_where_it_was_saved():
    """Hopper terminates at random times, so the environments are mid-episode at the save."""
    rounds = 60
    reference, saved = EnvPool("Hopper-v5", 3, seed=5), EnvPool("Hopper-v5", 3, seed=5)
    reference.reset(), saved.reset()
    actions = np.random.default_rng(0).uniform(-1, 1, (2 * rounds, 3, 3))
    for step in range(rounds):
        reference.step(actions[step])
        saved.step(actions[step])
    counts, running, indices = (saved.episode_counts, saved.open_episodes(),
                                saved.open_env_indices())
    assert running, "the test wants episodes running at the save"
    restored = EnvPool("Hopper-v5", 3, seed=5)
    assert restored.restore(counts, running, indices) == []
    np.testing.assert_array_equal(restored.group.observations, reference.group.observations)
    for step in range(rounds, 2 * rounds):
        _, expected_rows, expected_done = reference.step(actions[step])
        _, rows, done = restored.step(actions[step])
        for a, b in zip(rows, expected_rows, strict=True):
            np.testing.assert_array_equal(a, b)
        assert [e.seed for e in done] == [e.seed for e in expected_done]
        for a, b in zip(done, expected_done, strict=True):
            np.testing.assert_array_equal(a.observations, b.observations)
            np.testing.assert_array_equal(a.rewards, b.rewards)


def test_a_replay_that_does_not_reproduce_the_record_is_reported():
    pool = EnvPool("Pendulum-v1", 2, seed=1)
    pool.reset()
    _pool_run(pool, 50, np.random.default_rng(0))
    running, indices = pool.open_episodes(), pool.open_env_indices()
    tampered = dataclasses.replace(running[1], rewards=running[1].rewards + 1.0)
    restored = EnvPool("Pendulum-v1", 2, seed=1)
    lost = restored.restore(pool.episode_counts, [running[0], tampered], indices)
    assert [episode.seed for episode in lost] == [tampered.seed]
    # The first environment continues its episode; the second starts its next one.
    assert len(restored._open[0]["rewards"]) == 50 and not restored._open[1]["rewards"]
    assert restored.episode_counts == [1, 2]


@pytest.mark.parametrize("num_envs", [1, 3])
def test_pool_episodes_carry_their_seed_and_the_environments_actions(num_envs):
    pool = EnvPool("Pendulum-v1", num_envs, seed=4)
    pool.reset()
    finished = _pool_run(pool, 200, np.random.default_rng(1))
    assert len(finished) == num_envs
    env = gym.make("Pendulum-v1")
    for episode in finished:
        observation, _ = env.reset(seed=episode.seed)
        np.testing.assert_array_equal(observation, episode.observations[0])
        for action, next_observation in zip(episode.actions, episode.observations[1:],
                                            strict=True):
            assert np.all(np.abs(action) <= 2.0)
            np.testing.assert_array_equal(env.step(action)[0], next_observation)


# ---------------------------------------------------------------------------------------------
# Environments in worker processes (seqeval run --eval-workers N)


def _hopper_policy(observations: np.ndarray) -> np.ndarray:
    return np.tanh(0.7 * observations[:, :3] - observations[:, 5:8])


def test_environments_in_worker_processes_give_the_same_returns_bit_for_bit():
    """Hopper's episodes end at different steps, so the workers step shrinking, uneven shares
    (five environments: 2 + 3, one of them spare)."""
    make = functools.partial(gym.make, "Hopper-v5")
    seeds = [3, 11, 29, 5]
    alone = make_env_group(make, 5)
    spread = make_env_group(make, 5, workers=2)
    assert type(alone) is EnvGroup and type(spread) is ProcessEnvGroup
    try:
        for wave in range(2):  # a group is reused from one evaluation to the next
            wave_seeds = [seed + 100 * wave for seed in seeds]
            expected = run_episodes(alone, _hopper_policy, wave_seeds)
            np.testing.assert_array_equal(run_episodes(spread, _hopper_policy, wave_seeds),
                                          expected)
            assert len(set(expected.tolist())) == len(seeds)  # episodes of different lengths
        assert spread.env_steps == alone.env_steps and alone.env_steps < 2 * 4 * 1000
    finally:
        alone.close()
        processes = list(spread._processes)
        spread.close()
    assert [process.poll() for process in processes] == [0, 0]  # closed, not killed


def test_a_worker_that_cannot_make_its_environment_is_one_error():
    with pytest.raises(RuntimeError, match=r"^environment worker 0 failed: NameNotFound: "):
        ProcessEnvGroup(functools.partial(gym.make, "NoSuchTask-v0"), 4, workers=2)


def test_a_worker_that_dies_is_one_error_and_the_group_still_closes():
    import signal

    group = ProcessEnvGroup(functools.partial(gym.make, "Pendulum-v1"), 4, workers=2)
    group._processes[1].send_signal(signal.SIGKILL)
    for index in (0, 1):  # the other worker's environments still answer
        group.reset(index, seed=index)
    with pytest.raises(RuntimeError, match=r"^environment worker 1 stopped unexpectedly \(exit "
                                           r"code -9\)$"):
        for _ in range(3):  # the first message may still fit in the dead worker's socket
            group.step(np.zeros((4, 1)), active=np.array([True, True, True, False]))
    group.close()
    assert [process.poll() for process in group._processes] == []


def test_evaluation_of_a_minari_dataset_in_worker_processes_equals_one_process(store):
    """The dataset's evaluation environment travels to the workers by its id."""
    from helpers import EXPERT

    from seqeval.data import make_eval_env_factory
    from seqeval.evaluate import Evaluator

    def policy(states, observations):  # (seeds, episodes, 3) -> (seeds, episodes, 1)
        return np.tanh(states * (observations[..., :1] - observations[..., 2:3]))

    make_env = make_eval_env_factory(EXPERT)
    states = np.array([[[1.0]], [[-0.5]]])
    returns = []
    for workers in (1, 2):
        evaluator = Evaluator(make_env, [0, 1], 3, np.array([-2.0]), np.array([2.0]), workers)
        try:
            returns.append([evaluator.evaluate(policy, states, index) for index in range(2)])
        finally:
            evaluator.close()
    np.testing.assert_array_equal(returns[0], returns[1])
    assert np.asarray(returns).shape == (2, 2, 2, 3)
