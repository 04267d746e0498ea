"""`seqeval demo`: a small but real sequential evaluation of every agent, in minutes on a CPU.

Builds the Pendulum datasets when missing, runs every registered agent through the sequential
protocol on one of them (small networks, a coarse increment, 5 evaluation episodes, so that
it fits a 2-core CPU), draws figures/demo.png and prints a results table.
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path

from seqeval.algorithms.base import available_agents, get_agent
from seqeval.plot import plot_runs
from seqeval.runner import RunSettings, run

DEMO_DATASET = "pendulum/medium-v0"
# Sized for a 2-core CPU (CQL is the slow one): one gradient step per 4 added transitions,
# 5 evaluation episodes, 64-unit networks, 2 seeds in one program; 4500 gradient steps per
# agent and seed.
DEMO_PROTOCOL = dict(initial_size=2000, increment=20, steps_per_increment=5, eval_every=3000,
                     eval_episodes=5, batch_size=256, num_seeds=2)
DEMO_NETWORK = "64,64"


def run_demo(out_dir: str = "runs/demo", figure: str = "figures/demo.png",
             agents: list[str] | None = None, dataset: str = DEMO_DATASET) -> int:
    from seqeval.envs.datasets import ensure_datasets

    started = time.perf_counter()
    ensure_datasets("pendulum")
    agents = agents or available_agents()
    run_dirs, table = [], []
    for name in agents:
        run_dir = Path(out_dir) / name
        if run_dir.exists():
            shutil.rmtree(run_dir)  # the demo always starts fresh
        small_networks = get_agent(name).network_overrides(DEMO_NETWORK)
        summary = run(RunSettings(agent=name, dataset=dataset, out=str(run_dir),
                                  agent_overrides=small_networks, **DEMO_PROTOCOL))
        run_dirs.append(str(run_dir))
        table.append((name, summary))
    paths = plot_runs(run_dirs, figure, title=f"seqeval demo: {dataset}")
    print()
    print(f"{'agent':<10} {'final score':>12} {'samples':>8} {'grad steps':>10} "
          f"{'updates/s':>10} {'wall s':>7}")
    for name, summary in table:
        print(f"{name:<10} {summary['last_mean_normalized_score']:>12.1f} "
              f"{summary['samples']:>8} {summary['gradient_steps']:>10} "
              f"{summary['updates_per_second']:>10.0f} {summary['wall_time']:>7.1f}")
    print(f"\nfigure: {', '.join(str(p) for p in paths)}; runs: {out_dir}; "
          f"total {time.perf_counter() - started:.0f} s")
    return 0
