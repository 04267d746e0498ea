"""seqeval at D4RL scale: 1M-transition datasets with the paper's settings, measured.

Usage: .venv/bin/python benchmarks/bench_scale.py [--shapes hopper,halfcheetah]
       [--agents bc,td3_bc,iql,cql,rebrac] [--seconds 1] [--rounds 6] [--skip-load]

Datasets: random numbers in D4RL's layout (observations, actions, rewards, terminals, timeouts,
next_observations; 1000-step episodes, next observations chained), hopper-shaped (11/3) and
halfcheetah-shaped (17/6), 1,000,000 transitions. The paper's settings: T0 5000, gamma 1, K 1,
f_e 5000, 10 evaluation episodes of up to 1000 steps, 5 seeds trained in one vmapped program.

Each (shape, agent) runs in its own process, so its peak RSS is its own. Per agent:
- updates/s (all 5 seeds) through the protocol's own compiled program
  (`protocol.make_sequential_trainer`, scan length 5000 as in a real run) with the buffer at
  10k, 100k and 1M transitions, interleaved: round r times every size before round r + 1, so a
  change of machine load hits all sizes alike; the load average is recorded with each window;
- one evaluation (`seqeval.evaluate.Evaluator`: 5 seeds x 10 episodes, one batched policy call
  per step) in the real Gymnasium v5 environment with a random-weight agent; Hopper runs with
  `terminate_when_unhealthy=False` so every episode lasts 1000 steps, the worst case. The
  environments are stepped in full for the first agent of each shape; every agent times its
  own 1000 policy calls, and its evaluation is the first agent's environment time plus those;
- one checkpoint through `RunDir.save_checkpoint` (size, write time);
- the projected wall time of the whole protocol (995,000 gradient steps per seed, 199
  evaluations and checkpoints): train + evaluations + checkpoints + compile, and the
  evaluation share of it.
Load time: the D4RL-layout file through `seqeval.data.load_dataset('d4rl/<env>-medium-v2')`
with $D4RL_DATASET_DIR pointing at the written files, against reading the same arrays with
h5py ("reader not available" where seqeval cannot read D4RL files yet).
Retrain: useful against computed gradient updates of a default 8-size grid, with members
masked past their budget (the former schedule) and in a shrinking set (seqeval.retrain).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
import types
from pathlib import Path

import numpy as np

SHAPES = {"hopper": (11, 3, "Hopper-v5"), "halfcheetah": (17, 6, "HalfCheetah-v5")}
AGENTS = ("bc", "td3_bc", "iql", "cql", "rebrac")
SIZE = 1_000_000
EPISODE = 1000
T0, GAMMA, K, EVAL_EVERY, EPISODES, SEEDS = 5_000, 1, 1, 5_000, 10, 5
BUFFER_SIZES = (10_000, 100_000, 1_000_000)


def d4rl_arrays(shape: str, size: int = SIZE, seed: int = 0) -> dict[str, np.ndarray]:
    """Random transitions in D4RL's layout: 1000-step episodes ending in a timeout, a few
    terminals, next observations chained within an episode."""
    obs_dim, act_dim, _ = SHAPES[shape]
    rng = np.random.default_rng(seed)
    states = rng.standard_normal((size + 1, obs_dim), dtype=np.float32)
    observations, next_observations = states[:-1].copy(), states[1:].copy()
    step = np.arange(size) % EPISODE
    terminals = rng.random(size) < 1e-4
    timeouts = (step == EPISODE - 1) & ~terminals
    return {
        "observations": observations,
        "actions": rng.uniform(-1, 1, (size, act_dim)).astype(np.float32),
        "rewards": rng.standard_normal(size, dtype=np.float32),
        "terminals": terminals,
        "timeouts": timeouts,
        "next_observations": next_observations,
    }


def offline_data(shape: str, arrays: dict[str, np.ndarray]):
    """seqeval's OfflineData from D4RL-layout arrays (episodes end at terminals | timeouts)."""
    from seqeval.data import OfflineData

    ends = arrays["terminals"] | arrays["timeouts"]
    starts = np.concatenate([[0], np.flatnonzero(ends[:-1]) + 1]).astype(np.int64)
    act_dim = arrays["actions"].shape[1]
    return OfflineData(
        dataset_id=f"bench/{shape}-1m", observations=arrays["observations"],
        actions=arrays["actions"], rewards=arrays["rewards"],
        next_observations=arrays["next_observations"], terminations=arrays["terminals"],
        truncations=arrays["timeouts"], episode_starts=starts,
        action_low=-np.ones(act_dim, np.float32), action_high=np.ones(act_dim, np.float32),
        ref_min_score=None, ref_max_score=None)


