"""SAC: soft actor-critic with a learned entropy coefficient (temperature) alpha.

Haarnoja, Zhou, Abbeel & Levine, "Soft Actor-Critic: Off-Policy Maximum Entropy Deep
Reinforcement Learning with a Stochastic Actor" (ICML 2018), arXiv 1801.01290, with the learned
temperature of Haarnoja et al., "Soft Actor-Critic Algorithms and Applications" (2018), arXiv
1812.05905 (target entropy -|A|). Defaults follow the latter's MuJoCo setting: Adam 3e-4 for
the actor, the critics and alpha, 2x256 networks, discount 0.99, tau 0.005, twin
critics whose minimum backs up, the entropy term in the TD target. The log standard deviation
is squashed smoothly into [-5, 2] with tanh (CleanRL's and jaxrl's SAC), which keeps its
gradient alive at the bounds; online exploration acts uniformly at random until the first
gradient step (the "learning starts" warm-up of SB3 and CleanRL: an untrained tanh-Gaussian
actor only covers a narrow band of actions).

Offline, SAC has nothing keeping its policy on the data: it is the classic baseline that fails
without a constraint (Kumar et al. 2019, 2020). Online (`--online-steps`) it is the usual
fine-tuning baseline. seqeval's dataset builder trains its behaviour policies with this agent
(seqeval.envs.sac runs `update` inside its replay-buffer loop), and CQL reuses its actor and
alpha losses. Its alpha settings are named as CQL's (initial_alpha; alpha_learning_rate).
"""

from __future__ import annotations

import dataclasses
import math

import jax
import jax.numpy as jnp
from flax import struct
from flax.training.train_state import TrainState

from seqeval.algorithms.base import (
    AT_LEAST_ONE,
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
    StateActionEnsemble,
    TanhGaussianActor,
    adam,
    ensemble_mse,
    polyak,
    tanh_gaussian_log_prob,
    tanh_gaussian_sample,
    td_target,
)


@dataclasses.dataclass(frozen=True)
class SACConfig:
    actor_hidden_dims: tuple[int, ...] = (256, 256)  # policy MLP widths
    critic_hidden_dims: tuple[int, ...] = (256, 256)  # widths of each Q network
    actor_learning_rate: float = 3e-4  # Adam step size of the policy
    critic_learning_rate: float = 3e-4  # Adam step size of the Q networks
    alpha_learning_rate: float = 3e-4  # Adam step size of log alpha
    discount: float = 0.99  # gamma of the TD target
    tau: float = 0.005  # Polyak rate of the target Q networks
    num_critics: int = 2  # Q networks; the TD target and the actor use their minimum
    initial_alpha: float = 1.0  # entropy coefficient alpha at the start
    target_entropy: float | None = None  # entropy alpha is tuned towards; default -action_dim
    backup_entropy: bool = True  # soft TD target: subtract alpha * log pi(a'|s')
    log_std_min: float = -5.0  # lower bound of the policy's log standard deviation
    log_std_max: float = 2.0  # upper bound of the policy's log standard deviation
    soft_log_std_bounds: bool = True  # squash log std into the bounds with tanh (False: clip)
    uniform_warmup: bool = True  # explore() acts uniformly at random before the first update


class SACState(struct.PyTreeNode):
    actor: TrainState
    critic: TrainState  # num_critics Q networks with a leading ensemble axis
    # log alpha, a scalar "network" (named as before: the dataset builder's checkpoints of a
    # SAC training in progress hold the state by its field names)
    log_temperature: TrainState
    target_critic_params: dict


def _networks(config: SACConfig, spaces: Spaces):
    # With soft bounds the actor returns the raw log std (no clip) and `_policy` squashes it.
    low, high = ((-math.inf, math.inf) if config.soft_log_std_bounds
                 else (config.log_std_min, config.log_std_max))
    actor = TanhGaussianActor(config.actor_hidden_dims, spaces.action_dim, low, high)
    critic = StateActionEnsemble(config.critic_hidden_dims, config.num_critics)
    return actor, critic


def init(config: SACConfig, key: jax.Array, spaces: Spaces, stats: DatasetStats,
         total_steps: int) -> SACState:
    del stats, total_steps  # no observation normalisation; constant learning rates
    actor, critic = _networks(config, spaces)
    actor_key, critic_key = jax.random.split(key)
    observations = jnp.zeros((1, spaces.observation_dim), jnp.float32)
    actions = jnp.zeros((1, spaces.action_dim), jnp.float32)
    critic_params = critic.init(critic_key, observations, actions)
    return SACState(
        actor=TrainState.create(apply_fn=actor.apply, params=actor.init(actor_key, observations),
                                tx=adam(config.actor_learning_rate)),
        critic=TrainState.create(apply_fn=critic.apply, params=critic_params,
                                 tx=adam(config.critic_learning_rate)),
        log_temperature=TrainState.create(
            apply_fn=None, params={"log": jnp.float32(math.log(config.initial_alpha))},
            tx=adam(config.alpha_learning_rate)),
        # A separate copy: a trainer that donates its state cannot donate one buffer twice.
        target_critic_params=jax.tree.map(jnp.copy, critic_params),
    )


