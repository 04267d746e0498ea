"""One seqeval run: settings in, a run directory of results out.

The runner holds no global state: everything a run needs is in `RunSettings`, everything it
produces is in its run directory, and a killed run started again with the same settings resumes
from its last checkpoint and produces the same numbers.
"""

from __future__ import annotations

import dataclasses
import time
from typing import Any

import jax
import numpy as np

from algorithms.base import Spaces, config_to_dict, get_agent
from seqeval import protocol
from seqeval.data import OfflineData, load_dataset, make_eval_env_factory
from seqeval.errors import DivergenceError, UserError
from seqeval.evaluate import Evaluator
from seqeval.results import RunDir

DEFAULT_INITIAL_SIZE = 5000


@dataclasses.dataclass(frozen=True)
class RunSettings:
    """Everything that defines a run (saved in config.json)."""

    agent: str  # registered name, entry point, or path/to/file.py:NAME
    dataset: str  # Minari dataset id
    out: str  # run directory
    agent_overrides: tuple[tuple[str, str], ...] = ()  # (key, value) from --agent.KEY VALUE
    initial_size: int | None = None  # T0; None: min(5000, N // 10)
    increment: int = 1  # gamma: transitions added per increment
    steps_per_increment: int = 1  # K: gradient steps per increment
    eval_every: int = 5000  # f_e: evaluate whenever the size crosses a multiple of this
    eval_episodes: int = 10  # deterministic-policy episodes per evaluation and seed
    batch_size: int = 256
    seed: int = 0  # first seed
    num_seeds: int = 1  # seeds seed, seed+1, ... trained together in one program
    ref_scores: tuple[float, float] | None = None  # override the dataset's (min, max) refs
    progress: bool = True  # show a progress bar

    @property
    def seeds(self) -> list[int]:
        return [self.seed + i for i in range(self.num_seeds)]


def _check_settings(settings: RunSettings, data: OfflineData) -> int:
    """Validate settings against the data; returns the effective initial size T0."""
    positive = {
        "--increment": settings.increment,
        "--steps-per-increment": settings.steps_per_increment,
        "--eval-every": settings.eval_every,
        "--eval-episodes": settings.eval_episodes,
        "--batch-size": settings.batch_size,
        "--seeds": settings.num_seeds,
    }
    for flag, value in positive.items():
        if value < 1:
            raise UserError(f"{flag} must be at least 1 (got {value})")
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
    if not (np.all(np.isfinite(data.action_low)) and np.all(np.isfinite(data.action_high))):
        raise UserError(f"dataset '{data.dataset_id}' has an unbounded action space; "
                        "seqeval needs finite action bounds")
    return initial


def run_config(settings: RunSettings, agent_config: Any, data: OfflineData,
               initial_size: int, total_steps: int) -> dict:
    """The JSON written to config.json: everything needed to reproduce the run."""
    return {
        "agent": settings.agent,
        "dataset": settings.dataset,
        "mode": "sequential",
        "protocol": {
            "initial_size": initial_size,
            "increment": settings.increment,
            "steps_per_increment": settings.steps_per_increment,
            "eval_every": settings.eval_every,
            "eval_episodes": settings.eval_episodes,
            "batch_size": settings.batch_size,
            "seeds": settings.seeds,
            "total_gradient_steps": total_steps,
        },
        "agent_config": config_to_dict(agent_config),
        "dataset_info": data.info(),
    }


def _progress_bar(settings: RunSettings, total: int, initial: int):
    from tqdm.auto import tqdm

    return tqdm(total=total, initial=initial, unit="samples", disable=not settings.progress,
                desc=f"{settings.agent} on {settings.dataset}", dynamic_ncols=True)


