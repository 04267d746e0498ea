"""Sequential and full modes: the offline chunks, then the online chunks, each followed by an
evaluation and a checkpoint.

A run is a list of steps (`OfflineStep`, `OnlineStep`); `run_sequential` trains through the
ones its checkpoint has not finished yet, each returning a `StepResult` that is logged,
evaluated and checkpointed the same way whatever the phase.
"""

from __future__ import annotations

import dataclasses
import time
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from seqeval import protocol
from seqeval.context import RunContext
from seqeval.data import make_eval_env_factory
from seqeval.evaluate import Evaluator
from seqeval.online import OnlineCollector, make_explorer
from seqeval.results import (
    EVALUATION_COLUMNS,
    EVALUATIONS,
    PREQUENTIAL,
    TRAINING,
    Progress,
    evaluation_rows,
    prequential_columns,
    prequential_rows,
    sequential_summary,
    training_columns,
    training_rows,
)
from seqeval.tracking import start_tracking


@dataclasses.dataclass(frozen=True)
class OfflineStep:
    """One chunk of the offline pass: the data grows from chunk.start_size to end_size."""

    chunk: protocol.Chunk


@dataclasses.dataclass(frozen=True)
class OnlineStep:
    """One chunk of the online phase: environment steps [env_start, env_end)."""

    index: int  # position among the online chunks (seeds the environments' resets)
    env_start: int
    env_end: int


@dataclasses.dataclass(frozen=True)
class StepResult:
    """What a step did, per member: logged, then the agents are evaluated."""

    phase: str  # "offline" | "online"
    samples: int  # transitions in the buffer after the step (the x value)
    gradient_steps: int  # gradient steps the step took
    metrics: dict[str, np.ndarray]  # each training metric's mean over the step, per member
    finite: np.ndarray  # per member: every loss of the step was finite


class Learners(NamedTuple):
    """Everything that changes as the members train (checkpointed after each step)."""

    states: Any  # agent states, leading axis the members (seeds)
    train_keys: jax.Array
    explore_keys: jax.Array
    online: Any  # members x capacity online transitions (a Batch), None without the phase


