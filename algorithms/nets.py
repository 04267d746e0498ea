"""Networks and small pieces shared by every agent (written once, used everywhere)."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax
from flax.training.train_state import TrainState

from seqeval.algorithms import cpu_layers
from seqeval.algorithms.base import DatasetStats, Spaces

# ---------------------------------------------------------------------------------------------
# Layers. On the CPU backend the dense products and critic ensembles use the layers of
# `seqeval.algorithms.cpu_layers` (a faster backward pass, feature-major ensembles; measured in
# benchmarks/agents.md); elsewhere the plain layers. Both have the same parameter trees and
# compute the same values, so a checkpoint moves between backends.


def use_cpu_layers() -> bool:
    """Whether layers built now use the CPU-tuned forms: on XLA's CPU backend."""
    return jax.default_backend() == "cpu"


KERNEL_INITS = ("lecun_normal", "fan_in_uniform")


@dataclasses.dataclass(frozen=True)
class MLPOptions:
    """How an MLP's layers are built beyond their widths (defaults: flax's own)."""

    layer_norm: bool = False  # LayerNorm after each hidden layer's ReLU (ReBRAC's critic)
    # Kernels: "lecun_normal" (flax's default) or "fan_in_uniform", U(+-1/sqrt(fan_in)) as
    # PyTorch's nn.Linear (CORL's and EDAC's JAX ports use it for ReBRAC).
    kernel_init: str = "lecun_normal"
    hidden_bias: float = 0.0  # initial value of every hidden layer's bias (ReBRAC: 0.1)
    # The last layer's kernel and bias ~ U(-s, s) (ReBRAC: 1e-3 actor, 3e-3 critic); None:
    # the last layer is initialised like the others, with a zero bias.
    output_scale: float | None = None

    def __post_init__(self) -> None:
        if self.kernel_init not in KERNEL_INITS:
            raise ValueError(f"kernel_init '{self.kernel_init}' is not one of {KERNEL_INITS}")


def symmetric_uniform(scale: float) -> Callable:
    """An initialiser drawing U(-scale, scale)."""

    def init(key: jax.Array, shape: Sequence[int], dtype: Any = jnp.float32) -> jax.Array:
        return jax.random.uniform(key, shape, dtype, -scale, scale)

    return init


def layer_initializers(options: MLPOptions, output_layer: bool,
                       batch_axis: tuple[int, ...] = ()) -> tuple[Callable, Callable]:
    """(kernel_init, bias_init) of a hidden or the output layer; `batch_axis` names leading
    member axes that are not part of a kernel's fan-in (ensembles)."""
    if output_layer and options.output_scale is not None:
        return symmetric_uniform(options.output_scale), symmetric_uniform(options.output_scale)
    if options.kernel_init == "fan_in_uniform":
        kernel = nn.initializers.variance_scaling(1.0 / 3.0, "fan_in", "uniform",
                                                  batch_axis=batch_axis)
    else:
        kernel = nn.initializers.lecun_normal(batch_axis=batch_axis)
    if output_layer or options.hidden_bias == 0.0:
        return kernel, nn.initializers.zeros
    return kernel, nn.initializers.constant(options.hidden_bias)


class Dense(nn.Dense):
    """nn.Dense (same parameters and names); on the CPU backend its product is
    `cpu_layers.dense_matmul` (the same values with a faster backward pass)."""

    def __post_init__(self) -> None:
        if self.dot_general is None and self.dot_general_cls is None and use_cpu_layers():
            object.__setattr__(self, "dot_general", cpu_layers.dense_dot_general)
        super().__post_init__()


class MLP(nn.Module):
    """A ReLU multilayer perceptron; the last layer has no activation."""

    hidden_dims: Sequence[int]
    output_dim: int
    options: MLPOptions = MLPOptions()

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        kernel_init, bias_init = layer_initializers(self.options, output_layer=False)
        for width in self.hidden_dims:
            x = nn.relu(Dense(width, kernel_init=kernel_init, bias_init=bias_init)(x))
            if self.options.layer_norm:
                x = nn.LayerNorm()(x)
        kernel_init, bias_init = layer_initializers(self.options, output_layer=True)
        return Dense(self.output_dim, kernel_init=kernel_init, bias_init=bias_init)(x)


