"""The sequential protocol (PROTOCOL.md §1) as compiled JAX.

The whole dataset lives on the device once; each seed sees it through its own permutation
(`order`), so "the first t transitions" of a seed are `data[order[:t]]`. The current size is a
traced value, so growing the data never recompiles. One jitted program trains every seed
(`vmap`) through all increments between two evaluations (`lax.scan` over increments, and over
the K gradient steps of each increment); the number of increments in a chunk is a traced value
too (shorter first and last chunks skip their tail with `lax.cond`), so a whole run compiles the
training program exactly once.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from seqeval.algorithms.base import Agent, Batch, DatasetStats
from seqeval.data import OfflineData


class Chunk(NamedTuple):
    """The increments between two evaluations."""

    start_size: int  # transitions in the buffer before the chunk
    num_increments: int  # increments of `increment` transitions (the last may be partial)
    end_size: int  # transitions in the buffer after the chunk (the evaluation's x value)


def sequential_schedule(dataset_size: int, initial_size: int, increment: int,
                        eval_every: int) -> list[Chunk]:
    """Algorithm 1's loop, cut at its evaluations.

    From T0, `increment` transitions are added at a time until the dataset is used up; an
    evaluation follows the increment that reaches or crosses a multiple of `eval_every`, and
    the last increment (so the full-data score is always measured).
    """
    chunks = []
    size = initial_size
    while size < dataset_size:
        next_mark = (size // eval_every + 1) * eval_every
        target = min(next_mark, dataset_size)
        num_increments = math.ceil((target - size) / increment)
        end = min(size + num_increments * increment, dataset_size)
        chunks.append(Chunk(size, num_increments, end))
        size = end
    return chunks


def device_dataset(data: OfflineData) -> Batch:
    """The dataset as one device-resident Batch, actions rescaled to [-1, 1]."""
    low, high = data.action_low, data.action_high
    scaled = 2.0 * (data.actions - low) / (high - low) - 1.0
    return Batch(
        observations=jnp.asarray(data.observations),
        actions=jnp.asarray(np.clip(scaled, -1.0, 1.0), jnp.float32),
        rewards=jnp.asarray(data.rewards),
        next_observations=jnp.asarray(data.next_observations),
        terminals=jnp.asarray(data.terminations, jnp.float32),
    )


def dataset_stats(data: OfflineData) -> DatasetStats:
    """Statistics of the whole dataset, offered to every agent's `init`."""
    returns = data.episode_returns()
    return DatasetStats(
        observation_mean=jnp.asarray(data.observations.mean(0), jnp.float32),
        observation_std=jnp.asarray(np.maximum(data.observations.std(0), 1e-3), jnp.float32),
        reward_mean=jnp.float32(data.rewards.mean()),
        reward_std=jnp.float32(max(float(data.rewards.std()), 1e-6)),
        episode_return_min=jnp.float32(returns.min()),
        episode_return_max=jnp.float32(returns.max()),
    )


def gather(data: Batch, order: jax.Array, positions: jax.Array,
           online: Batch | None = None) -> Batch:
    """Transitions at buffer `positions` of one seed.

    Position p < N holds dataset row order[p]; with an online phase, position N + i holds the
    seed's i-th environment transition, `online[i]`.
    """
    size = order.shape[0]
    offline = jax.tree.map(lambda column: column[order[jnp.minimum(positions, size - 1)]], data)
    if online is None:
        return offline
    online_rows = jnp.maximum(positions - size, 0)
    from_online = jax.tree.map(lambda column: column[online_rows], online)
    is_online = positions >= size
    return jax.tree.map(
        lambda a, b: jnp.where(is_online.reshape((-1,) + (1,) * (a.ndim - 1)), b, a),
        offline, from_online,
    )


def block_permutation(key: jax.Array, block_sizes: tuple[int, ...]) -> jax.Array:
    """A permutation of all positions that shuffles only within consecutive blocks.

    One block: a uniform permutation of the whole dataset (the protocol's default). Several
    blocks (a distribution-shift dataset such as random -> medium -> expert): each block is
    shuffled on its own and the blocks stay in order.
    """
    if len(block_sizes) == 1:
        return jax.random.permutation(key, block_sizes[0]).astype(jnp.int32)
    parts, offset = [], 0
    for index, size in enumerate(block_sizes):
        parts.append(offset + jax.random.permutation(jax.random.fold_in(key, index), size))
        offset += size
    return jnp.concatenate(parts).astype(jnp.int32)


def seed_keys(seed: int) -> tuple[jax.Array, jax.Array, jax.Array]:
    """(permutation, init, training) keys of one seed; independent of the other seeds."""
    permutation_key, init_key, train_key = jax.random.split(jax.random.PRNGKey(seed), 3)
    return permutation_key, init_key, train_key


@dataclasses.dataclass(frozen=True)
class TrainSettings:
    """What the compiled training program needs to know statically."""

    batch_size: int
    increment: int  # transitions added per increment (0: a fixed buffer, as in full mode)
    steps_per_increment: int
    max_increments: int  # scan length; chunks with fewer increments skip the rest
    window: int | None = None  # train only on the most recent `window` transitions
    online: bool = False  # the buffer continues past the dataset with online transitions
    per_member_schedule: bool = False  # start size and increment count differ per member


