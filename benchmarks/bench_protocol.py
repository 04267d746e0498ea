"""Speed of the evaluator itself: the sequential engine, seeds, retrain mode, the online phase.

Prints one table per question; numbers go to benchmarks/README.md. Uses the Pendulum suite
(built into a temporary Minari store unless MINARI_DATASETS_PATH already has it).

    python benchmarks/bench_protocol.py [--quick]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
import warnings
from pathlib import Path

warnings.filterwarnings("ignore", module="minari")


def _run(out_root: Path, name: str, **kwargs) -> tuple[dict, float]:
    from seqeval.runner import RunSettings, run

    started = time.perf_counter()
    summary = run(RunSettings(out=str(out_root / name), progress=False, **kwargs))
    return summary, time.perf_counter() - started


def bench_core(out_root: Path, dataset: str, steps_scale: float) -> None:
    """BC through the paper's protocol (gamma=1, K=1, f_e=5000, 10 episodes, 2x256)."""
    import jax

    from seqeval import protocol
    from seqeval.agents import Spaces, get_agent
    from seqeval.data import load_dataset

    data = load_dataset(dataset)
    initial = data.size - int(15_000 * steps_scale)
    summary, wall = _run(out_root, "core", agent="bc", dataset=dataset, initial_size=initial,
                         eval_every=5_000, eval_episodes=10)
    # Compile time of the chunk program, measured on its own (ahead-of-time).
    agent = get_agent("bc")
    config = agent.make_config()
    settings = protocol.SequentialTraining(batch_size=256, increment=1, steps_per_increment=1,
                                           max_increments=5_000)
    train = protocol.make_sequential_trainer(agent, config, settings)
    keys = jax.random.PRNGKey(0)[None]
    states = protocol.init_states(agent, config, keys, Spaces(data.observation_dim,
                                                              data.action_dim),
                                  protocol.dataset_stats(data), 10_000)
    orders = jax.numpy.arange(data.size, dtype=jax.numpy.int32)[None]
    started = time.perf_counter()
    train.lower(states, keys, orders, protocol.device_data(data), 1000, 10).compile()
    compile_seconds = time.perf_counter() - started
    evaluation_share = 1.0 - summary["train_time"] / summary["wall_time"]
    print("\n## BC, sequential protocol (gamma=1, K=1, f_e=5000, 10 episodes, 2x256, batch 256)")
    print("| dataset | gradient steps | updates/s | compile s | wall s | share in evaluation |")
    print("|---|---|---|---|---|---|")
    print(f"| {dataset} | {summary['gradient_steps']} | {summary['updates_per_second']:.0f} | "
          f"{compile_seconds:.2f} | {wall:.1f} | {evaluation_share:.0%} |")


def bench_seeds(out_root: Path, dataset: str, agent: str, steps: int) -> None:
    """Wall time of S seeds in one vmapped program against S separate runs."""
    from seqeval.data import load_dataset

    data = load_dataset(dataset)
    common = dict(agent=agent, dataset=dataset, initial_size=data.size - steps,
                  eval_every=steps, eval_episodes=2)
    print(f"\n## Seeds in one program ({agent}, 2x256, {steps} gradient steps per seed)")
    print("| seeds | wall s | train s | ratio to 1 seed (train) | updates/s (all seeds) |")
    print("|---|---|---|---|---|")
    base = None
    for seeds in (1, 2, 5):
        summary, wall = _run(out_root, f"seeds{seeds}", num_seeds=seeds, **common)
        base = base or summary["train_time"]
        print(f"| {seeds} | {wall:.1f} | {summary['train_time']:.1f} | "
              f"{summary['train_time'] / base:.2f} | {summary['updates_per_second']:.0f} |")