def run(settings: RunSettings) -> dict:
    """Run (or resume) a sequential evaluation; returns the summary written to summary.json."""
    agent = get_agent(settings.agent)
    agent_config = agent.make_config(dict(settings.agent_overrides))
    data = load_dataset(settings.dataset)
    if settings.ref_scores is not None:
        data = data.with_reference_scores(*settings.ref_scores)
    initial_size = _check_settings(settings, data)
    schedule = protocol.sequential_schedule(
        data.size, initial_size, settings.increment, settings.eval_every
    )
    total_steps = sum(c.num_increments for c in schedule) * settings.steps_per_increment
    run_dir = RunDir(settings.out)
    resuming = run_dir.open(run_config(settings, agent_config, data, initial_size, total_steps))

    seeds = settings.seeds
    keys = [protocol.seed_keys(s) for s in seeds]
    permutation_keys, init_keys, train_keys = (jax.numpy.stack(k) for k in zip(*keys,
                                                                              strict=True))
    orders = jax.vmap(lambda k: jax.random.permutation(k, data.size))(permutation_keys)
    spaces = Spaces(data.observation_dim, data.action_dim)
    states = protocol.init_states(agent, agent_config, init_keys, spaces,
                                  protocol.dataset_stats(data), total_steps)
    device_data = protocol.device_dataset(data)

    progress = {"chunk": 0, "samples": initial_size, "gradient_steps": 0, "wall_time": 0.0,
                "train_time": 0.0}
    if resuming:
        restored = run_dir.load_checkpoint((states, train_keys))
        if restored is not None:
            (states, train_keys), progress = restored
        done = progress["samples"] if restored is not None else -1
        # Rows written after the last checkpoint are redone (identically) rather than kept.
        run_dir.evaluations.keep_rows(lambda row: int(row["samples"]) <= done)

    settings_static = protocol.TrainSettings(
        batch_size=settings.batch_size,
        increment=settings.increment,
        steps_per_increment=settings.steps_per_increment,
        max_increments=max(c.num_increments for c in schedule),
    )
    train_chunk = protocol.make_train_chunk(agent, agent_config, settings_static)
    policy = protocol.make_policy(agent, agent_config)
    evaluator = Evaluator(make_eval_env_factory(settings.dataset), seeds,
                          settings.eval_episodes, data.action_low, data.action_high)
    training_log = None
    summary: dict[str, Any] = (_read_summary(run_dir) if resuming else None) or {}
    bar = _progress_bar(settings, data.size - initial_size, progress["samples"] - initial_size)
    started = time.perf_counter() - progress["wall_time"]
    try:
        for chunk_index in range(progress["chunk"], len(schedule)):
            chunk = schedule[chunk_index]
            train_started = time.perf_counter()
            states, train_keys, metrics, finite = train_chunk(
                states, train_keys, orders, device_data, chunk.start_size,
                chunk.num_increments, data.size,
            )
            finite = np.asarray(finite)
            metrics = {k: np.asarray(v) for k, v in metrics.items()}
            progress["train_time"] += time.perf_counter() - train_started
            steps = chunk.num_increments * settings.steps_per_increment
            gradient_steps = progress["gradient_steps"] + steps
            if training_log is None:
                training_log = run_dir.training_log(sorted(metrics))
            training_log.append([
                {"samples": chunk.end_size, "gradient_steps": gradient_steps, "seed": seed,
                 "phase": "offline", **{k: float(v[i]) for k, v in metrics.items()}}
                for i, seed in enumerate(seeds)
            ])
            if not finite.all():
                bad_seed = seeds[int(np.argmin(finite))]
                summary = {"status": "diverged", "samples": chunk.end_size,
                           "gradient_steps": gradient_steps, "seed": bad_seed}
                run_dir.write_summary(summary)
                raise DivergenceError(
                    f"training diverged (non-finite loss) for seed {bad_seed} by "
                    f"{chunk.end_size} samples; lower the learning rate or check the data "
                    f"(metrics in {run_dir.path / 'training.csv'})"
                )
            returns = evaluator.evaluate(policy, states, chunk_index)
            mean_returns = returns.mean(axis=1)
            scores = data.normalized_score(mean_returns)
            wall_time = time.perf_counter() - started
            run_dir.evaluations.append([
                {"samples": chunk.end_size, "gradient_steps": gradient_steps, "seed": seed,
                 "return": float(mean_returns[i]),
                 "normalized_score": None if scores is None else float(scores[i]),
                 "wall_time": wall_time, "phase": "offline"}
                for i, seed in enumerate(seeds)
            ])
            progress = {"chunk": chunk_index + 1, "samples": chunk.end_size,
                        "gradient_steps": gradient_steps, "wall_time": wall_time,
                        "train_time": progress["train_time"]}
            summary = _summary("running", progress, seeds, mean_returns, scores)
            run_dir.write_summary(summary)
            run_dir.save_checkpoint((states, train_keys), progress)
            bar.update(chunk.end_size - bar.n - initial_size)
            shown = scores if scores is not None else mean_returns
            bar.set_postfix(score=f"{float(np.mean(shown)):.1f}",
                            updates_per_s=f"{summary['updates_per_second']:.0f}")
    finally:
        bar.close()
        evaluator.close()
    summary["status"] = "complete"
    run_dir.write_summary(summary)
    return summary


def _read_summary(run_dir: RunDir) -> dict | None:
    import json

    path = run_dir.path / "summary.json"
    return json.loads(path.read_text()) if path.is_file() else None


def _summary(status: str, progress: dict, seeds: list[int], returns: np.ndarray,
             scores: np.ndarray | None) -> dict:
    train_time = max(progress["train_time"], 1e-9)
    return {
        "status": status,
        "samples": progress["samples"],
        "gradient_steps": progress["gradient_steps"],
        "wall_time": progress["wall_time"],
        "train_time": progress["train_time"],
        "updates_per_second": progress["gradient_steps"] * len(seeds) / train_time,
        "last": {
            str(seed): {"return": float(returns[i]),
                        "normalized_score": None if scores is None else float(scores[i])}
            for i, seed in enumerate(seeds)
        },
        "last_mean_normalized_score": None if scores is None else float(np.mean(scores)),
        "last_mean_return": float(np.mean(returns)),
    }