class _Sequential:
    """The compiled programs and environments of a sequential or full run, and its steps."""

    def __init__(self, context: RunContext, chunks: list[protocol.Chunk], progress: Progress):
        self.context = context
        settings, agent, config = context.settings, context.agent, context.agent_config
        self.full_mode = settings.mode == "full"
        longest = max(c.num_increments for c in chunks)
        if self.full_mode:
            self.offline_train = protocol.make_full_data_trainer(agent, config,
                protocol.FullDataTraining(context.batch_size, settings.steps_per_increment,
                                          longest))
        else:
            self.offline_train = protocol.make_sequential_trainer(agent, config,
                protocol.SequentialTraining(context.batch_size, settings.increment,
                                            settings.steps_per_increment, longest,
                                            settings.window))
        self.scorer = None
        if settings.prequential and not self.full_mode:
            self.scorer = protocol.make_prequential_scorer(
                agent, config, max(c.end_size - c.start_size for c in chunks))
        self.policy = protocol.make_policy(agent, config)
        make_env = make_eval_env_factory(settings.dataset.split(",")[0], settings.env)
        self.evaluator = Evaluator(make_env, settings.seeds, settings.eval_episodes,
                                   context.data.action_low, context.data.action_high,
                                   settings.eval_workers)
        self.collector = None
        if settings.online_steps:
            self.online_train = protocol.make_online_trainer(agent, config,
                protocol.OnlineTraining(context.batch_size, settings.updates_per_env_step,
                                        settings.online_block, settings.window))
            self.collector = OnlineCollector(make_env, settings.seeds, context.data.action_low,
                                             context.data.action_high)
            self.explorer = make_explorer(agent, config)
            self.write_block = jax.jit(
                lambda storage, block, start: jax.tree.map(
                    lambda s, b: jax.lax.dynamic_update_slice_in_dim(s, b, start, axis=1),
                    storage, block),
                donate_argnums=(0,),
            )

        self.bar = context.progress_bar(
            context.data.size - context.initial_size + settings.online_steps,
            progress.samples - context.initial_size, "samples")
        self.started = time.perf_counter() - progress.wall_time

    def close(self) -> None:
        self.bar.close()
        self.evaluator.close()
        if self.collector is not None:
            self.collector.close()

    def run(self, index: int, step: OfflineStep | OnlineStep, learners: Learners,
            progress: Progress) -> tuple[Learners, Progress]:
        """Train through step `index`, log, evaluate and checkpoint it; the new progress."""
        context, seeds = self.context, self.context.settings.seeds
        run_dir = context.run_dir
        working = dataclasses.replace(progress, prequential_totals={
            seed: dict(totals) for seed, totals in progress.prequential_totals.items()})
        train_started = time.perf_counter()
        if isinstance(step, OfflineStep):
            learners, result = self.offline(step, learners, working)
        else:
            learners, result = self.online(step, learners, working)
        working.train_time += time.perf_counter() - train_started
        working.gradient_steps += result.gradient_steps
        working.samples = result.samples
        members = len(seeds)
        run_dir.log(TRAINING).append(training_columns(result.metrics), training_rows(
            [result.samples] * members, [working.gradient_steps] * members, seeds,
            result.phase, result.metrics))
        context.check_finite(result.finite, seeds, result.samples, working.gradient_steps)
        returns = self.evaluator.evaluate(self.policy, learners.states, index).mean(axis=1)
        scores = context.data.normalized_score(returns)
        working.wall_time = time.perf_counter() - self.started
        run_dir.log(EVALUATIONS).append(EVALUATION_COLUMNS, evaluation_rows(
            result.samples, working.gradient_steps, seeds, returns, scores, working.wall_time,
            result.phase))
        working.segment = index + 1
        working.last_returns = [float(r) for r in returns]
        working.last_scores = None if scores is None else [float(s) for s in scores]
        summary = sequential_summary(working, seeds, "running")
        run_dir.write_summary(summary)
        run_dir.save_checkpoint(_checkpoint_tree(learners, working.online_count), working)
        self.bar.update(result.samples - context.initial_size - self.bar.n)
        shown = scores if scores is not None else returns
        self.bar.set_postfix(score=f"{float(np.mean(shown)):.1f}",
                             updates_per_s=f"{summary['updates_per_second']:.0f}")
        return learners, working

    def offline(self, step: OfflineStep, learners: Learners, progress: Progress
                ) -> tuple[Learners, StepResult]:
        context, chunk = self.context, step.chunk
        if self.scorer is not None:
            scoring_started = time.perf_counter()
            sums = self.scorer(learners.states, context.orders, context.device_data,
                               chunk.start_size, chunk.end_size - chunk.start_size)
            rows = prequential_rows(sums, context.settings.seeds, chunk.start_size,
                                    chunk.end_size - chunk.start_size,
                                    progress.prequential_totals)
            context.run_dir.log(PREQUENTIAL).append(prequential_columns(sums), rows)
            progress.prequential_time += time.perf_counter() - scoring_started
        if self.full_mode:
            states, keys, metrics, finite = self.offline_train(
                learners.states, learners.train_keys, context.orders, context.device_data,
                chunk.num_increments)
        else:
            states, keys, metrics, finite = self.offline_train(
                learners.states, learners.train_keys, context.orders, context.device_data,
                chunk.start_size, chunk.num_increments)
        result = StepResult(
            phase="offline", samples=chunk.end_size,
            gradient_steps=chunk.num_increments * context.settings.steps_per_increment,
            metrics={k: np.asarray(v) for k, v in metrics.items()}, finite=np.asarray(finite))
        return learners._replace(states=states, train_keys=keys), result

    def online(self, step: OnlineStep, learners: Learners, progress: Progress
               ) -> tuple[Learners, StepResult]:
        context, settings = self.context, self.context.settings
        states, keys, explore_keys, buffer = learners
        self.collector.reset(step.index)
        blocks = []
        count = progress.online_count
        while count < step.env_end:
            block = min(settings.online_block, step.env_end - count)
            transitions, explore_keys = self.collector.collect(self.explorer, states,
                                                               explore_keys, block)
            buffer = self.write_block(buffer, _pad_block(transitions, settings.online_block),
                                      count)
            states, keys, metrics, finite = self.online_train(
                states, keys, context.orders, context.device_data, buffer, count, block,
                settings.online_steps)
            blocks.append((metrics, finite))
            count += block
        progress.online_count = count
        result = StepResult(
            phase="online", samples=context.data.size + step.env_end,
            gradient_steps=(step.env_end - step.env_start) * settings.updates_per_env_step,
            # the mean over blocks of each block's mean
            metrics={k: np.mean([np.asarray(m[k]) for m, _ in blocks], axis=0)
                     for k in blocks[0][0]},
            finite=np.all([np.asarray(f) for _, f in blocks], axis=0))
        return Learners(states, keys, explore_keys, buffer), result