def bench_retrain(out_root: Path, dataset: str, agent: str, steps: int) -> None:
    """Retrain mode (8 sizes in one vmapped program) against one sequential run."""
    from seqeval.data import load_dataset

    data = load_dataset(dataset)
    sequential, _ = _run(out_root, "retrain-seq", agent=agent, dataset=dataset,
                         initial_size=data.size - steps, eval_every=steps, eval_episodes=2)
    retrain, wall = _run(out_root, "retrain", agent=agent, dataset=dataset, mode="retrain",
                         initial_size=1_000, retrain_steps=steps, eval_episodes=2)
    print(f"\n## Retrain mode ({agent}, 2x256, {len(retrain['sizes'])} sizes x {steps} steps, "
          "one vmapped program)")
    print("| run | useful updates/s | ratio to one sequential run |")
    print("|---|---|---|")
    print(f"| sequential, 1 seed | {sequential['updates_per_second']:.0f} | 1.00 |")
    print(f"| retrain, {len(retrain['sizes'])} sizes | {retrain['updates_per_second']:.0f} | "
          f"{retrain['updates_per_second'] / sequential['updates_per_second']:.2f} |")


def bench_online(out_root: Path, dataset: str, agent: str, env_steps: int) -> None:
    """The online phase: environment steps per second, including its gradient steps."""
    from seqeval.data import load_dataset
    from seqeval.results import read_evaluations

    data = load_dataset(dataset)
    summary, wall = _run(out_root, "online", agent=agent, dataset=dataset,
                         initial_size=data.size - 1_000, eval_every=env_steps,
                         eval_episodes=2, online_steps=env_steps)
    rows = read_evaluations(out_root / "online")
    offline_end = max(r["wall_time"] for r in rows if r["phase"] == "offline")
    online_wall = max(r["wall_time"] for r in rows if r["phase"] == "online") - offline_end
    print(f"\n## Online phase ({agent}, 2x256, {env_steps} env steps, 1 update per env step, "
          "blocks of 1000)")
    print("| env steps | online wall s (incl. updates and 1 evaluation) | env steps/s |")
    print("|---|---|---|")
    print(f"| {env_steps} | {online_wall:.1f} | {env_steps / online_wall:.0f} |")


def bench_prequential(out_root: Path, dataset: str, agent: str, steps_per_increment: int) -> None:
    """Cost of scoring each chunk before training on it (prequential signal)."""
    from seqeval.data import load_dataset

    data = load_dataset(dataset)
    common = dict(agent=agent, dataset=dataset, initial_size=5_000, eval_every=5_000,
                  eval_episodes=2, steps_per_increment=steps_per_increment)
    _, wall_off = _run(out_root, "no-prequential", prequential=False, **common)
    on, wall_on = _run(out_root, "prequential", prequential=True, **common)
    steps = on["gradient_steps"]
    print(f"\n## Prequential scoring ({agent}, 2x256, {steps} gradient steps, "
          f"{data.size - 5_000} scored transitions, f_e=5000)")
    print("| prequential | wall s | time spent scoring (incl. its compilation) | share |")
    print("|---|---|---|---|")
    print(f"| off | {wall_off:.1f} | | |")
    print(f"| on | {wall_on:.1f} | {on['prequential_time']:.2f} s | "
          f"{on['prequential_time'] / wall_on:.1%} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="smaller budgets (a smoke run)")
    args = parser.parse_args()
    scale = 0.2 if args.quick else 1.0
    if "MINARI_DATASETS_PATH" not in os.environ:
        os.environ["MINARI_DATASETS_PATH"] = tempfile.mkdtemp(prefix="seqeval-bench-")
    from seqeval.envs.datasets import ensure_datasets

    ensure_datasets("pendulum")
    import jax

    print(f"jax {jax.__version__}, devices {jax.devices()}, cores {os.cpu_count()}")
    with tempfile.TemporaryDirectory() as tmp:
        out_root = Path(tmp)
        bench_core(out_root, "seqeval/pendulum/expert-v0", scale)
        bench_seeds(out_root, "seqeval/pendulum/expert-v0", "td3_bc", int(3_000 * scale))
        bench_retrain(out_root, "seqeval/pendulum/expert-v0", "td3_bc", int(2_000 * scale))
        bench_online(out_root, "seqeval/pendulum/expert-v0", "td3_bc", int(5_000 * scale))
        bench_prequential(out_root, "seqeval/pendulum/expert-v0", "td3_bc", 1 if args.quick else 3)


if __name__ == "__main__":
    main()
