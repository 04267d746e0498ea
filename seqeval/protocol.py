"""The sequential protocol (docs/protocol.md) as compiled JAX.

The whole dataset lives on the device once; each seed sees it through its own permutation
(`order`), so "the first t transitions" of a seed are `data[order[:t]]`. The current size is a
traced value, so growing the data never recompiles. One jitted program trains every seed
(`vmap`) through all increments between two evaluations (`lax.scan` over increments, and over
the K gradient steps of each increment); the number of increments in a chunk is a traced value
too (the increments run in a while loop of that many iterations), so a whole run compiles the
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
from seqeval.compilation import jit_once
from seqeval.data import OfflineData
from seqeval.envs.rollout import to_unit_actions


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


def online_schedule(online_steps: int, eval_every: int) -> list[tuple[int, int]]:
    """The online phase cut at its evaluations: environment steps [start, end) of each chunk.

    An evaluation follows every multiple of `eval_every` environment steps, and the last step.
    """
    chunks, start = [], 0
    while start < online_steps:
        end = min((start // eval_every + 1) * eval_every, online_steps)
        chunks.append((start, end))
        start = end
    return chunks


def device_dataset(data: OfflineData) -> Batch:
    """The dataset as one device-resident Batch in logged order, actions rescaled to [-1, 1].

    Each row carries its episode's next action (`OfflineData.next_action_rows`); whether an
    agent may see it depends on its buffer, which `gather` decides.
    """
    actions = to_unit_actions(data.actions, data.action_low, data.action_high)
    next_rows = data.next_action_rows()
    has_next = next_rows >= 0
    next_actions = np.where(has_next[:, None], actions[np.maximum(next_rows, 0)], 0.0)
    return Batch(
        observations=jnp.asarray(data.observations),
        actions=jnp.asarray(actions),
        rewards=jnp.asarray(data.rewards),
        next_observations=jnp.asarray(data.next_observations),
        terminals=jnp.asarray(data.terminations, jnp.float32),
        next_actions=jnp.asarray(next_actions, jnp.float32),
        next_action_valid=jnp.asarray(has_next, jnp.float32),
    )


class DeviceData(NamedTuple):
    """The dataset on the device: its transitions, and for each row the row that holds its
    next action (-1: none), so a batch can tell whether that row is in the agent's buffer."""

    transitions: Batch
    next_rows: jax.Array  # (N,) int32


def device_data(data: OfflineData) -> DeviceData:
    """`device_dataset` with each row's next-action row."""
    return DeviceData(device_dataset(data), jnp.asarray(data.next_action_rows(), jnp.int32))


def row_positions(order: jax.Array) -> jax.Array:
    """The inverse of a seed's order: the buffer position of each dataset row."""
    return jnp.zeros_like(order).at[order].set(jnp.arange(order.shape[0], dtype=order.dtype))


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


def gather(data: DeviceData, order: jax.Array, positions: jax.Array, size: jax.Array | int,
           low: jax.Array | int = 0, online: Batch | None = None,
           positions_of_rows: jax.Array | None = None) -> Batch:
    """Transitions at buffer `positions` of one seed, whose buffer holds positions [low, size).

    Position p < N holds dataset row order[p]; with an online phase, position N + i holds the
    seed's i-th environment transition, `online[i]`, which has no next action (mask 0). A
    transition's next action counts only while the transition that holds it is in the buffer
    too (its position in [low, size)): the agent never reads data it has not been given.
    `positions_of_rows` is `row_positions(order)`, passed in by callers that gather often.
    """
    num_rows = order.shape[0]
    rows = order[jnp.minimum(positions, num_rows - 1)]
    offline = jax.tree.map(lambda column: column[rows], data.transitions)
    if positions_of_rows is None:
        positions_of_rows = row_positions(order)
    next_rows = data.next_rows[rows]
    next_positions = positions_of_rows[jnp.maximum(next_rows, 0)]
    in_buffer = (next_rows >= 0) & (next_positions >= low) & (next_positions < size)
    offline = offline._replace(
        next_actions=jnp.where(in_buffer[:, None], offline.next_actions, 0.0),
        next_action_valid=jnp.where(in_buffer, offline.next_action_valid, 0.0),
    )
    if online is None:
        return offline
    online_rows = jnp.maximum(positions - num_rows, 0)
    from_online = jax.tree.map(lambda column: column[online_rows], online)._replace(
        next_actions=jnp.zeros_like(offline.next_actions),
        next_action_valid=jnp.zeros_like(offline.next_action_valid),
    )
    is_online = positions >= num_rows
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


