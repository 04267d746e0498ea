"""`seqeval demo`: the whole evaluation, small but real, in minutes on a CPU.

Builds the Pendulum datasets when missing, then, on one of them, runs the paper's four agents
through the sequential protocol followed by online fine-tuning, and retrains a fresh TD3+BC at
a few dataset sizes; draws it all in one figure (figures/demo.png, by the report's figure code)
and prints a results table. Sized for a 2-core CPU: small networks, a coarse increment, few
evaluation episodes.
"""

from __future__ import annotations

import dataclasses
import multiprocessing
import os
import shutil
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path

import numpy as np

from seqeval.algorithms.registry import get_agent
from seqeval.errors import UserError
from seqeval.runner import RunSettings, run

DEMO_DATASET = "seqeval/pendulum/medium-v0"  # 20,000 transitions
# The four agents of the paper; the other built-ins (sac, rebrac, awac) are one flag away.
DEMO_AGENTS = ("bc", "td3_bc", "iql", "cql")
# One gradient step per 4 added transitions (4,500 per agent and seed from T0 = 2,000),
# 5 evaluation episodes, batches of 128 (CQL's cost on a CPU is proportional to the batch);
# 4 seeds in one program, so that the 95% band says something.
DEMO_PROTOCOL = dict(initial_size=2000, increment=20, steps_per_increment=5, eval_every=2000,
                     eval_episodes=5, batch_size=128, num_seeds=4)
DEMO_NETWORK = "64,64"
# Online fine-tuning after the offline pass: environment steps, one gradient step each.
DEMO_ONLINE_STEPS = 3000
# Retraining a fresh agent at each of these sizes, for as many gradient steps as the sequential
# agent had taken at that size (at least 1,000), all in one program: the classic data-scaling
# points beside the sequential curve. One agent, to keep the demo within minutes on a CPU.
DEMO_RETRAIN_SIZES = (5000, 10000, 20000)
DEMO_RETRAIN_AGENTS = ("td3_bc",)
DEMO_PANEL_WIDTH = 5.0  # inches: one panel, wider than a paper column, for the README
# On a CPU the agents train side by side, one process per core and one XLA thread each: the
# demo's programs are too small for XLA's threads to keep two cores busy. Costliest first.
DEMO_COST_ORDER = ("cql", "td3_bc", "iql", "bc")
# CQL's penalty from 5 sampled actions per source, not 10: on one core CQL alone took 223 s,
# longer than the other three agents together (119 s); with 5 it is about 1.6x faster.
DEMO_AGENT_SETTINGS = {"cql": (("num_sampled_actions", "5"),)}


def demo_settings(agent: str, out_dir: Path, dataset: str = DEMO_DATASET) -> list[RunSettings]:
    """The demo's runs of one agent: sequential then online, and retrain at each size."""
    common = dict(agent=agent, dataset=dataset,
                  agent_overrides=(get_agent(agent).network_overrides(DEMO_NETWORK)
                                   + DEMO_AGENT_SETTINGS.get(agent, ())),
                  **DEMO_PROTOCOL)
    runs = [RunSettings(out=str(out_dir / agent), online_steps=DEMO_ONLINE_STEPS, **common)]
    if agent in DEMO_RETRAIN_AGENTS:
        runs.append(RunSettings(out=str(out_dir / f"{agent}-retrain"), mode="retrain",
                                sizes=DEMO_RETRAIN_SIZES, **common))
    return runs


# The demo's own output folder is marked, so that it only ever deletes what it wrote.
DEMO_MARKER = ".seqeval-demo"
# What a run directory holds (seqeval/results.py): the only files the demo deletes.
RUN_FILES = ("config.json", "summary.json", "evaluations.csv", "training.csv",
             "prequential.csv", "run.lock")
CHECKPOINT_FILES = ("progress.json", "state-*.npz")


def _foreign_file(run_dir: Path) -> Path | None:
    """A file in `run_dir` that no seqeval run writes (None: only a run's own files)."""
    for path in run_dir.iterdir():
        if path.name == "checkpoint" and path.is_dir():
            for inner in path.iterdir():
                if not (inner.is_file() and (inner.name.endswith(".tmp") or any(
                        inner.match(pattern) for pattern in CHECKPOINT_FILES))):
                    return inner
        elif not (path.is_file() and (path.name in RUN_FILES or path.name.endswith(".tmp"))):
            return path
    return None