def rss_bytes() -> int:
    with open("/proc/self/statm") as handle:
        return int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def load() -> float:
    return os.getloadavg()[0]


def make_env_factory(env_id: str):
    import gymnasium as gym

    options = {"terminate_when_unhealthy": False} if env_id.startswith("Hopper") else {}
    return lambda: gym.make(env_id, **options)


# ---------------------------------------------------------------------------------------------
# One (shape, agent), in its own process


def engine_worker(shape: str, agent_name: str, seconds: float, rounds: int,
                  full_evaluation: bool) -> dict:
    import jax
    import jax.numpy as jnp

    from seqeval import protocol
    from seqeval.agents import Spaces, get_agent, resolve_batch_size
    from seqeval.evaluate import Evaluator
    from seqeval.results import Progress, RunDir

    obs_dim, act_dim, env_id = SHAPES[shape]
    data = offline_data(shape, d4rl_arrays(shape))
    result: dict = {"shape": shape, "agent": agent_name, "rss_data": rss_bytes()}
    agent = get_agent(agent_name)
    config = agent.make_config({})
    batch_size = resolve_batch_size(agent)
    keys = [protocol.seed_keys(s) for s in range(SEEDS)]
    permutation_keys, init_keys, train_keys = (jnp.stack(k) for k in zip(*keys, strict=True))
    orders = jax.vmap(lambda k: protocol.block_permutation(k, (data.size,)))(permutation_keys)
    device_data = protocol.device_data(data)
    chunks = protocol.sequential_schedule(data.size, T0, GAMMA, EVAL_EVERY)
    offline_steps = sum(c.num_increments for c in chunks) * K
    states = protocol.init_states(agent, config, init_keys, Spaces(obs_dim, act_dim),
                                  protocol.dataset_stats(data), offline_steps)
    train = protocol.make_sequential_trainer(agent, config, protocol.SequentialTraining(
        batch_size, GAMMA, K, max(c.num_increments for c in chunks)))

    def timed(states, keys, size: int, steps: int):
        started, cpu_started = time.perf_counter(), time.process_time()
        states, keys, _, finite = train(states, keys, orders, device_data, size - steps, steps)
        jax.block_until_ready(finite)
        return (states, keys, time.perf_counter() - started,
                time.process_time() - cpu_started)

    started = time.perf_counter()
    states, keys, _, _ = timed(states, train_keys, BUFFER_SIZES[0], 2)
    result["compile_s"] = time.perf_counter() - started
    states, keys, probe, _ = timed(states, keys, BUFFER_SIZES[0], 4)
    steps = max(4, int(4 / probe * seconds))  # program steps (each: every seed's update)
    # Wall-clock updates/s, and updates per CPU-second of this process (all its threads):
    # the second is what an update costs, much less disturbed by other tenants' load.
    rates: dict[int, list[float]] = {size: [] for size in BUFFER_SIZES}
    cpu_rates: dict[int, list[float]] = {size: [] for size in BUFFER_SIZES}
    loads = []
    for _ in range(rounds):
        for size in BUFFER_SIZES:
            loads.append(load())
            states, keys, elapsed, cpu = timed(states, keys, size, steps)
            rates[size].append(steps * SEEDS / elapsed)
            cpu_rates[size].append(steps * SEEDS / cpu)
    result.update(steps_timed=steps, batch_size=batch_size, train_load=float(np.mean(loads)),
                  rates={str(s): r for s, r in rates.items()},
                  cpu_rates={str(s): r for s, r in cpu_rates.items()})

    policy = protocol.make_policy(agent, config)
    observations = np.zeros((SEEDS, EPISODES, obs_dim), np.float32)
    policy(states, observations).block_until_ready()  # compile
    started = time.perf_counter()
    for _ in range(EPISODE):  # an evaluation's policy calls, without the environments
        np.asarray(policy(states, observations))
    result["policy_s"] = time.perf_counter() - started
    if full_evaluation:
        evaluator = Evaluator(make_env_factory(env_id), list(range(SEEDS)), EPISODES,
                              data.action_low, data.action_high)
        result["eval_load"] = load()
        started = time.perf_counter()
        evaluator.evaluate(policy, states, 0)
        result.update(eval_s=time.perf_counter() - started, eval_env_steps=evaluator.env_steps)
        evaluator.close()

    with tempfile.TemporaryDirectory() as folder:
        run_dir = RunDir(folder)
        tree = {"states": states, "train_keys": keys, "explore_keys": keys, "online": None}
        started = time.perf_counter()
        run_dir.save_checkpoint(tree, Progress(segment=1))
        result["checkpoint_s"] = time.perf_counter() - started
        result["checkpoint_bytes"] = sum(p.stat().st_size for p in
                                         (Path(folder) / "checkpoint").iterdir())
    result["evaluations"] = len(chunks)
    result["offline_steps"] = offline_steps
    result["peak_rss"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    return result


def projected(result: dict) -> dict:
    """The whole protocol's wall time from the measured pieces."""
    rate = float(np.median([r for rs in result["rates"].values() for r in rs]))
    train_s = result["offline_steps"] * SEEDS / rate
    eval_s = result["evaluations"] * result["eval_s"]
    checkpoint_s = result["evaluations"] * result["checkpoint_s"]
    total = train_s + eval_s + checkpoint_s + result["compile_s"]
    return {"rate": rate, "train_h": train_s / 3600, "eval_h": eval_s / 3600,
            "total_h": total / 3600, "eval_share": eval_s / total}


# ---------------------------------------------------------------------------------------------
# Load time and retrain, in the main process


def write_d4rl_file(path: Path, arrays: dict[str, np.ndarray]) -> None:
    import h5py

    with h5py.File(path, "w") as handle:
        for name, values in arrays.items():
            handle.create_dataset(name, data=values)
        handle.create_dataset("metadata/algorithm", data="random (bench_scale)")


def load_rows(shapes: list[str]) -> list[str]:
    import h5py

    rows = []
    with tempfile.TemporaryDirectory() as folder:
        os.environ["D4RL_DATASET_DIR"] = folder
        for shape in shapes:
            path = Path(folder) / f"{shape}_medium-v2.hdf5"
            write_d4rl_file(path, d4rl_arrays(shape))
            megabytes = path.stat().st_size / 2**20
            started = time.perf_counter()
            with h5py.File(path, "r") as handle:
                {name: handle[name][()] for name in handle if name != "metadata"}
            read_s = time.perf_counter() - started
            rows.append(f"| {shape} | {megabytes:.0f} MiB | {read_s:.2f} | "
                        f"{load_through_seqeval(shape)} | {load():.1f} |")
    return rows


def load_through_seqeval(shape: str) -> str:
    """seconds to load `d4rl/<shape>-medium-v2` (first, then again), or why not."""
    try:
        from seqeval.data import load_dataset

        times = []
        for _ in range(2):
            started = time.perf_counter()
            data = load_dataset(f"d4rl/{shape}-medium-v2")
            times.append(time.perf_counter() - started)
        assert data.size == SIZE, f"{data.size} transitions"
        return f"{times[0]:.2f} (again: {times[1]:.2f})"
    except Exception as error:  # the D4RL reader is not merged yet: say so, do not crash
        first = str(error).splitlines()[0][:80] if str(error) else ""
        return f"reader not available ({type(error).__name__}: {first})"


def retrain_rows() -> list[str]:
    from seqeval import protocol
    from seqeval.retrain import RETRAIN_SEGMENT_STEPS, computed_updates, retrain_budgets

    rows = []
    for label, size, increment in (("30k transitions, gamma 5", 30_000, 5),
                                   ("30k transitions, gamma 1", 30_000, 1),
                                   ("1M transitions, gamma 1 (paper)", SIZE, 1)):
        settings = types.SimpleNamespace(increment=increment, steps_per_increment=K,
                                         retrain_steps=None, retrain_min_steps=1000)
        sizes = protocol.geometric_sizes(T0, size)
        budgets = np.array(retrain_budgets(settings, sizes, T0))
        segment = min(RETRAIN_SEGMENT_STEPS, int(budgets.max()))
        useful, computed = computed_updates(budgets, segment)
        masked = len(sizes) * int(budgets.max())
        rows.append(f"| {label} | {len(sizes)} | {useful:,} | {masked:,} "
                    f"({masked / useful:.2f}x) | {computed:,} ({computed / useful:.2f}x) |")
    return rows


def _figure(value: float) -> str:
    """Three significant figures at least (CQL runs ~1 update/s under load)."""
    return f"{value:,.0f}" if value >= 100 else f"{value:.3g}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shapes", default="hopper,halfcheetah")
    parser.add_argument("--agents", default=",".join(AGENTS))
    parser.add_argument("--seconds", type=float, default=1.0,
                        help="seconds per timed window (one buffer size, one round)")
    parser.add_argument("--rounds", type=int, default=6, help="interleaved rounds of sizes")
    parser.add_argument("--skip-load", action="store_true", help="no load-time rows")
    parser.add_argument("--worker", nargs=2, metavar=("SHAPE", "AGENT"), help=argparse.SUPPRESS)
    parser.add_argument("--full-evaluation", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(engine_worker(*args.worker, args.seconds, args.rounds,
                                       args.full_evaluation)))
        return

    import jax

    shapes = args.shapes.split(",")
    print(f"jax {jax.__version__}, {platform.processor() or platform.machine()}, "
          f"{os.cpu_count()} CPUs, {jax.devices()[0].platform}; load average {load():.1f}")
    print("\n## Retrain: gradient updates per seed, default 8-size grid (T0 5000, K 1)\n")
    print("| dataset | sizes | useful | computed, masked (before) | computed, shrinking set |")
    print("|---|---|---|---|---|")
    for row in retrain_rows():
        print(row, flush=True)
    if not args.skip_load:
        print("\n## Load time, 1M transitions in D4RL's layout\n")
        print("| shape | file | h5py read s | seqeval load s | load avg |")
        print("|---|---|---|---|---|")
        for row in load_rows(shapes):
            print(row, flush=True)

    print("\n## Engine, 1M transitions, 5 seeds, paper settings\n")
    print("| shape | agent | batch | updates/s @10k | @100k | @1M | max/min | "
          "updates per CPU-s @10k / 100k / 1M (max/min) | load avg | "
          "compile s | eval s (env steps) | eval load | ckpt MiB | ckpt s | RSS data MiB | "
          "peak RSS MiB | projected h (train + eval) | eval share |")
    print("|" + "---|" * 18)
    for shape in shapes:
        environment = None  # the first agent's evaluation without its policy calls
        for agent in args.agents.split(","):
            done = subprocess.run(
                [sys.executable, __file__, "--worker", shape, agent, "--seconds",
                 str(args.seconds), "--rounds", str(args.rounds)]
                + (["--full-evaluation"] if environment is None else []),
                capture_output=True, text=True)
            if done.returncode:
                print(f"| {shape} | {agent} | failed: {done.stderr.strip().splitlines()[-1]} |")
                continue
            r = json.loads(done.stdout.strip().splitlines()[-1])
            if environment is None:
                environment = {"s": r["eval_s"] - r["policy_s"], "load": r["eval_load"],
                               "steps": r["eval_env_steps"]}
            else:  # the environments cost the same whatever the agent: only policies differ
                r.update(eval_s=environment["s"] + r["policy_s"], eval_load=environment["load"],
                         eval_env_steps=environment["steps"])
            p = projected(r)
            medians = [float(np.median(r["rates"][str(s)])) for s in BUFFER_SIZES]
            cpu = [float(np.median(r["cpu_rates"][str(s)])) for s in BUFFER_SIZES]
            print(f"| {shape} | {agent} | {r['batch_size']} | "
                  + " | ".join(_figure(m) for m in medians)
                  + f" | {max(medians) / min(medians):.2f} | "
                  + " / ".join(_figure(c) for c in cpu)
                  + f" ({max(cpu) / min(cpu):.2f}) | "
                  f"{r['train_load']:.1f} | {r['compile_s']:.1f} | "
                  f"{r['eval_s']:.1f} ({r['eval_env_steps']:,}) | {r['eval_load']:.1f} | "
                  f"{r['checkpoint_bytes'] / 2**20:.1f} | {r['checkpoint_s']:.2f} | "
                  f"{r['rss_data'] / 2**20:.0f} | {r['peak_rss'] / 2**20:.0f} | "
                  f"{p['total_h']:.1f} ({p['train_h']:.1f} + {p['eval_h']:.1f}) | "
                  f"{100 * p['eval_share']:.0f}% |", flush=True)


if __name__ == "__main__":
    main()
