"""Small real Pendulum-v1 datasets for tests, written in Minari's format in seconds.

A hand-written swing-up controller (energy pumping, then PD control at the top) scores about
-140 per episode, close to a trained SAC expert; uniform random actions score about -1200.
Mixing the two with a probability gives data of intermediate quality. The reference scores are
those two policies' returns, so normalized scores land on D4RL's 0-100 scale.
"""

from __future__ import annotations

import gymnasium as gym
import minari
import numpy as np
from minari.data_collector import EpisodeBuffer

PENDULUM_RANDOM_RETURN = -1230.0  # mean return of uniform random torques (measured)
PENDULUM_EXPERT_RETURN = -145.0  # mean return of `swing_up` (measured)


def swing_up(observation: np.ndarray) -> np.ndarray:
    """A near-optimal Pendulum controller: pump energy, then hold the top with PD control."""
    cos_theta, sin_theta, velocity = observation
    theta = np.arctan2(sin_theta, cos_theta)
    if cos_theta > 0.85:
        torque = -12.0 * theta - 2.5 * velocity
    else:
        energy = 0.5 * velocity**2 / 15.0 + (cos_theta - 1.0)  # 0 when upright at rest
        torque = 2.0 * np.sign(-velocity * energy + 1e-6) if abs(velocity) > 1e-3 else 2.0
    return np.clip(np.array([torque], np.float32), -2.0, 2.0)


def make_pendulum_dataset(dataset_id: str, episodes: int, expert_fraction: float,
                          seed: int = 0, action_noise: float = 0.0,
                          reference_scores: bool = True) -> str:
    """Write `episodes` Pendulum episodes (200 steps each) as Minari dataset `dataset_id`.

    Each step follows the swing-up controller with probability `expert_fraction`, else a
    uniformly random torque; `action_noise` adds Gaussian noise to the controller's torque.
    """
    rng = np.random.default_rng(seed)
    env = gym.make("Pendulum-v1")
    buffers = []
    for episode in range(episodes):
        observation, _ = env.reset(seed=seed * 100_000 + episode)
        observations, actions, rewards, terminations, truncations = [observation], [], [], [], []
        done = False
        while not done:
            if rng.random() < expert_fraction:
                action = swing_up(observation) + action_noise * rng.standard_normal(1)
                action = np.clip(action, -2.0, 2.0).astype(np.float32)
            else:
                action = rng.uniform(-2.0, 2.0, size=1).astype(np.float32)
            observation, reward, terminated, truncated, _ = env.step(action)
            observations.append(observation)
            actions.append(action)
            rewards.append(reward)
            terminations.append(terminated)
            truncations.append(truncated)
            done = terminated or truncated
        buffers.append(EpisodeBuffer(
            id=episode,
            observations=np.asarray(observations, np.float32),
            actions=np.asarray(actions, np.float32),
            rewards=np.asarray(rewards, np.float64),
            terminations=np.asarray(terminations),
            truncations=np.asarray(truncations),
        ))
    minari.create_dataset_from_buffers(
        dataset_id=dataset_id,
        buffer=buffers,
        env="Pendulum-v1",
        algorithm_name="swing-up controller mixed with random actions (tests)",
        ref_min_score=PENDULUM_RANDOM_RETURN if reference_scores else None,
        ref_max_score=PENDULUM_EXPERT_RETURN if reference_scores else None,
    )
    env.close()
    return dataset_id
