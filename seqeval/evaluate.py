"""Policy evaluation in the environment: every episode of every seed side by side.

All S x E environments step together with ONE batched, jitted policy call per time step
(seqeval.envs.rollout's stepping loop). Episode resets are seeded from (run seed, evaluation
index, episode), so evaluations are reproducible and a resumed run evaluates exactly as the
original would have.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from seqeval.envs.rollout import make_env_group, run_episodes
from seqeval.seeds import derive_seed


class Evaluator:
    """Runs `episodes` deterministic episodes for each of `len(seeds)` agents at once."""

    def __init__(self, make_env: Callable[[], Any], seeds: Sequence[int], episodes: int,
                 action_low: np.ndarray, action_high: np.ndarray, workers: int = 1):
        self.seeds = list(seeds)
        self.episodes = episodes
        # Seed-major: environment s * episodes + e runs episode e of seed s. With `workers` > 1
        # they are stepped in that many processes (make_env picklable); the returns are the same.
        self.group = make_env_group(make_env, len(self.seeds) * episodes, workers, action_low,
                                    action_high)

    @property
    def env_steps(self) -> int:
        """Total environment steps taken, for throughput reports."""
        return self.group.env_steps

    def evaluate(self, policy: Callable[[Any, np.ndarray], Any], states: Any,
                 evaluation_index: int) -> np.ndarray:
        """Undiscounted returns, shape (seeds, episodes).

        `policy(states, observations[S, E, obs_dim]) -> actions[S, E, act_dim]` in [-1, 1].
        """
        num_seeds, episodes = len(self.seeds), self.episodes

        def grid_policy(observations: np.ndarray) -> np.ndarray:
            actions = np.asarray(policy(states, observations.reshape(num_seeds, episodes, -1)))
            return actions.reshape(num_seeds * episodes, -1)

        reset_seeds = [derive_seed(seed, "evaluation episode", evaluation_index * episodes + e)
                       for seed in self.seeds for e in range(episodes)]
        return run_episodes(self.group, grid_policy, reset_seeds).reshape(num_seeds, episodes)

    def close(self) -> None:
        self.group.close()
