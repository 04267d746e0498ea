"""Retrain mode: a fresh agent per dataset size, every size x seed trained in one vmapped program.

Members are (size, seed) pairs, size-major. Each trains on the first `size` transitions of its
seed's order for its own budget of gradient steps (members past their budget are masked), and
its learning-rate schedule spans that budget, as a fresh agent's would. Training is cut into
segments of `RETRAIN_SEGMENT_STEPS`, each checkpointed; every member is evaluated once at the
end.
"""

from __future__ import annotations

import dataclasses
import math
import time

import jax
import jax.numpy as jnp
import numpy as np

from seqeval import protocol
from seqeval.context import RunContext
from seqeval.data import make_eval_env_factory
from seqeval.evaluate import Evaluator
from seqeval.results import (
    EVALUATION_COLUMNS,
    EVALUATIONS,
    TRAINING,
    Progress,
    evaluation_rows,
    retrain_summary,
    training_columns,
    training_rows,
)
from seqeval.settings import RunSettings
from seqeval.tracking import start_tracking

RETRAIN_SEGMENT_STEPS = 5000  # gradient steps between two checkpoints


def retrain_budgets(settings: RunSettings, sizes: list[int], initial_size: int) -> list[int]:
    """Gradient steps per size: --retrain-steps, else as many as the sequential run had taken
    on reaching that size, at least --retrain-min-steps."""
    def sequential_steps(size: int) -> int:
        increments = math.ceil(max(size - initial_size, 0) / settings.increment)
        return increments * settings.steps_per_increment

    return [settings.retrain_steps or max(settings.retrain_min_steps, sequential_steps(s))
            for s in sizes]


@dataclasses.dataclass(frozen=True)
class Members:
    """The (size, seed) pairs trained together, size-major."""

    sizes: np.ndarray  # each member's dataset size
    budgets: np.ndarray  # each member's gradient steps
    seeds: list[int]


def run_retrain(context: RunContext) -> dict:
    """Run (or resume) a retrain run; returns its summary."""
    settings, data, run_dir = context.settings, context.data, context.run_dir
    n, seeds, t0 = data.size, settings.seeds, context.initial_size
    sizes = sorted(set(settings.sizes)) if settings.sizes else protocol.geometric_sizes(t0, n)
    budgets = retrain_budgets(settings, sizes, t0)
    members = Members(np.repeat(sizes, len(seeds)), np.repeat(budgets, len(seeds)),
                      [seed for _ in sizes for seed in seeds])
    progress = Progress()
    resuming = run_dir.open(context.config_json({
        "sizes": sizes, "budgets": budgets,
        "total_gradient_steps": int(sum(budgets)) * len(seeds),
    }))

    def summary(status: str) -> dict:
        return retrain_summary(progress, sizes, budgets, seeds, n, status)

    with context.guard(summary), start_tracking(settings, run_dir.path, resuming,
                                                len(members.seeds)) as tracking:
        trained = _initial_members(context, len(sizes), members.budgets)
        if resuming:
            restored = run_dir.load_checkpoint(lambda saved: trained)
            run_dir.restore_logs(None if restored is None else restored[1], 0)
            if restored is not None:
                trained, progress = restored
        tracking.log_checkpoint(progress)  # what the trackers missed before a kill
        longest = max(budgets)
        segment_steps = min(RETRAIN_SEGMENT_STEPS, longest)
        segments = math.ceil(longest / segment_steps)
        train = protocol.make_retrain_trainer(context.agent, context.agent_config,
                                              protocol.RetrainTraining(context.batch_size,
                                                                       segment_steps,
                                                                       settings.window))
        bar = context.progress_bar(longest, progress.gradient_steps, "steps")
        started = time.perf_counter() - progress.wall_time
        try:
            for index in range(progress.segment, segments):
                context.stop.check()
                trained, progress = _train_segment(context, train, members, trained, progress,
                                                   index, segment_steps, started)
                tracking.log_checkpoint(progress)
                run_dir.write_summary(summary("running"))
                bar.update(progress.gradient_steps - bar.n)
            if progress.segment == segments:  # the last step: evaluate every member
                context.stop.check()
                progress = _evaluate(context, members, trained, progress, started)
                tracking.log_checkpoint(progress)
        finally:
            bar.close()
    result = summary("complete")
    run_dir.write_summary(result)
    return result


