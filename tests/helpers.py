"""Helpers shared by several test modules (no test module imports another).

Dataset ids of the session's Pendulum store, the installed command's path, hand-made run
directories, a probe agent that records what it was trained on, an agent that diverges on
purpose, and small agent configurations with a synthetic batch.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import os
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
from suite_flags import training_flags

from seqeval import protocol
from seqeval.agents import Agent, Batch, DatasetStats, Spaces, get_agent

# The session's Pendulum datasets (tests/conftest.py's `pendulum_store`).
EXPERT = "test/pendulum-expert-v0"
MIXED = "test/pendulum-mixed-v0"
RANDOM = "test/pendulum-random-v0"

# The venv's `seqeval` console script, as a user runs it.
SEQEVAL = os.path.join(os.path.dirname(sys.executable), "seqeval")


def optimized_environment(**extra: str) -> dict[str, str]:
    """The environment for a child process compiled for long training loops.

    The suite compiles at level 0 without the fusion emitters (tests/suite_flags.py): quicker
    to compile, slower to run. The learning tests, whose time goes to 5,000 updates, run in a
    child process with the fusion emitters at level 1 instead."""
    return {**os.environ, "XLA_FLAGS": training_flags(os.environ.get("XLA_FLAGS", "")), **extra}


def tiny_recipe(env: str, reference_episodes: int, sac_width: int):
    """`env`'s dataset recipe for a tiny test build: fewer episodes behind each reference score
    and SAC on sac_width x sac_width networks (the recipe's SAC is most of a build's time)."""
    from seqeval.algorithms.sac import SACConfig
    from seqeval.envs import registry

    widths = (sac_width, sac_width)
    return dataclasses.replace(registry.RECIPES[env], reference_episodes=reference_episodes,
                               sac=SACConfig(actor_hidden_dims=widths, critic_hidden_dims=widths))


# ---------------------------------------------------------------------------------------------
# Hand-made run directories (report, plot, select).

DATASET_SIZE = 20_000
EVAL_POINTS = [5_000, 10_000, 15_000, 20_000]


def write_run(path: Path, agent: str, dataset: str, seeds: dict[int, list[float]],
              ref: tuple[float, float] | None = (0.0, 1000.0), online: dict | None = None,
              mode: str = "sequential", samples: list[int] = EVAL_POINTS,
              prequential: str | None = None, agent_config: dict | None = None,
              protocol: dict | None = None) -> Path:
    """A run directory as `seqeval run` writes it. seeds: seed -> normalized score per
    evaluation point (stored as return = ref_min + score/100 * (ref_max - ref_min));
    agent_config and protocol entries are added to the config."""
    path.mkdir(parents=True)
    ref_min, ref_max = ref if ref else (0.0, 1000.0)
    config = {
        "agent": agent, "dataset": dataset, "mode": mode,
        "protocol": {"initial_size": 5000, "increment": 1, "steps_per_increment": 1,
                     "eval_every": 5000, "eval_episodes": 5, "batch_size": 256,
                     "seeds": sorted(seeds), "online_steps": 0, **(protocol or {})},
        "agent_config": dict(agent_config or {}),
        "dataset_info": {"transitions": DATASET_SIZE, "episodes": 20,
                         "ref_min_score": ref[0] if ref else None,
                         "ref_max_score": ref[1] if ref else None,
                         "average_return": 400.0,
                         "average_normalized_return": 40.0 if ref else None,
                         "observation_dim": 3, "action_dim": 1},
    }
    (path / "config.json").write_text(json.dumps(config))
    rows = []
    for seed, scores in seeds.items():
        phases = [("offline", s, v) for s, v in zip(samples, scores, strict=True)]
        phases += [("online", s, v) for s, v in (online or {}).get(seed, [])]
        for phase, sample, score in phases:
            ret = ref_min + score / 100.0 * (ref_max - ref_min)
            rows.append({"samples": sample, "gradient_steps": sample, "seed": seed,
                         "return": f"{ret:.6g}",
                         "normalized_score": f"{score:.6g}" if ref else "",
                         "wall_time": 1.0, "phase": phase})
    with open(path / "evaluations.csv", "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    if prequential is not None:
        (path / "prequential.csv").write_text(prequential)
    return path


def read_csv(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


# ---------------------------------------------------------------------------------------------
# A probe agent whose "update" records which buffer positions it was trained on.


@dataclasses.dataclass(frozen=True)
class ProbeConfig:
    log_size: int = 64


def probe_init(config, key, spaces, stats, total_steps):
    return {"step": jnp.int32(0), "seen": -jnp.ones((config.log_size, 8), jnp.int32)}


def _probe_update(config, state, batch, key):
    positions = batch.observations[:, 0].astype(jnp.int32)
    seen = state["seen"].at[state["step"]].set(positions)
    return {"step": state["step"] + 1, "seen": seen}, {"loss": jnp.float32(0.0)}


PROBE = Agent(name="probe", config_class=ProbeConfig, init=probe_init, update=_probe_update,
              act=lambda c, s, o, k, d: jnp.zeros(o.shape[:-1] + (1,)))


def identity_data(n: int) -> protocol.DeviceData:
    """n transitions whose observation is their own position (what the probe records), as the
    engine holds them on the device, without next actions."""
    column = jnp.arange(n, dtype=jnp.float32)[:, None]
    transitions = Batch(observations=column, actions=jnp.zeros((n, 1)), rewards=jnp.zeros(n),
                        next_observations=column, terminals=jnp.zeros(n))
    return protocol.DeviceData(transitions, jnp.full(n, -1, jnp.int32))


# ---------------------------------------------------------------------------------------------
# An agent file whose loss turns non-finite after `blow_up_after` updates.

DIVERGING_AGENT = '''
import dataclasses
import jax.numpy as jnp
from seqeval.agents import Agent

@dataclasses.dataclass(frozen=True)
class Config:
    blow_up_after: int = 30

def init(config, key, spaces, stats, total_steps):
    return {"step": jnp.int32(0), "action_dim": jnp.zeros(spaces.action_dim)}

def update(config, state, batch, key):
    loss = jnp.where(state["step"] >= config.blow_up_after, jnp.nan, 1.0)
    return {**state, "step": state["step"] + 1}, {"loss": loss}

def act(config, state, observations, key, deterministic):
    return jnp.zeros(observations.shape[:-1] + state["action_dim"].shape)

AGENT = Agent(name="diverging", config_class=Config, init=init, update=update, act=act)
'''


# ---------------------------------------------------------------------------------------------
# Small agents on a synthetic batch.

SPACES = Spaces(observation_dim=3, action_dim=2)


def small_config(name: str, **overrides):
    """The agent's defaults with 32x32 networks (fast to compile and run)."""
    agent = get_agent(name)
    widths = {f.name: (32, 32) for f in dataclasses.fields(agent.config_class)
              if f.name.endswith("hidden_dims")}
    return agent, dataclasses.replace(agent.make_config({}), **widths, **overrides)


