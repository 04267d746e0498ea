"""Gradient-update throughput of every agent on synthetic data shaped like D4RL hopper.

Usage: .venv/bin/python benchmarks/bench_agents.py
       [--agents td3_bc,iql,cql,cql_2x256,bc,rebrac,awac] [--seconds 20] [--rounds 5]
       [--layers auto|cpu|plain]

For each agent:
- compile time of that program;
- updates/s: the median (and best) over `--rounds` timed calls of about `--seconds`/rounds
  seconds each;
- FLOPs per update from XLA's cost analysis of one update (a scan body is counted once, so the
  update is analysed on its own; the delayed actor of TD3+BC and ReBRAC is counted once per
  policy_frequency);
- each agent at its own batch size (`resolve_batch_size`: 256, ReBRAC 1024);
- achieved GFLOP/s and its ratio to a 4096x4096 float32 matmul. The machine's speed drifts
  (other tenants, clocks), so every timed agent call is paired with a matmul timing taken just
  before it, and the ratio is computed per pair; the median pair and the lowest are printed.
`cql_2x256` is CQL with 2x256 networks, the size of the JAX reference quoted in issue 3.
`--layers` picks the network layers: `auto` (the backend's choice: seqeval.algorithms.cpu_layers
on CPU, the plain layers on GPU/TPU), or forces `cpu` or `plain` to compare the two on one
backend.
"""

from __future__ import annotations

import argparse
import dataclasses
import platform
import statistics
import time
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp

from seqeval.agents import Batch, DatasetStats, Spaces, get_agent, resolve_batch_size
from seqeval.algorithms import nets, rebrac, td3_bc, td3_family

OBSERVATION_DIM, ACTION_DIM, DATASET_SIZE = 11, 3, 1_000_000
# Agents on TD3's schedule (critic_step every step, actor_step less often), each with its
# (critic target, actor loss) pieces of td3_family.
DELAYED_ACTOR = {"td3_bc": (td3_bc._critic_target, td3_bc._actor_loss),
                 "rebrac": (rebrac._critic_target, rebrac._actor_loss)}

# name -> (registered agent, config overrides); defaults are the reference network sizes.
VARIANTS: dict[str, tuple[str, dict[str, Any]]] = {
    "bc": ("bc", {}),
    "td3_bc": ("td3_bc", {}),
    "iql": ("iql", {}),
    "cql": ("cql", {}),
    "cql_2x256": ("cql", {"actor_hidden_dims": (256, 256), "critic_hidden_dims": (256, 256)}),
    "rebrac": ("rebrac", {}),
    "awac": ("awac", {}),
}


def synthetic_dataset(key: jax.Array) -> Batch:
    keys = jax.random.split(key, 6)
    terminals = (jax.random.uniform(keys[4], (DATASET_SIZE,)) < 0.01).astype(jnp.float32)
    return Batch(
        observations=jax.random.normal(keys[0], (DATASET_SIZE, OBSERVATION_DIM)),
        actions=jax.random.uniform(keys[1], (DATASET_SIZE, ACTION_DIM), minval=-1, maxval=1),
        rewards=jax.random.normal(keys[2], (DATASET_SIZE,)),
        next_observations=jax.random.normal(keys[3], (DATASET_SIZE, OBSERVATION_DIM)),
        terminals=terminals,
        next_actions=jax.random.uniform(keys[5], (DATASET_SIZE, ACTION_DIM), minval=-1,
                                        maxval=1),
        next_action_valid=1.0 - terminals,
    )


def sample(data: Batch, key: jax.Array, batch_size: int) -> Batch:
    rows = jax.random.randint(key, (batch_size,), 0, DATASET_SIZE)
    return jax.tree.map(lambda column: column[rows], data)


def cost_flops(function: Callable, *args) -> float:
    analysis = jax.jit(function).lower(*args).compile().cost_analysis()
    if isinstance(analysis, list):  # older jax returns one dict per device
        analysis = analysis[0]
    return float(analysis["flops"])


class MatmulReference:
    """Float32 GFLOP/s of a large square matmul: the best of the calls made in `seconds`."""

    def __init__(self, size: int = 4096) -> None:
        self.flops = 2 * size**3
        self.a = jax.random.normal(jax.random.PRNGKey(1), (size, size))
        self.b = jax.random.normal(jax.random.PRNGKey(2), (size, size))
        self.matmul = jax.jit(jnp.matmul).lower(self.a, self.b).compile()
        self.matmul(self.a, self.b).block_until_ready()

    def gflops(self, seconds: float = 1.0) -> float:
        best, deadline = float("inf"), time.perf_counter() + seconds
        while time.perf_counter() < deadline:
            start = time.perf_counter()
            self.matmul(self.a, self.b).block_until_ready()
            best = min(best, time.perf_counter() - start)
        return self.flops / best / 1e9


