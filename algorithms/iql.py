"""IQL: implicit Q-learning with expectile value regression and advantage-weighted regression.

Kostrikov, Nair & Levine, "Offline Reinforcement Learning with Implicit Q-Learning" (ICLR 2022),
arXiv 2110.06169. Defaults follow the authors' MuJoCo configuration
(ikostrikov/implicit_q_learning): expectile 0.7, inverse temperature beta 3.0, tau 0.005, Adam
3e-4 for actor, critic and value, the actor's rate cosine-decayed over the run's gradient steps,
advantage weights clipped at 100, 2x256 networks, rewards scaled by
1000 / (max - min episode return), no observation normalisation.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
from flax import struct
from flax.training.train_state import TrainState

from seqeval.algorithms.base import (
    GAUSSIAN_ACTOR_CRITIC_SCORES,
    NON_NEGATIVE,
    OPEN_UNIT,
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
    StateValue,
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
class IQLConfig:
    actor_hidden_dims: tuple[int, ...] = (256, 256)  # policy MLP widths
    critic_hidden_dims: tuple[int, ...] = (256, 256)  # widths of each twin Q network
    value_hidden_dims: tuple[int, ...] = (256, 256)  # V network widths
    actor_learning_rate: float = 3e-4  # Adam step size of the policy (cosine-decayed)
    critic_learning_rate: float = 3e-4  # Adam step size of the twin Q networks
    value_learning_rate: float = 3e-4  # Adam step size of V
    actor_cosine_decay: bool = True  # decay the policy's rate to 0 over the run's steps
    discount: float = 0.99  # gamma of the TD target
    tau: float = 0.005  # Polyak rate of the target Q networks
    expectile: float = 0.7  # tau of the expectile regression of V onto min Q
    beta: float = 3.0  # inverse temperature: advantage weights are exp(beta * (Q - V))
    max_weight: float = 100.0  # advantage weights are clipped at this value
    normalize_rewards: bool = True  # scale rewards by 1000 / (max - min episode return)
    normalize_observations: bool = False  # standardise observations (the reference does not)
    log_std_min: float = -5.0  # lower clip of the policy's log standard deviation
    log_std_max: float = 2.0  # upper clip of the policy's log standard deviation


class IQLState(struct.PyTreeNode):
    actor: TrainState
    critic: TrainState  # twin Q networks with a leading ensemble axis of 2
    value: TrainState
    target_critic_params: dict
    observation_mean: jax.Array
    observation_std: jax.Array
    reward_scale: jax.Array  # multiplies every reward


def _networks(config: IQLConfig, spaces: Spaces):
    actor = GaussianActor(config.actor_hidden_dims, spaces.action_dim, config.log_std_min,
                          config.log_std_max)
    critic = StateActionEnsemble(config.critic_hidden_dims, 2)
    value = StateValue(config.value_hidden_dims)
    return actor, critic, value


def return_range_reward_scale(stats: DatasetStats) -> jax.Array:
    """1000 / (max - min episode return), IQL's reward scale for locomotion; 1 when the
    dataset has no spread of complete-episode returns to measure."""
    spread = stats.episode_return_max - stats.episode_return_min
    usable = jnp.isfinite(spread) & (spread > 1e-6)
    return jnp.where(usable, 1000.0 / jnp.where(usable, spread, 1.0), 1.0).astype(jnp.float32)


def init(config: IQLConfig, key: jax.Array, spaces: Spaces, stats: DatasetStats,
         total_steps: int) -> IQLState:
    actor, critic, value = _networks(config, spaces)
    actor_key, critic_key, value_key = jax.random.split(key, 3)
    observations = jnp.zeros((1, spaces.observation_dim), jnp.float32)
    actions = jnp.zeros((1, spaces.action_dim), jnp.float32)
    critic_params = critic.init(critic_key, observations, actions)
    mean, std = observation_stats(stats, config.normalize_observations)
    actor_steps = total_steps if config.actor_cosine_decay else None
    reward_scale = (return_range_reward_scale(stats) if config.normalize_rewards
                    else jnp.float32(1.0))
    return IQLState(
        actor=TrainState.create(apply_fn=actor.apply, params=actor.init(actor_key, observations),
                                tx=adam(config.actor_learning_rate, actor_steps)),
        critic=TrainState.create(apply_fn=critic.apply, params=critic_params,
                                 tx=adam(config.critic_learning_rate)),
        value=TrainState.create(apply_fn=value.apply, params=value.init(value_key, observations),
                                tx=adam(config.value_learning_rate)),
        target_critic_params=critic_params,
        observation_mean=mean,
        observation_std=std,
        reward_scale=reward_scale,
    )


# ---------------------------------------------------------------------------------------------
# Losses (pure functions of arrays; tests check them against numpy).


def expectile_loss(differences: jax.Array, expectile: float) -> jax.Array:
    """Asymmetric squared loss |tau - 1(u < 0)| u^2 of u = Q - V, averaged."""
    weight = jnp.where(differences > 0, expectile, 1.0 - expectile)
    return jnp.mean(weight * differences**2)


# ---------------------------------------------------------------------------------------------


def _normalized(state: IQLState, observations: jax.Array) -> jax.Array:
    return normalize(observations, state.observation_mean, state.observation_std)


def update(config: IQLConfig, state: IQLState, batch: Batch, key: jax.Array):
    del key  # the updates are deterministic
    observations = _normalized(state, batch.observations)
    next_observations = _normalized(state, batch.next_observations)
    rewards = batch.rewards * state.reward_scale

    # min over the target twins, used by both the value and the policy losses.
    target_q = jnp.min(
        state.critic.apply_fn(state.target_critic_params, observations, batch.actions), axis=0)

    def value_loss_fn(params):
        v = state.value.apply_fn(params, observations)
        return expectile_loss(target_q - v, config.expectile), v

    (value_loss, v_old), value_grads = jax.value_and_grad(value_loss_fn, has_aux=True)(
        state.value.params)
    value = state.value.apply_gradients(grads=value_grads)

    # The reference uses the freshly updated V for both the advantages and the Q target:
    # one pass over [s; s'] gives both.
    both = value.apply_fn(value.params, jnp.concatenate([observations, next_observations]))
    v, next_v = jnp.split(both, 2)
    weights = advantage_weights(target_q - v, config.beta, config.max_weight)

    def actor_loss_fn(params):
        mean, log_std = state.actor.apply_fn(params, observations)
        return awr_actor_loss(gaussian_log_prob(mean, log_std, batch.actions), weights)

    actor_loss, actor_grads = jax.value_and_grad(actor_loss_fn)(state.actor.params)
    actor = state.actor.apply_gradients(grads=actor_grads)

    target = td_target(rewards, batch.terminals, next_v, config.discount)

    def critic_loss_fn(params):
        q = state.critic.apply_fn(params, observations, batch.actions)
        return ensemble_mse(q, target), q

    (critic_loss, q), critic_grads = jax.value_and_grad(critic_loss_fn, has_aux=True)(
        state.critic.params)
    critic = state.critic.apply_gradients(grads=critic_grads)

    state = state.replace(
        actor=actor,
        critic=critic,
        value=value,
        target_critic_params=polyak(state.target_critic_params, critic.params, config.tau),
    )
    metrics = {"critic_loss": critic_loss, "value_loss": value_loss, "actor_loss": actor_loss,
               "q_mean": jnp.mean(q), "v_mean": jnp.mean(v_old),
               "weight_mean": jnp.mean(weights)}
    return state, metrics


def act(config: IQLConfig, state: IQLState, observations: jax.Array, key: jax.Array,
        deterministic: bool = True) -> jax.Array:
    mean, log_std = state.actor.apply_fn(state.actor.params, _normalized(state, observations))
    if deterministic:
        return mean
    return clipped_gaussian_sample(mean, log_std, key)


def explore(config: IQLConfig, state: IQLState, observations: jax.Array,
            key: jax.Array) -> jax.Array:
    """Online data collection: a sample of the Gaussian policy, clipped to the bounds."""
    return act(config, state, observations, key, deterministic=False)


def score(config: IQLConfig, state: IQLState, batch: Batch) -> dict[str, jax.Array]:
    """Prequential signal on unseen transitions: the policy's negative log-likelihood and
    action MSE, the twin Q networks' squared TD error against r + gamma V(s'), and V's
    expectile loss.
    q_value: the critics' minimum Q of the dataset's action, a prediction rather than a
    loss (higher: the critic rates the logged action higher)."""
    observations = _normalized(state, batch.observations)
    next_observations = _normalized(state, batch.next_observations)
    mean, log_std = state.actor.apply_fn(state.actor.params, observations)
    q = state.critic.apply_fn(state.critic.params, observations, batch.actions)
    target_q = jnp.min(
        state.critic.apply_fn(state.target_critic_params, observations, batch.actions), axis=0)
    v = state.value.apply_fn(state.value.params, observations)
    next_v = state.value.apply_fn(state.value.params, next_observations)
    target = td_target(batch.rewards * state.reward_scale, batch.terminals, next_v,
                       config.discount)
    return {
        "action_nll": -jnp.mean(gaussian_log_prob(mean, log_std, batch.actions)),
        "action_mse": jnp.mean((mean - batch.actions) ** 2),
        "td_error": jnp.mean((q - target) ** 2),
        "q_value": jnp.mean(jnp.min(q, axis=0)),
        "value_loss": expectile_loss(target_q - v, config.expectile),
    }


def check_config(config: IQLConfig) -> None:
    """Ranges of this agent's settings, beyond the conventions every config meets."""
    check_ranges("iql", config, expectile=OPEN_UNIT, beta=NON_NEGATIVE,
                 max_weight=POSITIVE)
    check_log_std_bounds("iql", config)


# What update and score record (base.Metric).
METRICS = {
    "critic_loss": Metric("lower", "twin critics' squared error against r + gamma V(s')"),
    "value_loss": Metric("lower", "expectile loss of V against the target critics' Q"),
    "actor_loss": Metric("lower", "advantage-weighted negative log-likelihood"),
    "q_mean": Metric("higher", "mean Q of the batch's actions (a predicted return)"),
    "v_mean": Metric(None, "mean V of the batch's observations"),
    "weight_mean": Metric(None, "mean advantage weight of the actor loss"),
    **GAUSSIAN_ACTOR_CRITIC_SCORES,
}

AGENT = Agent(
    name="iql",
    config_class=IQLConfig,
    init=init,
    update=update,
    act=act,
    explore=explore,
    score=score,
    check_config=check_config,
    metrics=METRICS,
    # One name per concept across agents: "temperature" meant three things (here beta).
    renamed_settings={"temperature": "beta"},
    description="IQL (Kostrikov et al. 2022): expectile V, twin Q, advantage-weighted actor",
)
