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

    # Time spent in the trackers: starting them, each checkpoint's logging, closing them.
    spent = {"seconds": 0.0, "calls": 0}

    def timed(function):
        def wrapper(*a, **k):
            started = time.perf_counter()
            try:
                return function(*a, **k)
            finally:
                spent["seconds"] += time.perf_counter() - started
                spent["calls"] += function.__name__ == "log_checkpoint"
        return wrapper

    for name in ("start", "log_checkpoint", "close"):
        setattr(tracking.Tracking, name, timed(getattr(tracking.Tracking, name)))

    initial = 17_500 if args.quick else 10_000
    common = dict(agent="bc", dataset="pendulum/expert-v0", initial_size=initial, increment=10,
                  steps_per_increment=1, eval_every=500, eval_episodes=2, num_seeds=2,
                  progress=False, agent_overrides=(("hidden_dims", "64,64"),))
    chunks = (20_000 - initial) // 500
    results: dict[str, list[tuple[float, float, float]]] = {"off": [], "on": []}
    for repetition in range(args.repetitions):
        for mode in ("off", "on"):
            spent.update(seconds=0.0, calls=0)
            log = ("tensorboard", "wandb") if mode == "on" else None
            out = tmp / f"{mode}-{repetition}"
            started = time.perf_counter()
            summary = run(RunSettings(out=str(out), log=log, **common))
            wall = time.perf_counter() - started
            results[mode].append((wall, summary["train_time"], spent["seconds"]))
            print(f"repetition {repetition} {mode}: wall {wall:.1f} s, train "
                  f"{summary['train_time']:.1f} s, trackers {spent['seconds']:.2f} s "
                  f"({spent['calls']} checkpoints)", flush=True)

    print(f"\njax {jax.__version__}, {os.cpu_count()} cores; BC 2x64, 2 seeds, "
          f"{chunks} chunks of 500 transitions, {args.repetitions} repetitions interleaved")
    print("| trackers | wall s (median) | train s (median) | in the trackers s (median) "
          "| per chunk ms |")
    print("|---|---|---|---|---|")
    for mode, rows in results.items():
        wall, train, trackers = (statistics.median(column) for column in zip(*rows, strict=True))
        label = "none" if mode == "off" else "tensorboard,wandb (offline)"
        print(f"| {label} | {wall:.1f} | {train:.1f} | {trackers:.2f} | "
              f"{1000 * trackers / chunks:.0f} |")
    off, on = (statistics.median(r[0] for r in results[m]) for m in ("off", "on"))
    print(f"\nwall time with trackers / without: {on / off:.3f}")


if __name__ == "__main__":
    main()
