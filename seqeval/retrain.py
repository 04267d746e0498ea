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

RETRAIN_SEGMENT_STEPS = 5000  # gradient steps between two checkpoints


def retrain_budgets(settings, sizes: list[int], initial_size: int) -> list[int]:
    """Gradient steps per size: --retrain-steps, else as many as the sequential run had taken
    on reaching that size, at least --retrain-min-steps."""
    def sequential_steps(size: int) -> int:
        increments = math.ceil(max(size - initial_size, 0) / settings.increment)
        return increments * settings.steps_per_increment

    return [settings.retrain_steps or max(settings.retrain_min_steps, sequential_steps(s))
            for s in sizes]


def run_retrain(context: RunContext) -> dict:
    """Run (or resume) a retrain run; returns its summary."""
    settings, data, run_dir = context.settings, context.data, context.run_dir
    n, seeds, t0 = data.size, settings.seeds, context.initial_size
    sizes = sorted(set(settings.sizes)) if settings.sizes else protocol.geometric_sizes(t0, n)
    budgets = retrain_budgets(settings, sizes, t0)
    longest = max(budgets)
    member_sizes = np.repeat(sizes, len(seeds))
    member_budgets = np.repeat(budgets, len(seeds))
    member_seeds = [seed for _ in sizes for seed in seeds]
    resuming = run_dir.open(context.config_json({
        "sizes": sizes, "budgets": budgets,
        "total_gradient_steps": int(sum(budgets)) * len(seeds),
    }))

    init_keys = jnp.stack([jax.random.fold_in(context.init_keys[s], i)
                           for i in range(len(sizes)) for s in range(len(seeds))])
    train_keys = jnp.stack([jax.random.fold_in(context.train_keys[s], i)
                            for i in range(len(sizes)) for s in range(len(seeds))])
    orders = context.orders[np.tile(np.arange(len(seeds)), len(sizes))]
    states = protocol.init_states(context.agent, context.agent_config, init_keys,
                                  context.spaces, protocol.dataset_stats(data), member_budgets)
    progress = Progress()
    if resuming:
        restored = run_dir.load_checkpoint(
            lambda saved: {"states": states, "train_keys": train_keys})
        if restored is not None:
            tree, progress = restored
            states, train_keys = tree["states"], tree["train_keys"]
        run_dir.restore_logs(progress if restored is not None else None, 0)

    segment_steps = min(RETRAIN_SEGMENT_STEPS, longest)
    segments = math.ceil(longest / segment_steps)
    train = protocol.make_retrain_trainer(context.agent, context.agent_config,
                                          protocol.RetrainTraining(settings.batch_size,
                                                                   segment_steps,
                                                                   settings.window))
    sizes_arg = jnp.asarray(member_sizes, jnp.int32)
    bar = context.progress_bar(longest, progress.gradient_steps, "steps")
    started = time.perf_counter() - progress.wall_time

    def summary(status: str) -> dict:
        return retrain_summary(progress, sizes, budgets, seeds, n, status)

    try:
        with context.guard(summary):
            for index in range(progress.segment, segments):
                context.stop.check()
                working = dataclasses.replace(progress)
                done = index * segment_steps
                steps = np.clip(member_budgets - done, 0, segment_steps).astype(np.int32)
                train_started = time.perf_counter()
                states, train_keys, metrics, finite = train(
                    states, train_keys, orders, context.device_data, sizes_arg,
                    jnp.asarray(steps))
                finite = np.asarray(finite)
                working.train_time += time.perf_counter() - train_started
                working.gradient_steps = min(done + segment_steps, longest)
                active = np.flatnonzero(steps > 0)
                run_dir.log(TRAINING).append(training_columns(metrics), training_rows(
                    member_sizes[active],
                    np.minimum(working.gradient_steps, member_budgets[active]),
                    [member_seeds[m] for m in active], "offline",
                    {k: np.asarray(v)[active] for k, v in metrics.items()}))
                context.check_finite(finite, member_seeds,
                                     int(member_sizes[int(np.argmin(finite))]),
                                     working.gradient_steps)
                working.segment = index + 1
                working.wall_time = time.perf_counter() - started
                progress = working
                run_dir.write_summary(summary("running"))
                run_dir.save_checkpoint({"states": states, "train_keys": train_keys}, progress)
                bar.update(progress.gradient_steps - bar.n)
            if progress.segment == segments:  # the last step: evaluate every member
                context.stop.check()
                working = dataclasses.replace(progress)
                evaluator = Evaluator(make_eval_env_factory(settings.dataset.split(",")[0]),
                                      member_seeds, settings.eval_episodes, data.action_low,
                                      data.action_high)
                try:
                    returns = evaluator.evaluate(protocol.make_policy(
                        context.agent, context.agent_config), states, 0).mean(axis=1)
                finally:
                    evaluator.close()
                scores = data.normalized_score(returns)
                working.wall_time = time.perf_counter() - started
                rows = []
                for m, seed in enumerate(member_seeds):
                    rows.extend(evaluation_rows(
                        int(member_sizes[m]), int(member_budgets[m]), [seed], returns[m:m + 1],
                        None if scores is None else scores[m:m + 1], working.wall_time,
                        "offline"))
                run_dir.log(EVALUATIONS).append(EVALUATION_COLUMNS, rows)
                working.segment = segments + 1
                working.last_returns = [float(r) for r in returns]
                working.last_scores = None if scores is None else [float(s) for s in scores]
                progress = working
                run_dir.save_checkpoint({"states": states, "train_keys": train_keys}, progress)
    finally:
        bar.close()
    result = summary("complete")
    run_dir.write_summary(result)
    return result