def _pad_block(transitions, length: int):
    """Pad a block of online transitions (members, steps, ...) to `length` steps: one shape,
    one compilation of the buffer write."""
    return jax.tree.map(
        lambda column: np.pad(column, [(0, 0), (0, length - column.shape[1])]
                              + [(0, 0)] * (column.ndim - 2)), transitions)


def _checkpoint_tree(learners: Learners, online_count: int) -> dict[str, Any]:
    # Cut on the host (the checkpoint is written from host arrays anyway): slicing the device
    # arrays would compile a program per column for every new count.
    online = None if learners.online is None else jax.tree.map(
        lambda column: np.asarray(column)[:, :online_count], learners.online)
    return {"states": learners.states, "train_keys": learners.train_keys,
            "explore_keys": learners.explore_keys, "online": online}


def run_sequential(context: RunContext) -> dict:
    """Run (or resume) a sequential or full run; returns its summary."""
    settings, data, run_dir = context.settings, context.data, context.run_dir
    chunks = protocol.sequential_schedule(data.size, context.initial_size, settings.increment,
                                          settings.eval_every)
    steps: list[OfflineStep | OnlineStep] = [OfflineStep(c) for c in chunks] + [
        OnlineStep(i, start, end) for i, (start, end)
        in enumerate(protocol.online_schedule(settings.online_steps, settings.eval_every))]
    offline_steps = sum(c.num_increments for c in chunks) * settings.steps_per_increment
    online_updates = settings.online_steps * settings.updates_per_env_step
    progress = Progress(samples=context.initial_size)
    resuming = run_dir.open(context.config_json({
        "total_gradient_steps": offline_steps + online_updates,
        "offline_gradient_steps": offline_steps,
    }))
    with context.guard(lambda status: sequential_summary(progress, settings.seeds, status)), \
            start_tracking(settings, run_dir.path, resuming, settings.num_seeds) as tracking:
        learners = _initial_learners(context, offline_steps)
        if resuming:
            learners, progress = _restore(context, learners, progress)
        tracking.log_checkpoint(progress)  # what the trackers missed before a kill
        runner = _Sequential(context, chunks, progress)
        try:
            for index in range(progress.segment, len(steps)):
                context.stop.check()
                learners, progress = runner.run(index, steps[index], learners, progress)
                tracking.log_checkpoint(progress)
        finally:
            runner.close()
    summary = sequential_summary(progress, settings.seeds, "complete")
    run_dir.write_summary(summary)
    return summary


def _initial_learners(context: RunContext, offline_steps: int) -> Learners:
    settings = context.settings
    # Learning-rate schedules span the offline pass; online fine-tuning runs at the peak rate.
    states = protocol.init_states(context.agent, context.agent_config, context.init_keys,
                                  context.spaces, protocol.dataset_stats(context.data),
                                  offline_steps)
    online = None
    if settings.online_steps:
        capacity = settings.online_steps + settings.online_block  # room for a padded block
        online = jax.tree.map(
            lambda column: jnp.zeros((settings.num_seeds, capacity) + column.shape[1:],
                                     column.dtype),
            context.device_data.transitions)
    explore_keys = jax.vmap(lambda k: jax.random.fold_in(k, 1))(context.init_keys)
    return Learners(states, context.train_keys, explore_keys, online)


def _restore(context: RunContext, learners: Learners, progress: Progress
             ) -> tuple[Learners, Progress]:
    """The learners and progress of the last checkpoint (if any), with the logs cut to it."""
    run_dir = context.run_dir
    restored = run_dir.load_checkpoint(
        lambda saved: _checkpoint_tree(learners, saved.online_count))
    run_dir.restore_logs(None if restored is None else restored[1], context.settings.num_seeds)
    if restored is None:
        return learners, progress
    tree, progress = restored
    online = learners.online
    if online is not None:
        count = progress.online_count
        online = jax.tree.map(lambda full, part: full.at[:, :count].set(part), online,
                              tree["online"])
    return Learners(tree["states"], tree["train_keys"], tree["explore_keys"], online), progress