def _initial_members(context: RunContext, num_sizes: int, budgets: np.ndarray) -> dict:
    """{"states", "train_keys", "orders"}: seed s's keys folded with the size index, its order
    shared by its sizes; schedules sized to each member's own budget."""
    num_seeds = context.settings.num_seeds
    init_keys = jnp.stack([jax.random.fold_in(context.init_keys[s], i)
                           for i in range(num_sizes) for s in range(num_seeds)])
    train_keys = jnp.stack([jax.random.fold_in(context.train_keys[s], i)
                            for i in range(num_sizes) for s in range(num_seeds)])
    states = protocol.init_states(context.agent, context.agent_config, init_keys,
                                  context.spaces, protocol.dataset_stats(context.data), budgets)
    return {"states": states, "train_keys": train_keys}


def _orders(context: RunContext, members: Members) -> jax.Array:
    num_seeds = context.settings.num_seeds
    return context.orders[np.tile(np.arange(num_seeds), len(members.seeds) // num_seeds)]


def _train_segment(context: RunContext, train, members: Members, trained: dict,
                   progress: Progress, index: int, segment_steps: int, started: float
                   ) -> tuple[dict, Progress]:
    """Segment `index`: every member takes up to `segment_steps` more of its budget."""
    working = dataclasses.replace(progress)
    done = index * segment_steps
    steps = np.clip(members.budgets - done, 0, segment_steps).astype(np.int32)
    train_started = time.perf_counter()
    states, train_keys, metrics, finite = train(
        trained["states"], trained["train_keys"], _orders(context, members),
        context.device_data, jnp.asarray(members.sizes, jnp.int32), jnp.asarray(steps))
    finite = np.asarray(finite)
    working.train_time += time.perf_counter() - train_started
    working.gradient_steps = min(done + segment_steps, int(members.budgets.max()))
    active = np.flatnonzero(steps > 0)
    context.run_dir.log(TRAINING).append(training_columns(metrics), training_rows(
        members.sizes[active], np.minimum(working.gradient_steps, members.budgets[active]),
        [members.seeds[m] for m in active], "offline",
        {k: np.asarray(v)[active] for k, v in metrics.items()}))
    context.check_finite(finite, members.seeds, int(members.sizes[int(np.argmin(finite))]),
                         working.gradient_steps)
    working.segment = index + 1
    working.wall_time = time.perf_counter() - started
    trained = {"states": states, "train_keys": train_keys}
    context.run_dir.save_checkpoint(trained, working)
    return trained, working


def _evaluate(context: RunContext, members: Members, trained: dict, progress: Progress,
              started: float) -> Progress:
    """Evaluate every member once; its rows, and the checkpoint that marks the run done."""
    settings, data = context.settings, context.data
    working = dataclasses.replace(progress)
    evaluator = Evaluator(make_eval_env_factory(settings.dataset.split(",")[0],
                                                settings.env), members.seeds,
                          settings.eval_episodes, data.action_low, data.action_high)
    try:
        policy = protocol.make_policy(context.agent, context.agent_config)
        returns = evaluator.evaluate(policy, trained["states"], 0).mean(axis=1)
    finally:
        evaluator.close()
    scores = data.normalized_score(returns)
    working.wall_time = time.perf_counter() - started
    rows = []
    for m, seed in enumerate(members.seeds):
        rows.extend(evaluation_rows(
            int(members.sizes[m]), int(members.budgets[m]), [seed], returns[m:m + 1],
            None if scores is None else scores[m:m + 1], working.wall_time, "offline"))
    context.run_dir.log(EVALUATIONS).append(EVALUATION_COLUMNS, rows)
    working.segment += 1
    working.last_returns = [float(r) for r in returns]
    working.last_scores = None if scores is None else [float(s) for s in scores]
    context.run_dir.save_checkpoint(trained, working)
    return working
