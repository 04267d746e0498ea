"""TD3's machinery, shared by TD3+BC (td3_bc.py) and ReBRAC (rebrac.py): not an agent itself.

Fujimoto, van Hoof & Meger, "Addressing Function Approximation Error in Actor-Critic Methods"
(ICML 2018), arXiv 1802.09477: a deterministic actor, twin critics, target networks, target
policy smoothing, and the actor and target networks updated on every policy_frequency-th critic
step. What an agent of the family adds is its own critic target and actor loss; both agent
files pass theirs to `update` and `score` here, so each file holds only its algorithm.

The functions read these config fields: actor_learning_rate, critic_learning_rate, discount
(in the agents' targets), tau, policy_noise, noise_clip, policy_frequency,
normalize_observations, exploration_noise.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
from flax import struct
from flax.training.train_state import TrainState

from seqeval.algorithms.base import Batch, DatasetStats, Metric, Spaces
from seqeval.algorithms.nets import (
    actor_critic_states,
    adam,
    ensemble_mse,
    gaussian_explore,
    normalize,
    observation_stats,
    polyak,
)


class TD3State(struct.PyTreeNode):
    actor: TrainState
    critic: TrainState  # twin critics with a leading ensemble axis of 2
    target_actor_params: dict
    target_critic_params: dict
    observation_mean: jax.Array
    observation_std: jax.Array
    actor_loss: jax.Array  # from the last actor update (the actor skips most steps)


# critic_target(config, state, batch, next_observations, noise) -> the TD target of each
# transition; noise: the standard-normal draws of target policy smoothing, None for none.
CriticTarget = Callable[[Any, TD3State, Batch, jax.Array, jax.Array | None], jax.Array]
# actor_loss(config, state, params, observations, batch) -> the actor's loss at `params`.
ActorLoss = Callable[[Any, TD3State, Any, jax.Array, Batch], jax.Array]


def initial_state(config: Any, key: jax.Array, spaces: Spaces, stats: DatasetStats,
                  actor: nn.Module, critic: nn.Module) -> TD3State:
    """Actor and twin critics with Adam, target networks equal to them."""
    actor_state, critic_state = actor_critic_states(
        key, spaces, actor, critic, adam(config.actor_learning_rate),
        adam(config.critic_learning_rate))
    mean, std = observation_stats(stats, config.normalize_observations)
    return TD3State(
        actor=actor_state,
        critic=critic_state,
        target_actor_params=actor_state.params,
        target_critic_params=critic_state.params,
        observation_mean=mean,
        observation_std=std,
        actor_loss=jnp.float32(0.0),
    )


# ---------------------------------------------------------------------------------------------
# Losses (pure functions of arrays; tests check them against numpy).


def smoothed_target_actions(target_actions: jax.Array, noise: jax.Array, policy_noise: float,
                            noise_clip: float) -> jax.Array:
    """TD3's target policy smoothing: a' = clip(pi'(s') + clip(sigma * eps, -c, c), -1, 1),
    with `noise` the standard-normal eps."""
    smoothing = jnp.clip(policy_noise * noise, -noise_clip, noise_clip)
    return jnp.clip(target_actions + smoothing, -1.0, 1.0)


# ---------------------------------------------------------------------------------------------


def normalized(state: TD3State, observations: jax.Array) -> jax.Array:
    return normalize(observations, state.observation_mean, state.observation_std)


def target_actions(config: Any, state: TD3State, next_observations: jax.Array,
                   noise: jax.Array | None) -> jax.Array:
    """The target actor's actions at s', smoothed with `noise` unless it is None."""
    actions = state.actor.apply_fn(state.target_actor_params, next_observations)
    if noise is None:
        return actions
    return smoothed_target_actions(actions, noise, config.policy_noise, config.noise_clip)


def critic_step(config: Any, state: TD3State, batch: Batch, key: jax.Array,
                critic_target: CriticTarget) -> tuple[TD3State, jax.Array, jax.Array]:
    """One twin-critic update (every step); returns (state, critic loss, Q on the batch)."""
    observations = normalized(state, batch.observations)
    next_observations = normalized(state, batch.next_observations)
    noise = jax.random.normal(key, batch.actions.shape, batch.actions.dtype)
    target = critic_target(config, state, batch, next_observations, noise)

    def critic_loss_fn(params):
        q = state.critic.apply_fn(params, observations, batch.actions)
        return ensemble_mse(q, target), q

    (critic_loss, q), grads = jax.value_and_grad(critic_loss_fn, has_aux=True)(
        state.critic.params)
    return state.replace(critic=state.critic.apply_gradients(grads=grads)), critic_loss, q


def actor_step(config: Any, state: TD3State, batch: Batch, actor_loss: ActorLoss) -> TD3State:
    """One delayed actor update on `actor_loss` and the Polyak step of both target networks."""
    observations = normalized(state, batch.observations)
    loss, grads = jax.value_and_grad(
        lambda params: actor_loss(config, state, params, observations, batch))(
        state.actor.params)
    actor = state.actor.apply_gradients(grads=grads)
    return state.replace(
        actor=actor,
        target_actor_params=polyak(state.target_actor_params, actor.params, config.tau),
        target_critic_params=polyak(state.target_critic_params, state.critic.params, config.tau),
        actor_loss=loss,
    )


def update(config: Any, state: TD3State, batch: Batch, key: jax.Array,
           critic_target: CriticTarget, actor_loss: ActorLoss):
    """TD3's schedule: the critics on every call, actor and targets on every
    policy_frequency-th; returns (state, metrics)."""
    state, critic_loss, q = critic_step(config, state, batch, key, critic_target)
    # TrainState.step counts critic updates; the actor follows on every policy_frequency-th.
    # (Under vmap over seeds the predicate is batched and cond becomes select: both branches
    # run and the result is the same.)
    update_actor = state.critic.step % config.policy_frequency == 0
    state = jax.lax.cond(update_actor, lambda s: actor_step(config, s, batch, actor_loss),
                         lambda s: s, state)
    metrics = {"critic_loss": critic_loss, "actor_loss": state.actor_loss,
               "q_mean": jnp.mean(q)}
    return state, metrics


def act(config: Any, state: TD3State, observations: jax.Array, key: jax.Array,
        deterministic: bool = True) -> jax.Array:
    actions = state.actor.apply_fn(state.actor.params, normalized(state, observations))
    if deterministic:
        return actions
    return gaussian_explore(actions, key, config.exploration_noise)


def explore(config: Any, state: TD3State, observations: jax.Array,
            key: jax.Array) -> jax.Array:
    """Online data collection: the deterministic action plus Gaussian noise (as TD3)."""
    return act(config, state, observations, key, deterministic=False)


def score(config: Any, state: TD3State, batch: Batch,
          critic_target: CriticTarget) -> dict[str, jax.Array]:
    """Prequential signal on unseen transitions: the actor's action MSE and the critics'
    squared TD error against the agent's `critic_target` (no smoothing noise: score takes no
    key).
    q_value: the critics' minimum Q of the dataset's action, a prediction rather than a
    loss (higher: the critic rates the logged action higher)."""
    observations = normalized(state, batch.observations)
    next_observations = normalized(state, batch.next_observations)
    predicted = state.actor.apply_fn(state.actor.params, observations)
    target = critic_target(config, state, batch, next_observations, None)
    q = state.critic.apply_fn(state.critic.params, observations, batch.actions)
    return {
        "action_mse": jnp.mean((predicted - batch.actions) ** 2),
        "td_error": jnp.mean((q - target) ** 2),
        "q_value": jnp.mean(jnp.min(q, axis=0)),
    }


# What `update` and `score` record (base.Metric), for every agent of the family.
METRICS = {
    "critic_loss": Metric("lower", "twin critics' squared TD error on the batch"),
    "actor_loss": Metric("lower", "the last actor loss: BC term minus normalised Q"),
    "q_mean": Metric("higher", "mean Q of the batch's actions (a predicted return)"),
    "action_mse": Metric("lower", "actor's squared error on the dataset's actions"),
    "td_error": Metric("lower", "critics' squared TD error on unseen transitions"),
    "q_value": Metric("higher", "critics' minimum Q of the dataset's actions (a predicted "
                                "return)"),
}