def check_out_dir(out_dir: Path, run_dirs: list[Path]) -> None:
    """Refuse an `out_dir` holding anything the demo did not write (it deletes nothing)."""
    if out_dir.exists() and not out_dir.is_dir():
        raise UserError(f"--out '{out_dir}' is a file; pass a new or empty folder")
    if out_dir.is_dir() and any(out_dir.iterdir()) and not (out_dir / DEMO_MARKER).is_file():
        raise UserError(f"--out '{out_dir}' holds files the demo did not write; pass a new or "
                        "empty folder (the demo replaces its runs in it)")
    for run_dir in run_dirs:
        if run_dir.exists():
            foreign = _foreign_file(run_dir) if run_dir.is_dir() else run_dir
            if foreign is not None:
                raise UserError(f"'{foreign}' was not written by the demo, which would replace "
                                f"'{run_dir}'; move it away or pass another --out")


def prepare_out_dir(out_dir: Path, run_dirs: list[Path]) -> None:
    """Make `out_dir` the demo's folder and clear the demo's previous runs in it (the demo
    always starts fresh), once `check_out_dir` has passed."""
    check_out_dir(out_dir, run_dirs)
    for run_dir in run_dirs:
        if run_dir.exists():
            shutil.rmtree(run_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / DEMO_MARKER).write_text("made by 'seqeval demo', which replaces its runs here\n")


def _final(values: list[np.ndarray]) -> str:
    return f"{np.mean(values):.1f}" if values else "-"


def _train_agent(runs: list[RunSettings]) -> float:
    """Train one agent's runs, one after another; their wall time in seconds."""
    started = time.perf_counter()
    for settings in runs:
        run(settings)
    return time.perf_counter() - started


def _train(planned: dict[str, list[RunSettings]]) -> dict[str, float]:
    """Every agent's runs (one process per core on a CPU); each agent's wall time."""
    import jax

    from seqeval.worker import run_environment

    processes = min(len(planned), len(os.sched_getaffinity(0)))
    if processes < 2 or jax.default_backend() != "cpu":
        return {name: _train_agent(runs) for name, runs in planned.items()}
    # The children inherit the environment: one XLA thread each, set before they import JAX.
    environment = run_environment(1, 0)
    saved = {name: os.environ.get(name) for name in environment}
    os.environ.update(environment)
    order = sorted(planned, key=lambda n: DEMO_COST_ORDER.index(n) if n in DEMO_COST_ORDER
                   else -1)  # unknown agents first: their cost is not known
    print(f"training {', '.join(order)} in {processes} processes side by side")
    seconds = {}
    try:
        with ProcessPoolExecutor(processes,
                                 mp_context=multiprocessing.get_context("spawn")) as pool:
            futures = {pool.submit(_train_agent, [dataclasses.replace(s, progress=False)
                                                  for s in planned[name]]): name
                       for name in order}
            for future in as_completed(futures):
                seconds[futures[future]] = future.result()
                print(f"  {futures[future]}: done in {seconds[futures[future]]:.0f} s")
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
    return {name: seconds[name] for name in planned}


def run_demo(out_dir: str = "runs/demo", figure: str = "figures/demo.png",
             agents: list[str] | None = None, dataset: str = DEMO_DATASET) -> int:
    from seqeval.envs.datasets import ensure_datasets
    from seqeval.figures import curves_figure
    from seqeval.plot import figure_stem
    from seqeval.runs import load_groups

    started = time.perf_counter()
    planned = {name: demo_settings(name, Path(out_dir), dataset)
               for name in agents or DEMO_AGENTS}
    run_paths = [Path(s.out) for runs in planned.values() for s in runs]
    check_out_dir(Path(out_dir), run_paths)  # before the datasets are built
    ensure_datasets("pendulum")
    prepare_out_dir(Path(out_dir), run_paths)
    seconds = _train(planned)
    run_dirs = [settings.out for runs in planned.values() for settings in runs]
    groups, _ = load_groups(run_dirs)
    paths = curves_figure(groups, figure_stem(figure, out_dir), prequential=False,
                          # two lines: one ran past the panel into the legend
                          title=f"seqeval demo, {DEMO_PROTOCOL['num_seeds']} seeds\n{dataset}",
                          panel_width=DEMO_PANEL_WIDTH)
    print()
    print(f"{'agent':<10} {'offline':>8} {'online':>8} {'retrain':>8} {'wall s':>7}   "
          "(final normalized score, mean over seeds; retrain: at the full dataset)")
    for name in seconds:
        curves = [s for g in groups if g.method.agent_name == name and g.mode == "sequential"
                  for s in g.seeds]
        retrained = [s for g in groups if g.method.agent_name == name and g.mode == "retrain"
                     for s in g.seeds]
        offline = [s.offline_values[-1] for s in curves]
        online = [s.values[-1] for s in curves if s.online.any()]
        at_full = [s.values[-1] for s in retrained]
        print(f"{name:<10} {_final(offline):>8} {_final(online):>8} {_final(at_full):>8} "
              f"{seconds[name]:>7.1f}")
    print(f"\nfigure: {', '.join(str(p) for p in paths)}; runs: {out_dir}; "
          f"total {time.perf_counter() - started:.0f} s")
    return 0
