"""Evaluation at the paper's settings, stepped in 1, 2, 4, ... worker processes.

Usage: .venv/bin/python benchmarks/bench_eval.py [--envs hopper,halfcheetah]
       [--workers 1,2,4] [--rounds 2]

One evaluation as the protocol runs it (`seqeval.evaluate.Evaluator`): 5 seeds x 10 episodes of
up to 1000 steps, stepped side by side with one batched, jitted policy call per step, with
TD3+BC's actor at random weights (the default networks, 5 seeds vmapped). Hopper runs with
`terminate_when_unhealthy=False`, so every episode lasts 1000 steps (the worst case, and the
case of a good policy). `--workers N` steps the 50 environments in N processes
(`seqeval run --eval-workers N`, `envs/rollout.ProcessEnvGroup`); 1 steps them in this process.

Per (environment, workers): wall time of one evaluation (the best of `--rounds`, the rounds
interleaved over the worker counts so that a change of machine load hits all alike; worker
start-up is timed apart, it happens once per run), environment steps per second, the speed-up
over one process, and whether the returns equal those of one process bit for bit (they must).
Results: benchmarks/README.md.
"""

from __future__ import annotations

import argparse
import functools
import os
import time

import numpy as np

SEEDS, EPISODES = 5, 10
ENVS = {"hopper": "Hopper-v5", "halfcheetah": "HalfCheetah-v5"}


def make_env(env_id: str):
    """A picklable factory (workers import gymnasium, not this script)."""
    import gymnasium as gym

    options = {"terminate_when_unhealthy": False} if env_id.startswith("Hopper") else {}
    return functools.partial(gym.make, env_id, **options)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--envs", default="hopper,halfcheetah")
    parser.add_argument("--workers", default="1,2")
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()

    import jax
    import jax.numpy as jnp

    from seqeval import protocol
    from seqeval.agents import DatasetStats, Spaces, get_agent
    from seqeval.evaluate import Evaluator

    worker_counts = [int(w) for w in args.workers.split(",")]
    print(f"cores: {len(os.sched_getaffinity(0))}, backend: {jax.default_backend()}, load "
          f"average: {os.getloadavg()[0]:.2f}; {SEEDS} seeds x {EPISODES} episodes x 1000 steps")
    header = ("| env | workers | start-up s | evaluation s | env steps/s | speed-up | "
              "returns equal |")
    print(header)
    print("|---|---|---|---|---|---|---|")
    for name in args.envs.split(","):
        env_id = ENVS[name]
        probe = make_env(env_id)()
        obs_dim = int(np.prod(probe.observation_space.shape))
        act_dim = int(np.prod(probe.action_space.shape))
        low, high = probe.action_space.low, probe.action_space.high
        probe.close()
        agent = get_agent("td3_bc")
        config = agent.make_config({})
        stats = DatasetStats.identity(obs_dim)
        keys = jnp.stack([protocol.seed_keys(s)[1] for s in range(SEEDS)])
        states = protocol.init_states(agent, config, keys, Spaces(obs_dim, act_dim), stats, 1)
        policy = protocol.make_policy(agent, config)

        evaluators, startup = {}, {}
        for workers in worker_counts:
            started = time.perf_counter()
            evaluators[workers] = Evaluator(make_env(env_id),
                                            list(range(SEEDS)), EPISODES, low, high, workers)
            startup[workers] = time.perf_counter() - started
        times: dict[int, list[float]] = {w: [] for w in worker_counts}
        returns: dict[int, np.ndarray] = {}
        for _ in range(args.rounds):
            for workers in worker_counts:
                evaluator = evaluators[workers]
                steps_before = evaluator.env_steps
                started = time.perf_counter()
                returns[workers] = evaluator.evaluate(policy, states, 0)
                times[workers].append(time.perf_counter() - started)
                steps = evaluator.env_steps - steps_before
        for evaluator in evaluators.values():
            evaluator.close()
        one = min(times[worker_counts[0]])
        for workers in worker_counts:
            best = min(times[workers])
            equal = np.array_equal(returns[workers], returns[worker_counts[0]])
            print(f"| {name} | {workers} | {startup[workers]:.2f} | {best:.2f} | "
                  f"{steps / best:,.0f} | {one / best:.2f}x | {'yes' if equal else 'NO'} |")


if __name__ == "__main__":
    main()
