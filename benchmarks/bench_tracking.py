"""What `--log tensorboard,wandb` costs a run: the same small run with and without trackers,
interleaved (off, on, off, on, ...), several repetitions; W&B in offline mode.

Prints a markdown table; numbers go to benchmarks/README.md. Uses the Pendulum suite (built
into a temporary Minari store unless MINARI_DATASETS_PATH already has it).

    python benchmarks/bench_tracking.py [--repetitions 3] [--quick]
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
import warnings
from pathlib import Path

warnings.filterwarnings("ignore", module="minari")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repetitions", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="fewer chunks (a smoke run)")
    args = parser.parse_args()
    if "MINARI_DATASETS_PATH" not in os.environ:
        os.environ["MINARI_DATASETS_PATH"] = tempfile.mkdtemp(prefix="seqeval-bench-")
    tmp = Path(tempfile.mkdtemp(prefix="seqeval-bench-tracking-"))
    os.environ.update(WANDB_MODE="offline", WANDB_SILENT="true")
    for name in ("WANDB_CONFIG_DIR", "WANDB_CACHE_DIR", "WANDB_DATA_DIR"):
        os.environ[name] = str(tmp / name.lower())
    from seqeval.envs.datasets import ensure_datasets

    ensure_datasets("pendulum")
    import jax

    from seqeval import tracking
    from seqeval.runner import RunSettings, run

    # Time spent in the trackers: starting and closing them (W&B's init and finish), and
    # each checkpoint's logging (reading the CSV files, writing events, W&B's log calls).
    spent = {"setup": 0.0, "logging": 0.0, "calls": 0}

    def timed(function):
        part = "logging" if function.__name__ == "log_checkpoint" else "setup"

        def wrapper(*a, **k):
            started = time.perf_counter()
            try:
                return function(*a, **k)
            finally:
                spent[part] += time.perf_counter() - started
                spent["calls"] += part == "logging"
        return wrapper

    for name in ("start", "log_checkpoint", "close"):
        setattr(tracking.Tracking, name, timed(getattr(tracking.Tracking, name)))

    initial = 17_500 if args.quick else 10_000
    common = dict(agent="bc", dataset="pendulum/expert-v0", initial_size=initial, increment=10,
                  steps_per_increment=1, eval_every=500, eval_episodes=2, num_seeds=2,
                  progress=False, agent_overrides=(("hidden_dims", "64,64"),))
    chunks = (20_000 - initial) // 500
    results: dict[str, list[tuple[float, float, float, float]]] = {"off": [], "on": []}
    for repetition in range(args.repetitions):
        for mode in ("off", "on"):
            spent.update(setup=0.0, logging=0.0, calls=0)
            log = ("tensorboard", "wandb") if mode == "on" else None
            out = tmp / f"{mode}-{repetition}"
            started = time.perf_counter()
            summary = run(RunSettings(out=str(out), log=log, **common))
            wall = time.perf_counter() - started
            results[mode].append((wall, summary["train_time"], spent["setup"],
                                  spent["logging"]))
            print(f"repetition {repetition} {mode}: wall {wall:.1f} s, train "
                  f"{summary['train_time']:.1f} s, trackers: start and close "
                  f"{spent['setup']:.2f} s, logging {spent['logging']:.2f} s "
                  f"({spent['calls']} checkpoints)", flush=True)

    print(f"\njax {jax.__version__}, {os.cpu_count()} cores; BC 2x64, 2 seeds, "
          f"{chunks} chunks of 500 transitions, {args.repetitions} repetitions interleaved")
    print("(medians; the first run with trackers also pays W&B's import)")
    print("| trackers | wall s | train s | start + close s | logging s | logging per chunk ms |")
    print("|---|---|---|---|---|---|")
    for mode, rows in results.items():
        wall, train, setup, logging = (statistics.median(column)
                                       for column in zip(*rows, strict=True))
        label = "none" if mode == "off" else "tensorboard,wandb (offline)"
        print(f"| {label} | {wall:.1f} | {train:.1f} | {setup:.2f} | {logging:.2f} | "
              f"{1000 * logging / chunks:.1f} |")
    off, on = (statistics.median(r[0] for r in results[m]) for m in ("off", "on"))
    print(f"\nwall time with trackers / without: {on / off:.3f}")


if __name__ == "__main__":
    main()
