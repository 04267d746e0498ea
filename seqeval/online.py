"""Online fine-tuning: agents act in the environment with their own exploration.

Each member (seed) has one training environment. All members step together with one batched,
jitted exploration call per environment step (seqeval.envs.rollout's stepping loop); the
transitions go to the device buffer in blocks, and the gradient steps between blocks run
compiled (seqeval.protocol).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import jax
import numpy as np

from seqeval.algorithms.base import Agent, Batch
from seqeval.envs.rollout import EnvGroup
from seqeval.seeds import derive_seed


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
        self.group = EnvGroup([make_env() for _ in self.seeds], action_low, action_high)
        self.episode_returns: list[list[float]] = [[] for _ in self.seeds]
        self._started = False

    def reset(self, chunk_index: int) -> None:
        """Start fresh episodes, seeded by the chunk: a resumed run collects the same data."""
        for member, seed in enumerate(self.seeds):
            self.group.reset(member, derive_seed(seed, "online reset", chunk_index))
        self._started = True

    def collect(self, explorer: Callable, states: Any, keys: jax.Array,
                steps: int) -> tuple[Batch, jax.Array]:
        """`steps` transitions per member, as a numpy Batch of shape (members, steps, ...)."""
        assert self._started, "reset() before collect()"
        members, group = len(self.seeds), self.group
        observations = np.zeros((members, steps, group.observation_dim), np.float32)
        next_observations = np.zeros((members, steps, group.observation_dim), np.float32)
        actions = np.zeros((members, steps, group.action_dim), np.float32)
        rewards = np.zeros((members, steps), np.float32)
        terminals = np.zeros((members, steps), np.float32)
        for t in range(steps):
            keys, chosen = explorer(states, keys, group.policy_input())
            step = group.step(chosen)
            observations[:, t] = step.observations
            actions[:, t] = step.actions
            rewards[:, t] = step.rewards
            next_observations[:, t] = step.next_observations
            terminals[:, t] = step.terminated
            for member in np.flatnonzero(step.ended):
                self.episode_returns[member].append(float(group.returns[member]))
                group.reset(member)  # unseeded: the environment's own generator continues
        batch = Batch(observations=observations, actions=actions, rewards=rewards,
                      next_observations=next_observations, terminals=terminals)
        return batch, keys

    def close(self) -> None:
        self.group.close()