# ---------------------------------------------------------------------------------------------
# Trainers, one per mode. All four compile the same program (`_chunk_program`): a scan over
# increments of the buffer, K gradient steps each; they differ in how the buffer grows.


@dataclasses.dataclass(frozen=True)
class SequentialTraining:
    """Sequential mode, offline: each increment adds `increment` dataset transitions."""

    batch_size: int
    increment: int  # gamma: transitions added per increment
    steps_per_increment: int  # K: gradient steps per increment
    max_increments: int  # compiled scan length: the most increments of any chunk
    window: int | None = None  # train only on the most recent `window` transitions


@dataclasses.dataclass(frozen=True)
class FullDataTraining:
    """Full mode: the whole dataset from the first step; a chunk takes the gradient steps of
    the sequential chunk it stands for (its increments x K), so the x axes line up."""

    batch_size: int
    steps_per_increment: int  # K
    max_increments: int  # compiled scan length: the most increments of any chunk


@dataclasses.dataclass(frozen=True)
class OnlineTraining:
    """The online phase: each environment step adds one transition, then
    `updates_per_env_step` gradient steps."""

    batch_size: int
    updates_per_env_step: int
    max_env_steps: int  # compiled scan length: the most environment steps of a call (a block)
    window: int | None = None


@dataclasses.dataclass(frozen=True)
class RetrainTraining:
    """Retrain mode: each member (size x seed) trains on its own fixed prefix of the data, for
    its own budget; one call runs up to `max_steps` steps of every member."""

    batch_size: int
    max_steps: int  # compiled scan length: gradient steps per call
    window: int | None = None


@dataclasses.dataclass(frozen=True)
class _Program:
    batch_size: int
    increment: int  # transitions added per increment (0: a fixed buffer)
    steps_per_increment: int
    max_increments: int
    window: int | None
    online: bool  # the buffer continues past the dataset with each member's online transitions
    per_member: bool  # buffer size and increment count differ per member