# ---------------------------------------------------------------------------------------------
# Losses (pure functions of arrays; tests check them against numpy).


def squash_log_std(raw: jax.Array, log_std_min: float, log_std_max: float) -> jax.Array:
    """tanh maps the raw output smoothly onto (log_std_min, log_std_max)."""
    return log_std_min + 0.5 * (log_std_max - log_std_min) * (jnp.tanh(raw) + 1.0)


def soft_value(q: jax.Array, log_probs: jax.Array, alpha: jax.Array) -> jax.Array:
    """V(s') = Q(s', a') - alpha log pi(a'|s'), a' ~ pi(.|s'): the soft state value."""
    return q - alpha * log_probs


def sac_actor_loss(log_probs: jax.Array, q: jax.Array, alpha: jax.Array) -> jax.Array:
    """E[alpha log pi(a|s) - Q(s, a)], a ~ pi(.|s) reparameterised."""
    return jnp.mean(alpha * log_probs - q)


def entropy_alpha_loss(log_alpha: jax.Array, log_probs: jax.Array,
                       target_entropy: float) -> jax.Array:
    """Automatic tuning: -log_alpha * E[log pi + target_entropy] (pi held fixed)."""
    return -log_alpha * jnp.mean(jax.lax.stop_gradient(log_probs) + target_entropy)


# ---------------------------------------------------------------------------------------------


def _policy(config: SACConfig, state: SACState, params: dict,
            observations: jax.Array) -> tuple[jax.Array, jax.Array]:
    """(mean, log std) of the pre-tanh Gaussian."""
    mean, log_std = state.actor.apply_fn(params, observations)
    if config.soft_log_std_bounds:
        log_std = squash_log_std(log_std, config.log_std_min, config.log_std_max)
    return mean, log_std


def _target_entropy(config: SACConfig, action_dim: int) -> float:
    return -float(action_dim) if config.target_entropy is None else config.target_entropy


def update(config: SACConfig, state: SACState, batch: Batch, key: jax.Array):
    next_key, actor_key = jax.random.split(key)
    alpha = jnp.exp(state.log_temperature.params["log"])

    # Critics: regress every Q network on the soft TD target of the target networks.
    mean, log_std = _policy(config, state, state.actor.params, batch.next_observations)
    next_actions, next_log_probs = tanh_gaussian_sample(mean, log_std, next_key)
    next_q = jnp.min(state.critic.apply_fn(state.target_critic_params, batch.next_observations,
                                           next_actions), axis=0)
    if config.backup_entropy:
        next_q = soft_value(next_q, next_log_probs, alpha)
    target = jax.lax.stop_gradient(
        td_target(batch.rewards, batch.terminals, next_q, config.discount))

    def critic_loss_fn(params):
        q = state.critic.apply_fn(params, batch.observations, batch.actions)
        return ensemble_mse(q, target), q

    (critic_loss, q), critic_grads = jax.value_and_grad(critic_loss_fn, has_aux=True)(
        state.critic.params)
    critic = state.critic.apply_gradients(grads=critic_grads)

    # Actor: maximise the updated critics' minimum plus entropy.
    def actor_loss_fn(params):
        mean, log_std = _policy(config, state, params, batch.observations)
        actions, log_probs = tanh_gaussian_sample(mean, log_std, actor_key)
        q = jnp.min(critic.apply_fn(critic.params, batch.observations, actions), axis=0)
        return sac_actor_loss(log_probs, q, alpha), log_probs

    (actor_loss, log_probs), actor_grads = jax.value_and_grad(actor_loss_fn, has_aux=True)(
        state.actor.params)

    # Alpha: towards the target entropy, on the actor's samples of this step.
    target_entropy = _target_entropy(config, batch.actions.shape[-1])
    alpha_loss, alpha_grads = jax.value_and_grad(
        lambda p: entropy_alpha_loss(p["log"], log_probs, target_entropy))(
        state.log_temperature.params)

    state = state.replace(
        actor=state.actor.apply_gradients(grads=actor_grads),
        critic=critic,
        log_temperature=state.log_temperature.apply_gradients(grads=alpha_grads),
        target_critic_params=polyak(state.target_critic_params, critic.params, config.tau),
    )
    metrics = {"critic_loss": critic_loss, "actor_loss": actor_loss, "alpha": alpha,
               "alpha_loss": alpha_loss, "entropy": -jnp.mean(log_probs),
               "q_mean": jnp.mean(q)}
    return state, metrics


