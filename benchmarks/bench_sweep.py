"""A study of 8 small runs through `seqeval sweep` (Ray) against the same 8 runs one after
another in one process: wall time, and each run's overheads (Ray's worker startup, importing
JAX and seqeval, compilation with and without the study's persistent compilation cache).

Prints markdown tables for benchmarks/README.md. The runs: BC and TD3+BC on a Pendulum dataset
(built into a temporary Minari store) with first seeds 0, 1, 2 and 3: each agent's program
shapes occur four times, so later runs can load what the first compiled.

    python benchmarks/bench_sweep.py [--quick]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

warnings.filterwarnings("ignore", module="minari")

DATASETS = ("bench/pendulum-expert-v0",)
AGENTS = ("bc", "td3_bc")
# 10,000 gradient steps per run (T0 5000 of 10,000, 40 steps per 20 transitions), two
# evaluations of 5 episodes, 64x64 networks.
PROTOCOL = dict(initial_size=5000, increment=20, steps_per_increment=40, eval_every=2500,
                eval_episodes=5, batch_size=256, seed=[0, 1, 2, 3])
# --quick: 200 gradient steps per run, one evaluation of 2 episodes (checks the script; the
# runs are all overhead).
QUICK = dict(PROTOCOL, initial_size=8000, steps_per_increment=2, eval_every=2000,
             eval_episodes=2, batch_size=64)


def _toml_value(value) -> str:
    return json.dumps(value) if not isinstance(value, bool) else str(value).lower()


def write_spec(path: Path, protocol: dict) -> Path:
    lines = ["[study]", f"agents = {json.dumps(list(AGENTS))}",
             f"datasets = {json.dumps(list(DATASETS))}", "[protocol]"]
    lines += [f"{k} = {_toml_value(v)}" for k, v in protocol.items()]
    lines += ["[agent]", "hidden_dims = [64, 64]"]
    path.write_text("\n".join(lines) + "\n")
    return path


def build_datasets(store: Path) -> None:
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
    from pendulum_data import make_pendulum_dataset

    os.environ["MINARI_DATASETS_PATH"] = str(store)
    make_pendulum_dataset(DATASETS[0], episodes=50, expert_fraction=1.0, action_noise=0.1)


def sequential(spec: Path, out: Path, cache: bool) -> dict:
    """The study's runs one after another in this process (run as a child process, so JAX
    starts fresh): per-run timings as JSON."""
    started = time.perf_counter()
    from seqeval.spec import expand_spec, read_spec
    from seqeval.worker import execute_run, use_compile_cache

    if cache:
        use_compile_cache(out / "compile_cache")
    import_seconds = time.perf_counter() - started
    plan = expand_spec(read_spec(spec), spec.parent)
    runs = []
    for index, run in enumerate(plan):
        outcome = execute_run(run.run_settings(out / run.default_id), None)
        assert outcome["status"] == "complete", outcome
        runs.append({"agent": run.agent_name, "began": index, "finished": index + 0.5,
                     **{k: outcome[k] for k in ("wall_time", "compile_seconds",
                                                "trace_seconds", "cache_hits")}})
    return {"wall": time.perf_counter() - started, "import_seconds": import_seconds,
            "runs": runs}


def through_ray(spec: Path, out: Path, cache: bool) -> dict:
    from seqeval.ray_cluster import ray_session
    from seqeval.sweep import SweepOptions, run_study

    started = time.perf_counter()
    with ray_session(None, out):
        pass
    ray_start = time.perf_counter() - started
    started = time.perf_counter()
    state = run_study(spec, out, SweepOptions(compile_cache=cache, progress=False))
    wall = time.perf_counter() - started
    runs = [{"agent": r["agent_name"], "began": r["started"], "finished": r["finished"],
             **{k: r[k] for k in ("wall_time", "compile_seconds", "trace_seconds", "cache_hits",
                                  "startup_seconds", "import_seconds", "pid")}}
            for r in state["runs"]]
    assert all(r["status"] == "complete" for r in state["runs"]), state["runs"]
    return {"wall": wall, "ray_start": ray_start, "runs": runs}


def _first_and_later(runs: list[dict]) -> tuple[float, float]:
    """Compile seconds of each agent's first run (mean over agents), and the median over the
    runs that started after their agent's first run had finished (runs started alongside the
    first compile the same programs too)."""
    firsts, laters = [], []
    for agent in AGENTS:
        mine = sorted((r for r in runs if r["agent"] == agent), key=lambda r: r["began"])
        firsts.append(mine[0]["compile_seconds"])
        laters += [r["compile_seconds"] for r in mine[1:] if r["began"] > mine[0]["finished"]]
    return statistics.mean(firsts), statistics.median(laters) if laters else math.nan


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny runs (checks the script)")
    parser.add_argument("--sequential", metavar="SPEC", help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    parser.add_argument("--cache", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.sequential:  # the child process of one sequential measurement
        print(json.dumps(sequential(Path(args.sequential), Path(args.out), args.cache)))
        return

    root = Path(tempfile.mkdtemp(prefix="bench-sweep-"))
    build_datasets(root / "store")
    spec = write_spec(root / "spec.toml", QUICK if args.quick else PROTOCOL)
    cores = len(os.sched_getaffinity(0))
    results = {}
    for cache in (False, True):
        name = "cache" if cache else "nocache"
        child = subprocess.run(
            [sys.executable, __file__, "--sequential", str(spec), "--out",
             str(root / f"seq-{name}")] + (["--cache"] if cache else []),
            capture_output=True, text=True, check=True, env=os.environ)
        results[("one process", cache)] = json.loads(child.stdout.splitlines()[-1])
        results[("Ray", cache)] = through_ray(spec, root / f"ray-{name}", cache)

    runs = len(results[("Ray", True)]["runs"])
    print(f"\n## {runs} runs ({' and '.join(AGENTS)} x 4 seeds on Pendulum expert"
          f"{', quick budgets' if args.quick else ''}), {cores} cores, 1 CPU per Ray run\n")
    print("| how | compile cache | wall s | one process / Ray | compile s, first run "
          "| compile s, later identical runs | trace s per run |")
    print("|---|---|---|---|---|---|---|")
    for cache in (False, True):
        for how in ("one process", "Ray"):
            result = results[(how, cache)]
            first, later = _first_and_later(result["runs"])
            ratio = results[("one process", cache)]["wall"] / result["wall"]
            trace = statistics.median(r["trace_seconds"] for r in result["runs"])
            print(f"| {how} | {'on' if cache else 'off'} | {result['wall']:.1f} | "
                  f"{ratio:.2f} | {first:.2f} | {later:.2f} | {trace:.2f} |")

    ray_runs = sorted(results[("Ray", True)]["runs"], key=lambda r: r["began"])
    workers = {}
    for run in ray_runs:
        workers.setdefault(run["pid"], run)  # each worker's first run
    fresh = list(workers.values())
    reused = [r for r in ray_runs if all(r is not f for f in fresh)]

    def median(runs: list[dict], key: str) -> str:
        return f"{statistics.median(r[key] for r in runs):.2f}" if runs else "-"

    print("\nOverheads through Ray (compile cache on), medians; a worker's first run pays for "
          "starting the worker and importing JAX and seqeval:\n")
    print("| Ray start s (once per sweep) | workers | worker start s | import s | "
          "startup s, reused worker | run wall s, first in worker | run wall s, reused worker "
          "| run wall s, one process |")
    print("|---|---|---|---|---|---|---|---|")
    print(f"| {results[('Ray', True)]['ray_start']:.1f} | {len(fresh)} | "
          f"{median(fresh, 'startup_seconds')} | {median(fresh, 'import_seconds')} | "
          f"{median(reused, 'startup_seconds')} | {median(fresh, 'wall_time')} | "
          f"{median(reused, 'wall_time')} | "
          f"{median(results[('one process', True)]['runs'], 'wall_time')} |")
    print(f"\n(one process: importing JAX and seqeval took "
          f"{results[('one process', True)]['import_seconds']:.1f} s, once)")


if __name__ == "__main__":
    main()
