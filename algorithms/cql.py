"""CQL: conservative Q-learning on top of SAC.

Kumar, Zhou, Tucker & Levine, "Conservative Q-Learning for Offline Reinforcement Learning"
(NeurIPS 2020), arXiv 2006.04779; the CQL(H) variant with importance-sampled logsumexp over
uniform and policy actions, on Haarnoja et al.'s SAC ("Soft Actor-Critic Algorithms and
Applications", 2018) with automatic entropy tuning. Defaults follow the paper's MuJoCo setting
and CORL's reimplementation (tinkoff-ai/CORL): 10 sampled actions, conservative weight 5
(CORL: 10), no Lagrange threshold, policy lr 1e-4 and Q lr 3e-4 (the paper: 3e-5 to 1e-4 and
3e-4), tau 0.005, 3x256 networks, no entropy term in the TD backup.
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
    NON_NEGATIVE,
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
    normalize,
    observation_stats,
    polyak,
    tanh_gaussian_log_prob,
    tanh_gaussian_sample,
    td_target,
)
from seqeval.algorithms.sac import entropy_alpha_loss, sac_actor_loss


@dataclasses.dataclass(frozen=True)
class CQLConfig:
    actor_hidden_dims: tuple[int, ...] = (256, 256, 256)  # policy MLP widths
    critic_hidden_dims: tuple[int, ...] = (256, 256, 256)  # widths of each twin Q network
    actor_learning_rate: float = 1e-4  # Adam step size of the policy (and of alpha, as CORL)
    critic_learning_rate: float = 3e-4  # Adam step size of the twin Q networks (and alpha')
    discount: float = 0.99  # gamma of the TD target
    tau: float = 0.005  # Polyak rate of the target Q networks
    num_sampled_actions: int = 10  # actions per state from each of: uniform, pi(s), pi(s')
    cql_weight: float = 5.0  # weight of the conservative penalty (CORL uses 10)
    cql_temperature: float = 1.0  # temperature of the penalty's logsumexp
    importance_sampling: bool = True  # subtract log-densities of the sampled actions (CQL(H))
    lagrange: bool = False  # tune the penalty weight to keep the gap near lagrange_threshold
    lagrange_threshold: float = 10.0  # tau of the Lagrange dual (used only when lagrange=True)
    automatic_entropy_tuning: bool = True  # learn alpha toward target_entropy
    target_entropy: float | None = None  # default: -action_dim
    initial_alpha: float = 1.0  # entropy coefficient alpha at the start (fixed if not tuned)
    backup_entropy: bool = False  # subtract alpha * log pi(a'|s') in the TD target
    reward_scale: float = 1.0  # rewards become reward_scale * r + reward_bias
    reward_bias: float = 0.0  # see reward_scale
    normalize_observations: bool = False  # standardise observations (the paper does not)
    log_std_min: float = -20.0  # lower clip of the policy's log standard deviation
    log_std_max: float = 2.0  # upper clip of the policy's log standard deviation


class CQLState(struct.PyTreeNode):
    actor: TrainState
    critic: TrainState  # twin Q networks with a leading ensemble axis of 2
    log_alpha: TrainState  # log of the entropy coefficient alpha, a scalar "network"
    log_alpha_prime: TrainState  # Lagrange multiplier of the penalty (log)
    target_critic_params: dict
    observation_mean: jax.Array
    observation_std: jax.Array


def _networks(config: CQLConfig, spaces: Spaces):
    actor = TanhGaussianActor(config.actor_hidden_dims, spaces.action_dim, config.log_std_min,
                              config.log_std_max)
    critic = StateActionEnsemble(config.critic_hidden_dims, 2)
    return actor, critic


def _scalar_state(value: float, learning_rate: float) -> TrainState:
    # TrainState wants a dict of parameters; the single entry is the log of the multiplier.
    return TrainState.create(apply_fn=None, params={"log": jnp.float32(value)},
                             tx=adam(learning_rate))


def init(config: CQLConfig, key: jax.Array, spaces: Spaces, stats: DatasetStats,
         total_steps: int) -> CQLState:
    del total_steps  # constant learning rates
    actor, critic = _networks(config, spaces)
    actor_key, critic_key = jax.random.split(key)
    observations = jnp.zeros((1, spaces.observation_dim), jnp.float32)
    actions = jnp.zeros((1, spaces.action_dim), jnp.float32)
    critic_params = critic.init(critic_key, observations, actions)
    mean, std = observation_stats(stats, config.normalize_observations)
    return CQLState(
        actor=TrainState.create(apply_fn=actor.apply, params=actor.init(actor_key, observations),
                                tx=adam(config.actor_learning_rate)),
        critic=TrainState.create(apply_fn=critic.apply, params=critic_params,
                                 tx=adam(config.critic_learning_rate)),
        log_alpha=_scalar_state(math.log(config.initial_alpha), config.actor_learning_rate),
        log_alpha_prime=_scalar_state(0.0, config.critic_learning_rate),
        target_critic_params=critic_params,
        observation_mean=mean,
        observation_std=std,
    )


# ---------------------------------------------------------------------------------------------
# Losses (pure functions of arrays; tests check them against numpy). The actor and alpha
# losses are SAC's: seqeval.algorithms.sac.


def cql_penalty(q_data: jax.Array, q_random: jax.Array, q_current: jax.Array,
                q_next: jax.Array, log_prob_current: jax.Array, log_prob_next: jax.Array,
                action_dim: int, temperature: float, importance_sampling: bool) -> jax.Array:
    """CQL(H)'s gap per critic: mean over states of T logsumexp(Q(s, a_i) / T) - Q(s, a_data).

    q_data: (..., B); q_random, q_current, q_next: (..., B, N) for N uniform actions, N
    actions of pi(.|s) and N of pi(.|s') (all evaluated at s); log_prob_*: (B, N). With
    importance sampling each term is divided by its proposal density (uniform density on
    [-1, 1]^d is 0.5^d), which makes the logsumexp an estimate of log integral exp Q(s, a) da.
    Without it, the 3N values enter as they are.
    """
    if importance_sampling:
        uniform_log_density = action_dim * math.log(0.5)
        candidates = [q_random - uniform_log_density,
                      q_next - jax.lax.stop_gradient(log_prob_next),
                      q_current - jax.lax.stop_gradient(log_prob_current)]
    else:
        candidates = [q_random, q_next, q_current]
    all_q = jnp.concatenate(candidates, axis=-1)
    logsumexp = temperature * jax.scipy.special.logsumexp(all_q / temperature, axis=-1)
    return jnp.mean(logsumexp - q_data, axis=-1)


# ---------------------------------------------------------------------------------------------


def _normalized(state: CQLState, observations: jax.Array) -> jax.Array:
    return normalize(observations, state.observation_mean, state.observation_std)


def _target_entropy(config: CQLConfig, action_dim: int) -> float:
    return -float(action_dim) if config.target_entropy is None else config.target_entropy


def _sampled_actions(state: CQLState, observations: jax.Array, next_observations: jax.Array,
                     key: jax.Array, n: int) -> tuple[jax.Array, ...]:
    """One actor pass over [s; s'] gives every sampled action the critic step needs: N from
    pi(.|s), N from pi(.|s') for the penalty, and one more from pi(.|s') for the TD target.
    Returns (current, next-state, their log-probs, backup actions, their log-probs)."""
    batch_size = observations.shape[0]
    mean, log_std = state.actor.apply_fn(state.actor.params,
                                         jnp.concatenate([observations, next_observations]))
    sampled, sampled_log_probs = tanh_gaussian_sample(mean, log_std, key, n + 1)
    sampled = jax.lax.stop_gradient(sampled)
    current_actions, next_state_actions = jnp.split(sampled[:, :n], 2)
    log_prob_current, log_prob_next = jnp.split(sampled_log_probs[:, :n], 2)
    return (current_actions, next_state_actions, log_prob_current, log_prob_next,
            sampled[batch_size:, n], sampled_log_probs[batch_size:, n])


def _dual_ascent(config: CQLConfig, log_alpha_prime: TrainState, gap: jax.Array) -> TrainState:
    """One step of the Lagrange dual on alpha': maximise alpha' * w * (gap - threshold)."""
    def alpha_prime_loss_fn(params):
        value = jnp.clip(jnp.exp(params["log"]), 0.0, 1e6)
        return -0.5 * jnp.sum(value * config.cql_weight * (gap - config.lagrange_threshold))

    return log_alpha_prime.apply_gradients(
        grads=jax.grad(alpha_prime_loss_fn)(log_alpha_prime.params))


def update(config: CQLConfig, state: CQLState, batch: Batch, key: jax.Array):
    batch_size, action_dim = batch.actions.shape
    n = config.num_sampled_actions
    actor_key, sample_key, random_key = jax.random.split(key, 3)
    observations = _normalized(state, batch.observations)
    next_observations = _normalized(state, batch.next_observations)
    rewards = config.reward_scale * batch.rewards + config.reward_bias

    alpha = (jnp.exp(state.log_alpha.params["log"]) if config.automatic_entropy_tuning
             else jnp.float32(config.initial_alpha))

    # Policy and alpha losses use the critic before this step's update (as CORL).
    def actor_loss_fn(params):
        mean, log_std = state.actor.apply_fn(params, observations)
        actions, log_probs = tanh_gaussian_sample(mean, log_std, actor_key)
        q = jnp.min(state.critic.apply_fn(state.critic.params, observations, actions), axis=0)
        return sac_actor_loss(log_probs, q, alpha), log_probs

    (actor_loss, log_probs), actor_grads = jax.value_and_grad(actor_loss_fn, has_aux=True)(
        state.actor.params)
    target_entropy = _target_entropy(config, action_dim)
    alpha_loss, alpha_grad = jax.value_and_grad(
        lambda p: entropy_alpha_loss(p["log"], log_probs, target_entropy))(
        state.log_alpha.params)

    (current_actions, next_state_actions, log_prob_current, log_prob_next, backup_actions,
     backup_log_probs) = _sampled_actions(state, observations, next_observations, sample_key, n)

    next_q = jnp.min(state.critic.apply_fn(state.target_critic_params, next_observations,
                                           backup_actions), axis=0)
    if config.backup_entropy:
        next_q = next_q - alpha * backup_log_probs
    target = td_target(rewards, batch.terminals, next_q, config.discount)

    random_actions = jax.random.uniform(random_key, (batch_size, n, action_dim),
                                        minval=-1.0, maxval=1.0)
    # All 3N + 1 actions per state go through the twin critics in one batched pass.
    all_actions = jnp.concatenate(
        [batch.actions[:, None], random_actions, current_actions, next_state_actions], axis=1)
    repeated_observations = jnp.broadcast_to(
        observations[:, None], (batch_size, 3 * n + 1, observations.shape[-1]))
    alpha_prime = jnp.clip(jnp.exp(state.log_alpha_prime.params["log"]), 0.0, 1e6)

    def critic_loss_fn(params):
        q_all = state.critic.apply_fn(params, repeated_observations, all_actions)  # (2, B, 3N+1)
        q_data = q_all[..., 0]
        q_random, q_current, q_next = jnp.split(q_all[..., 1:], 3, axis=-1)
        gap = cql_penalty(q_data, q_random, q_current, q_next, log_prob_current,
                          log_prob_next, action_dim, config.cql_temperature,
                          config.importance_sampling)  # (2,)
        if config.lagrange:
            conservative = jax.lax.stop_gradient(alpha_prime) * config.cql_weight * (
                gap - config.lagrange_threshold)
        else:
            conservative = config.cql_weight * gap
        td_loss = ensemble_mse(q_data, target)
        return td_loss + jnp.sum(conservative), (td_loss, gap, q_data)

    (critic_loss, (td_loss, gap, q_data)), critic_grads = jax.value_and_grad(
        critic_loss_fn, has_aux=True)(state.critic.params)
    critic = state.critic.apply_gradients(grads=critic_grads)

    log_alpha = state.log_alpha
    if config.automatic_entropy_tuning:
        log_alpha = log_alpha.apply_gradients(grads=alpha_grad)
    log_alpha_prime = state.log_alpha_prime
    if config.lagrange:
        log_alpha_prime = _dual_ascent(config, log_alpha_prime, gap)

    state = state.replace(
        actor=state.actor.apply_gradients(grads=actor_grads),
        critic=critic,
        log_alpha=log_alpha,
        log_alpha_prime=log_alpha_prime,
        target_critic_params=polyak(state.target_critic_params, critic.params, config.tau),
    )
    metrics = {"critic_loss": critic_loss, "td_loss": td_loss, "cql_gap": jnp.mean(gap),
               "actor_loss": actor_loss, "alpha": alpha, "alpha_loss": alpha_loss,
               "entropy": -jnp.mean(log_probs), "q_mean": jnp.mean(q_data)}
    return state, metrics


def act(config: CQLConfig, state: CQLState, observations: jax.Array, key: jax.Array,
        deterministic: bool = True) -> jax.Array:
    mean, log_std = state.actor.apply_fn(state.actor.params, _normalized(state, observations))
    if deterministic:
        return jnp.tanh(mean)
    return tanh_gaussian_sample(mean, log_std, key)[0]


def explore(config: CQLConfig, state: CQLState, observations: jax.Array,
            key: jax.Array) -> jax.Array:
    """Online data collection: a sample of the tanh-Gaussian policy (as SAC)."""
    return act(config, state, observations, key, deterministic=False)


def score(config: CQLConfig, state: CQLState, batch: Batch) -> dict[str, jax.Array]:
    """Prequential signal on unseen transitions: the policy's negative log-likelihood of the
    actions and the MSE of its deterministic action, and the twin Q networks' squared TD
    error (target from pi's deterministic action at s': score takes no key).
    q_value: the critics' minimum Q of the dataset's action, a prediction rather than a
    loss (higher: the critic rates the logged action higher)."""
    observations = _normalized(state, batch.observations)
    next_observations = _normalized(state, batch.next_observations)
    mean, log_std = state.actor.apply_fn(state.actor.params, observations)
    next_mean, _ = state.actor.apply_fn(state.actor.params, next_observations)
    next_q = jnp.min(state.critic.apply_fn(state.target_critic_params, next_observations,
                                           jnp.tanh(next_mean)), axis=0)
    rewards = config.reward_scale * batch.rewards + config.reward_bias
    target = td_target(rewards, batch.terminals, next_q, config.discount)
    q = state.critic.apply_fn(state.critic.params, observations, batch.actions)
    return {
        "action_nll": -jnp.mean(tanh_gaussian_log_prob(mean, log_std, batch.actions)),
        "action_mse": jnp.mean((jnp.tanh(mean) - batch.actions) ** 2),
        "td_error": jnp.mean((q - target) ** 2),
        "q_value": jnp.mean(jnp.min(q, axis=0)),
    }


def check_config(config: CQLConfig) -> None:
    """Ranges of this agent's settings, beyond the conventions every config meets."""
    check_ranges("cql", config, num_sampled_actions=AT_LEAST_ONE, cql_weight=NON_NEGATIVE,
                 cql_temperature=POSITIVE, initial_alpha=POSITIVE)
    check_log_std_bounds("cql", config)


# What update and score record (base.Metric).
METRICS = {
    "critic_loss": Metric("lower", "TD loss plus the conservative penalty"),
    "td_loss": Metric("lower", "critics' squared TD error on the batch"),
    "cql_gap": Metric(None, "logsumexp Q minus the data's Q (what the penalty pushes down)"),
    "actor_loss": Metric("lower", "alpha log pi minus Q of the policy's actions"),
    "alpha": Metric(None, "entropy coefficient (temperature)"),
    "alpha_loss": Metric(None, "alpha's tuning loss: its sign follows the entropy target, "
                               "not the policy's quality"),
    "entropy": Metric(None, "policy entropy estimate"),
    "q_mean": Metric("higher", "mean Q of the batch's actions (a predicted return)"),
    **GAUSSIAN_ACTOR_CRITIC_SCORES,
}

AGENT = Agent(
    name="cql",
    config_class=CQLConfig,
    init=init,
    update=update,
    act=act,
    explore=explore,
    score=score,
    check_config=check_config,
    metrics=METRICS,
    description="CQL (Kumar et al. 2020): SAC with a conservative logsumexp penalty",
)