class DeterministicActor(nn.Module):
    """obs -> action in [-1, 1] (tanh squashed)."""

    hidden_dims: Sequence[int]
    action_dim: int
    options: MLPOptions = MLPOptions()

    @nn.compact
    def __call__(self, observations: jax.Array) -> jax.Array:
        return jnp.tanh(MLP(self.hidden_dims, self.action_dim, self.options)(observations))


def normalize(observations: jax.Array, mean: jax.Array, std: jax.Array) -> jax.Array:
    """Standardise observations with dataset statistics."""
    return (observations - mean) / std


def observation_stats(stats: DatasetStats, enabled: bool) -> tuple[jax.Array, jax.Array]:
    """(mean, std) to normalise with, or the identity when normalisation is off."""
    if enabled:
        return stats.observation_mean, stats.observation_std
    return jnp.zeros_like(stats.observation_mean), jnp.ones_like(stats.observation_std)


class CosineDecayState(NamedTuple):
    """Optimiser state of `adam`'s learning-rate schedule."""

    count: jax.Array  # updates applied so far
    horizon: jax.Array  # updates the decay spans (float32; per member when init is vmapped)
    learning_rate: jax.Array  # the rate of the last update (the peak before any)


def _scale_by_cosine_decay(peak: float, total_steps: Any) -> optax.GradientTransformation:
    """-rate x updates, the rate cosine-decayed from `peak` to 0 over `total_steps` updates,
    then `peak` again. The horizon lives in the state, so `total_steps` may be traced."""

    def init(params):
        del params
        return CosineDecayState(count=jnp.zeros([], jnp.int32),
                                horizon=jnp.asarray(total_steps, jnp.float32),
                                learning_rate=jnp.asarray(peak, jnp.float32))

    def update(updates, state, params=None):
        del params
        # optax.cosine_decay_schedule(peak, horizon)(count), written as XLA folds it for a
        # constant horizon (pi * (1 / horizon), then 0.5 * peak); XLA's folding depends on the
        # surrounding program, so rates may differ from optax's in the last bit
        count = jnp.minimum(state.count, state.horizon)
        decayed = (1 + jnp.cos(count * (jnp.pi * (1.0 / state.horizon)))) * (0.5 * peak)
        rate = jnp.where(state.count < state.horizon, decayed, peak)
        updates = jax.tree.map(lambda g: jnp.array(-1 * rate, dtype=g.dtype) * g, updates)
        return updates, CosineDecayState(count=optax.safe_increment(state.count),
                                         horizon=state.horizon, learning_rate=rate)

    return optax.GradientTransformation(init, update)


def adam(learning_rate: float, total_steps: Any = None) -> optax.GradientTransformation:
    """Adam; with `total_steps`, the learning rate decays from `learning_rate` to 0 over the
    first `total_steps` updates (cosine) and is `learning_rate` again after them: the offline
    pass decays, online fine-tuning continues at a constant rate. `total_steps` may be a traced
    integer (retrain mode vmaps `init` over members with budgets of their own)."""
    if total_steps is None:
        return optax.adam(learning_rate)
    return optax.chain(optax.scale_by_adam(), _scale_by_cosine_decay(learning_rate, total_steps))


def actor_critic_states(key: jax.Array, spaces: Spaces, actor: nn.Module, critic: nn.Module,
                        actor_optimizer: optax.GradientTransformation,
                        critic_optimizer: optax.GradientTransformation
                        ) -> tuple[TrainState, TrainState]:
    """Train states of an actor (on observations) and a critic (on observations and actions),
    their parameters initialised from two keys split from `key`."""
    actor_key, critic_key = jax.random.split(key)
    observations = jnp.zeros((1, spaces.observation_dim), jnp.float32)
    actions = jnp.zeros((1, spaces.action_dim), jnp.float32)
    return (TrainState.create(apply_fn=actor.apply, params=actor.init(actor_key, observations),
                              tx=actor_optimizer),
            TrainState.create(apply_fn=critic.apply,
                              params=critic.init(critic_key, observations, actions),
                              tx=critic_optimizer))


