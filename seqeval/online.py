"""Online fine-tuning: agents act in the environment with their own exploration.

Each member (seed) has one training environment. All members step together with one batched,
jitted exploration call per environment step; the transitions go to the device buffer in
blocks, and the gradient steps between blocks run compiled (seqeval.protocol).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import jax
import numpy as np

from seqeval.algorithms.base import Agent, Batch


def online_reset_seed(seed: int, chunk_index: int) -> int:
    """Reset seed of a member's training environment at the start of an online chunk."""
    return (seed * 7_919 + 1_000_000 + chunk_index) % (2**31 - 1)


def make_explorer(agent: Agent, config: Any) -> Callable:
    """Jitted (states, keys, observations[S, obs]) -> (keys, actions[S, act]) in [-1, 1]."""

    def explore_one(state, key, observation):
        key, action_key = jax.random.split(key)
        action = agent.explore_actions(config, state, observation[None], action_key)[0]
        return key, action

    return jax.jit(jax.vmap(explore_one))


class OnlineCollector:
    """Training environments of all members; collects blocks of transitions."""

    def __init__(self, make_env: Callable[[], Any], seeds: Sequence[int],
                 action_low: np.ndarray, action_high: np.ndarray):
        self.seeds = list(seeds)
        self.envs = [make_env() for _ in self.seeds]
        self.action_low = np.asarray(action_low, np.float32)
        self.action_high = np.asarray(action_high, np.float32)
        self.observations: np.ndarray | None = None
        self.episode_returns: list[list[float]] = [[] for _ in self.seeds]
        self._running = np.zeros(len(self.seeds))

    def reset(self, chunk_index: int) -> None:
        """Start fresh episodes, seeded by the chunk: a resumed run collects the same data."""
        self.observations = np.stack([
            env.reset(seed=online_reset_seed(seed, chunk_index))[0]
            for env, seed in zip(self.envs, self.seeds, strict=True)
        ]).astype(np.float32)
        self._running[:] = 0.0

    def collect(self, explorer: Callable, states: Any, keys: jax.Array,
                steps: int) -> tuple[Batch, jax.Array]:
        """`steps` transitions per member, as a numpy Batch of shape (members, steps, ...)."""
        assert self.observations is not None, "reset() before collect()"
        members = len(self.seeds)
        obs_dim = self.observations.shape[1]
        act_dim = self.action_low.shape[0]
        observations = np.zeros((members, steps, obs_dim), np.float32)
        next_observations = np.zeros((members, steps, obs_dim), np.float32)
        actions = np.zeros((members, steps, act_dim), np.float32)
        rewards = np.zeros((members, steps), np.float32)
        terminals = np.zeros((members, steps), np.float32)
        span = self.action_high - self.action_low
        for t in range(steps):
            keys, chosen = explorer(states, keys, self.observations)
            chosen = np.clip(np.asarray(chosen), -1.0, 1.0)
            env_actions = self.action_low + (chosen + 1.0) * 0.5 * span
            for m, env in enumerate(self.envs):
                next_obs, reward, terminated, truncated, _ = env.step(env_actions[m])
                observations[m, t] = self.observations[m]
                actions[m, t] = chosen[m]
                rewards[m, t] = reward
                next_observations[m, t] = next_obs
                terminals[m, t] = float(terminated)
                self._running[m] += float(reward)
                if terminated or truncated:
                    self.episode_returns[m].append(float(self._running[m]))
                    self._running[m] = 0.0
                    next_obs, _ = env.reset()
                self.observations[m] = next_obs
        batch = Batch(observations=observations, actions=actions, rewards=rewards,
                      next_observations=next_observations, terminals=terminals)
        return batch, keys

    def close(self) -> None:
        for env in self.envs:
            env.close()
