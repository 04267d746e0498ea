"""The dataset builder's behaviour-policy trainer: online SAC with a replay buffer and checkpoints.

The learning itself is the SAC agent's (seqeval.algorithms.sac `update`, the agent `seqeval run
--agent sac` trains); this module adds what online training from scratch needs around it. One
jitted program runs a whole chunk of gradient steps with `lax.scan`, each step sampling its batch
on device from the replay buffer (a device-resident array whose fill level is a dynamic argument,
so growing it never recompiles) and calling the agent's `update`. Environments are stepped in
Python, several side by side, with one batched jitted exploration call per step.

`SACTrainer` runs the training loop with checkpoints: the agent state and the trainer's key, the
replay rows added since the previous checkpoint, the environment-step count, every completed
episode in collection order, the running episodes and each environment's episode count, and a
snapshot of the actor. A resumed run restores the environments mid-episode (each is reset with
its episode's seed and the recorded actions are replayed), so it continues exactly as an
uninterrupted run would, and any snapshot can be reloaded later as a behaviour policy.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import flax.serialization
import jax
import jax.numpy as jnp
import numpy as np
from tqdm.auto import tqdm

from seqeval.algorithms import sac
from seqeval.algorithms.base import Batch, DatasetStats, Spaces
from seqeval.algorithms.sac import SACConfig, SACState
from seqeval.envs.rollout import EnvPool, Episode, load_episodes, rollout_returns, save_episodes
from seqeval.errors import UserError
from seqeval.fileio import write_bytes_atomic, write_json_atomic, write_npz_atomic
from seqeval.seeds import derive_seed

CHECKPOINT_FORMAT = 2  # 2: the agent's state, replay rows per segment, environments restored


def empty_buffer(capacity: int, observation_dim: int, action_dim: int) -> Batch:
    """A device-resident replay buffer; rows [0, size) are valid (the host tracks size)."""
    return Batch(
        observations=jnp.zeros((capacity, observation_dim), jnp.float32),
        actions=jnp.zeros((capacity, action_dim), jnp.float32),
        rewards=jnp.zeros((capacity,), jnp.float32),
        next_observations=jnp.zeros((capacity, observation_dim), jnp.float32),
        terminals=jnp.zeros((capacity,), jnp.float32),  # truncation still bootstraps
    )


def _buffer_insert(buffer: Batch, rows: Batch, position: jax.Array) -> Batch:
    index = position + jnp.arange(rows.rewards.shape[0])
    return jax.tree.map(lambda full, new: full.at[index].set(new), buffer, rows)


# Donating the buffer lets XLA write the rows in place instead of copying the whole buffer.
buffer_insert = jax.jit(_buffer_insert, donate_argnums=0)


class Learner:
    """The SAC agent's compiled functions for one problem size: chunks of replay updates,
    exploration and acting. The training carry is {"agent": SACState, "key": key}."""

    def __init__(self, config: SACConfig, observation_dim: int, action_dim: int,
                 batch_size: int):
        self.config = config
        self.spaces = Spaces(observation_dim, action_dim)
        self.observation_dim, self.action_dim = observation_dim, action_dim
        self.batch_size = batch_size
        self.update_chunk = jax.jit(self._update_chunk, static_argnums=3, donate_argnums=0)
        # Exploring and acting with the key folded with a step number inside the program: an
        # eager fold_in cost ~0.5 ms a call on a CPU, more than the policy (8 of a Pendulum
        # build's 37 s).
        self.explore_at = jax.jit(lambda state, observations, key, step: sac.explore(
            config, state, observations, jax.random.fold_in(key, step)))
        self.act_at = jax.jit(lambda state, observations, key, step, deterministic: sac.act(
            config, state, observations, jax.random.fold_in(key, step), deterministic),
            static_argnums=4)
        # One compiled program instead of dozens of op-by-op dispatches (seconds each on CPU).
        # (At XLA's defaults, though it runs once: a quicker compile moves the initial weights
        # by float rounding, and with them every dataset a build has made.)
        self._init = jax.jit(self._init_carry)
        self._template: dict | None = None

    def _init_carry(self, key: jax.Array) -> dict:
        agent_key, key = jax.random.split(key)
        stats = DatasetStats.identity(self.observation_dim)  # SAC ignores dataset statistics
        return {"agent": sac.init(self.config, agent_key, self.spaces, stats, 0), "key": key}

    def init(self, key: jax.Array) -> dict:
        return self._init(key)

    def template(self) -> dict:
        """A carry of the right structure, to deserialise checkpoints and snapshots into."""
        if self._template is None:
            self._template = self.init(jax.random.PRNGKey(0))
        return self._template

    def with_actor(self, actor_params: Any) -> SACState:
        """An agent state acting with `actor_params` (a snapshot)."""
        state = self.template()["agent"]
        return state.replace(actor=state.actor.replace(params=actor_params))

    def _update_chunk(self, carry: dict, buffer: Batch, size: jax.Array,
                      num_steps: int) -> tuple[dict, dict[str, jax.Array]]:
        """`num_steps` agent updates, each on a uniform batch from buffer rows [0, size)."""

        def step(carry, _):
            key, sample_key, update_key = jax.random.split(carry["key"], 3)
            index = jax.random.randint(sample_key, (self.batch_size,), 0, size)
            batch = jax.tree.map(lambda column: column[index], buffer)
            state, metrics = sac.update(self.config, carry["agent"], batch, update_key)
            return {"agent": state, "key": key}, metrics

        carry, metrics = jax.lax.scan(step, carry, None, length=num_steps)
        return carry, jax.tree.map(lambda m: m[-1], metrics)


@functools.lru_cache(maxsize=16)
def shared_learner(config: SACConfig, observation_dim: int, action_dim: int,
                   batch_size: int) -> Learner:
    """One Learner (and so one set of compiled programs) per problem size and config."""
    return Learner(config, observation_dim, action_dim, batch_size)


def policy_fn(learner: Learner, actor_params: Any, seed: int,
              deterministic: bool) -> Callable[[np.ndarray, int], np.ndarray]:
    """A host-side policy (observations, step) -> actions in [-1, 1] for the rollout helpers."""
    key = jax.random.PRNGKey(seed)
    state = learner.with_actor(actor_params)

    def act(observations: np.ndarray, step: int) -> np.ndarray:
        return np.asarray(learner.act_at(state, observations, key, step, deterministic))

    return act


# ---------------------------------------------------------------------------------------------
# Training loop with checkpoints


@dataclasses.dataclass(frozen=True)
class TrainBudget:
    """How long SAC trains and how it interleaves environment steps with gradient steps."""

    env_steps: int  # total environment steps (transitions collected)
    num_envs: int = 4  # environments stepped side by side
    chunk_env_steps: int = 1000  # transitions collected between two compiled update chunks
    updates_per_step: float = 1.0  # gradient steps per collected transition
    learning_starts: int = 5000  # transitions collected before the first update
    batch_size: int = 256  # transitions per gradient step (Haarnoja et al. 2018)
    checkpoint_every: int = 50_000  # environment steps between checkpoints (and snapshots)
    snapshot_eval_episodes: int = 10  # episodes to score each actor snapshot


@dataclasses.dataclass
class _TrainLoop:
    """What SACTrainer.train carries from one chunk to the next (saved in each checkpoint)."""

    carry: Any  # the learner's state and key
    buffer: Batch  # the replay buffer, on the device
    pool: EnvPool
    observations: np.ndarray  # the environments' current observations
    size: int = 0  # rows in the buffer
    env_steps: int = 0
    checkpoints: list[dict] = dataclasses.field(default_factory=list)
    train_seconds: float = 0.0
    update_debt: float = 0.0  # gradient steps owed so far (carried across a resume)
    segment: list[Episode] = dataclasses.field(default_factory=list)  # since the checkpoint


class SACTrainer:
    """Trains SAC on one environment, writing checkpoints into `work_dir`.

    Layout of `work_dir` (XXXX: the checkpoint index):
      progress.json            env steps, the checkpoint list with snapshot returns, and the
                               environments' episode counts (written last: it commits a
                               checkpoint; files of a later index are leftovers of a kill)
      state_XXXX.msgpack       the training carry (agent state with optimisers, trainer key);
                               only the last one is kept
      rows_XXXX.npz            replay rows added since the previous checkpoint
      episodes/seg_XXXX.npz    episodes completed in each checkpoint segment, collection order
      episodes/open_XXXX.npz   the episodes still running at checkpoint XXXX, cut there, with
                               the environment each runs in
      snapshots/actor_XXXX.msgpack  the actor at each checkpoint
    """

    def __init__(
        self,
        env_id: str,
        sac_config: SACConfig,
        budget: TrainBudget,
        work_dir: Path,
        seed: int,
        progress: bool = True,
        on_checkpoint: Callable[[int], None] | None = None,
    ):
        self.env_id = env_id
        self.config = sac_config
        self.budget = budget
        self.work_dir = Path(work_dir)
        self.seed = seed
        self.progress = progress
        self.on_checkpoint = on_checkpoint
        probe = EnvPool(env_id, 1, seed)
        self.observation_dim = probe.observation_dim
        self.action_dim = probe.action_dim
        probe.close()
        self.learner = shared_learner(sac_config, self.observation_dim, self.action_dim,
                                      budget.batch_size)
        # The buffer holds every transition of the run (D4RL's SAC kept 1M, its whole budget).
        self.capacity = int(budget.env_steps) + budget.num_envs

    # -- checkpoint files --------------------------------------------------------------------
    @property
    def progress_path(self) -> Path:
        return self.work_dir / "progress.json"

    def read_progress(self) -> dict | None:
        if self.progress_path.exists():
            return json.loads(self.progress_path.read_text())
        return None

    def is_complete(self) -> bool:
        progress = self.read_progress()
        return bool(progress and progress.get("complete"))

    def snapshot_path(self, index: int) -> Path:
        return self.work_dir / "snapshots" / f"actor_{index:04d}.msgpack"

    def load_actor(self, index: int) -> Any:
        template = self.learner.template()["agent"].actor.params
        return flax.serialization.from_bytes(template, self.snapshot_path(index).read_bytes())

    def replay_episodes(self, last_checkpoint: int) -> list[Episode]:
        """Every transition collected up to checkpoint `last_checkpoint`, as episodes in
        collection order; the episodes still running at that checkpoint end it, truncated."""
        episodes: list[Episode] = []
        for index in range(last_checkpoint + 1):
            episodes.extend(load_episodes(self.work_dir / "episodes" / f"seg_{index:04d}.npz"))
        episodes.extend(load_episodes(self._open_path(last_checkpoint)))
        return episodes

    def replay_rows(self, last_checkpoint: int) -> dict[str, np.ndarray]:
        """The replay buffer's rows up to checkpoint `last_checkpoint`, in insertion order."""
        parts = []
        for index in range(last_checkpoint + 1):
            with np.load(self.work_dir / f"rows_{index:04d}.npz") as saved:
                parts.append({name: saved[name] for name in Batch._fields})
        return {name: np.concatenate([part[name] for part in parts]) for name in Batch._fields}

    def _open_path(self, index: int) -> Path:
        return self.work_dir / "episodes" / f"open_{index:04d}.npz"

    def _state_path(self, index: int) -> Path:
        return self.work_dir / f"state_{index:04d}.msgpack"

    def _save_checkpoint(self, carry: dict, buffer: Batch, size: int, env_steps: int,
                         segment: list[Episode], pool: EnvPool, checkpoints: list[dict],
                         wall_time: float, update_debt: float) -> None:
        index = len(checkpoints)
        previous_size = checkpoints[-1]["buffer_size"] if checkpoints else 0
        (self.work_dir / "episodes").mkdir(parents=True, exist_ok=True)
        (self.work_dir / "snapshots").mkdir(parents=True, exist_ok=True)
        save_episodes(self.work_dir / "episodes" / f"seg_{index:04d}.npz", segment)
        save_episodes(self._open_path(index), pool.open_episodes(),
                      env_indices=np.asarray(pool.open_env_indices(), np.int64))
        agent = carry["agent"]
        write_bytes_atomic(self.snapshot_path(index),
                           flax.serialization.to_bytes(jax.device_get(agent.actor.params)))
        write_bytes_atomic(self._state_path(index),
                           flax.serialization.to_bytes(jax.device_get(carry)))
        rows = jax.device_get(jax.tree.map(lambda column: column[previous_size:size], buffer))
        write_npz_atomic(self.work_dir / f"rows_{index:04d}.npz", rows._asdict())
        returns = self.evaluate_actor(agent.actor.params, self.budget.snapshot_eval_episodes,
                                      seed=derive_seed(self.seed, "sac snapshot evaluation",
                                                       index), deterministic=False)
        checkpoints.append({
            "index": index,
            "env_steps": env_steps,
            "gradient_steps": int(agent.critic.step),
            "buffer_size": size,
            "episodes": len(segment),
            "eval_return_mean": float(np.mean(returns)),
            "eval_return_std": float(np.std(returns)),
        })
        write_json_atomic(self.progress_path, {
            "format": CHECKPOINT_FORMAT,
            "env_id": self.env_id,
            "seed": self.seed,
            "sac_config": dataclasses.asdict(self.config),
            "budget": dataclasses.asdict(self.budget),
            "env_steps": env_steps,
            "buffer_size": size,
            "update_debt": update_debt,
            "episode_counts": list(pool.episode_counts),
            "checkpoints": checkpoints,
            "inexact_resumes": self._inexact_resumes,
            "train_seconds": wall_time,
            "complete": env_steps >= self.budget.env_steps,
        })
        # The committed checkpoint is the one to resume from; earlier states are not needed.
        for old in range(index):
            self._state_path(old).unlink(missing_ok=True)

    # -- evaluation ----------------------------------------------------------------------------
    def evaluate_actor(self, actor_params: Any, episodes: int, seed: int,
                       deterministic: bool) -> np.ndarray:
        """Returns of `episodes` complete episodes, run side by side with batched policy calls."""
        return rollout_returns(policy_fn(self.learner, actor_params, seed, deterministic),
                               self.env_id, episodes, seed)

    # -- main loop -------------------------------------------------------------------------------
    def train(self) -> dict:
        """Train to the budget (resuming from the last checkpoint if any); returns progress."""
        budget = self.budget
        self.work_dir.mkdir(parents=True, exist_ok=True)
        previous = self.read_progress()
        if previous is not None:
            self._check_same_run(previous)
            if previous.get("complete"):
                return previous
        self._inexact_resumes: list[int] = list((previous or {}).get("inexact_resumes", []))
        loop = self._start(previous)
        steps_per_chunk = max(1, budget.chunk_env_steps // budget.num_envs)
        bar = tqdm(total=budget.env_steps, initial=loop.env_steps, desc=f"SAC {self.env_id}",
                   unit="step", disable=not self.progress, dynamic_ncols=True)
        start = time.perf_counter() - loop.train_seconds
        metrics: dict = {}
        next_checkpoint = (len(loop.checkpoints) + 1) * budget.checkpoint_every
        try:
            while loop.env_steps < budget.env_steps:
                rows = self._collect_chunk(loop, steps_per_chunk, next_checkpoint)
                loop.buffer = buffer_insert(loop.buffer, rows, jnp.int32(loop.size))
                added = rows.rewards.shape[0]
                loop.size += added
                bar.update(added)
                if loop.size >= budget.learning_starts:
                    loop.update_debt += added * budget.updates_per_step
                    # A fixed chunk length keeps one compiled program; the remainder waits.
                    chunk_updates = int(budget.chunk_env_steps * budget.updates_per_step)
                    while loop.update_debt >= chunk_updates > 0:
                        loop.carry, metrics = self.learner.update_chunk(
                            loop.carry, loop.buffer, jnp.int32(loop.size), chunk_updates)
                        loop.update_debt -= chunk_updates
                    if metrics:
                        bar.set_postfix(
                            ret=f"{loop.pool.recent_return():.0f}",
                            q=f"{float(metrics['q_mean']):.1f}",
                            alpha=f"{float(metrics['alpha']):.3f}",
                        )
                if loop.env_steps >= next_checkpoint or loop.env_steps >= budget.env_steps:
                    self._save_checkpoint(loop.carry, loop.buffer, loop.size, loop.env_steps,
                                          loop.segment, loop.pool, loop.checkpoints,
                                          time.perf_counter() - start, loop.update_debt)
                    if self.on_checkpoint is not None:
                        self.on_checkpoint(len(loop.checkpoints))
                    loop.segment = []
                    next_checkpoint += budget.checkpoint_every
                    last = loop.checkpoints[-1]
                    if self.progress:
                        bar.write(f"checkpoint {last['index']}: {loop.env_steps} env steps, "
                                  f"snapshot return {last['eval_return_mean']:.1f}")
        finally:
            bar.close()
            loop.pool.close()
        progress = self.read_progress()
        assert progress is not None
        return progress

    def _start(self, previous: dict | None) -> _TrainLoop:
        """The loop's state: fresh, or restored from the last checkpoint of `previous`."""
        carry = self.learner.init(jax.random.PRNGKey(self.seed))
        buffer = empty_buffer(self.capacity, self.observation_dim, self.action_dim)
        # Episode seeds depend on the pool seed, environment and episode index only, so a
        # restored pool resets each environment exactly as the uninterrupted run does.
        pool = EnvPool(self.env_id, self.budget.num_envs,
                       seed=derive_seed(self.seed, "sac environments"))
        loop = _TrainLoop(carry=carry, buffer=buffer, pool=pool, observations=pool.reset())
        if previous is None:
            return loop
        loop.checkpoints = list(previous["checkpoints"])
        last = len(loop.checkpoints) - 1
        loop.carry = flax.serialization.from_bytes(carry, self._state_path(last).read_bytes())
        rows = Batch(**{name: jnp.asarray(column)
                        for name, column in self.replay_rows(last).items()})
        loop.buffer = buffer_insert(buffer, rows, jnp.int32(0))
        loop.size = int(previous["buffer_size"])
        loop.env_steps = int(previous["env_steps"])
        loop.train_seconds = float(previous.get("train_seconds", 0.0))
        loop.update_debt = float(previous.get("update_debt", 0.0))
        with np.load(self._open_path(last)) as saved:
            env_indices = saved["env_indices"].tolist()
        # Episodes that cannot be continued enter the record truncated where they were cut.
        loop.segment = pool.restore(previous["episode_counts"],
                                    load_episodes(self._open_path(last)), env_indices)
        loop.observations = pool.group.policy_input()
        if loop.segment:
            self._inexact_resumes.append(last)
            print(f"seqeval: warning: {self.env_id} did not replay deterministically, so "
                  f"the SAC run resumed at checkpoint {last} differs from an "
                  "uninterrupted one (episodes running there end truncated)",
                  file=sys.stderr)
        return loop

    def _collect_chunk(self, loop: _TrainLoop, steps_per_chunk: int,
                       next_checkpoint: int) -> Batch:
        """Step every environment with the current policy until the chunk is full or a
        checkpoint (or the budget's end) is due; the transitions, as one batch of rows."""
        chunk_rows = []
        for _ in range(steps_per_chunk):
            actions = np.asarray(self.learner.explore_at(
                loop.carry["agent"], loop.observations, loop.carry["key"], loop.env_steps))
            loop.observations, transitions, finished = loop.pool.step(actions)
            chunk_rows.append(transitions)
            loop.segment.extend(finished)
            loop.env_steps += self.budget.num_envs
            if loop.env_steps >= next_checkpoint or loop.env_steps >= self.budget.env_steps:
                break
        return Batch(*(jnp.asarray(np.concatenate(column), jnp.float32)
                       for column in zip(*chunk_rows, strict=True)))

    def _check_same_run(self, previous: dict) -> None:
        if previous.get("format") != CHECKPOINT_FORMAT:
            raise UserError(f"{self.work_dir} holds a SAC run written by another seqeval "
                            "version; delete that directory to retrain")
        config = json.loads(json.dumps(dataclasses.asdict(self.config)))
        budget = json.loads(json.dumps(dataclasses.asdict(self.budget)))
        recorded = previous.get("sac_config")
        if isinstance(recorded, dict):  # an earlier seqeval's names of the same settings
            recorded = {sac.AGENT.renamed_settings.get(k, k): v for k, v in recorded.items()}
        same = (
            previous.get("env_id") == self.env_id
            and previous.get("seed") == self.seed
            and recorded == config
            and previous.get("budget") == budget
        )
        if not same:
            raise UserError(
                f"{self.work_dir} holds a SAC run with other settings; delete it or use the "
                "settings it was started with"
            )


__all__ = [
    "Learner",
    "SACConfig",
    "SACTrainer",
    "TrainBudget",
    "empty_buffer",
    "policy_fn",
    "shared_learner",
]
