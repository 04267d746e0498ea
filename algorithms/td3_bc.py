"""TD3+BC: TD3 whose actor loss adds a behaviour-cloning term.

Fujimoto & Gu, "A Minimalist Approach to Offline Reinforcement Learning" (NeurIPS 2021),
arXiv 2106.06860; built on TD3, Fujimoto, van Hoof & Meger, "Addressing Function
Approximation Error in Actor-Critic Methods" (ICML 2018). Defaults follow the authors' code
(sfujim/TD3_BC): Q weight 2.5 (the paper's alpha; `actor_q_coef` here, as unifloral's
algorithms/unifloral.py names it), policy noise 0.2 clipped at 0.5, actor and target updates
every 2 critic updates, tau 0.005, Adam 3e-4, 2x256 networks, observations standardised with
the dataset's mean and std. TD3's machinery (state, schedule, acting, scoring) is
td3_family.py's, shared with ReBRAC; this file holds TD3+BC's critic target and actor loss.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp

from seqeval.algorithms import td3_family
from seqeval.algorithms.base import (
    AT_LEAST_ONE,
    NON_NEGATIVE,
    Agent,
    Batch,
    DatasetStats,
    Spaces,
    check_ranges,
)
from seqeval.algorithms.nets import (
    DeterministicActor,
    StateActionEnsemble,
    StateActionValue,
    member,
    td_target,
)
from seqeval.algorithms.td3_family import METRICS, TD3State, act, explore, initial_state


@dataclasses.dataclass(frozen=True)
class TD3BCConfig:
    actor_hidden_dims: tuple[int, ...] = (256, 256)  # actor MLP widths
    critic_hidden_dims: tuple[int, ...] = (256, 256)  # widths of each twin critic
    actor_learning_rate: float = 3e-4  # Adam step size of the actor
    critic_learning_rate: float = 3e-4  # Adam step size of the twin critics
    discount: float = 0.99  # gamma of the TD target
    tau: float = 0.005  # Polyak rate of the target networks
    actor_q_coef: float = 2.5  # the paper's alpha: actor loss = -coef Q/mean|Q| + MSE(pi(s), a)
    policy_noise: float = 0.2  # std of the target policy smoothing noise
    noise_clip: float = 0.5  # the smoothing noise is clipped to [-noise_clip, noise_clip]
    policy_frequency: int = 2  # actor and target networks update every this many critic steps
    normalize_observations: bool = True  # standardise observations with dataset statistics
    exploration_noise: float = 0.1  # std of Gaussian action noise when acting online


TD3BCState = TD3State  # actor, twin critics, both target networks, statistics, actor loss


def _networks(config: TD3BCConfig, spaces: Spaces):
    actor = DeterministicActor(config.actor_hidden_dims, spaces.action_dim)
    critic = StateActionEnsemble(config.critic_hidden_dims, 2)
    return actor, critic


def init(config: TD3BCConfig, key: jax.Array, spaces: Spaces, stats: DatasetStats,
         total_steps: int) -> TD3BCState:
    del total_steps  # constant learning rates
    return initial_state(config, key, spaces, stats, *_networks(config, spaces))


# ---------------------------------------------------------------------------------------------
# Losses (pure functions of arrays; tests check them against numpy). TD3's target policy
# smoothing is td3_family.smoothed_target_actions.


def td3_bc_actor_loss(q: jax.Array, policy_actions: jax.Array, actions: jax.Array,
                      actor_q_coef: float) -> jax.Array:
    """-lambda * mean Q(s, pi(s)) + MSE(pi(s), a), lambda = actor_q_coef / mean|Q| (not
    differentiated)."""
    lam = actor_q_coef / jax.lax.stop_gradient(jnp.mean(jnp.abs(q)))
    return -lam * jnp.mean(q) + jnp.mean((policy_actions - actions) ** 2)


# ---------------------------------------------------------------------------------------------


def _critic_target(config: TD3BCConfig, state: TD3BCState, batch: Batch,
                   next_observations: jax.Array, noise: jax.Array | None) -> jax.Array:
    """TD3's target: r + gamma (1 - done) min Q'(s', a'), a' the (smoothed) target action."""
    next_actions = td3_family.target_actions(config, state, next_observations, noise)
    next_q = state.critic.apply_fn(state.target_critic_params, next_observations, next_actions)
    return td_target(batch.rewards, batch.terminals, jnp.min(next_q, axis=0), config.discount)


def _actor_loss(config: TD3BCConfig, state: TD3BCState, params: dict, observations: jax.Array,
                batch: Batch) -> jax.Array:
    """TD3+BC's actor loss at `params`; only the first critic drives the actor (as in TD3)."""
    first_critic = StateActionValue(config.critic_hidden_dims)
    policy_actions = state.actor.apply_fn(params, observations)
    q_policy = first_critic.apply(member(state.critic.params, 0), observations, policy_actions)
    return td3_bc_actor_loss(q_policy, policy_actions, batch.actions, config.actor_q_coef)


def update(config: TD3BCConfig, state: TD3BCState, batch: Batch, key: jax.Array):
    """TD3's schedule: the critics every step, actor and targets every policy_frequency-th."""
    return td3_family.update(config, state, batch, key, _critic_target, _actor_loss)


def score(config: TD3BCConfig, state: TD3BCState, batch: Batch) -> dict[str, jax.Array]:
    """Action MSE, and the critics' TD error against TD3's target (td3_family.score)."""
    return td3_family.score(config, state, batch, _critic_target)


def check_config(config: TD3BCConfig) -> None:
    """Ranges of this agent's settings, beyond the conventions every config meets."""
    check_ranges("td3_bc", config, actor_q_coef=NON_NEGATIVE, policy_noise=NON_NEGATIVE,
                 noise_clip=NON_NEGATIVE, policy_frequency=AT_LEAST_ONE,
                 exploration_noise=NON_NEGATIVE)


AGENT = Agent(
    name="td3_bc",
    config_class=TD3BCConfig,
    init=init,
    update=update,
    act=act,  # td3_family's: the deterministic actor
    explore=explore,  # td3_family's: the deterministic action plus Gaussian noise
    score=score,
    check_config=check_config,
    metrics=METRICS,  # td3_family's: the same losses and predictions as ReBRAC
    # One name per concept across agents: alpha is SAC's and CQL's entropy coefficient.
    renamed_settings={"alpha": "actor_q_coef"},
    description="TD3+BC (Fujimoto & Gu 2021): TD3 with a behaviour-cloning actor term",
)