def _chunk_program(agent: Agent, config: Any, program: _Program) -> Callable:
    """(states, keys, orders, data: DeviceData, online, start_size, num_increments, max_size)
    -> (states, keys, mean_metrics, finite), over the leading (member) axis of `states`, `keys`,
    `orders` and `online`.

    Increment i (0-based) trains on the first min(start_size + (i + 1) * increment, max_size)
    buffer positions; increments from `num_increments` on are skipped. The first gradient step
    of every increment trains on a batch whose last rows are the newest transitions
    (docs/protocol.md), so every new transition is trained on at least once (up to `batch_size`
    of them per increment).
    """
    batch_size = program.batch_size
    newest = min(program.increment, batch_size)
    rows = jnp.arange(batch_size)

    def grad_step(carry, step_index, size, data, order, online, positions_of_rows):
        state, key = carry
        key, position_key, update_key = jax.random.split(key, 3)
        low = 0 if program.window is None else jnp.maximum(size - program.window, 0)
        positions = jax.random.randint(position_key, (batch_size,), low, size)
        forced = jnp.maximum(size - batch_size + rows, 0)
        is_newest = (step_index == 0) & (rows >= batch_size - newest)
        positions = jnp.where(is_newest, forced, positions)
        batch = gather(data, order, positions, size, low, online, positions_of_rows)
        state, metrics = agent.update(config, state, batch, update_key)
        return (state, key), metrics

    def train_one(state, key, order, data, online, start_size, num_increments, max_size):
        metric_shapes = jax.eval_shape(
            lambda: agent.update(config, state, gather(data, order, rows, max_size, 0, online),
                                 key)[1]
        )
        positions_of_rows = row_positions(order)  # once per call, for every batch
        zero_sums = jax.tree.map(lambda s: jnp.zeros(s.shape, jnp.float32), metric_shapes)

        def increment_step(increment_index, carry):
            state, key, sums, finite = carry
            size = jnp.minimum(start_size + (increment_index + 1) * program.increment, max_size)
            (state, key), metrics = jax.lax.scan(
                lambda c, j: grad_step(c, j, size, data, order, online, positions_of_rows),
                (state, key),
                jnp.arange(program.steps_per_increment),
            )
            sums = jax.tree.map(lambda s, m: s + m.sum(0), sums, metrics)
            leaves_finite = [jnp.all(jnp.isfinite(m)) for m in jax.tree.leaves(metrics)]
            finite = finite & jnp.all(jnp.stack(leaves_finite)) if leaves_finite else finite
            return state, key, sums, finite

        # A loop of exactly `num_increments` iterations (an XLA while loop): increments a call
        # does not take cost nothing. (A scan over max_increments that skipped its tail with
        # lax.cond paid 0.1-0.3 ms per skipped increment on CPU, copying the carry.) Under
        # vmap with per-member counts, finished members are masked as before.
        init = (state, key, zero_sums, jnp.array(True))
        state, key, sums, finite = jax.lax.fori_loop(
            0, jnp.minimum(num_increments, program.max_increments), increment_step, init)
        steps = jnp.maximum(num_increments * program.steps_per_increment, 1)
        means = jax.tree.map(lambda s: s / steps, sums)
        return state, key, means, finite

    member_axis = 0 if program.per_member else None
    online_axis = 0 if program.online else None

    def train_all(states, keys, orders, data, online, start_size, num_increments, max_size):
        if keys.shape[0] > 1 or program.per_member:
            # Per-member step counts mask finished members (a select under vmap: their steps
            # are computed anyway); one count for all keeps the skip a real branch.
            steps_axis = member_axis if jnp.ndim(num_increments) else None
            vmapped = jax.vmap(train_one, in_axes=(0, 0, 0, None, online_axis, member_axis,
                                                   steps_axis, None))
            return vmapped(states, keys, orders, data, online, start_size, num_increments,
                           max_size)
        # One member: no vmap, so an agent's own `lax.cond` (e.g. TD3's delayed actor
        # update) stays a real branch instead of a select that computes both sides.
        first = lambda tree: jax.tree.map(lambda leaf: leaf[0], tree)
        outputs = train_one(first(states), keys[0], orders[0], data,
                            None if online is None else first(online), start_size,
                            num_increments, max_size)
        return jax.tree.map(lambda leaf: leaf[None], outputs)

    return train_all


def make_sequential_trainer(agent: Agent, config: Any, settings: SequentialTraining) -> Callable:
    """Jitted `train(states, keys, orders, data, size_before, increments)`: every member takes
    `increments` increments from a buffer of `size_before` transitions (capped at the dataset).

    Returns (states, keys, mean metrics, finite) per member; `states` and `keys` are donated.
    """
    program = _chunk_program(agent, config, _Program(
        settings.batch_size, settings.increment, settings.steps_per_increment,
        settings.max_increments, settings.window, online=False, per_member=False))

    def train(states, keys, orders, data, size_before, increments):
        return program(states, keys, orders, data, None, size_before, increments,
                       orders.shape[1])

    return jax.jit(train, donate_argnums=(0, 1))


def make_full_data_trainer(agent: Agent, config: Any, settings: FullDataTraining) -> Callable:
    """Jitted `train(states, keys, orders, data, increments)`: every member takes
    increments x K gradient steps on the whole dataset."""
    program = _chunk_program(agent, config, _Program(
        settings.batch_size, 0, settings.steps_per_increment, settings.max_increments, None,
        online=False, per_member=False))

    def train(states, keys, orders, data, increments):
        size = orders.shape[1]
        return program(states, keys, orders, data, None, size, increments, size)

    return jax.jit(train, donate_argnums=(0, 1))