def make_train_chunk(agent: Agent, config: Any, settings: TrainSettings) -> Callable:
    """A jitted function training every seed through one chunk of increments.

    Signature: (states, keys, orders, data, online, start_size, num_increments, max_size)
    -> (states, keys, mean_metrics, finite), vmapped over the leading (member) axis of
    `states`, `keys`, `orders` and `online` (None without an online phase); `start_size` and
    `num_increments` are shared by all members unless `per_member_schedule` (retrain mode,
    where members past their budget are masked). The first gradient step of every increment
    trains on a batch whose last rows are the newest transitions (PROTOCOL.md §1), so every new
    transition is trained on at least once (up to `batch_size` of them per increment).
    """
    batch_size = settings.batch_size
    newest = min(settings.increment, batch_size)
    rows = jnp.arange(batch_size)

    def grad_step(carry, step_index, size, data, order, online):
        state, key = carry
        key, position_key, update_key = jax.random.split(key, 3)
        low = 0 if settings.window is None else jnp.maximum(size - settings.window, 0)
        positions = jax.random.randint(position_key, (batch_size,), low, size)
        forced = jnp.maximum(size - batch_size + rows, 0)
        is_newest = (step_index == 0) & (rows >= batch_size - newest)
        positions = jnp.where(is_newest, forced, positions)
        batch = gather(data, order, positions, online)
        state, metrics = agent.update(config, state, batch, update_key)
        return (state, key), metrics

    def train_one(state, key, order, data, online, start_size, num_increments, max_size):
        metric_shapes = jax.eval_shape(
            lambda: agent.update(config, state, gather(data, order, rows, online), key)[1]
        )
        zero_sums = jax.tree.map(lambda s: jnp.zeros(s.shape, jnp.float32), metric_shapes)

        def increment_step(carry, increment_index):
            def run(carry):
                state, key, sums, finite = carry
                size = jnp.minimum(start_size + (increment_index + 1) * settings.increment,
                                   max_size)
                (state, key), metrics = jax.lax.scan(
                    lambda c, j: grad_step(c, j, size, data, order, online),
                    (state, key),
                    jnp.arange(settings.steps_per_increment),
                )
                sums = jax.tree.map(lambda s, m: s + m.sum(0), sums, metrics)
                leaves_finite = [jnp.all(jnp.isfinite(m)) for m in jax.tree.leaves(metrics)]
                finite = finite & jnp.all(jnp.stack(leaves_finite)) if leaves_finite else finite
                return state, key, sums, finite

            carry = jax.lax.cond(increment_index < num_increments, run, lambda c: c, carry)
            return carry, None

        init = (state, key, zero_sums, jnp.array(True))
        (state, key, sums, finite), _ = jax.lax.scan(
            increment_step, init, jnp.arange(settings.max_increments)
        )
        steps = jnp.maximum(num_increments * settings.steps_per_increment, 1)
        means = jax.tree.map(lambda s: s / steps, sums)
        return state, key, means, finite

    schedule_axis = 0 if settings.per_member_schedule else None
    online_axis = 0 if settings.online else None
    vmapped = jax.vmap(train_one, in_axes=(0, 0, 0, None, online_axis, schedule_axis,
                                           schedule_axis, None))

    def train_all(states, keys, orders, data, online, start_size, num_increments, max_size):
        if keys.shape[0] > 1 or settings.per_member_schedule:
            return vmapped(states, keys, orders, data, online, start_size, num_increments,
                           max_size)
        # One member: no vmap, so an agent's own `lax.cond` (e.g. TD3's delayed actor
        # update) stays a real branch instead of a select that computes both sides.
        first = lambda tree: jax.tree.map(lambda leaf: leaf[0], tree)
        outputs = train_one(first(states), keys[0], orders[0], data,
                            None if online is None else first(online), start_size,
                            num_increments, max_size)
        return jax.tree.map(lambda leaf: leaf[None], outputs)

    return jax.jit(train_all, donate_argnums=(0, 1))


def make_policy(agent: Agent, config: Any) -> Callable:
    """Jitted deterministic policy for all seeds: (states, observations[S, E, obs]) -> actions."""

    def act_one(state, observations):
        return agent.act(config, state, observations, jax.random.PRNGKey(0), True)

    return jax.jit(jax.vmap(act_one))


def init_states(agent: Agent, config: Any, init_keys: jax.Array, spaces, stats: DatasetStats,
                total_steps: int):
    """Agent states for every seed (vmapped `init`)."""
    return jax.jit(
        jax.vmap(lambda k: agent.init(config, k, spaces, stats, total_steps)),
    )(init_keys)


def make_prequential_scorer(agent: Agent, config: Any, length: int) -> Callable | None:
    """A jitted function scoring each member on the next `count` (<= length) transitions.

    (states, orders, data, start, count) -> per-member sums of each per-transition metric over
    buffer positions [start, start + count), computed BEFORE those transitions are trained on
    (prequential evaluation, PROTOCOL.md §3). Each transition is scored alone (`score` on a
    batch of one, vmapped), so the sums are exact whatever `count` is.
    """
    if agent.score is None:
        return None
    offsets = jnp.arange(length)

    def score_one(state, order, data, start, count):
        positions = jnp.minimum(start + offsets, order.shape[0] - 1)
        batch = gather(data, order, positions)
        single = jax.tree.map(lambda column: column[:, None], batch)
        per_transition = jax.vmap(lambda b: agent.score(config, state, b))(single)
        valid = offsets < count
        return jax.tree.map(lambda v: jnp.sum(jnp.where(valid, v, 0.0)), per_transition)

    return jax.jit(jax.vmap(score_one, in_axes=(0, 0, None, None, None)))


def geometric_sizes(initial_size: int, dataset_size: int, points: int = 8) -> list[int]:
    """A geometric grid of dataset sizes from T0 to N (both included), for retrain mode."""
    grid = np.geomspace(initial_size, dataset_size, num=points)
    return sorted({int(round(v)) for v in grid} | {dataset_size})