def flops_per_update(name: str, agent, config, state, batch, key) -> float:
    if agent.name in DELAYED_ACTOR:
        # The cost analysis counts a cond's branch in full; TD3+BC and ReBRAC run the actor
        # branch only every policy_frequency-th step, so cost the two halves separately.
        critic_target, actor_loss = DELAYED_ACTOR[agent.name]
        critic = cost_flops(
            lambda s, b, k: td3_family.critic_step(config, s, b, k, critic_target)[0],
            state, batch, key)
        actor = cost_flops(lambda s, b: td3_family.actor_step(config, s, b, actor_loss),
                           state, batch)
        return critic + actor / config.policy_frequency
    return cost_flops(lambda s, b, k: agent.update(config, s, b, k), state, batch, key)


def bench_agent(name: str, data: Batch, seconds: float, rounds: int,
                reference: MatmulReference) -> dict[str, float]:
    agent_name, overrides = VARIANTS[name]
    agent = get_agent(agent_name)
    config = dataclasses.replace(agent.make_config({}), **overrides)
    spaces = Spaces(OBSERVATION_DIM, ACTION_DIM)
    stats = DatasetStats.identity(OBSERVATION_DIM)
    state = agent.init(config, jax.random.PRNGKey(0), spaces, stats, 1_000_000)
    key = jax.random.PRNGKey(1)
    batch_size = resolve_batch_size(agent)
    flops = flops_per_update(name, agent, config, state, sample(data, key, batch_size), key)

    def train(state, key, data, num_updates):
        def step(carry, _):
            state, key = carry
            key, batch_key, update_key = jax.random.split(key, 3)
            state, metrics = agent.update(config, state, sample(data, batch_key, batch_size),
                                          update_key)
            return (state, key), metrics["critic_loss" if "critic_loss" in metrics
                                         else "actor_loss"]

        (state, key), losses = jax.lax.scan(step, (state, key), None, length=num_updates)
        return state, key, losses[-1]

    # Size each timed call from a rough first estimate so calls last seconds/rounds.
    probe_updates = 10
    jitted = jax.jit(train, static_argnums=3)
    state, key, loss = jitted(state, key, data, probe_updates)
    loss.block_until_ready()
    start = time.perf_counter()
    state, key, loss = jitted(state, key, data, probe_updates)
    loss.block_until_ready()
    estimate = probe_updates / (time.perf_counter() - start)
    num_updates = max(10, int(estimate * seconds / rounds))

    start = time.perf_counter()
    compiled = jitted.lower(state, key, data, num_updates).compile()
    compile_seconds = time.perf_counter() - start
    rates, peaks, ratios = [], [], []
    for _ in range(rounds):
        peak = reference.gflops()
        start = time.perf_counter()
        state, key, loss = compiled(state, key, data)
        loss.block_until_ready()
        rate = num_updates / (time.perf_counter() - start)
        rates.append(rate)
        peaks.append(peak)
        ratios.append(flops * rate / 1e9 / peak)
    rate = statistics.median(rates)
    return {"batch_size": batch_size, "updates_per_s": rate, "best_updates_per_s": max(rates),
            "compile_s": compile_seconds,
            "gflop_per_update": flops / 1e9, "gflop_per_s": flops * rate / 1e9,
            "matmul_gflop_per_s": statistics.median(peaks),
            "ratio": statistics.median(ratios), "lowest_ratio": min(ratios),
            "updates_timed": num_updates, "final_loss": float(loss)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--agents", default="td3_bc,iql,cql,cql_2x256,bc,rebrac,awac")
    parser.add_argument("--seconds", type=float, default=20.0, help="timed seconds per agent")
    parser.add_argument("--rounds", type=int, default=5,
                        help="timed calls per agent, each paired with a matmul timing")
    parser.add_argument("--layers", choices=("auto", "cpu", "plain"), default="auto",
                        help="network layers: the backend's choice, or force one form")
    args = parser.parse_args()
    if args.layers != "auto":
        nets.use_cpu_layers = lambda: args.layers == "cpu"

    print(f"jax {jax.__version__} on {platform.processor() or platform.machine()}, "
          f"{jax.devices()[0].platform}, {jax.local_device_count()} device(s), "
          f"{'CPU-tuned' if nets.use_cpu_layers() else 'plain'} layers")
    data = synthetic_dataset(jax.random.PRNGKey(0))
    reference = MatmulReference()
    print(f"| {'agent':<10} | {'batch':>5} | {'updates/s':>9} | {'best':>7} | {'compile s':>9} | "
          f"{'GFLOP/update':>12} | {'GFLOP/s':>7} | {'matmul GFLOP/s':>14} | "
          f"{'% matmul':>8} | {'lowest %':>8} |")
    print("|" + "|".join(["---"] * 10) + "|")
    for name in args.agents.split(","):
        r = bench_agent(name, data, args.seconds, args.rounds, reference)
        print(f"| {name:<10} | {r['batch_size']:>5} | {r['updates_per_s']:>9.1f} | "
              f"{r['best_updates_per_s']:>7.1f} | "
              f"{r['compile_s']:>9.2f} | {r['gflop_per_update']:>12.3f} | "
              f"{r['gflop_per_s']:>7.1f} | {r['matmul_gflop_per_s']:>14.0f} | "
              f"{100 * r['ratio']:>7.1f}% | {100 * r['lowest_ratio']:>7.1f}% |", flush=True)


if __name__ == "__main__":
    main()
