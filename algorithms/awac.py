"""AWAC: advantage-weighted actor-critic, an actor regressed onto the dataset's actions weighted
by exp(advantage / lambda), with a SAC-style twin critic.

Nair, Gupta, Dalal & Levine, "AWAC: Accelerating Online Reinforcement Learning with Offline
Datasets" (2020), arXiv 2006.09359: made for offline pre-training followed by online
fine-tuning. Defaults follow CORL's offline AWAC (tinkoff-ai/CORL, algorithms/offline/awac.py
and configs/offline/awac/* for D4RL MuJoCo): lambda 1/3, advantage weights clipped at 100, 3x256
networks, Adam 3e-4, tau 0.005, batch 256, observations standardised with the dataset's
statistics; the critic's target uses an action sampled from the current policy at s' and the
smaller of the twin target critics; V(s) in the advantage is the smaller Q of one policy sample.
The policy is IQL's Gaussian (tanh-squashed mean, state-independent log-std clipped to
[-20, 2]); CORL's mean is unsquashed with samples clipped to [-1, 1].
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
from flax import struct
from flax.training.train_state import TrainState

from seqeval.algorithms.base import (
    GAUSSIAN_ACTOR_CRITIC_SCORES,
    POSITIVE,
    Agent,
    Batch,
    DatasetStats,
    Metric,
    Spaces,
    check_log_std_bounds,
    check_ranges,
)
from seqeval.algorithms.nets import (
    GaussianActor,
    StateActionEnsemble,
    actor_critic_states,
    adam,
    advantage_weights,
    awr_actor_loss,
    clipped_gaussian_sample,
    ensemble_mse,
    gaussian_log_prob,
    normalize,
    observation_stats,
    polyak,
    td_target,
)


@dataclasses.dataclass(frozen=True)
class AWACConfig:
    actor_hidden_dims: tuple[int, ...] = (256, 256, 256)  # policy MLP widths
    critic_hidden_dims: tuple[int, ...] = (256, 256, 256)  # widths of each twin Q network
    actor_learning_rate: float = 3e-4  # Adam step size of the policy
    critic_learning_rate: float = 3e-4  # Adam step size of the twin Q networks
    discount: float = 0.99  # gamma of the TD target
    tau: float = 0.005  # Polyak rate of the target Q networks
    awac_lambda: float = 0.3333  # temperature: advantage weights are exp((Q - V) / lambda)
    max_weight: float = 100.0  # advantage weights are clipped at this value
    normalize_observations: bool = True  # standardise observations with dataset statistics
    log_std_min: float = -20.0  # lower clip of the policy's log standard deviation
    log_std_max: float = 2.0  # upper clip of the policy's log standard deviation


class AWACState(struct.PyTreeNode):
    actor: TrainState
    critic: TrainState  # twin Q networks with a leading ensemble axis of 2
    target_critic_params: dict
    observation_mean: jax.Array
    observation_std: jax.Array


def _networks(config: AWACConfig, spaces: Spaces):
    actor = GaussianActor(config.actor_hidden_dims, spaces.action_dim, config.log_std_min,
                          config.log_std_max)
    critic = StateActionEnsemble(config.critic_hidden_dims, 2)
    return actor, critic


def init(config: AWACConfig, key: jax.Array, spaces: Spaces, stats: DatasetStats,
         total_steps: int) -> AWACState:
    del total_steps  # constant learning rates
    actor, critic = _networks(config, spaces)
    actor_state, critic_state = actor_critic_states(
        key, spaces, actor, critic, adam(config.actor_learning_rate),
        adam(config.critic_learning_rate))
    mean, std = observation_stats(stats, config.normalize_observations)
    return AWACState(
        actor=actor_state,
        critic=critic_state,
        target_critic_params=critic_state.params,
        observation_mean=mean,
        observation_std=std,
    )


# ---------------------------------------------------------------------------------------------
# Losses (pure functions of arrays; tests check them against numpy). The weighted regression
# itself is the shared `advantage_weights` and `awr_actor_loss` (IQL's too).


def awac_weights(q_data: jax.Array, q_policy: jax.Array, awac_lambda: float,
                 max_weight: float) -> jax.Array:
    """min(exp((Q(s, a) - V(s)) / lambda), max_weight), V(s) = Q(s, a ~ pi): the smaller of
    the twins for both (arrays (2, B))."""
    advantages = jnp.min(q_data, axis=0) - jnp.min(q_policy, axis=0)
    return advantage_weights(advantages, 1.0 / awac_lambda, max_weight)


# ---------------------------------------------------------------------------------------------


def _normalized(state: AWACState, observations: jax.Array) -> jax.Array:
    return normalize(observations, state.observation_mean, state.observation_std)


def _critic_target(config: AWACConfig, state: AWACState, batch: Batch,
                   next_observations: jax.Array, key: jax.Array | None) -> jax.Array:
    """r + gamma (1 - done) min Q'(s', a'), a' ~ pi(s') (the policy's mean without a key)."""
    mean, log_std = state.actor.apply_fn(state.actor.params, next_observations)
    next_actions = mean if key is None else clipped_gaussian_sample(mean, log_std, key)
    next_q = state.critic.apply_fn(state.target_critic_params, next_observations, next_actions)
    return td_target(batch.rewards, batch.terminals, jnp.min(next_q, axis=0), config.discount)


def update(config: AWACConfig, state: AWACState, batch: Batch, key: jax.Array):
    target_key, policy_key = jax.random.split(key)
    observations = _normalized(state, batch.observations)
    next_observations = _normalized(state, batch.next_observations)

    # Critics first (as the reference), on the TD target of a policy sample at s'.
    target = _critic_target(config, state, batch, next_observations, target_key)

    def critic_loss_fn(params):
        q = state.critic.apply_fn(params, observations, batch.actions)
        return ensemble_mse(q, target), q

    (critic_loss, q), critic_grads = jax.value_and_grad(critic_loss_fn, has_aux=True)(
        state.critic.params)
    critic = state.critic.apply_gradients(grads=critic_grads)

    # Then the actor, weighted by the updated critics' advantage of the dataset action over a
    # policy sample: one critic pass over [a; a ~ pi(s)].
    mean, log_std = state.actor.apply_fn(state.actor.params, observations)
    policy_actions = clipped_gaussian_sample(mean, log_std, policy_key)
    both = critic.apply_fn(critic.params, jnp.concatenate([observations, observations]),
                           jnp.concatenate([batch.actions, policy_actions]))
    q_data, q_policy = jnp.split(both, 2, axis=1)
    weights = awac_weights(q_data, q_policy, config.awac_lambda, config.max_weight)

    def actor_loss_fn(params):
        mean, log_std = state.actor.apply_fn(params, observations)
        return awr_actor_loss(gaussian_log_prob(mean, log_std, batch.actions), weights)

    actor_loss, actor_grads = jax.value_and_grad(actor_loss_fn)(state.actor.params)

    state = state.replace(
        actor=state.actor.apply_gradients(grads=actor_grads),
        critic=critic,
        target_critic_params=polyak(state.target_critic_params, critic.params, config.tau),
    )
    metrics = {"critic_loss": critic_loss, "actor_loss": actor_loss, "q_mean": jnp.mean(q),
               "weight_mean": jnp.mean(weights)}
    return state, metrics


def act(config: AWACConfig, state: AWACState, observations: jax.Array, key: jax.Array,
        deterministic: bool = True) -> jax.Array:
    mean, log_std = state.actor.apply_fn(state.actor.params, _normalized(state, observations))
    if deterministic:
        return mean
    return clipped_gaussian_sample(mean, log_std, key)


def explore(config: AWACConfig, state: AWACState, observations: jax.Array,
            key: jax.Array) -> jax.Array:
    """Online data collection: a sample of the Gaussian policy, clipped to the bounds (as the
    paper's online fine-tuning)."""
    return act(config, state, observations, key, deterministic=False)


def score(config: AWACConfig, state: AWACState, batch: Batch) -> dict[str, jax.Array]:
    """Prequential signal on unseen transitions: the policy's negative log-likelihood and
    action MSE, and the twin Q networks' squared TD error (target at the policy's mean action:
    score takes no key).
    q_value: the critics' minimum Q of the dataset's action, a prediction rather than a
    loss (higher: the critic rates the logged action higher)."""
    observations = _normalized(state, batch.observations)
    next_observations = _normalized(state, batch.next_observations)
    mean, log_std = state.actor.apply_fn(state.actor.params, observations)
    q = state.critic.apply_fn(state.critic.params, observations, batch.actions)
    target = _critic_target(config, state, batch, next_observations, None)
    return {
        "action_nll": -jnp.mean(gaussian_log_prob(mean, log_std, batch.actions)),
        "action_mse": jnp.mean((mean - batch.actions) ** 2),
        "td_error": jnp.mean((q - target) ** 2),
        "q_value": jnp.mean(jnp.min(q, axis=0)),
    }


def check_config(config: AWACConfig) -> None:
    """Ranges of this agent's settings, beyond the conventions every config meets."""
    check_ranges("awac", config, awac_lambda=POSITIVE, max_weight=POSITIVE)
    check_log_std_bounds("awac", config)


# What update and score record (base.Metric).
METRICS = {
    "critic_loss": Metric("lower", "twin critics' squared TD error on the batch"),
    "actor_loss": Metric("lower", "advantage-weighted negative log-likelihood"),
    "q_mean": Metric("higher", "mean Q of the batch's actions (a predicted return)"),
    "weight_mean": Metric(None, "mean advantage weight of the actor loss"),
    **GAUSSIAN_ACTOR_CRITIC_SCORES,
}

AGENT = Agent(
    name="awac",
    config_class=AWACConfig,
    init=init,
    update=update,
    act=act,
    explore=explore,
    score=score,
    check_config=check_config,
    metrics=METRICS,
    description="AWAC (Nair et al. 2020): twin Q critic, actor weighted by exp(advantage / "
                "lambda)",
)
