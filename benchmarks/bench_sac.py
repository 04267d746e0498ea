"""SAC builder costs: compiled updates/s, environment steps/s, and per-dataset build times.

    .venv/bin/python benchmarks/bench_sac.py [--updates 3000] [--rounds 5] [--baseline REV]
                                             [--envs pendulum hopper] [--build-pendulum]

Updates/s: one jitted program runs a chunk of gradient steps (lax.scan) on a filled device
buffer, timed after compilation. With --baseline REV, the builder trainer of that git revision
(its envs/sac.py) is timed too, interleaved with the current one chunk by chunk in this one
process (the order alternating every round), so both see the same machine load; the median
of the per-round ratios is the speed-up. Env steps/s: Python stepping of `num_envs`
environments side by side with one batched jitted exploration call per step (what collection
costs). With
--build-pendulum the whole Pendulum suite is built into a temporary Minari store and each
dataset's card times are printed.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from seqeval.envs.registry import RECIPES
from seqeval.envs.rollout import EnvPool
from seqeval.envs.sac import empty_buffer, shared_learner

REPO = Path(__file__).resolve().parent.parent
CAPACITY = 100_000


def _filled(buffer):
    """The buffer's columns replaced by the same random rows for every trainer."""
    rng = np.random.default_rng(0)
    return buffer._replace(**{
        name: jnp.asarray(rng.normal(size=column.shape) if name != "actions"
                          else rng.uniform(-1, 1, size=column.shape), jnp.float32)
        for name, column in buffer._asdict().items() if name != "terminals"})


def _dims(env: str) -> tuple[int, int]:
    pool = EnvPool(RECIPES[env].gym_id, 1, 0)
    dims = pool.observation_dim, pool.action_dim
    pool.close()
    return dims


def current_trainer(env: str, chunk: int) -> Callable[[], None]:
    """One call = one compiled chunk of `chunk` updates of the current builder (the agent's
    update in the replay loop)."""
    recipe = RECIPES[env]
    observation_dim, action_dim = _dims(env)
    learner = shared_learner(recipe.sac, observation_dim, action_dim, recipe.budget.batch_size)
    buffer = _filled(empty_buffer(CAPACITY, observation_dim, action_dim))
    carry = [learner.init(jax.random.PRNGKey(0))]

    def run() -> None:
        carry[0], metrics = learner.update_chunk(carry[0], buffer, jnp.int32(CAPACITY), chunk)
        jax.block_until_ready(metrics)

    return run


def baseline_trainer(env: str, chunk: int, revision: str) -> Callable[[], None]:
    """The same for the builder trainer of git `revision` (its own SAC implementation)."""
    source = subprocess.check_output(["git", "show", f"{revision}:envs/sac.py"], cwd=REPO,
                                     text=True)
    name = f"bench_sac_baseline_{revision.replace('/', '_')}"
    module = importlib.util.module_from_spec(importlib.util.spec_from_loader(name, loader=None))
    sys.modules[name] = module
    try:
        exec(compile(source, f"{revision}:envs/sac.py", "exec"), module.__dict__)
    except ImportError as error:
        raise SystemExit(f"--baseline {revision}: its envs/sac.py does not import beside this "
                         f"tree ({error}); choose a later revision") from None
    recipe = RECIPES[env]
    observation_dim, action_dim = _dims(env)
    if hasattr(module, "Learner"):
        # A builder that trains the shared SAC agent: its loop around the agent module of the
        # working tree (the revision's file imports seqeval.algorithms.sac from here).
        agent = module.Learner(recipe.sac, observation_dim, action_dim,
                               recipe.budget.batch_size)
    else:  # the builder's own SAC, before the agent was shared
        config = module.SACConfig(hidden_dims=recipe.sac.actor_hidden_dims,
                                  batch_size=recipe.budget.batch_size)
        agent = module.SAC(config, observation_dim, action_dim)
    buffer = _filled(module.empty_buffer(CAPACITY, observation_dim, action_dim))
    state = [agent.init(jax.random.PRNGKey(0))]

    def run() -> None:
        state[0], metrics = agent.update_chunk(state[0], buffer, jnp.int32(CAPACITY), chunk)
        jax.block_until_ready(metrics)

    return run