def act(config: SACConfig, state: SACState, observations: jax.Array, key: jax.Array,
        deterministic: bool = True) -> jax.Array:
    mean, log_std = _policy(config, state, state.actor.params, observations)
    if deterministic:
        return jnp.tanh(mean)
    return tanh_gaussian_sample(mean, log_std, key)[0]


def explore(config: SACConfig, state: SACState, observations: jax.Array,
            key: jax.Array) -> jax.Array:
    """Online data collection: a sample of the tanh-Gaussian policy; with `uniform_warmup`,
    uniform actions in [-1, 1] until the first gradient step."""
    policy_key, uniform_key = jax.random.split(key)
    actions = act(config, state, observations, policy_key, deterministic=False)
    if not config.uniform_warmup:
        return actions
    uniform = jax.random.uniform(uniform_key, actions.shape, actions.dtype, -1.0, 1.0)
    return jnp.where(state.critic.step == 0, uniform, actions)


def mean_log_prob(mean: jax.Array, log_std: jax.Array) -> jax.Array:
    """E[log pi(a|s)] of the tanh-Gaussian without sampling, its squashing term taken at the
    mean: the log-density at the mode less 1/2 per dimension (exact for the Gaussian part)."""
    return tanh_gaussian_log_prob(mean, log_std, jnp.tanh(mean)) - 0.5 * mean.shape[-1]


def score(config: SACConfig, state: SACState, batch: Batch) -> dict[str, jax.Array]:
    """Prequential signal on unseen transitions: the policy's negative log-likelihood of the
    actions and the MSE of its deterministic action, and the Q networks' squared TD error.
    Score takes no key, so the target uses pi's deterministic action at s' (and, with
    `backup_entropy`, `mean_log_prob` for the entropy term).
    q_value: the critics' minimum Q of the dataset's action, a prediction rather than a
    loss (higher: the critic rates the logged action higher)."""
    mean, log_std = _policy(config, state, state.actor.params, batch.observations)
    next_mean, next_log_std = _policy(config, state, state.actor.params,
                                      batch.next_observations)
    next_q = jnp.min(state.critic.apply_fn(state.target_critic_params, batch.next_observations,
                                           jnp.tanh(next_mean)), axis=0)
    if config.backup_entropy:
        alpha = jnp.exp(state.log_temperature.params["log"])
        next_q = soft_value(next_q, mean_log_prob(next_mean, next_log_std), alpha)
    target = td_target(batch.rewards, batch.terminals, next_q, config.discount)
    q = state.critic.apply_fn(state.critic.params, batch.observations, batch.actions)
    return {
        "action_nll": -jnp.mean(tanh_gaussian_log_prob(mean, log_std, batch.actions)),
        "action_mse": jnp.mean((jnp.tanh(mean) - batch.actions) ** 2),
        "td_error": jnp.mean((q - target) ** 2),
        "q_value": jnp.mean(jnp.min(q, axis=0)),
    }


def check_config(config: SACConfig) -> None:
    """Ranges of this agent's settings, beyond the conventions every config meets."""
    check_ranges("sac", config, num_critics=AT_LEAST_ONE, initial_alpha=POSITIVE)
    check_log_std_bounds("sac", config)


# What update and score record (base.Metric).
METRICS = {
    "critic_loss": Metric("lower", "twin critics' squared TD error on the batch"),
    "actor_loss": Metric("lower", "alpha log pi minus Q of the policy's actions"),
    "alpha": Metric(None, "entropy coefficient (temperature)"),
    "alpha_loss": Metric(None, "alpha's tuning loss: its sign follows the entropy target, "
                               "not the policy's quality"),
    "entropy": Metric(None, "policy entropy estimate"),
    "q_mean": Metric("higher", "mean Q of the batch's actions (a predicted return)"),
    **GAUSSIAN_ACTOR_CRITIC_SCORES,
}

AGENT = Agent(
    name="sac",
    config_class=SACConfig,
    init=init,
    update=update,
    act=act,
    explore=explore,
    score=score,
    check_config=check_config,
    metrics=METRICS,
    # One name per concept across agents: alpha's settings are named as CQL's.
    renamed_settings={"initial_temperature": "initial_alpha",
                      "temperature_learning_rate": "alpha_learning_rate"},
    description="SAC (Haarnoja et al. 2018): off-policy maximum-entropy actor-critic, "
                "no offline constraint",
)
