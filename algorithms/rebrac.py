"""ReBRAC: TD3+BC with a behaviour-cloning penalty in the critic's target as well as the actor's
loss, LayerNorm critics, deeper networks and large batches.

Tarasov, Kurenkov, Nikulin & Kolesnikov, "Revisiting the Minimalist Approach to Offline
Reinforcement Learning" (NeurIPS 2023), arXiv 2305.09836. Built on TD3+BC: TD3's machinery
(state, schedule, acting, scoring) is td3_family.py's, shared with td3_bc.py; this file holds
ReBRAC's networks, critic target and actor loss. Defaults follow CORL's ReBRAC
(tinkoff-ai/CORL, algorithms/offline/rebrac.py and configs/offline/rebrac/*, the authors'
code): 3x256 actor and twin critics with PyTorch-style fan-in uniform kernels, hidden biases
0.1 and small uniform output layers (EDAC's initialisation), LayerNorm after every critic
hidden layer and none in the actor, Adam 1e-3 for both, batch 1024, tau 0.005, policy noise 0.2
clipped at 0.5, actor and targets updated every 2 critic steps, the actor's Q term divided by
mean |Q|, no observation normalisation. The paper tunes the two penalty weights per dataset
(actor 0.001-0.1, critic 0-0.5 on D4RL MuJoCo; CORL's code defaults are 1 and 1); the defaults
0.05 and 0.5 are CORL's values for hopper-medium-replay. On the Pendulum suite the actor's
weight trades poor data against expert data (a sweep in benchmarks/agents.md). unifloral
(EmptyJackson/unifloral, algorithms/rebrac.py) uses the same networks, batch and learning rate.

The critic's penalty needs the dataset's action at the next state, `Batch.next_actions`; where
none is known (episode ends, truncations, online transitions) the target has no penalty.
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
from seqeval.algorithms.nets import DeterministicActor, MLPOptions, StateActionEnsemble, td_target
from seqeval.algorithms.td3_family import METRICS, TD3State, act, explore, initial_state

# EDAC's initialisation, as CORL's ReBRAC: U(+-1/sqrt(fan_in)) kernels, biases 0.1, and output
# layers drawn from U(+-1e-3) (actor) and U(+-3e-3) (critics).
HIDDEN_INIT = {"kernel_init": "fan_in_uniform", "hidden_bias": 0.1}
ACTOR_OUTPUT_SCALE = 1e-3
CRITIC_OUTPUT_SCALE = 3e-3
REFERENCE_BATCH_SIZE = 1024


@dataclasses.dataclass(frozen=True)
class ReBRACConfig:
    actor_hidden_dims: tuple[int, ...] = (256, 256, 256)  # actor MLP widths
    critic_hidden_dims: tuple[int, ...] = (256, 256, 256)  # widths of each twin critic
    actor_learning_rate: float = 1e-3  # Adam step size of the actor
    critic_learning_rate: float = 1e-3  # Adam step size of the twin critics
    discount: float = 0.99  # gamma of the TD target
    tau: float = 0.005  # Polyak rate of the target networks
    actor_bc_coef: float = 0.05  # beta_1: actor loss = beta_1 ||pi(s) - a||^2 - Q / mean|Q|
    critic_bc_coef: float = 0.5  # beta_2: target penalty beta_2 ||a' - a'_dataset||^2
    actor_layer_norm: bool = False  # LayerNorm after each actor hidden layer
    critic_layer_norm: bool = True  # LayerNorm after each critic hidden layer
    normalize_q: bool = True  # divide the actor's Q term by mean |Q| (not differentiated)
    policy_noise: float = 0.2  # std of the target policy smoothing noise
    noise_clip: float = 0.5  # the smoothing noise is clipped to [-noise_clip, noise_clip]
    policy_frequency: int = 2  # actor and target networks update every this many critic steps
    normalize_observations: bool = False  # standardise observations (CORL's MuJoCo configs don't)
    exploration_noise: float = 0.1  # std of Gaussian action noise when acting online


ReBRACState = TD3State  # actor, twin critics, both target networks, statistics, actor loss


def _networks(config: ReBRACConfig, spaces: Spaces):
    actor = DeterministicActor(config.actor_hidden_dims, spaces.action_dim, MLPOptions(
        layer_norm=config.actor_layer_norm, output_scale=ACTOR_OUTPUT_SCALE, **HIDDEN_INIT))
    critic = StateActionEnsemble(config.critic_hidden_dims, 2, MLPOptions(
        layer_norm=config.critic_layer_norm, output_scale=CRITIC_OUTPUT_SCALE, **HIDDEN_INIT))
    return actor, critic


def init(config: ReBRACConfig, key: jax.Array, spaces: Spaces, stats: DatasetStats,
         total_steps: int) -> ReBRACState:
    del total_steps  # constant learning rates
    return initial_state(config, key, spaces, stats, *_networks(config, spaces))


# ---------------------------------------------------------------------------------------------
# Losses (pure functions of arrays; tests check them against numpy).


def behaviour_penalty(actions: jax.Array, dataset_actions: jax.Array) -> jax.Array:
    """||a - a_dataset||^2 per transition (summed over the action axis, as the paper)."""
    return jnp.sum((actions - dataset_actions) ** 2, axis=-1)


def rebrac_critic_target(rewards: jax.Array, terminals: jax.Array, next_q: jax.Array,
                         next_actions: jax.Array, dataset_next_actions: jax.Array,
                         next_action_valid: jax.Array, discount: float,
                         critic_bc_coef: float) -> jax.Array:
    """r + gamma (1 - done) (min Q'(s', a') - beta_2 ||a' - a'_dataset||^2), a' the smoothed
    target action; the penalty only where the dataset's next action is known."""
    penalty = next_action_valid * behaviour_penalty(next_actions, dataset_next_actions)
    return td_target(rewards, terminals, next_q - critic_bc_coef * penalty, discount)


def rebrac_actor_loss(q: jax.Array, policy_actions: jax.Array, actions: jax.Array,
                      actor_bc_coef: float, normalize_q: bool) -> jax.Array:
    """mean(beta_1 ||pi(s) - a||^2 - lambda Q(s, pi(s))), lambda = 1 / mean|Q| (not
    differentiated) when `normalize_q`, else 1."""
    lam = 1.0 / jax.lax.stop_gradient(jnp.mean(jnp.abs(q))) if normalize_q else 1.0
    return jnp.mean(actor_bc_coef * behaviour_penalty(policy_actions, actions) - lam * q)


# ---------------------------------------------------------------------------------------------


def _critic_target(config: ReBRACConfig, state: ReBRACState, batch: Batch,
                   next_observations: jax.Array, noise: jax.Array | None) -> jax.Array:
    """ReBRAC's target: TD3's, less the critic's penalty on the (smoothed) target action."""
    next_actions = td3_family.target_actions(config, state, next_observations, noise)
    next_q = state.critic.apply_fn(state.target_critic_params, next_observations, next_actions)
    return rebrac_critic_target(batch.rewards, batch.terminals, jnp.min(next_q, axis=0),
                                next_actions, batch.next_actions, batch.next_action_valid,
                                config.discount, config.critic_bc_coef)


def _actor_loss(config: ReBRACConfig, state: ReBRACState, params: dict, observations: jax.Array,
                batch: Batch) -> jax.Array:
    """ReBRAC's actor loss at `params`, on the smaller Q of the twins."""
    policy_actions = state.actor.apply_fn(params, observations)
    q_policy = jnp.min(state.critic.apply_fn(state.critic.params, observations, policy_actions),
                       axis=0)
    return rebrac_actor_loss(q_policy, policy_actions, batch.actions, config.actor_bc_coef,
                             config.normalize_q)


def update(config: ReBRACConfig, state: ReBRACState, batch: Batch, key: jax.Array):
    """TD3's schedule: the critics every step, actor and targets every policy_frequency-th."""
    return td3_family.update(config, state, batch, key, _critic_target, _actor_loss)


def score(config: ReBRACConfig, state: ReBRACState, batch: Batch) -> dict[str, jax.Array]:
    """Action MSE, and the critics' TD error against ReBRAC's penalised target
    (td3_family.score)."""
    return td3_family.score(config, state, batch, _critic_target)


def check_config(config: ReBRACConfig) -> None:
    """Ranges of this agent's settings, beyond the conventions every config meets."""
    check_ranges("rebrac", config, actor_bc_coef=NON_NEGATIVE, critic_bc_coef=NON_NEGATIVE,
                 policy_noise=NON_NEGATIVE, noise_clip=NON_NEGATIVE,
                 policy_frequency=AT_LEAST_ONE, exploration_noise=NON_NEGATIVE)


AGENT = Agent(
    name="rebrac",
    config_class=ReBRACConfig,
    init=init,
    update=update,
    act=act,  # td3_family's: the deterministic actor
    explore=explore,  # td3_family's: the deterministic action plus Gaussian noise
    score=score,
    check_config=check_config,
    metrics=METRICS,  # td3_family's: the same losses and predictions as TD3+BC
    description="ReBRAC (Tarasov et al. 2023): TD3+BC with actor and critic BC penalties, "
                "LayerNorm critics, batch 1024",
    default_batch_size=REFERENCE_BATCH_SIZE,
)
