"""Behavioural cloning: a deterministic actor regressed onto the dataset's actions (MSE).

Pomerleau, "Efficient Training of Artificial Neural Networks for Autonomous Navigation" (1991);
the offline RL baseline of Fu et al., "D4RL" (2020) and Fujimoto & Gu, "A Minimalist Approach
to Offline Reinforcement Learning" (2021). Defaults follow jaxrl (Adam 1e-3, cosine decay).
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
from flax import struct
from flax.training.train_state import TrainState

from seqeval.algorithms.base import (
    NON_NEGATIVE,
    Agent,
    Batch,
    DatasetStats,
    Metric,
    Spaces,
    check_ranges,
)
from seqeval.algorithms.nets import DeterministicActor, adam, normalize, observation_stats


@dataclasses.dataclass(frozen=True)
class BCConfig:
    hidden_dims: tuple[int, ...] = (256, 256)  # actor MLP widths
    learning_rate: float = 1e-3  # Adam step size (jaxrl; CORL uses 3e-4)
    cosine_decay: bool = True  # decay the learning rate to 0 over the run's gradient steps
    normalize_observations: bool = True  # standardise observations with dataset statistics
    exploration_noise: float = 0.1  # std of Gaussian action noise when acting online


class BCState(struct.PyTreeNode):
    actor: TrainState
    observation_mean: jax.Array
    observation_std: jax.Array


def init(config: BCConfig, key: jax.Array, spaces: Spaces, stats: DatasetStats,
         total_steps: int) -> BCState:
    actor = DeterministicActor(config.hidden_dims, spaces.action_dim)
    params = actor.init(key, jnp.zeros((1, spaces.observation_dim), jnp.float32))
    tx = adam(config.learning_rate, total_steps if config.cosine_decay else None)
    mean, std = observation_stats(stats, config.normalize_observations)
    return BCState(
        actor=TrainState.create(apply_fn=actor.apply, params=params, tx=tx),
        observation_mean=mean,
        observation_std=std,
    )


def _policy(state: BCState, params, observations: jax.Array) -> jax.Array:
    obs = normalize(observations, state.observation_mean, state.observation_std)
    return state.actor.apply_fn(params, obs)


def bc_loss(predicted: jax.Array, actions: jax.Array) -> jax.Array:
    """Mean squared error over batch and action dimensions."""
    return jnp.mean((predicted - actions) ** 2)


def update(config: BCConfig, state: BCState, batch: Batch, key: jax.Array):
    del key  # deterministic update

    def loss_fn(params):
        return bc_loss(_policy(state, params, batch.observations), batch.actions)

    loss, grads = jax.value_and_grad(loss_fn)(state.actor.params)
    return state.replace(actor=state.actor.apply_gradients(grads=grads)), {"actor_loss": loss}


def act(config: BCConfig, state: BCState, observations: jax.Array, key: jax.Array,
        deterministic: bool = True) -> jax.Array:
    actions = _policy(state, state.actor.params, observations)
    if deterministic:
        return actions
    noise = config.exploration_noise * jax.random.normal(key, actions.shape)
    return jnp.clip(actions + noise, -1.0, 1.0)


def score(config: BCConfig, state: BCState, batch: Batch) -> dict[str, jax.Array]:
    """Prequential signal: the actor's action MSE on transitions it has not trained on."""
    predicted = _policy(state, state.actor.params, batch.observations)
    return {"action_mse": bc_loss(predicted, batch.actions)}


def check_config(config: BCConfig) -> None:
    """Ranges of this agent's settings, beyond the conventions every config meets."""
    check_ranges("bc", config, exploration_noise=NON_NEGATIVE)


# What update and score record (base.Metric).
METRICS = {
    "actor_loss": Metric("lower", "squared error of the policy's actions on the batch"),
    "action_mse": Metric("lower", "policy's squared error on the dataset's actions"),
}

AGENT = Agent(
    name="bc",
    config_class=BCConfig,
    init=init,
    update=update,
    act=act,
    score=score,
    check_config=check_config,
    metrics=METRICS,
    description="behavioural cloning (deterministic MSE actor)",
)
