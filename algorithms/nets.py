"""Networks and small pieces shared by every agent (written once, used everywhere)."""

from __future__ import annotations

from collections.abc import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax

from algorithms.base import DatasetStats


class MLP(nn.Module):
    """A ReLU multilayer perceptron; the last layer has no activation."""

    hidden_dims: Sequence[int]
    output_dim: int
    layer_norm: bool = False

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        for width in self.hidden_dims:
            x = nn.Dense(width)(x)
            if self.layer_norm:
                x = nn.LayerNorm()(x)
            x = nn.relu(x)
        return nn.Dense(self.output_dim)(x)


class DeterministicActor(nn.Module):
    """obs -> action in [-1, 1] (tanh squashed)."""

    hidden_dims: Sequence[int]
    action_dim: int

    @nn.compact
    def __call__(self, observations: jax.Array) -> jax.Array:
        return jnp.tanh(MLP(self.hidden_dims, self.action_dim)(observations))


def normalize(observations: jax.Array, mean: jax.Array, std: jax.Array) -> jax.Array:
    """Standardise observations with dataset statistics."""
    return (observations - mean) / std


def observation_stats(stats: DatasetStats, enabled: bool) -> tuple[jax.Array, jax.Array]:
    """(mean, std) to normalise with, or the identity when normalisation is off."""
    if enabled:
        return stats.observation_mean, stats.observation_std
    return jnp.zeros_like(stats.observation_mean), jnp.ones_like(stats.observation_std)


def adam(learning_rate: float, total_steps: int | None = None) -> optax.GradientTransformation:
    """Adam, with the learning rate cosine-decayed over `total_steps` when given."""
    if total_steps:
        return optax.adam(optax.cosine_decay_schedule(learning_rate, max(int(total_steps), 1)))
    return optax.adam(learning_rate)


def polyak(target: jax.Array, online: jax.Array, tau: float):
    """Soft target update: target <- (1 - tau) target + tau online (on whole pytrees)."""
    return jax.tree.map(lambda t, o: (1.0 - tau) * t + tau * o, target, online)