def polyak(target: jax.Array, online: jax.Array, tau: float):
    """Soft target update: target <- (1 - tau) target + tau online (on whole pytrees)."""
    return jax.tree.map(lambda t, o: (1.0 - tau) * t + tau * o, target, online)


# ---------------------------------------------------------------------------------------------
# Critics. Twin critics (TD3, SAC/CQL, IQL) are one ensemble module whose parameters carry a
# leading member axis: each layer is one batched matmul over the members instead of one
# matmul per member, and the shared input is read once.


class StateActionValue(nn.Module):
    """Q(s, a): an MLP on the concatenated observation and action; returns shape (...,)."""

    hidden_dims: Sequence[int]
    options: MLPOptions = MLPOptions()

    @nn.compact
    def __call__(self, observations: jax.Array, actions: jax.Array) -> jax.Array:
        inputs = jnp.concatenate([observations, actions], axis=-1)
        return MLP(self.hidden_dims, 1, self.options)(inputs)[..., 0]


class StateValue(nn.Module):
    """V(s): an MLP on the observation; returns shape (...,)."""

    hidden_dims: Sequence[int]
    options: MLPOptions = MLPOptions()

    @nn.compact
    def __call__(self, observations: jax.Array) -> jax.Array:
        return MLP(self.hidden_dims, 1, self.options)(observations)[..., 0]


class EnsembleDense(nn.Module):
    """`size` dense layers on row-major activations: (rows, in) or (size, rows, in) ->
    (size, rows, out). Parameters as nn.Dense's with a leading member axis; the initialisers
    receive the whole (size, in, out) / (size, out) shapes."""

    features: int
    size: int
    kernel_init: Callable
    bias_init: Callable

    @nn.compact
    def __call__(self, inputs: jax.Array) -> jax.Array:
        kernel = self.param("kernel", self.kernel_init,
                            (self.size, inputs.shape[-1], self.features))
        bias = self.param("bias", self.bias_init, (self.size, self.features))
        shared = inputs.ndim == 2  # the first layer's input is the same for every member
        outputs = jnp.einsum("ri,sio->sro" if shared else "sri,sio->sro", inputs, kernel)
        return outputs + bias[:, None, :]


class EnsembleLayerNorm(nn.Module):
    """nn.LayerNorm of each member (parameters (size, width)), over `feature_axis`."""

    size: int
    feature_axis: int = -1  # -1: activations (size, rows, width); -2: (size, width, rows)
    epsilon: float = 1e-6  # nn.LayerNorm's

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        width = x.shape[self.feature_axis]
        scale = self.param("scale", nn.initializers.ones, (self.size, width))
        bias = self.param("bias", nn.initializers.zeros, (self.size, width))
        mean = jnp.mean(x, axis=self.feature_axis, keepdims=True)
        mean_square = jnp.mean(jnp.square(x), axis=self.feature_axis, keepdims=True)
        variance = jnp.maximum(mean_square - jnp.square(mean), 0.0)
        normalized = (x - mean) * jax.lax.rsqrt(variance + self.epsilon)
        shape = (self.size, width, 1) if self.feature_axis == -2 else (self.size, 1, width)
        return normalized * scale.reshape(shape) + bias.reshape(shape)


