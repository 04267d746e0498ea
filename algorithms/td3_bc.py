"""TD3+BC: TD3 whose actor loss adds a behaviour-cloning term.

Fujimoto & Gu, "A Minimalist Approach to Offline Reinforcement Learning" (NeurIPS 2021),
arXiv 2106.06860; built on TD3, Fujimoto, van Hoof & Meger, "Addressing Function
Approximation Error in Actor-Critic Methods" (ICML 2018). Defaults follow the authors' code
(sfujim/TD3_BC): alpha 2.5, policy noise 0.2 clipped at 0.5, actor and target updates every
2 critic updates, tau 0.005, Adam 3e-4, 2x256 networks, observations standardised with the
dataset's mean and std.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import flax.linen as nn
import jax
import jax.numpy as jnp
from flax import struct
from flax.training.train_state import TrainState

from seqeval.algorithms.base import (
    AT_LEAST_ONE,
    NON_NEGATIVE,
    Agent,
    Batch,
    DatasetStats,
    Metric,
    Spaces,
    check_ranges,
)
from seqeval.algorithms.nets import (
    DeterministicActor,
    StateActionEnsemble,
    StateActionValue,
    actor_critic_states,
    adam,
    ensemble_mse,
    gaussian_explore,
    member,
    normalize,
    observation_stats,
    polyak,
    td_target,
)


@dataclasses.dataclass(frozen=True)
class TD3BCConfig:
    actor_hidden_dims: tuple[int, ...] = (256, 256)  # actor MLP widths
    critic_hidden_dims: tuple[int, ...] = (256, 256)  # widths of each twin critic
    actor_learning_rate: float = 3e-4  # Adam step size of the actor
    critic_learning_rate: float = 3e-4  # Adam step size of the twin critics
    discount: float = 0.99  # gamma of the TD target
    tau: float = 0.005  # Polyak rate of the target networks
    alpha: float = 2.5  # Q-term weight: actor loss = -alpha/mean|Q| * Q + MSE(pi(s), a)
    policy_noise: float = 0.2  # std of the target policy smoothing noise
    noise_clip: float = 0.5  # the smoothing noise is clipped to [-noise_clip, noise_clip]
    policy_frequency: int = 2  # actor and target networks update every this many critic steps
    normalize_observations: bool = True  # standardise observations with dataset statistics
    exploration_noise: float = 0.1  # std of Gaussian action noise when acting online


class TD3BCState(struct.PyTreeNode):
    actor: TrainState
    critic: TrainState  # twin critics with a leading ensemble axis of 2
    target_actor_params: dict
    target_critic_params: dict
    observation_mean: jax.Array
    observation_std: jax.Array
    actor_loss: jax.Array  # from the last actor update (the actor skips most steps)


def _networks(config: TD3BCConfig, spaces: Spaces):
    actor = DeterministicActor(config.actor_hidden_dims, spaces.action_dim)
    critic = StateActionEnsemble(config.critic_hidden_dims, 2)
    return actor, critic


def init(config: TD3BCConfig, key: jax.Array, spaces: Spaces, stats: DatasetStats,
         total_steps: int) -> TD3BCState:
    del total_steps  # constant learning rates
    return initial_state(config, key, spaces, stats, *_networks(config, spaces))


def initial_state(config, key: jax.Array, spaces: Spaces, stats: DatasetStats,
                  actor: nn.Module, critic: nn.Module) -> TD3BCState:
    """Actor and twin critics with Adam, target networks equal to them (also ReBRAC's)."""
    actor_state, critic_state = actor_critic_states(
        key, spaces, actor, critic, adam(config.actor_learning_rate),
        adam(config.critic_learning_rate))
    mean, std = observation_stats(stats, config.normalize_observations)
    return TD3BCState(
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


def td3_bc_actor_loss(q: jax.Array, policy_actions: jax.Array, actions: jax.Array,
                      alpha: float) -> jax.Array:
    """-lambda * mean Q(s, pi(s)) + MSE(pi(s), a), lambda = alpha / mean|Q| (not differentiated)."""
    lam = alpha / jax.lax.stop_gradient(jnp.mean(jnp.abs(q)))
    return -lam * jnp.mean(q) + jnp.mean((policy_actions - actions) ** 2)


# ---------------------------------------------------------------------------------------------


def _normalized(state: TD3BCState, observations: jax.Array) -> jax.Array:
    return normalize(observations, state.observation_mean, state.observation_std)


def _critic_target(config: TD3BCConfig, state: TD3BCState, rewards: jax.Array,
                   terminals: jax.Array, next_observations: jax.Array,
                   noise: jax.Array | None) -> jax.Array:
    next_actions = state.actor.apply_fn(state.target_actor_params, next_observations)
    if noise is not None:
        next_actions = smoothed_target_actions(next_actions, noise, config.policy_noise,
                                               config.noise_clip)
    next_q = state.critic.apply_fn(state.target_critic_params, next_observations, next_actions)
    return td_target(rewards, terminals, jnp.min(next_q, axis=0), config.discount)


def critic_step(config: TD3BCConfig, state: TD3BCState, batch: Batch, key: jax.Array):
    """One twin-critic update (every step); returns (state, critic loss, Q on the batch)."""
    observations = _normalized(state, batch.observations)
    next_observations = _normalized(state, batch.next_observations)
    noise = jax.random.normal(key, batch.actions.shape, batch.actions.dtype)
    target = _critic_target(config, state, batch.rewards, batch.terminals, next_observations,
                            noise)

    def critic_loss_fn(params):
        q = state.critic.apply_fn(params, observations, batch.actions)
        return ensemble_mse(q, target), q

    (critic_loss, q), grads = jax.value_and_grad(critic_loss_fn, has_aux=True)(
        state.critic.params)
    return state.replace(critic=state.critic.apply_gradients(grads=grads)), critic_loss, q


def actor_step(config: TD3BCConfig, state: TD3BCState, batch: Batch) -> TD3BCState:
    """One delayed actor update and the Polyak step of both target networks."""
    observations = _normalized(state, batch.observations)
    # Only the first critic drives the actor (as in TD3): apply just that member.
    first_critic = StateActionValue(config.critic_hidden_dims)
    first_params = member(state.critic.params, 0)

    def actor_loss_fn(params):
        policy_actions = state.actor.apply_fn(params, observations)
        q_policy = first_critic.apply(first_params, observations, policy_actions)
        return td3_bc_actor_loss(q_policy, policy_actions, batch.actions, config.alpha)

    return actor_and_target_step(config, state, actor_loss_fn)


def actor_and_target_step(config, state: TD3BCState, actor_loss_fn: Callable) -> TD3BCState:
    """A gradient step of the actor on `actor_loss_fn(params)` and the Polyak step of both
    target networks (TD3's delayed update; also ReBRAC's)."""
    actor_loss, actor_grads = jax.value_and_grad(actor_loss_fn)(state.actor.params)
    actor = state.actor.apply_gradients(grads=actor_grads)
    return state.replace(
        actor=actor,
        target_actor_params=polyak(state.target_actor_params, actor.params, config.tau),
        target_critic_params=polyak(state.target_critic_params, state.critic.params, config.tau),
        actor_loss=actor_loss,
    )


def delayed_update(config, state: TD3BCState, batch: Batch, key: jax.Array,
                   critic_step: Callable, actor_step: Callable):
    """TD3's schedule: `critic_step` on every call, `actor_step` (actor and targets) on every
    policy_frequency-th; returns (state, metrics)."""
    state, critic_loss, q = critic_step(config, state, batch, key)
    # TrainState.step counts critic updates; the actor follows on every policy_frequency-th.
    # (Under vmap over seeds the predicate is batched and cond becomes select: both branches
    # run and the result is the same.)
    update_actor = state.critic.step % config.policy_frequency == 0
    state = jax.lax.cond(update_actor, lambda s: actor_step(config, s, batch), lambda s: s,
                         state)
    metrics = {"critic_loss": critic_loss, "actor_loss": state.actor_loss,
               "q_mean": jnp.mean(q)}
    return state, metrics


def update(config: TD3BCConfig, state: TD3BCState, batch: Batch, key: jax.Array):
    return delayed_update(config, state, batch, key, critic_step, actor_step)


def act(config: TD3BCConfig, state: TD3BCState, observations: jax.Array, key: jax.Array,
        deterministic: bool = True) -> jax.Array:
    actions = state.actor.apply_fn(state.actor.params, _normalized(state, observations))
    if deterministic:
        return actions
    return gaussian_explore(actions, key, config.exploration_noise)


def explore(config: TD3BCConfig, state: TD3BCState, observations: jax.Array,
            key: jax.Array) -> jax.Array:
    """Online data collection: the deterministic action plus Gaussian noise (as TD3)."""
    return act(config, state, observations, key, deterministic=False)


def score(config: TD3BCConfig, state: TD3BCState, batch: Batch) -> dict[str, jax.Array]:
    """Prequential signal on unseen transitions: the actor's action MSE and the critics'
    squared TD error against the target networks (no smoothing noise: score takes no key).
    q_value: the critics' minimum Q of the dataset's action, a prediction rather than a
    loss (higher: the critic rates the logged action higher)."""
    observations = _normalized(state, batch.observations)
    next_observations = _normalized(state, batch.next_observations)
    predicted = state.actor.apply_fn(state.actor.params, observations)
    target = _critic_target(config, state, batch.rewards, batch.terminals, next_observations,
                            None)
    q = state.critic.apply_fn(state.critic.params, observations, batch.actions)
    return {
        "action_mse": jnp.mean((predicted - batch.actions) ** 2),
        "td_error": jnp.mean((q - target) ** 2),
        "q_value": jnp.mean(jnp.min(q, axis=0)),
    }


def check_config(config: TD3BCConfig) -> None:
    """Ranges of this agent's settings, beyond the conventions every config meets."""
    check_ranges("td3_bc", config, alpha=NON_NEGATIVE, policy_noise=NON_NEGATIVE,
                 noise_clip=NON_NEGATIVE, policy_frequency=AT_LEAST_ONE,
                 exploration_noise=NON_NEGATIVE)


# What update and score record (base.Metric): ReBRAC records the same.
METRICS = {
    "critic_loss": Metric("lower", "twin critics' squared TD error on the batch"),
    "actor_loss": Metric("lower", "the last actor loss: BC term minus normalised Q"),
    "q_mean": Metric("higher", "mean Q of the batch's actions (a predicted return)"),
    "action_mse": Metric("lower", "actor's squared error on the dataset's actions"),
    "td_error": Metric("lower", "critics' squared TD error on unseen transitions"),
    "q_value": Metric("higher", "critics' minimum Q of the dataset's actions (a predicted "
                                "return)"),
}

AGENT = Agent(
    name="td3_bc",
    config_class=TD3BCConfig,
    init=init,
    update=update,
    act=act,
    explore=explore,
    score=score,
    check_config=check_config,
    metrics=METRICS,
    description="TD3+BC (Fujimoto & Gu 2021): TD3 with a behaviour-cloning actor term",
)
