"""A floor baseline: always play the mean action of everything trained on so far.

Registered through the `seqeval.agents` entry-point group (see ../pyproject.toml), so that
`seqeval run --agent mean_action ...` finds it once the package is installed.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp

from seqeval.agents import Agent, Batch, DatasetStats, Spaces


@dataclasses.dataclass(frozen=True)
class MeanActionConfig:
    momentum: float = 0.99  # exponential moving average rate of the mean action


def init(config: MeanActionConfig, key: jax.Array, spaces: Spaces, stats: DatasetStats,
         total_steps: int) -> jax.Array:
    return jnp.zeros(spaces.action_dim, jnp.float32)


def update(config: MeanActionConfig, state: jax.Array, batch: Batch, key: jax.Array):
    batch_mean = jnp.mean(batch.actions, axis=0)
    state = config.momentum * state + (1.0 - config.momentum) * batch_mean
    return state, {"action_mse": jnp.mean((batch.actions - state) ** 2)}


def act(config: MeanActionConfig, state: jax.Array, observations: jax.Array, key: jax.Array,
        deterministic: bool = True) -> jax.Array:
    return jnp.broadcast_to(state, observations.shape[:-1] + state.shape)


AGENT = Agent(name="mean_action", config_class=MeanActionConfig, init=init, update=update,
              act=act, description="constant mean action (seqeval plug-in test package)")
