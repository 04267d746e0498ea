"""SAC builder costs: compiled updates/s, environment steps/s, and per-dataset build times.

    .venv/bin/python benchmarks/bench_sac.py [--updates 2000] [--build-pendulum]

Updates/s: one jitted program runs a chunk of gradient steps (lax.scan) on a filled device
buffer, timed after compilation. Env steps/s: Python stepping of `num_envs` environments side by
side with one batched jitted policy call per step (what collection costs). With
--build-pendulum the whole Pendulum suite is built into a temporary Minari store and each
dataset's card times are printed.
"""

from __future__ import annotations

import argparse
import os
import platform
import tempfile
import time

import jax
import jax.numpy as jnp
import numpy as np

from seqeval.envs.registry import RECIPES
from seqeval.envs.rollout import EnvPool
from seqeval.envs.sac import SAC, empty_buffer


def updates_per_second(env: str, updates: int, chunk: int = 1000) -> tuple[float, float]:
    """(compile seconds, gradient steps per second) for the recipe's network sizes."""
    recipe = RECIPES[env]
    pool = EnvPool(recipe.gym_id, 1, 0)
    agent = SAC(recipe.sac, pool.observation_dim, pool.action_dim)
    pool.close()
    state = agent.init(jax.random.PRNGKey(0))
    capacity = 100_000
    buffer = empty_buffer(capacity, agent.observation_dim, agent.action_dim)
    rng = np.random.default_rng(0)
    buffer = buffer._replace(
        observations=jnp.asarray(rng.normal(size=buffer.observations.shape), jnp.float32),
        actions=jnp.asarray(rng.uniform(-1, 1, size=buffer.actions.shape), jnp.float32),
        rewards=jnp.asarray(rng.normal(size=buffer.rewards.shape), jnp.float32),
        next_observations=jnp.asarray(rng.normal(size=buffer.observations.shape), jnp.float32),
    )
    size = jnp.int32(capacity)
    start = time.perf_counter()
    state, metrics = agent.update_chunk(state, buffer, size, chunk)
    jax.block_until_ready(metrics)
    compile_seconds = time.perf_counter() - start
    rounds = max(1, updates // chunk)
    start = time.perf_counter()
    for _ in range(rounds):
        state, metrics = agent.update_chunk(state, buffer, size, chunk)
    jax.block_until_ready(metrics)
    return compile_seconds, rounds * chunk / (time.perf_counter() - start)


def env_steps_per_second(env: str, steps: int, num_envs: int) -> float:
    """Environment transitions per second with a batched jitted policy call per step."""
    recipe = RECIPES[env]
    pool = EnvPool(recipe.gym_id, num_envs, 0)
    agent = SAC(recipe.sac, pool.observation_dim, pool.action_dim)
    actor = agent.init_actor(jax.random.PRNGKey(0))
    observations = pool.reset()
    key = jax.random.PRNGKey(1)
    agent.policy(actor, jnp.asarray(observations), key, False).block_until_ready()
    start = time.perf_counter()
    rounds = max(1, steps // num_envs)
    for step in range(rounds):
        actions = np.asarray(agent.policy(actor, jnp.asarray(observations),
                                          jax.random.fold_in(key, step), False))
        observations, _, _ = pool.step(actions)
    seconds = time.perf_counter() - start
    pool.close()
    return rounds * num_envs / seconds


def build_pendulum() -> None:
    from seqeval.envs.datasets import build_datasets, read_card

    with tempfile.TemporaryDirectory() as store:
        os.environ["MINARI_DATASETS_PATH"] = store
        start = time.perf_counter()
        ids = build_datasets("pendulum", progress=False)
        total = time.perf_counter() - start
        for dataset_id in ids:
            card = read_card(dataset_id)
            print(f"  {dataset_id:28s} {card['transitions']:>7d} transitions "
                  f"score {card['behaviour_normalized_score']:6.1f}  {card['build_seconds']}")
        print(f"  pendulum suite total (SAC + references + 5 datasets): {total:.1f} s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--updates", type=int, default=3000)
    parser.add_argument("--env-steps", type=int, default=20_000)
    parser.add_argument("--build-pendulum", action="store_true")
    args = parser.parse_args()
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
          f"jax {jax.__version__} on {jax.default_backend()}")
    for env in ("pendulum", "hopper"):
        recipe = RECIPES[env]
        compile_seconds, rate = updates_per_second(env, args.updates)
        print(f"{env:9s} SAC {'x'.join(map(str, recipe.sac.hidden_dims))} batch "
              f"{recipe.sac.batch_size}: {rate:8.0f} updates/s (compile {compile_seconds:.1f} s)")
        for num_envs in (1, recipe.budget.num_envs, recipe.collect_envs):
            rate = env_steps_per_second(env, args.env_steps, num_envs)
            print(f"{env:9s} env steps/s with {num_envs:2d} envs side by side: {rate:8.0f}")
    if args.build_pendulum:
        build_pendulum()


if __name__ == "__main__":
    main()