class EnsembleMLP(nn.Module):
    """`size` independently initialised MLPs on the same inputs: (..., in) -> (size, ..., out).

    The parameter tree is `MLP`'s with a leading member axis, so `member(params, i)` applies
    with the plain `MLP` (and `StateActionValue`). On the CPU backend activations are kept
    feature-major, (size, width, rows), with `cpu_layers.FeatureMajorEnsembleDense`: neither
    the forward matmuls nor their gradients then need a transposed copy of the activations,
    which measured 12-16% faster than row-major layers for CQL's critic pass and the same for
    256 rows (benchmarks/agents.md). Elsewhere the layers are row-major einsums.
    """

    hidden_dims: Sequence[int]
    output_dim: int
    size: int
    options: MLPOptions = MLPOptions()

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        leading_shape = x.shape[:-1]
        x = x.reshape(-1, x.shape[-1])
        feature_major = use_cpu_layers()
        if feature_major:
            x = x.T
        dense = cpu_layers.FeatureMajorEnsembleDense if feature_major else EnsembleDense
        widths = [*self.hidden_dims, self.output_dim]
        for index, width in enumerate(widths):
            output_layer = index == len(widths) - 1
            kernel_init, bias_init = layer_initializers(self.options, output_layer,
                                                        batch_axis=(0,))
            x = dense(width, self.size, kernel_init, bias_init, name=f"Dense_{index}")(x)
            if not output_layer:
                x = nn.relu(x)
                if self.options.layer_norm:
                    x = EnsembleLayerNorm(self.size, -2 if feature_major else -1,
                                          name=f"LayerNorm_{index}")(x)
        if feature_major:
            x = jnp.swapaxes(x, 1, 2)
        return x.reshape(self.size, *leading_shape, self.output_dim)


class StateActionEnsemble(nn.Module):
    """`size` Q(s, a) networks evaluated in one pass; returns shape (size, ...)."""

    hidden_dims: Sequence[int]
    size: int = 2
    options: MLPOptions = MLPOptions()

    @nn.compact
    def __call__(self, observations: jax.Array, actions: jax.Array) -> jax.Array:
        inputs = jnp.concatenate([observations, actions], axis=-1)
        return EnsembleMLP(self.hidden_dims, 1, self.size, self.options,
                           name="MLP_0")(inputs)[..., 0]


def member(params: Any, index: int) -> Any:
    """The parameters of one member of an ensemble (e.g. `StateActionEnsemble`)."""
    return jax.tree.map(lambda leaf: leaf[index], params)


# ---------------------------------------------------------------------------------------------
# Stochastic actors.

LOG_2PI = math.log(2.0 * math.pi)


class GaussianActor(nn.Module):
    """IQL's policy: N(tanh(MLP(s)), diag(exp(log_std))) with a state-independent log_std.

    The mean is squashed, not the distribution, so dataset actions at the bounds have finite
    likelihood (Kostrikov et al.'s reference implementation).
    """

    hidden_dims: Sequence[int]
    action_dim: int
    log_std_min: float = -5.0
    log_std_max: float = 2.0
    options: MLPOptions = MLPOptions()

    @nn.compact
    def __call__(self, observations: jax.Array) -> tuple[jax.Array, jax.Array]:
        mean = jnp.tanh(MLP(self.hidden_dims, self.action_dim, self.options)(observations))
        log_std = self.param("log_std", nn.initializers.zeros, (self.action_dim,))
        log_std = jnp.clip(log_std, self.log_std_min, self.log_std_max)
        return mean, jnp.broadcast_to(log_std, mean.shape)


class TanhGaussianActor(nn.Module):
    """SAC's policy: tanh(u), u ~ N(mu(s), diag(sigma(s)^2)); returns (mu, log sigma)."""

    hidden_dims: Sequence[int]
    action_dim: int
    log_std_min: float = -20.0
    log_std_max: float = 2.0
    options: MLPOptions = MLPOptions()

    @nn.compact
    def __call__(self, observations: jax.Array) -> tuple[jax.Array, jax.Array]:
        outputs = MLP(self.hidden_dims, 2 * self.action_dim, self.options)(observations)
        mean, log_std = jnp.split(outputs, 2, axis=-1)
        return mean, jnp.clip(log_std, self.log_std_min, self.log_std_max)


def clipped_gaussian_sample(mean: jax.Array, log_std: jax.Array, key: jax.Array) -> jax.Array:
    """A sample of N(mean, diag(exp(log_std))^2) clipped to the action bounds [-1, 1]
    (IQL's and AWAC's stochastic actions)."""
    noise = jax.random.normal(key, mean.shape, mean.dtype)
    return jnp.clip(mean + jnp.exp(log_std) * noise, -1.0, 1.0)