def synthetic_batch(key: jax.Array, size: int = 128) -> Batch:
    """Transitions of a smooth task: behaviour a = tanh(W s), reward prefers a close to 0.5."""
    obs_key, next_key, noise_key = jax.random.split(key, 3)
    observations = jax.random.normal(obs_key, (size, SPACES.observation_dim))
    weights = jnp.array([[0.8, -0.3], [0.1, 0.9], [-0.5, 0.2]])
    actions = jnp.tanh(observations @ weights) + 0.05 * jax.random.normal(noise_key, (size, 2))
    actions = jnp.clip(actions, -1.0, 1.0)
    rewards = -jnp.sum((actions - 0.5) ** 2, axis=-1)
    next_observations = jax.random.normal(next_key, (size, SPACES.observation_dim))
    terminals = (jnp.arange(size) % 50 == 49).astype(jnp.float32)
    return Batch(observations, actions, rewards, next_observations, terminals)


def identity_stats() -> DatasetStats:
    return DatasetStats.identity(SPACES.observation_dim)


def run_updates(agent, config, state, batch, num_updates):
    """`num_updates` updates on one fixed batch in a single compiled scan."""

    @jax.jit
    def train(state, key):
        def step(state, key):
            return agent.update(config, state, batch, key)

        return jax.lax.scan(step, state, jax.random.split(key, num_updates))

    return train(state, jax.random.PRNGKey(7))


# ---------------------------------------------------------------------------------------------
# The tiny real study swept once per session (tests/conftest.py's `tiny_study`): three TD3+BC
# configurations, two seeds each, 600 gradient steps from 8,500 of 10,000 transitions, with
# evaluations (2 episodes) at 9,000, 9,500 and 10,000 and prequential rows for `select`.

TINY_STUDY_SPEC = f"""
[study]
agents = ["td3_bc"]
datasets = ["{EXPERT}"]
seeds = 2
[protocol]
initial_size = 8500
increment = 25
steps_per_increment = 10
eval_every = 500
eval_episodes = 2
batch_size = 64
[agent]
hidden_dims = [32, 32]
[agent.td3_bc]
actor_q_coef = [0.1, 2.5, 10.0]
"""
TINY_STUDY_EVALUATIONS = [9_000, 9_500, 10_000]
