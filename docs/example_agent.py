"""A complete seqeval agent in one file: linear behavioural cloning.

The policy is a = tanh(W s' + b) on standardised observations s', fitted to the dataset's
actions by mean squared error with Adam. It is deliberately small; docs/agents.md walks
through it. Run it with

    seqeval run --agent docs/example_agent.py --dataset DATASET --out runs/linear \
        --agent.learning_rate 3e-3
"""

from __future__ import annotations

import dataclasses
from typing import NamedTuple

import jax
import jax.numpy as jnp
import optax

from seqeval.agents import Agent, Batch, DatasetStats, Spaces


@dataclasses.dataclass(frozen=True)
class LinearBCConfig:
    learning_rate: float = 1e-2  # Adam step size
    exploration_noise: float = 0.1  # std of Gaussian action noise when acting online


class LinearBCState(NamedTuple):  # any pytree of arrays works as a state
    weights: jax.Array  # (observation_dim, action_dim)
    bias: jax.Array  # (action_dim,)
    optimizer: optax.OptState
    observation_mean: jax.Array
    observation_std: jax.Array


def _optimizer(config: LinearBCConfig) -> optax.GradientTransformation:
    return optax.adam(config.learning_rate)


def init(config: LinearBCConfig, key: jax.Array, spaces: Spaces, stats: DatasetStats,
         total_steps: int) -> LinearBCState:
    weights = 0.01 * jax.random.normal(key, (spaces.observation_dim, spaces.action_dim))
    bias = jnp.zeros(spaces.action_dim)
    return LinearBCState(weights, bias, _optimizer(config).init((weights, bias)),
                         stats.observation_mean, stats.observation_std)


def _policy(state: LinearBCState, params, observations: jax.Array) -> jax.Array:
    weights, bias = params
    standardised = (observations - state.observation_mean) / state.observation_std
    return jnp.tanh(standardised @ weights + bias)


def loss(predicted: jax.Array, actions: jax.Array) -> jax.Array:
    return jnp.mean((predicted - actions) ** 2)


def update(config: LinearBCConfig, state: LinearBCState, batch: Batch, key: jax.Array):
    params = (state.weights, state.bias)
    value, grads = jax.value_and_grad(
        lambda p: loss(_policy(state, p, batch.observations), batch.actions))(params)
    updates, optimizer = _optimizer(config).update(grads, state.optimizer, params)
    weights, bias = optax.apply_updates(params, updates)
    state = state._replace(weights=weights, bias=bias, optimizer=optimizer)
    return state, {"actor_loss": value}


def act(config: LinearBCConfig, state: LinearBCState, observations: jax.Array, key: jax.Array,
        deterministic: bool = True) -> jax.Array:
    actions = _policy(state, (state.weights, state.bias), observations)
    if deterministic:
        return actions
    noise = config.exploration_noise * jax.random.normal(key, actions.shape)
    return jnp.clip(actions + noise, -1.0, 1.0)


def score(config: LinearBCConfig, state: LinearBCState, batch: Batch) -> dict[str, jax.Array]:
    predicted = _policy(state, (state.weights, state.bias), batch.observations)
    return {"action_mse": loss(predicted, batch.actions)}


AGENT = Agent(
    name="linear_bc",
    config_class=LinearBCConfig,
    init=init,
    update=update,
    act=act,
    score=score,  # explore is left out: the default is act(..., deterministic=False)
    description="linear behavioural cloning (the docs/agents.md example)",
)
