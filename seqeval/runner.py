"""One seqeval run: settings in, a run directory of results out.

Modes (PROTOCOL.md §1-2):
- sequential: the dataset grows from T0 by `increment` transitions, K gradient steps each;
- full: the paper's "Normal" baseline, the whole dataset from step 0 for the same number of
  gradient steps, evaluated at the same gradient-step points (drawn at the matching samples);
- retrain: a fresh agent per dataset size, all sizes trained in one vmapped program.
Sequential and full runs may continue with an online fine-tuning phase (`online_steps`).

The runner holds no global state: everything a run needs is in `RunSettings`, everything it
produces is in its run directory, and a killed run started again with the same settings resumes
from its last checkpoint and produces the same numbers.
"""

from __future__ import annotations

import dataclasses
import json
import math
import sys
import time
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from seqeval import protocol
from seqeval.algorithms.base import Spaces, config_to_dict, get_agent
from seqeval.data import OfflineData, load_datasets, make_eval_env_factory
from seqeval.errors import DivergenceError, UserError
from seqeval.evaluate import Evaluator
from seqeval.online import OnlineCollector, make_explorer
from seqeval.results import CsvLog, RunDir

DEFAULT_INITIAL_SIZE = 5000
MODES = ("sequential", "full", "retrain")
RETRAIN_SEGMENT_STEPS = 5000  # retrain mode checkpoints every this many gradient steps


@dataclasses.dataclass(frozen=True)
class RunSettings:
    """Everything that defines a run (saved in config.json)."""

    agent: str  # registered name, entry point, or path/to/file.py:NAME
    dataset: str  # Minari dataset id; "a,b,c" concatenates datasets in order (shift)
    out: str  # run directory
    agent_overrides: tuple[tuple[str, str], ...] = ()  # (key, value) from --agent.KEY VALUE
    mode: str = "sequential"  # sequential | full | retrain
    initial_size: int | None = None  # T0; None: min(5000, N // 10)
    increment: int = 1  # gamma: transitions added per increment
    steps_per_increment: int = 1  # K: gradient steps per increment
    eval_every: int = 5000  # f_e: evaluate whenever the samples cross a multiple of this
    eval_episodes: int = 10  # deterministic-policy episodes per evaluation and seed
    batch_size: int = 256
    seed: int = 0  # first seed
    num_seeds: int = 1  # seeds seed, seed+1, ... trained together in one program
    window: int | None = None  # train only on the most recent `window` transitions
    online_steps: int = 0  # environment steps of online fine-tuning after the offline pass
    updates_per_env_step: int = 1  # gradient steps per online environment step
    online_block: int = 1000  # env steps collected between two compiled training calls
    sizes: tuple[int, ...] | None = None  # retrain mode: dataset sizes (default geometric)
    retrain_steps: int | None = None  # retrain mode: steps per size (default: sequential's)
    retrain_min_steps: int = 1000  # retrain mode: floor of the default budget
    prequential: bool = True  # score each chunk before training on it (sequential mode)
    ref_scores: tuple[float, float] | None = None  # override the dataset's (min, max) refs
    progress: bool = True  # show a progress bar

    @property
    def seeds(self) -> list[int]:
        return [self.seed + i for i in range(self.num_seeds)]


# ---------------------------------------------------------------------------------------------
# Validation and the config written to disk.


