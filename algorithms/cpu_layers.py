"""Layers tuned for XLA's CPU backend; `seqeval.algorithms.nets` uses them only there.

XLA's CPU backend runs a matmul on its fast kernel only when the first operand is contracted
over its last axis; any other form (a transposed operand) goes to a generic Eigen path that is
several times slower for skinny operands. The two pieces here keep every large product of a
training step on the fast path (measurements in benchmarks/agents.md):

- `dense_matmul`: a dense layer's product with a hand-written backward pass. The kernel
  gradient inputs^T @ grads contracts over the batch, the slow form; for a skinny layer (an
  11-wide observation layer, a 3-wide action head, a 1-wide Q head) one 256x256 by 256x3
  product took longer than a full 256x256x256 matmul. Transposing the skinny operand first
  (a few KB) lets the fast kernel do it; optimization barriers keep XLA from folding the
  transposes back into the dot. Wide layers keep XLA's own choice, which measured fastest.
- `FeatureMajorEnsembleDense`: ensemble layers on feature-major activations, (members, width,
  rows), so neither the forward products nor their gradients need a transposed copy of the
  activations (CQL sends 256 x 31 state-action pairs through its critics; those copies and
  XLA's transposed matmuls cost more than the layout change).

Both compute exactly what the plain layers compute, with the same parameters (tested), so a
checkpoint moves between backends. On GPU/TPU the plain layers are used.
"""

from __future__ import annotations

from typing import Any

import flax.linen as nn
import jax

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


def dense_dot_general(lhs, rhs, dimension_numbers, precision=None,
                      preferred_element_type=None):
    """The contraction nn.Dense asks for (last axis of the inputs with the kernel's first),
    computed by `dense_matmul`; usable as nn.Dense's `dot_general`."""
    (lhs_contracting, rhs_contracting), batch_dims = dimension_numbers
    if (tuple(lhs_contracting), tuple(rhs_contracting)) != ((lhs.ndim - 1,), (0,)) or any(
            batch_dims):
        raise ValueError(f"dense_matmul cannot compute dot_general {dimension_numbers}")
    return dense_matmul(lhs, rhs)


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


class FeatureMajorEnsembleDense(nn.Module):
    """`size` dense layers on feature-major activations: (in, rows) or (size, in, rows) ->
    (size, out, rows). Parameters are nn.Dense's with a leading member axis; the initialisers
    receive the whole (size, in, out) / (size, out) shapes."""

    features: int
    size: int
    kernel_init: Any
    bias_init: Any

    @nn.compact
    def __call__(self, inputs: jax.Array) -> jax.Array:
        in_dim = inputs.shape[-2]
        kernel = self.param("kernel", self.kernel_init, (self.size, in_dim, self.features))
        bias = self.param("bias", self.bias_init, (self.size, self.features))
        shared = inputs.ndim == 2  # the first layer's input is the same for every member
        outputs = jax.vmap(feature_major_dense, in_axes=(0, None if shared else 0))(kernel, inputs)
        return outputs + bias[:, :, None]