def updates_per_second(trainers: dict[str, Callable[[], None]], chunk: int,
                       rounds: int) -> dict[str, list[float]]:
    """Updates/s of each trainer per round, chunks interleaved (first call compiles)."""
    for run in trainers.values():
        run()
    rates: dict[str, list[float]] = {name: [] for name in trainers}
    names = list(trainers)
    for round_index in range(rounds):
        for name in names if round_index % 2 == 0 else reversed(names):
            start = time.perf_counter()
            trainers[name]()
            rates[name].append(chunk / (time.perf_counter() - start))
    return rates


def env_steps_per_second(env: str, steps: int, num_envs: int) -> float:
    """Environment transitions per second with a batched jitted exploration call per step."""
    recipe = RECIPES[env]
    pool = EnvPool(recipe.gym_id, num_envs, 0)
    learner = shared_learner(recipe.sac, pool.observation_dim, pool.action_dim,
                             recipe.budget.batch_size)
    state = learner.init(jax.random.PRNGKey(0))["agent"]
    observations = pool.reset()
    key = jax.random.PRNGKey(1)
    learner.explore_at(state, observations, key, 0).block_until_ready()
    start = time.perf_counter()
    rounds = max(1, steps // num_envs)
    for step in range(rounds):  # as the builder steps: the key is folded inside the program
        actions = np.asarray(learner.explore_at(state, observations, key, step))
        observations, _, _ = pool.step(actions)
    seconds = time.perf_counter() - start
    pool.close()
    return rounds * num_envs / seconds


def build_pendulum() -> None:
    from seqeval.envs.datasets import build_datasets
    from seqeval.envs.store import read_card

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
    parser.add_argument("--updates", type=int, default=3000, help="updates per timed chunk")
    parser.add_argument("--rounds", type=int, default=5, help="timed chunks per trainer")
    parser.add_argument("--baseline", default=None, metavar="REV",
                        help="also time the builder trainer of this git revision, interleaved")
    parser.add_argument("--envs", nargs="+", default=["pendulum", "hopper"])
    parser.add_argument("--env-steps", type=int, default=20_000)
    parser.add_argument("--build-pendulum", action="store_true")
    args = parser.parse_args()
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
          f"jax {jax.__version__} on {jax.default_backend()}")
    for env in args.envs:
        recipe = RECIPES[env]
        trainers = {"current": current_trainer(env, args.updates)}
        if args.baseline:
            trainers[args.baseline] = baseline_trainer(env, args.updates, args.baseline)
        rates = updates_per_second(trainers, args.updates, args.rounds)
        sizes = "x".join(map(str, recipe.sac.actor_hidden_dims))
        for name, values in rates.items():
            print(f"{env:9s} SAC {sizes} batch {recipe.budget.batch_size} {name:>10s}: "
                  f"{statistics.median(values):8.0f} updates/s (median of {len(values)}: "
                  f"{', '.join(f'{v:.0f}' for v in values)})")
        if args.baseline:
            # Each round times both back to back, so the ratio within a round is the least
            # disturbed by a changing machine load; its median is the speed-up.
            current, baseline = rates["current"], rates[args.baseline]
            ratios = [a / b for a, b in zip(current, baseline, strict=True)]
            print(f"{env:9s} current / {args.baseline}: median of per-round ratios "
                  f"{statistics.median(ratios):.3f} (ratio of medians "
                  f"{statistics.median(current) / statistics.median(baseline):.3f})")
        for num_envs in (1, recipe.budget.num_envs, recipe.collect_envs):
            rate = env_steps_per_second(env, args.env_steps, num_envs)
            print(f"{env:9s} env steps/s with {num_envs:2d} envs side by side: {rate:8.0f}")
    if args.build_pendulum:
        build_pendulum()


if __name__ == "__main__":
    main()