def gaussian_log_prob(mean: jax.Array, log_std: jax.Array, actions: jax.Array) -> jax.Array:
    """log N(actions; mean, diag(exp(log_std))^2), summed over the last axis."""
    z = (actions - mean) * jnp.exp(-log_std)
    return jnp.sum(-0.5 * z**2 - log_std - 0.5 * LOG_2PI, axis=-1)


def _log_one_minus_tanh_squared(u: jax.Array) -> jax.Array:
    # log(1 - tanh(u)^2) = 2 (log 2 - u - softplus(-2u)), exact and stable for large |u|.
    return 2.0 * (math.log(2.0) - u - jax.nn.softplus(-2.0 * u))


def tanh_gaussian_sample(mean: jax.Array, log_std: jax.Array, key: jax.Array,
                         num_samples: int | None = None) -> tuple[jax.Array, jax.Array]:
    """Reparameterised samples of tanh(N(mean, std)) and their log-densities.

    With `num_samples`, draws that many per row: shapes (..., num_samples, action_dim) and
    (..., num_samples); otherwise (..., action_dim) and (...,).
    """
    if num_samples is not None:
        mean, log_std = mean[..., None, :], log_std[..., None, :]
        shape = mean.shape[:-2] + (num_samples, mean.shape[-1])
    else:
        shape = mean.shape
    noise = jax.random.normal(key, shape, mean.dtype)
    u = mean + jnp.exp(log_std) * noise
    log_prob = jnp.sum(-0.5 * noise**2 - log_std - 0.5 * LOG_2PI
                       - _log_one_minus_tanh_squared(u), axis=-1)
    return jnp.tanh(u), log_prob


def tanh_gaussian_log_prob(mean: jax.Array, log_std: jax.Array, actions: jax.Array,
                           epsilon: float = 1e-5) -> jax.Array:
    """log-density of given actions under tanh(N(mean, std)); actions are pulled inside
    (-1, 1) by `epsilon` so that dataset actions on the bounds stay finite."""
    clipped = jnp.clip(actions, -1.0 + epsilon, 1.0 - epsilon)
    u = jnp.arctanh(clipped)
    return gaussian_log_prob(mean, log_std, u) - jnp.sum(_log_one_minus_tanh_squared(u), -1)


# ---------------------------------------------------------------------------------------------
# Temporal-difference pieces shared by the critics.


def td_target(rewards: jax.Array, terminals: jax.Array, next_values: jax.Array,
              discount: float) -> jax.Array:
    """r + discount * (1 - terminal) * V(s'); truncated episodes bootstrap (terminal = 0)."""
    return rewards + discount * (1.0 - terminals) * next_values


def ensemble_mse(predictions: jax.Array, targets: jax.Array) -> jax.Array:
    """Sum over ensemble members (leading axis) of each member's mean squared error."""
    return jnp.sum(jnp.mean((predictions - targets) ** 2, axis=tuple(range(1, predictions.ndim))))


def advantage_weights(advantages: jax.Array, beta: float,
                      max_weight: float) -> jax.Array:
    """AWR weights min(exp(beta * A), max_weight), beta an inverse temperature (IQL's beta;
    AWAC's 1 / lambda)."""
    return jnp.minimum(jnp.exp(beta * advantages), max_weight)


def awr_actor_loss(log_probs: jax.Array, weights: jax.Array) -> jax.Array:
    """Advantage-weighted regression: -mean(w * log pi(a|s)); the weights carry no gradient."""
    return -jnp.mean(jax.lax.stop_gradient(weights) * log_probs)


def gaussian_explore(actions: jax.Array, key: jax.Array, noise_std: float) -> jax.Array:
    """Deterministic actions plus clipped Gaussian noise (exploration for deterministic actors)."""
    noisy = actions + noise_std * jax.random.normal(key, actions.shape, actions.dtype)
    return jnp.clip(noisy, -1.0, 1.0)