def _check_settings(settings: RunSettings, data: OfflineData) -> int:
    """Validate settings against the data; returns the effective initial size T0."""
    if settings.mode not in MODES:
        raise UserError(f"--mode {settings.mode} is unknown; choose one of: {', '.join(MODES)}")
    positive = {
        "--increment": settings.increment,
        "--steps-per-increment": settings.steps_per_increment,
        "--eval-every": settings.eval_every,
        "--eval-episodes": settings.eval_episodes,
        "--batch-size": settings.batch_size,
        "--seeds": settings.num_seeds,
        "--updates-per-env-step": settings.updates_per_env_step,
        "--online-block": settings.online_block,
        "--retrain-min-steps": settings.retrain_min_steps,
    }
    if settings.window is not None:
        positive["--window"] = settings.window
    if settings.retrain_steps is not None:
        positive["--retrain-steps"] = settings.retrain_steps
    for flag, value in positive.items():
        if value < 1:
            raise UserError(f"{flag} must be at least 1 (got {value})")
    if settings.online_steps < 0:
        raise UserError(f"--online-steps must be 0 or more (got {settings.online_steps})")
    if settings.mode == "retrain" and settings.online_steps:
        raise UserError("--online-steps continues a sequential or full run; drop it in retrain "
                        "mode")
    n = data.size
    if settings.initial_size is None:
        initial = min(DEFAULT_INITIAL_SIZE, max(1, n // 10))
    else:
        initial = settings.initial_size
        if initial < 1:
            raise UserError(f"--initial-size must be at least 1 (got {initial})")
        if initial >= n:
            raise UserError(
                f"--initial-size {initial} is not smaller than the dataset '{data.dataset_id}' "
                f"({n} transitions); pass a smaller --initial-size"
            )
    for size in settings.sizes or ():
        if not 1 <= size <= n:
            raise UserError(f"--sizes: {size} is outside 1..{n} (the dataset's size)")
    if not (np.all(np.isfinite(data.action_low)) and np.all(np.isfinite(data.action_high))):
        raise UserError(f"dataset '{data.dataset_id}' has an unbounded action space; "
                        "seqeval needs finite action bounds")
    return initial


def _config_json(settings: RunSettings, agent_config: Any, data: OfflineData,
                 protocol_info: dict) -> dict:
    """The JSON written to config.json: everything needed to reproduce the run."""
    return {
        "agent": settings.agent,
        "dataset": settings.dataset,
        "mode": settings.mode,
        "protocol": {
            "initial_size": protocol_info["initial_size"],
            "increment": settings.increment,
            "steps_per_increment": settings.steps_per_increment,
            "eval_every": settings.eval_every,
            "eval_episodes": settings.eval_episodes,
            "batch_size": settings.batch_size,
            "seeds": settings.seeds,
            "window": settings.window,
            "online_steps": settings.online_steps,
            "updates_per_env_step": settings.updates_per_env_step,
            "online_block": settings.online_block,
            "prequential": settings.prequential,
            **{k: v for k, v in protocol_info.items() if k != "initial_size"},
        },
        "agent_config": config_to_dict(agent_config),
        "dataset_info": data.info(),
    }


# ---------------------------------------------------------------------------------------------
# The run.


@dataclasses.dataclass
class _Run:
    """What every mode shares once the inputs are loaded and checked."""

    settings: RunSettings
    agent: Any
    agent_config: Any
    data: OfflineData
    device_data: Any
    orders: jax.Array  # (seeds, N) positions -> dataset rows
    init_keys: jax.Array
    train_keys: jax.Array
    initial_size: int
    run_dir: RunDir
    spaces: Spaces


def run(settings: RunSettings) -> dict:
    """Run (or resume) an evaluation; returns the summary written to summary.json."""
    agent = get_agent(settings.agent)
    agent_config = agent.make_config(dict(settings.agent_overrides))
    data, block_sizes = load_datasets(settings.dataset)
    if settings.ref_scores is not None:
        data = data.with_reference_scores(*settings.ref_scores)
    initial_size = _check_settings(settings, data)
    if not data.has_reference_scores:
        print(f"seqeval: note: dataset '{settings.dataset}' has no reference scores; results "
              "are raw returns (pass --ref-scores MIN,MAX to normalize)", file=sys.stderr)

    keys = [protocol.seed_keys(s) for s in settings.seeds]
    permutation_keys, init_keys, train_keys = (jnp.stack(k) for k in zip(*keys, strict=True))
    orders = jax.vmap(lambda k: protocol.block_permutation(k, block_sizes))(permutation_keys)
    context = _Run(
        settings=settings, agent=agent, agent_config=agent_config, data=data,
        device_data=protocol.device_dataset(data), orders=orders, init_keys=init_keys,
        train_keys=train_keys, initial_size=initial_size, run_dir=RunDir(settings.out),
        spaces=Spaces(data.observation_dim, data.action_dim),
    )
    if settings.mode == "retrain":
        return _run_retrain(context)
    return _run_sequential(context)


def _progress_bar(settings: RunSettings, total: int, initial: int, unit: str):
    from tqdm.auto import tqdm

    return tqdm(total=total, initial=initial, unit=unit, disable=not settings.progress,
                desc=f"{settings.agent} on {settings.dataset} ({settings.mode})",
                dynamic_ncols=True)


def _check_finite(finite: np.ndarray, members: list[int], samples: int, gradient_steps: int,
                  run_dir: RunDir) -> None:
    if finite.all():
        return
    bad_seed = members[int(np.argmin(finite))]
    run_dir.write_summary({"status": "diverged", "samples": samples,
                           "gradient_steps": gradient_steps, "seed": bad_seed})
    raise DivergenceError(
        f"training diverged (non-finite loss) for seed {bad_seed} by {samples} samples; lower "
        f"the learning rate or check the data (losses in {run_dir.path / 'training.csv'})"
    )


def _segments(context: _Run) -> tuple[list[protocol.Chunk], list[tuple[int, int]]]:
    """Offline chunks and online chunks (env steps [start, end)), one evaluation after each."""
    settings = context.settings
    schedule = protocol.sequential_schedule(context.data.size, context.initial_size,
                                            settings.increment, settings.eval_every)
    online, start = [], 0
    while start < settings.online_steps:
        end = min((start // settings.eval_every + 1) * settings.eval_every,
                  settings.online_steps)
        online.append((start, end))
        start = end
    return schedule, online


def _run_sequential(context: _Run) -> dict:
    settings, agent, config, data = (context.settings, context.agent, context.agent_config,
                                     context.data)
    n, seeds, run_dir = data.size, settings.seeds, context.run_dir
    schedule, online_chunks = _segments(context)
    offline_steps = sum(c.num_increments for c in schedule) * settings.steps_per_increment
    online_updates = settings.online_steps * settings.updates_per_env_step
    total_steps = offline_steps + online_updates
    resuming = run_dir.open(_config_json(settings, config, data, {
        "initial_size": context.initial_size, "total_gradient_steps": total_steps,
        "offline_gradient_steps": offline_steps,
    }))

    states = protocol.init_states(agent, config, context.init_keys, context.spaces,
                                  protocol.dataset_stats(data), total_steps)
    train_keys = context.train_keys
    explore_keys = jax.vmap(lambda k: jax.random.fold_in(k, 1))(context.init_keys)
    capacity = settings.online_steps + settings.online_block  # padding for a fixed block shape
    online = None
    if settings.online_steps:
        online = jax.tree.map(
            lambda column: jnp.zeros((len(seeds), capacity) + column.shape[1:], column.dtype),
            context.device_data,
        )
    progress = {"segment": 0, "samples": context.initial_size, "gradient_steps": 0,
                "online_count": 0, "wall_time": 0.0, "train_time": 0.0}
    if resuming:
        like = {"states": states, "train_keys": train_keys, "explore_keys": explore_keys,
                "online": online}
        restored = run_dir.load_checkpoint(like)
        if restored is not None:
            tree, progress = restored
            states, train_keys, explore_keys = (tree["states"], tree["train_keys"],
                                                tree["explore_keys"])
            if online is not None:
                count = progress["online_count"]
                online = jax.tree.map(lambda full, part: full.at[:, :count].set(part),
                                      online, tree["online"])
        done = progress["samples"] if restored is not None else -1
        # Rows written after the last checkpoint are redone (identically) rather than kept.
        for log in _logs(run_dir):
            log.keep_rows(lambda row: int(row["samples"]) <= done)

    full_mode = settings.mode == "full"
    offline_train = protocol.make_train_chunk(agent, config, protocol.TrainSettings(
        batch_size=settings.batch_size,
        increment=0 if full_mode else settings.increment,
        steps_per_increment=settings.steps_per_increment,
        max_increments=max(c.num_increments for c in schedule),
        window=settings.window,
    ))
    online_train = protocol.make_train_chunk(agent, config, protocol.TrainSettings(
        batch_size=settings.batch_size, increment=1,
        steps_per_increment=settings.updates_per_env_step,
        max_increments=settings.online_block, window=settings.window, online=True,
    )) if settings.online_steps else None
    longest_chunk = max(c.end_size - c.start_size for c in schedule)
    scorer = (protocol.make_prequential_scorer(agent, config, longest_chunk)
              if settings.prequential and not full_mode else None)
    policy = protocol.make_policy(agent, config)
    make_env = make_eval_env_factory(settings.dataset.split(",")[0])
    evaluator = Evaluator(make_env, seeds, settings.eval_episodes, data.action_low,
                          data.action_high)
    collector = OnlineCollector(make_env, seeds, data.action_low, data.action_high) \
        if settings.online_steps else None
    explorer = make_explorer(agent, config) if settings.online_steps else None
    write_block = jax.jit(
        lambda storage, block, start: jax.tree.map(
            lambda s, b: jax.lax.dynamic_update_slice_in_dim(s, b, start, axis=1), storage, block
        ),
        donate_argnums=(0,),
    )

    training_log: CsvLog | None = None
    prequential_log = run_dir.prequential_log()
    summary: dict[str, Any] = (_read_summary(run_dir) if resuming else None) or {}
    segments = [("offline", i) for i in range(len(schedule))] + [
        ("online", i) for i in range(len(online_chunks))]
    bar = _progress_bar(settings, n - context.initial_size + settings.online_steps,
                        progress["samples"] - context.initial_size, "samples")
    started = time.perf_counter() - progress["wall_time"]
    try:
        for segment_index in range(progress["segment"], len(segments)):
            phase, index = segments[segment_index]
            train_started = time.perf_counter()
            if phase == "offline":
                chunk = schedule[index]
                if scorer is not None:
                    scoring_started = time.perf_counter()
                    sums = scorer(states, context.orders, context.device_data,
                                  chunk.start_size, chunk.end_size - chunk.start_size)
                    prequential_log.append(_prequential_rows(
                        sums, seeds, chunk, prequential_log))
                    progress["prequential_time"] = progress.get("prequential_time", 0.0) + (
                        time.perf_counter() - scoring_started)
                start = n if full_mode else chunk.start_size
                states, train_keys, metrics, finite = offline_train(
                    states, train_keys, context.orders, context.device_data, None, start,
                    chunk.num_increments, n,
                )
                steps = chunk.num_increments * settings.steps_per_increment
                samples = chunk.end_size
                metric_list = [(metrics, finite)]
            else:
                env_start, env_end = online_chunks[index]
                collector.reset(index)
                metric_list = []
                count = progress["online_count"]
                while count < env_end:
                    block = min(settings.online_block, env_end - count)
                    transitions, explore_keys = collector.collect(explorer, states,
                                                                  explore_keys, block)
                    online = write_block(online, _pad_block(transitions, settings.online_block),
                                         count)
                    states, train_keys, metrics, finite = online_train(
                        states, train_keys, context.orders, context.device_data, online,
                        n + count, block, n + settings.online_steps,
                    )
                    metric_list.append((metrics, finite))
                    count += block
                progress["online_count"] = count
                steps = (env_end - env_start) * settings.updates_per_env_step
                samples = n + env_end
            finite = np.all([np.asarray(f) for _, f in metric_list], axis=0)
            mean_metrics = {k: np.mean([np.asarray(m[k]) for m, _ in metric_list], axis=0)
                            for k in metric_list[0][0]}
            progress["train_time"] += time.perf_counter() - train_started
            gradient_steps = progress["gradient_steps"] + steps
            if training_log is None:
                training_log = run_dir.training_log(sorted(mean_metrics))
            training_log.append([
                {"samples": samples, "gradient_steps": gradient_steps, "seed": seed,
                 "phase": phase, **{k: float(v[i]) for k, v in mean_metrics.items()}}
                for i, seed in enumerate(seeds)
            ])
            _check_finite(finite, seeds, samples, gradient_steps, run_dir)
            returns = evaluator.evaluate(policy, states, segment_index).mean(axis=1)
            scores = data.normalized_score(returns)
            wall_time = time.perf_counter() - started
            run_dir.evaluations.append(_evaluation_rows(
                samples, gradient_steps, seeds, returns, scores, wall_time, phase))
            progress.update(segment=segment_index + 1, samples=samples,
                            gradient_steps=gradient_steps, wall_time=wall_time)
            summary = _summary(progress, seeds, returns, scores)
            run_dir.write_summary(summary)
            online_part = None if online is None else jax.tree.map(
                lambda column: column[:, :progress["online_count"]], online)
            run_dir.save_checkpoint({"states": states, "train_keys": train_keys,
                                     "explore_keys": explore_keys, "online": online_part},
                                    dict(progress))
            bar.update(samples - context.initial_size - bar.n)
            shown = scores if scores is not None else returns
            bar.set_postfix(score=f"{float(np.mean(shown)):.1f}",
                            updates_per_s=f"{summary['updates_per_second']:.0f}")
    finally:
        bar.close()
        evaluator.close()
        if collector is not None:
            collector.close()
    summary["status"] = "complete"
    run_dir.write_summary(summary)
    return summary


def _run_retrain(context: _Run) -> dict:
    """A fresh agent per dataset size, all sizes x seeds trained in one vmapped program."""
    settings, agent, config, data = (context.settings, context.agent, context.agent_config,
                                     context.data)
    n, seeds, run_dir, t0 = data.size, settings.seeds, context.run_dir, context.initial_size
    sizes = sorted(set(settings.sizes)) if settings.sizes else protocol.geometric_sizes(t0, n)

    def sequential_steps(size: int) -> int:
        return math.ceil(max(size - t0, 0) / settings.increment) * settings.steps_per_increment

    budgets = [settings.retrain_steps or max(settings.retrain_min_steps, sequential_steps(s))
               for s in sizes]
    max_budget = max(budgets)
    # Members are (size, seed) pairs, size-major.
    member_sizes = np.repeat(sizes, len(seeds))
    member_budgets = np.repeat(budgets, len(seeds))
    member_seeds = [seed for _ in sizes for seed in seeds]
    member_seed_index = np.tile(np.arange(len(seeds)), len(sizes))
    resuming = run_dir.open(_config_json(settings, config, data, {
        "initial_size": t0, "sizes": sizes, "budgets": budgets,
        "total_gradient_steps": int(sum(budgets)) * len(seeds),
    }))

    init_keys = jnp.stack([jax.random.fold_in(context.init_keys[s], i)
                           for i in range(len(sizes)) for s in range(len(seeds))])
    train_keys = jnp.stack([jax.random.fold_in(context.train_keys[s], i)
                            for i in range(len(sizes)) for s in range(len(seeds))])
    orders = context.orders[member_seed_index]
    # One program needs one state structure, so learning-rate schedules (a static part of
    # the optimiser) are sized to the longest budget for every member.
    states = protocol.init_states(agent, config, init_keys, context.spaces,
                                  protocol.dataset_stats(data), max_budget)
    progress = {"segment": 0, "done_steps": 0, "wall_time": 0.0, "train_time": 0.0}
    if resuming:
        restored = run_dir.load_checkpoint({"states": states, "train_keys": train_keys})
        if restored is not None:
            tree, progress = restored
            states, train_keys = tree["states"], tree["train_keys"]
        run_dir.evaluations.keep_rows(lambda row: False)

    segment = min(RETRAIN_SEGMENT_STEPS, max_budget)
    train = protocol.make_train_chunk(agent, config, protocol.TrainSettings(
        batch_size=settings.batch_size, increment=0, steps_per_increment=1,
        max_increments=segment, window=settings.window, per_member_schedule=True,
    ))
    bar = _progress_bar(settings, max_budget, progress["done_steps"], "steps")
    started = time.perf_counter() - progress["wall_time"]
    training_log: CsvLog | None = None
    sizes_arg = jnp.asarray(member_sizes, jnp.int32)
    try:
        segments = math.ceil(max_budget / segment)
        for segment_index in range(progress["segment"], segments):
            done = segment_index * segment
            this = np.clip(member_budgets - done, 0, segment).astype(np.int32)
            train_started = time.perf_counter()
            states, train_keys, metrics, finite = train(
                states, train_keys, orders, context.device_data, None, sizes_arg,
                jnp.asarray(this), n,
            )
            finite = np.asarray(finite)
            progress["train_time"] += time.perf_counter() - train_started
            done_after = min(done + segment, max_budget)
            if training_log is None:
                training_log = run_dir.training_log(sorted(metrics))
            training_log.append([
                {"samples": int(member_sizes[m]), "gradient_steps": int(min(done_after,
                                                                          member_budgets[m])),
                 "seed": member_seeds[m], "phase": "offline",
                 **{k: float(np.asarray(v)[m]) for k, v in metrics.items()}}
                for m in range(len(member_seeds)) if this[m] > 0
            ])
            _check_finite(finite, member_seeds, int(member_sizes[int(np.argmin(finite))]),
                          done_after, run_dir)
            progress.update(segment=segment_index + 1, done_steps=done_after,
                            wall_time=time.perf_counter() - started)
            run_dir.save_checkpoint({"states": states, "train_keys": train_keys},
                                    dict(progress))
            bar.update(done_after - bar.n)
        policy = protocol.make_policy(agent, config)
        evaluator = Evaluator(make_eval_env_factory(settings.dataset.split(",")[0]),
                              member_seeds, settings.eval_episodes, data.action_low,
                              data.action_high)
        try:
            returns = evaluator.evaluate(policy, states, 0).mean(axis=1)
        finally:
            evaluator.close()
    finally:
        bar.close()
    scores = data.normalized_score(returns)
    wall_time = time.perf_counter() - started
    rows = []
    for m, seed in enumerate(member_seeds):
        rows.extend(_evaluation_rows(int(member_sizes[m]), int(member_budgets[m]), [seed],
                                     returns[m:m + 1],
                                     None if scores is None else scores[m:m + 1],
                                     wall_time, "offline"))
    run_dir.evaluations.append(rows)
    progress["wall_time"] = wall_time
    summary = {
        "status": "complete",
        "mode": "retrain",
        "sizes": sizes,
        "budgets": budgets,
        "wall_time": wall_time,
        "train_time": progress["train_time"],
        # useful updates (each member's own budget) and what the masked program computed
        "updates_per_second": float(np.sum(member_budgets)) / max(progress["train_time"], 1e-9),
        "vmapped_updates_per_second": max_budget * len(member_seeds)
        / max(progress["train_time"], 1e-9),
        "samples": n,
        "gradient_steps": max_budget,
        "last_mean_return": float(np.mean(returns[-len(seeds):])),
        "last_mean_normalized_score": None if scores is None
        else float(np.mean(scores[-len(seeds):])),
    }
    run_dir.write_summary(summary)
    return summary


def _pad_block(transitions, length: int):
    """Pad a block of online transitions (members, steps, ...) to `length` steps: one shape,
    one compilation of the buffer write."""
    return jax.tree.map(
        lambda column: np.pad(column, [(0, 0), (0, length - column.shape[1])]
                              + [(0, 0)] * (column.ndim - 2)), transitions)


# ---------------------------------------------------------------------------------------------
# Rows and summaries.


def _logs(run_dir: RunDir) -> list[CsvLog]:
    logs = [run_dir.evaluations, run_dir.prequential_log(), run_dir.training_log([])]
    return [log for log in logs if log.exists()]


def _evaluation_rows(samples: int, gradient_steps: int, seeds: list[int], returns: np.ndarray,
                     scores: np.ndarray | None, wall_time: float, phase: str) -> list[dict]:
    return [
        {"samples": samples, "gradient_steps": gradient_steps, "seed": seed,
         "return": float(returns[i]),
         "normalized_score": None if scores is None else float(scores[i]),
         "wall_time": wall_time, "phase": phase}
        for i, seed in enumerate(seeds)
    ]


def _prequential_rows(sums: dict, seeds: list[int], chunk: protocol.Chunk,
                      log: CsvLog) -> list[dict]:
    """Mean loss per transition of the chunk, and the running sum (description length)."""
    if not log.exists():
        log.columns = ["samples", "seed", "transitions"] + [
            column for name in sorted(sums) for column in (name, f"{name}_cumulative")]
    previous = {int(row["seed"]): row for row in log.rows()}
    count = chunk.end_size - chunk.start_size
    rows = []
    for i, seed in enumerate(seeds):
        row = {"samples": chunk.start_size, "seed": seed, "transitions": count}
        for name, values in sums.items():
            total = float(np.asarray(values)[i])
            before = float(previous[seed][f"{name}_cumulative"]) if seed in previous else 0.0
            row[name] = total / count
            row[f"{name}_cumulative"] = before + total
        rows.append(row)
    return rows


def _read_summary(run_dir: RunDir) -> dict | None:
    path = run_dir.path / "summary.json"
    return json.loads(path.read_text()) if path.is_file() else None


def _summary(progress: dict, seeds: list[int], returns: np.ndarray,
             scores: np.ndarray | None) -> dict:
    train_time = max(progress["train_time"], 1e-9)
    return {
        "status": "running",
        "samples": progress["samples"],
        "gradient_steps": progress["gradient_steps"],
        "wall_time": progress["wall_time"],
        "train_time": progress["train_time"],
        "prequential_time": progress.get("prequential_time", 0.0),  # included in train_time
        "updates_per_second": progress["gradient_steps"] * len(seeds) / train_time,
        "last": {
            str(seed): {"return": float(returns[i]),
                        "normalized_score": None if scores is None else float(scores[i])}
            for i, seed in enumerate(seeds)
        },
        "last_mean_normalized_score": None if scores is None else float(np.mean(scores)),
        "last_mean_return": float(np.mean(returns)),
    }