def make_online_trainer(agent: Agent, config: Any, settings: OnlineTraining) -> Callable:
    """Jitted `train(states, keys, orders, data, online, env_steps_before, env_steps,
    env_steps_total)`: the buffer holds the dataset and then each member's first
    `env_steps_before` online transitions (`online`, members x capacity); it grows by one
    transition per environment step for `env_steps` steps."""
    program = _chunk_program(agent, config, _Program(
        settings.batch_size, 1, settings.updates_per_env_step, settings.max_env_steps,
        settings.window, online=True, per_member=False))

    def train(states, keys, orders, data, online, env_steps_before, env_steps,
              env_steps_total):
        size = orders.shape[1]
        return program(states, keys, orders, data, online, size + env_steps_before,
                       env_steps, size + env_steps_total)

    return jax.jit(train, donate_argnums=(0, 1))


def make_retrain_trainer(agent: Agent, config: Any, settings: RetrainTraining) -> Callable:
    """Jitted `train(states, keys, orders, data, member_sizes, member_steps)`: member m takes
    member_steps[m] (<= max_steps) gradient steps on its first member_sizes[m] transitions;
    members with 0 steps left are unchanged. `member_steps` may be one number for every member:
    then the steps past it are skipped, not computed and masked."""
    program = _chunk_program(agent, config, _Program(
        settings.batch_size, 0, 1, settings.max_steps, settings.window, online=False,
        per_member=True))

    def train(states, keys, orders, data, member_sizes, member_steps):
        return program(states, keys, orders, data, None, member_sizes, member_steps,
                       orders.shape[1])

    return jax.jit(train, donate_argnums=(0, 1))


def make_policy(agent: Agent, config: Any) -> Callable:
    """Jitted deterministic policy for all seeds: (states, observations[S, E, obs]) -> actions."""

    def act_one(state, observations):
        return agent.act(config, state, observations, jax.random.PRNGKey(0), True)

    return jax.jit(jax.vmap(act_one))


def init_states(agent: Agent, config: Any, init_keys: jax.Array, spaces, stats: DatasetStats,
                total_steps: int | np.ndarray):
    """Agent states for every member (vmapped `init`).

    `total_steps` sizes learning-rate schedules: one int for all members, or one per member
    (retrain mode, where each size has its own budget; `init` then receives a traced integer).
    """
    # The statistics are an argument, not a constant of the program, so runs on datasets of
    # one shape share the compiled init (and a persistent compilation cache can serve it).
    if np.ndim(total_steps) == 0:
        return jit_once(
            jax.vmap(lambda k, s: agent.init(config, k, spaces, s, total_steps),
                     in_axes=(0, None)),
        )(init_keys, stats)
    return jit_once(
        jax.vmap(lambda k, s, steps: agent.init(config, k, spaces, s, steps),
                 in_axes=(0, None, 0)),
    )(init_keys, stats, jnp.asarray(total_steps, jnp.int32))


def make_prequential_scorer(agent: Agent, config: Any, length: int) -> Callable | None:
    """A jitted function scoring each member on the next `count` (<= length) transitions.

    (states, orders, data: DeviceData, start, count) -> per-member sums of each per-transition
    metric over buffer positions [start, start + count), computed BEFORE those transitions are
    trained on (prequential evaluation, docs/protocol.md). Each transition is scored alone
    (`score` on a batch of one, vmapped), so the sums are exact whatever `count` is.
    """
    if agent.score is None:
        return None
    offsets = jnp.arange(length)

    def score_one(state, order, data, start, count):
        positions = jnp.minimum(start + offsets, order.shape[0] - 1)
        # The chunk has arrived when it is scored: a next action counts if its transition is
        # in the buffer or in the chunk.
        batch = gather(data, order, positions, start + count)
        single = jax.tree.map(lambda column: column[:, None], batch)
        per_transition = jax.vmap(lambda b: agent.score(config, state, b))(single)
        valid = offsets < count
        return jax.tree.map(lambda v: jnp.sum(jnp.where(valid, v, 0.0)), per_transition)

    return jax.jit(jax.vmap(score_one, in_axes=(0, 0, None, None, None)))


def geometric_sizes(initial_size: int, dataset_size: int, points: int = 8) -> list[int]:
    """A geometric grid of dataset sizes from T0 to N (both included), for retrain mode."""
    grid = np.geomspace(initial_size, dataset_size, num=points)
    return sorted({int(round(v)) for v in grid} | {dataset_size})
