"""Policy evaluation in the environment: every episode of every seed side by side.

All S x E environments step together with ONE batched, jitted policy call per time step
(a per-episode, per-step call would cost ~0.1 ms each). Environment stepping itself is Python.
Episode resets are seeded from (run seed, evaluation index, episode), so evaluations are
reproducible and a resumed run evaluates exactly as the original would have.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np


def episode_seed(seed: int, evaluation_index: int, episode: int, episodes: int) -> int:
    """Deterministic reset seed of one evaluation episode."""
    return (seed * 1_000_003 + evaluation_index * episodes + episode) % (2**31 - 1)


class Evaluator:
    """Runs `episodes` deterministic episodes for each of `len(seeds)` agents at once."""

    def __init__(self, make_env: Callable[[], Any], seeds: Sequence[int], episodes: int,
                 action_low: np.ndarray, action_high: np.ndarray):
        self.seeds = list(seeds)
        self.episodes = episodes
        self.envs = [[make_env() for _ in range(episodes)] for _ in self.seeds]
        self.action_low = np.asarray(action_low, np.float32)
        self.action_high = np.asarray(action_high, np.float32)
        self.env_steps = 0  # total environment steps taken, for throughput reports

    def _to_env_units(self, actions: np.ndarray) -> np.ndarray:
        scaled = self.action_low + (np.clip(actions, -1.0, 1.0) + 1.0) * 0.5 * (
            self.action_high - self.action_low
        )
        return scaled.astype(np.float32)

    def evaluate(self, policy: Callable[[Any, np.ndarray], Any], states: Any,
                 evaluation_index: int) -> np.ndarray:
        """Undiscounted returns, shape (seeds, episodes).

        `policy(states, observations[S, E, obs_dim]) -> actions[S, E, act_dim]` in [-1, 1].
        """
        num_seeds, episodes = len(self.seeds), self.episodes
        first = [
            [
                self.envs[s][e].reset(seed=episode_seed(seed, evaluation_index, e, episodes))[0]
                for e in range(episodes)
            ]
            for s, seed in enumerate(self.seeds)
        ]
        observations = np.asarray(first, np.float32)
        returns = np.zeros((num_seeds, episodes), np.float64)
        active = np.ones((num_seeds, episodes), bool)
        while active.any():
            actions = self._to_env_units(np.asarray(policy(states, observations)))
            for s, e in zip(*np.nonzero(active), strict=True):
                obs, reward, terminated, truncated, _ = self.envs[s][e].step(actions[s, e])
                observations[s, e] = obs
                returns[s, e] += float(reward)
                self.env_steps += 1
                if terminated or truncated:
                    active[s, e] = False
        return returns

    def close(self) -> None:
        for row in self.envs:
            for env in row:
                env.close()
