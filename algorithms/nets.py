"""Networks and small pieces shared by every agent (written once, used everywhere)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax

from seqeval.algorithms.base import DatasetStats

# ---------------------------------------------------------------------------------------------
# Dense layers. A layer's kernel gradient contracts its inputs and output gradients over the
# batch: inputs^T @ grads. XLA's CPU backend hands that transposed form to a generic Eigen
# kernel which is very slow when one side is skinny (an 11-wide observation layer, a 3-wide
# action head, a 1-wide Q head): one 256x256 by 256x3 product took longer than a full
# 256x256x256 matmul. Transposing the skinny operand first (a few KB) lets the fast kernel do
# the product. The barriers keep XLA from folding those transposes back into the dot. Wide
# layers keep XLA's own choice, which measured fastest (benchmarks/agents.md).

SKINNY_WIDTH = 32  # layers with an input or output at most this wide take the explicit path


@jax.custom_vjp
def dense_matmul(inputs: jax.Array, kernel: jax.Array) -> jax.Array:
    """inputs (..., in) @ kernel (in, out), with a kernel gradient fast for skinny layers."""
    return inputs @ kernel


def _dense_matmul_forward(inputs: jax.Array, kernel: jax.Array):
    return inputs @ kernel, (inputs, kernel)


def _dense_matmul_backward(residuals, output_grads: jax.Array):
    inputs, kernel = residuals
    in_dim, out_dim = kernel.shape
    rows = inputs.reshape(-1, in_dim)
    grad_rows = output_grads.reshape(-1, out_dim)
    barrier = jax.lax.optimization_barrier
    if min(in_dim, out_dim) > SKINNY_WIDTH:
        kernel_grad = rows.T @ grad_rows
    elif in_dim <= out_dim:
        kernel_grad = barrier(rows.T) @ grad_rows
    else:
        kernel_grad = barrier(barrier(grad_rows.T) @ rows).T
    return output_grads @ kernel.T, kernel_grad


dense_matmul.defvjp(_dense_matmul_forward, _dense_matmul_backward)


def _dense_dot_general(lhs, rhs, dimension_numbers, precision=None,
                       preferred_element_type=None):
    # The contraction nn.Dense asks for: the last axis of the inputs with the kernel's first.
    (lhs_contracting, rhs_contracting), batch_dims = dimension_numbers
    if (tuple(lhs_contracting), tuple(rhs_contracting)) != ((lhs.ndim - 1,), (0,)) or any(
            batch_dims):
        raise ValueError(f"dense_matmul cannot compute dot_general {dimension_numbers}")
    return dense_matmul(lhs, rhs)


class Dense(nn.Dense):
    """nn.Dense whose backward pass is `dense_matmul`'s (same parameters and names)."""

    dot_general: Any = _dense_dot_general


class MLP(nn.Module):
    """A ReLU multilayer perceptron; the last layer has no activation."""

    hidden_dims: Sequence[int]
    output_dim: int
    layer_norm: bool = False

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        for width in self.hidden_dims:
            x = Dense(width)(x)
            if self.layer_norm:
                x = nn.LayerNorm()(x)
            x = nn.relu(x)
        return Dense(self.output_dim)(x)


class DeterministicActor(nn.Module):
    """obs -> action in [-1, 1] (tanh squashed)."""

    hidden_dims: Sequence[int]
    action_dim: int

    @nn.compact
    def __call__(self, observations: jax.Array) -> jax.Array:
        return jnp.tanh(MLP(self.hidden_dims, self.action_dim)(observations))


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

    @nn.compact
    def __call__(self, observations: jax.Array, actions: jax.Array) -> jax.Array:
        inputs = jnp.concatenate([observations, actions], axis=-1)
        return MLP(self.hidden_dims, 1)(inputs)[..., 0]


class StateValue(nn.Module):
    """V(s): an MLP on the observation; returns shape (...,)."""

    hidden_dims: Sequence[int]

    @nn.compact
    def __call__(self, observations: jax.Array) -> jax.Array:
        return MLP(self.hidden_dims, 1)(observations)[..., 0]


@jax.custom_vjp
def feature_major_dense(kernel: jax.Array, inputs: jax.Array) -> jax.Array:
    """kernel (in, out) applied to feature-major inputs (in, rows): returns (out, rows).

    Every product, forward and backward, is then one the fast CPU matmul kernel takes as it is
    (the kernel's small transpose is made explicit; XLA would otherwise hand the whole
    product to the slow transposed-operand path)."""
    return jax.lax.optimization_barrier(kernel.T) @ inputs


