"""Retrain mode: a fresh agent per dataset size, every size x seed trained in one vmapped program.

Members are (size, seed) pairs, size-major. Each trains on the first `size` transitions of its
seed's order for its own budget of gradient steps, and its learning-rate schedule spans that
budget, as a fresh agent's would. Training is cut into segments of `RETRAIN_SEGMENT_STEPS`,
each checkpointed; every member is evaluated once at the end.

Budgets differ (a default grid's smallest size trains for ~1/25 of its largest's), so members
train in a shrinking set (`retrain_phases`): a segment is cut where a budget ends, and each
piece runs only the members still training, all for the same number of steps. The program
computes exactly the useful updates (masking finished members computed sizes x the largest
budget: 2.3x on a default grid) at the cost of one compilation per distinct set size.
"""

from __future__ import annotations

import dataclasses
import math
import time

import jax
import jax.numpy as jnp
import numpy as np

from seqeval import protocol
from seqeval.compilation import jit_once
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


@dataclasses.dataclass(frozen=True)
class Phase:
    """Gradient steps [start, start + steps) of every member in `members` (the members whose
    budget is not spent by `start`), run as one call of the compiled program."""

    start: int
    steps: int
    members: np.ndarray  # member indices, ascending


def retrain_phases(budgets: np.ndarray, segment_steps: int) -> list[list[Phase]]:
    """The phases of each checkpoint segment ([i * segment_steps, (i + 1) * segment_steps) of
    the longest budget), cut wherever a member's budget ends inside it.

    Every member takes exactly its budget and nothing is computed past it: the phases' steps x
    members sum to the budgets' sum.
    """
    budgets = np.asarray(budgets)
    longest = int(budgets.max())
    segments = []
    for segment_start in range(0, longest, segment_steps):
        segment_end = min(segment_start + segment_steps, longest)
        cuts = sorted({segment_start, segment_end} | {
            int(b) for b in budgets if segment_start < b < segment_end})
        segments.append([Phase(start, end - start, np.flatnonzero(budgets > start))
                         for start, end in zip(cuts[:-1], cuts[1:], strict=True)])
    return segments


def computed_updates(budgets: np.ndarray, segment_steps: int) -> tuple[int, int]:
    """(useful, computed) gradient updates of all members: the budgets' sum, and what the
    phases run (equal by construction; kept apart so benchmarks and summaries show both)."""
    phases = [p for segment in retrain_phases(budgets, segment_steps) for p in segment]
    return int(np.sum(budgets)), sum(p.steps * len(p.members) for p in phases)


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

    longest = max(budgets)
    segment_steps = min(RETRAIN_SEGMENT_STEPS, longest)
    segments = retrain_phases(members.budgets, segment_steps)
    _, computed = computed_updates(np.asarray(budgets), segment_steps)

    def summary(status: str) -> dict:
        return retrain_summary(progress, sizes, budgets, seeds, n, status, computed)

    with context.guard(summary), start_tracking(settings, run_dir.path, resuming,
                                                len(members.seeds)) as tracking:
        trained = _initial_members(context, len(sizes), members.budgets)
        if resuming:
            restored = run_dir.load_checkpoint(lambda saved: trained)
            run_dir.restore_logs(None if restored is None else restored[1], 0)
            if restored is not None:
                trained, progress = restored
        tracking.log_checkpoint(progress)  # what the trackers missed before a kill
        train = protocol.make_retrain_trainer(context.agent, context.agent_config,
                                              protocol.RetrainTraining(context.batch_size,
                                                                       segment_steps,
                                                                       settings.window))
        bar = context.progress_bar(longest, progress.gradient_steps, "steps")
        started = time.perf_counter() - progress.wall_time
        try:
            for index in range(progress.segment, len(segments)):
                context.stop.check()
                trained, progress = _train_segment(context, train, members, trained, progress,
                                                   index, segments[index], started)
                tracking.log_checkpoint(progress)
                run_dir.write_summary(summary("running"))
                bar.update(progress.gradient_steps - bar.n)
            if progress.segment == len(segments):  # the last step: evaluate every member
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


def _train_segment(context: RunContext, train, members: Members, trained: dict,
                   progress: Progress, index: int, phases: list[Phase], started: float
                   ) -> tuple[dict, Progress]:
    """Segment `index`: its phases, each training the members it names; one checkpoint."""
    working = dataclasses.replace(progress)
    num_members, num_seeds = len(members.seeds), context.settings.num_seeds
    seed_rows = np.tile(np.arange(num_seeds), num_members // num_seeds)
    states, train_keys = trained["states"], trained["train_keys"]
    steps = np.zeros(num_members, np.int64)
    metric_sums: dict[str, np.ndarray] = {}
    finite = np.ones(num_members, bool)
    train_started = time.perf_counter()
    for phase in phases:
        active = phase.members
        everyone = len(active) == num_members
        new_states, new_keys, metrics, phase_finite = train(
            *((states, train_keys) if everyone else _rows((states, train_keys), active)),
            context.orders[seed_rows[active]], context.device_data,
            jnp.asarray(members.sizes[active], jnp.int32), jnp.int32(phase.steps))
        states, train_keys = (new_states, new_keys) if everyone else _set_rows(
            (states, train_keys), active, (new_states, new_keys))
        for name, means in metrics.items():  # each phase's means, weighted by its steps
            total = metric_sums.setdefault(name, np.zeros(num_members))
            total[active] += np.asarray(means, np.float64) * phase.steps
        finite[active] &= np.asarray(phase_finite)
        steps[active] += phase.steps
    jax.block_until_ready(states)
    working.train_time += time.perf_counter() - train_started
    working.gradient_steps = phases[-1].start + phases[-1].steps
    active = np.flatnonzero(steps > 0)
    context.run_dir.log(TRAINING).append(training_columns(metric_sums), training_rows(
        members.sizes[active], np.minimum(working.gradient_steps, members.budgets[active]),
        [members.seeds[m] for m in active], "offline",
        {k: v[active] / steps[active] for k, v in metric_sums.items()}))
    context.check_finite(finite, members.seeds, int(members.sizes[int(np.argmin(finite))]),
                         working.gradient_steps)
    working.segment = index + 1
    working.wall_time = time.perf_counter() - started
    trained = {"states": states, "train_keys": train_keys}
    context.run_dir.save_checkpoint(trained, working)
    return trained, working


# One compiled program per number of rows for the whole tree: op by op, each leaf compiled its
# own gather (30 compiles, 1.1 s of a demo's TD3+BC retrain; this one 0.3 s).
@jit_once
def _rows(tree, rows: jax.Array):
    return jax.tree.map(lambda leaf: leaf[rows], tree)


def _set_rows(tree, rows: np.ndarray, values):
    """`tree` with `values` at `rows`, written on the host: a few times per run, and XLA:CPU
    compiled the tree's scatters in 1.4 s (op by op, 1.5 s for 60 small compiles)."""
    def put(leaf, value):
        updated = np.array(leaf)
        updated[rows] = np.asarray(value)
        return updated

    return jax.tree.map(put, tree, values)


def _evaluate(context: RunContext, members: Members, trained: dict, progress: Progress,
              started: float) -> Progress:
    """Evaluate every member once; its rows, and the checkpoint that marks the run done."""
    settings, data = context.settings, context.data
    working = dataclasses.replace(progress)
    evaluator = Evaluator(make_eval_env_factory(settings.dataset.split(",")[0],
                                                settings.env), members.seeds,
                          settings.eval_episodes, data.action_low, data.action_high,
                          settings.eval_workers)
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