def _feature_major_dense_forward(kernel: jax.Array, inputs: jax.Array):
    return feature_major_dense(kernel, inputs), (kernel, inputs)


def _feature_major_dense_backward(residuals, output_grads: jax.Array):
    kernel, inputs = residuals
    return inputs @ output_grads.T, kernel @ output_grads


feature_major_dense.defvjp(_feature_major_dense_forward, _feature_major_dense_backward)


class _EnsembleDense(nn.Module):
    """`size` dense layers on feature-major activations: (in, rows) or (size, in, rows) ->
    (size, out, rows). Parameters as nn.Dense's with a leading member axis."""

    features: int
    size: int

    @nn.compact
    def __call__(self, inputs: jax.Array) -> jax.Array:
        in_dim = inputs.shape[-2]
        kernel = self.param("kernel", nn.initializers.lecun_normal(batch_axis=(0,)),
                            (self.size, in_dim, self.features))
        bias = self.param("bias", nn.initializers.zeros, (self.size, self.features))
        shared = inputs.ndim == 2  # the first layer's input is the same for every member
        outputs = jax.vmap(feature_major_dense, in_axes=(0, None if shared else 0))(kernel, inputs)
        return outputs + bias[:, :, None]


class EnsembleMLP(nn.Module):
    """`size` independently initialised MLPs on the same inputs: (..., in) -> (size, ..., out).

    Activations are kept feature-major, (size, width, rows), so that neither the forward
    matmuls nor their gradients need a transposed copy of the activations: with many rows (CQL
    sends 256 x 31 state-action pairs through its critics) those copies and XLA's transposed
    matmuls cost more than the layout change, which measured 12-16% faster than `nn.vmap` over
    row-major layers for that pass and the same for 256 rows (benchmarks/agents.md).
    The parameter tree is `MLP`'s with a leading member axis, so `member(params, i)` applies
    with the plain row-major module.
    """

    hidden_dims: Sequence[int]
    output_dim: int
    size: int

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        leading_shape = x.shape[:-1]
        x = x.reshape(-1, x.shape[-1]).T
        for index, width in enumerate(self.hidden_dims):
            x = nn.relu(_EnsembleDense(width, self.size, name=f"Dense_{index}")(x))
        x = _EnsembleDense(self.output_dim, self.size, name=f"Dense_{len(self.hidden_dims)}")(x)
        return jnp.swapaxes(x, 1, 2).reshape(self.size, *leading_shape, self.output_dim)


class StateActionEnsemble(nn.Module):
    """`size` Q(s, a) networks evaluated in one pass; returns shape (size, ...)."""

    hidden_dims: Sequence[int]
    size: int = 2

    @nn.compact
    def __call__(self, observations: jax.Array, actions: jax.Array) -> jax.Array:
        inputs = jnp.concatenate([observations, actions], axis=-1)
        return EnsembleMLP(self.hidden_dims, 1, self.size, name="MLP_0")(inputs)[..., 0]


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

    @nn.compact
    def __call__(self, observations: jax.Array) -> tuple[jax.Array, jax.Array]:
        mean = jnp.tanh(MLP(self.hidden_dims, self.action_dim)(observations))
        log_std = self.param("log_std", nn.initializers.zeros, (self.action_dim,))
        log_std = jnp.clip(log_std, self.log_std_min, self.log_std_max)
        return mean, jnp.broadcast_to(log_std, mean.shape)


class TanhGaussianActor(nn.Module):
    """SAC's policy: tanh(u), u ~ N(mu(s), diag(sigma(s)^2)); returns (mu, log sigma)."""

    hidden_dims: Sequence[int]
    action_dim: int
    log_std_min: float = -20.0
    log_std_max: float = 2.0

    @nn.compact
    def __call__(self, observations: jax.Array) -> tuple[jax.Array, jax.Array]:
        outputs = MLP(self.hidden_dims, 2 * self.action_dim)(observations)
        mean, log_std = jnp.split(outputs, 2, axis=-1)
        return mean, jnp.clip(log_std, self.log_std_min, self.log_std_max)


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


def gaussian_explore(actions: jax.Array, key: jax.Array, noise_std: float) -> jax.Array:
    """Deterministic actions plus clipped Gaussian noise (exploration for deterministic actors)."""
    noisy = actions + noise_std * jax.random.normal(key, actions.shape, actions.dtype)
    return jnp.clip(noisy, -1.0, 1.0)
