"""Online SAC (soft actor-critic) in JAX: the behaviour-policy trainer of the dataset builder.

What is compiled: one jitted program runs a whole chunk of gradient steps with `lax.scan`,
each step sampling its batch on device from the replay buffer (a device-resident ring buffer
whose fill level is a dynamic argument, so growing it never recompiles). The twin critics are one
batched network (`StateActionEnsemble`). The temperature is tuned automatically towards an entropy
of -action_dim. Environments are stepped in Python, several side by side, with one batched
jitted policy call per step.

`SACTrainer` runs the training loop with checkpoints (parameters, optimiser states, the replay
buffer and its position, the environment-step count, every completed episode in collection
order, and a snapshot of the actor at each checkpoint), so an interrupted run resumes where it
stopped and any snapshot can be reloaded later as a behaviour policy.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, NamedTuple

import flax.linen as nn
import flax.serialization
import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import struct
from tqdm.auto import tqdm

from seqeval.algorithms.nets import Dense, StateActionEnsemble, tanh_gaussian_sample
from seqeval.envs.rollout import EnvPool, Episode, load_episodes, rollout_returns, save_episodes

LOG_STD_MIN = -5.0
LOG_STD_MAX = 2.0


@dataclasses.dataclass(frozen=True)
class SACConfig:
    """SAC hyperparameters (Haarnoja et al. 2018 defaults unless noted)."""

    hidden_dims: tuple[int, ...] = (256, 256)
    actor_lr: float = 3e-4
    critic_lr: float = 3e-4
    temperature_lr: float = 3e-4
    discount: float = 0.99
    tau: float = 0.005
    batch_size: int = 256
    num_critics: int = 2
    init_temperature: float = 1.0


# ---------------------------------------------------------------------------------------------
# Networks


class TanhGaussianActor(nn.Module):
    """obs -> (mean, log_std) of a Gaussian whose samples are squashed by tanh into [-1, 1]."""

    hidden_dims: tuple[int, ...]
    action_dim: int

    @nn.compact
    def __call__(self, observations: jax.Array) -> tuple[jax.Array, jax.Array]:
        x = observations
        for width in self.hidden_dims:
            x = nn.relu(Dense(width)(x))
        mean = Dense(self.action_dim)(x)
        log_std = Dense(self.action_dim)(x)
        # Soft clipping keeps gradients alive at the bounds (as in jaxrl / CORL); the offline
        # agents' actor (seqeval.algorithms.nets.TanhGaussianActor) clips hard, as CORL's CQL does.
        log_std = LOG_STD_MIN + 0.5 * (LOG_STD_MAX - LOG_STD_MIN) * (jnp.tanh(log_std) + 1.0)
        return mean, log_std


# ---------------------------------------------------------------------------------------------
# State and replay buffer


@struct.dataclass
class SACState:
    actor_params: Any
    critic_params: Any
    target_critic_params: Any
    log_temperature: jax.Array
    actor_opt: Any
    critic_opt: Any
    temperature_opt: Any
    key: jax.Array
    gradient_steps: jax.Array


class ReplayBuffer(NamedTuple):
    """Device-resident transitions; rows [0, size) are valid (the host tracks size/position)."""

    observations: jax.Array
    actions: jax.Array
    rewards: jax.Array
    next_observations: jax.Array
    terminals: jax.Array  # 1.0 where the episode terminated; truncation still bootstraps


def empty_buffer(capacity: int, observation_dim: int, action_dim: int) -> ReplayBuffer:
    return ReplayBuffer(
        observations=jnp.zeros((capacity, observation_dim), jnp.float32),
        actions=jnp.zeros((capacity, action_dim), jnp.float32),
        rewards=jnp.zeros((capacity,), jnp.float32),
        next_observations=jnp.zeros((capacity, observation_dim), jnp.float32),
        terminals=jnp.zeros((capacity,), jnp.float32),
    )


def _buffer_insert(buffer: ReplayBuffer, rows: ReplayBuffer, position: jax.Array) -> ReplayBuffer:
    capacity = buffer.rewards.shape[0]
    index = (position + jnp.arange(rows.rewards.shape[0])) % capacity
    return jax.tree.map(lambda full, new: full.at[index].set(new), buffer, rows)


# Donating the buffer lets XLA write the rows in place instead of copying the whole buffer.
buffer_insert = jax.jit(_buffer_insert, donate_argnums=0)


class SAC:
    """The SAC learner: modules, optimisers and the compiled functions, for one problem size."""

    def __init__(self, config: SACConfig, observation_dim: int, action_dim: int):
        self.config = config
        self.observation_dim = observation_dim
        self.action_dim = action_dim
        self.target_entropy = -float(action_dim)
        self.actor = TanhGaussianActor(tuple(config.hidden_dims), action_dim)
        self.critic = StateActionEnsemble(tuple(config.hidden_dims), config.num_critics)
        self.actor_tx = optax.adam(config.actor_lr)
        self.critic_tx = optax.adam(config.critic_lr)
        self.temperature_tx = optax.adam(config.temperature_lr)
        self.update_chunk = jax.jit(self._update_chunk, static_argnums=3, donate_argnums=0)
        self.policy = jax.jit(self._policy, static_argnums=3)
        # One compiled program instead of dozens of op-by-op dispatches (seconds each on CPU).
        self._init = jax.jit(self._init_state)
        self._actor_template: Any = None

    # -- construction ----------------------------------------------------------------------
    def init(self, key: jax.Array) -> SACState:
        return self._init(key)

    def _init_state(self, key: jax.Array) -> SACState:
        actor_key, critic_key, key = jax.random.split(key, 3)
        observations = jnp.zeros((1, self.observation_dim), jnp.float32)
        actions = jnp.zeros((1, self.action_dim), jnp.float32)
        actor_params = self.actor.init(actor_key, observations)
        critic_params = self.critic.init(critic_key, observations, actions)
        log_temperature = jnp.log(jnp.float32(self.config.init_temperature))
        return SACState(
            actor_params=actor_params,
            critic_params=critic_params,
            # A separate copy: the update donates its state, and one buffer cannot be donated twice.
            target_critic_params=jax.tree.map(jnp.copy, critic_params),
            log_temperature=log_temperature,
            actor_opt=self.actor_tx.init(actor_params),
            critic_opt=self.critic_tx.init(critic_params),
            temperature_opt=self.temperature_tx.init(log_temperature),
            key=key,
            gradient_steps=jnp.int32(0),
        )

    def init_actor(self, key: jax.Array) -> Any:
        """A randomly initialised actor (the D4RL 'random' behaviour policy)."""
        return self.init(key).actor_params

    def actor_template(self) -> Any:
        """Actor parameters of the right structure, to deserialise snapshots into."""
        if self._actor_template is None:
            self._actor_template = self.init_actor(jax.random.PRNGKey(0))
        return self._actor_template

    # -- acting ----------------------------------------------------------------------------
    def _policy(
        self, actor_params: Any, observations: jax.Array, key: jax.Array, deterministic: bool
    ) -> jax.Array:
        mean, log_std = self.actor.apply(actor_params, observations)
        if deterministic:
            return jnp.tanh(mean)
        return tanh_gaussian_sample(mean, log_std, key)[0]

    # -- learning --------------------------------------------------------------------------
    def _update(self, state: SACState, batch: ReplayBuffer, key: jax.Array):
        cfg = self.config
        next_key, actor_key = jax.random.split(key)
        temperature = jnp.exp(state.log_temperature)

        mean, log_std = self.actor.apply(state.actor_params, batch.next_observations)
        next_actions, next_log_prob = tanh_gaussian_sample(mean, log_std, next_key)
        next_q = self.critic.apply(state.target_critic_params, batch.next_observations,
                                   next_actions).min(axis=0)
        target = batch.rewards + cfg.discount * (1.0 - batch.terminals) * (
            next_q - temperature * next_log_prob
        )
        target = jax.lax.stop_gradient(target)

        def critic_loss_fn(critic_params):
            q = self.critic.apply(critic_params, batch.observations, batch.actions)
            return ((q - target[None]) ** 2).mean(axis=1).sum(), q.mean()

        (critic_loss, q_mean), critic_grads = jax.value_and_grad(critic_loss_fn, has_aux=True)(
            state.critic_params
        )
        critic_updates, critic_opt = self.critic_tx.update(critic_grads, state.critic_opt)
        critic_params = optax.apply_updates(state.critic_params, critic_updates)

        def actor_loss_fn(actor_params):
            mean, log_std = self.actor.apply(actor_params, batch.observations)
            actions, log_prob = tanh_gaussian_sample(mean, log_std, actor_key)
            q = self.critic.apply(critic_params, batch.observations, actions).min(axis=0)
            return (temperature * log_prob - q).mean(), log_prob.mean()

        (actor_loss, log_prob_mean), actor_grads = jax.value_and_grad(
            actor_loss_fn, has_aux=True
        )(state.actor_params)
        actor_updates, actor_opt = self.actor_tx.update(actor_grads, state.actor_opt)
        actor_params = optax.apply_updates(state.actor_params, actor_updates)

        def temperature_loss_fn(log_temperature):
            entropy_gap = jax.lax.stop_gradient(-log_prob_mean - self.target_entropy)
            return log_temperature * entropy_gap

        temperature_grad = jax.grad(temperature_loss_fn)(state.log_temperature)
        temperature_updates, temperature_opt = self.temperature_tx.update(
            temperature_grad, state.temperature_opt
        )
        log_temperature = optax.apply_updates(state.log_temperature, temperature_updates)

        target_critic_params = jax.tree.map(
            lambda t, o: (1.0 - cfg.tau) * t + cfg.tau * o, state.target_critic_params,
            critic_params,
        )
        new_state = state.replace(
            actor_params=actor_params,
            critic_params=critic_params,
            target_critic_params=target_critic_params,
            log_temperature=log_temperature,
            actor_opt=actor_opt,
            critic_opt=critic_opt,
            temperature_opt=temperature_opt,
            gradient_steps=state.gradient_steps + 1,
        )
        metrics = {
            "critic_loss": critic_loss,
            "actor_loss": actor_loss,
            "q_mean": q_mean,
            "temperature": temperature,
            "entropy": -log_prob_mean,
        }
        return new_state, metrics

    def _update_chunk(
        self, state: SACState, buffer: ReplayBuffer, size: jax.Array, num_steps: int
    ) -> tuple[SACState, dict[str, jax.Array]]:
        """`num_steps` gradient steps, each on a uniform batch from buffer rows [0, size)."""

        def step(state, _):
            key, sample_key, update_key = jax.random.split(state.key, 3)
            index = jax.random.randint(sample_key, (self.config.batch_size,), 0, size)
            batch = jax.tree.map(lambda column: column[index], buffer)
            state, metrics = self._update(state.replace(key=key), batch, update_key)
            return state, metrics

        state, metrics = jax.lax.scan(step, state, None, length=num_steps)
        return state, jax.tree.map(lambda m: m[-1], metrics)


# ---------------------------------------------------------------------------------------------
# Serialisation helpers


def save_pytree(path: Path, tree: Any) -> None:
    """Write a pytree of arrays atomically (flax msgpack)."""
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_bytes(flax.serialization.to_bytes(jax.device_get(tree)))
    os.replace(tmp, path)


def load_pytree(path: Path, template: Any) -> Any:
    return flax.serialization.from_bytes(template, path.read_bytes())


def _write_json(path: Path, data: dict) -> None:
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(data, indent=2))
    os.replace(tmp, path)


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
    # Act uniformly at random until learning starts (as SB3/CleanRL do): the untrained
    # tanh-Gaussian actor explores only a narrow band of actions (std ~0.2 at init).
    uniform_warmup: bool = True
    checkpoint_every: int = 50_000  # environment steps between checkpoints (and snapshots)
    snapshot_eval_episodes: int = 10  # episodes to score each actor snapshot


class SACTrainer:
    """Trains SAC on one environment, writing checkpoints into `work_dir`.

    Layout of `work_dir`:
      progress.json            env_steps, checkpoint list with snapshot returns (written last)
      state.msgpack            full learner state (params, optimisers, temperature, rng)
      buffer.npz               valid replay rows and the insertion position
      episodes/seg_XXXX.npz    episodes completed in each checkpoint segment, collection order
      episodes/open_XXXX.npz   the episodes still running at checkpoint XXXX, cut there
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
        self.action_low, self.action_high = probe.group.action_low, probe.group.action_high
        probe.close()
        self.agent = shared_sac(sac_config, self.observation_dim, self.action_dim)
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
        return load_pytree(self.snapshot_path(index), self.agent.actor_template())

    def replay_episodes(self, last_checkpoint: int) -> list[Episode]:
        """Every transition collected up to checkpoint `last_checkpoint`, as episodes in
        collection order; the episodes still running at that checkpoint end it, truncated."""
        episodes: list[Episode] = []
        for index in range(last_checkpoint + 1):
            episodes.extend(load_episodes(self.work_dir / "episodes" / f"seg_{index:04d}.npz"))
        open_path = self.work_dir / "episodes" / f"open_{last_checkpoint:04d}.npz"
        episodes.extend(load_episodes(open_path))
        return episodes

    def _save_checkpoint(
        self, state: SACState, buffer: ReplayBuffer, size: int, position: int, env_steps: int,
        segment: list[Episode], open_episodes: list[Episode], checkpoints: list[dict],
        wall_time: float, update_debt: float,
    ) -> None:
        index = len(checkpoints)
        (self.work_dir / "episodes").mkdir(parents=True, exist_ok=True)
        (self.work_dir / "snapshots").mkdir(parents=True, exist_ok=True)
        save_episodes(self.work_dir / "episodes" / f"seg_{index:04d}.npz", segment)
        save_episodes(self.work_dir / "episodes" / f"open_{index:04d}.npz", open_episodes)
        save_pytree(self.snapshot_path(index), state.actor_params)
        save_pytree(self.work_dir / "state.msgpack", state)
        host = jax.device_get(jax.tree.map(lambda column: column[:size], buffer))
        tmp = self.work_dir / "buffer.tmp.npz"
        np.savez(tmp, position=position, **host._asdict())
        os.replace(tmp, self.work_dir / "buffer.npz")
        returns = self.evaluate_actor(state.actor_params, self.budget.snapshot_eval_episodes,
                                      seed=self.seed * 7919 + index, deterministic=False)
        checkpoints.append({
            "index": index,
            "env_steps": env_steps,
            "gradient_steps": int(state.gradient_steps),
            "episodes": len(segment),
            "eval_return_mean": float(np.mean(returns)),
            "eval_return_std": float(np.std(returns)),
        })
        _write_json(self.progress_path, {
            "env_id": self.env_id,
            "seed": self.seed,
            "sac_config": dataclasses.asdict(self.config),
            "budget": dataclasses.asdict(self.budget),
            "env_steps": env_steps,
            "buffer_size": size,
            "update_debt": update_debt,
            "checkpoints": checkpoints,
            "train_seconds": wall_time,
            "complete": env_steps >= self.budget.env_steps,
        })

    # -- evaluation ----------------------------------------------------------------------------
    def evaluate_actor(self, actor_params: Any, episodes: int, seed: int,
                       deterministic: bool) -> np.ndarray:
        """Returns of `episodes` complete episodes, run side by side with batched policy calls."""
        return rollout_returns(policy_fn(self.agent, actor_params, seed, deterministic),
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
        state = self.agent.init(jax.random.PRNGKey(self.seed))
        buffer = empty_buffer(self.capacity, self.observation_dim, self.action_dim)
        size = position = env_steps = 0
        checkpoints: list[dict] = []
        train_seconds = 0.0
        # Gradient steps owed so far (carried between chunks, and across a resume).
        update_debt = 0.0
        if previous is not None:
            state = load_pytree(self.work_dir / "state.msgpack", state)
            with np.load(self.work_dir / "buffer.npz") as saved:
                size = int(saved["rewards"].shape[0])
                position = int(saved["position"])
                rows = ReplayBuffer(*(jnp.asarray(saved[name]) for name in ReplayBuffer._fields))
            buffer = buffer_insert(buffer, rows, jnp.int32(0))
            env_steps = int(previous["env_steps"])
            checkpoints = list(previous["checkpoints"])
            train_seconds = float(previous.get("train_seconds", 0.0))
            update_debt = float(previous.get("update_debt", 0.0))

        segment: list[Episode] = []
        if checkpoints:
            # The episodes running when the run stopped cannot be continued (environment states
            # are not saved), so they enter the record as truncated where they were cut.
            segment.extend(load_episodes(
                self.work_dir / "episodes" / f"open_{len(checkpoints) - 1:04d}.npz"))
        pool = EnvPool(self.env_id, budget.num_envs, seed=self.seed * 1_000_003 + env_steps)
        observations = pool.reset()
        steps_per_chunk = max(1, budget.chunk_env_steps // budget.num_envs)
        bar = tqdm(total=budget.env_steps, initial=env_steps, desc=f"SAC {self.env_id}",
                   unit="step", disable=not self.progress, dynamic_ncols=True)
        start = time.perf_counter() - train_seconds
        metrics: dict = {}
        next_checkpoint = (len(checkpoints) + 1) * budget.checkpoint_every
        try:
            while env_steps < budget.env_steps:
                chunk_rows = []
                for _ in range(steps_per_chunk):
                    key = jax.random.fold_in(state.key, env_steps)
                    if budget.uniform_warmup and size < budget.learning_starts:
                        actions = np.asarray(jax.random.uniform(
                            key, (budget.num_envs, self.action_dim), minval=-1.0, maxval=1.0))
                    else:
                        actions = np.asarray(self.agent.policy(
                            state.actor_params, jnp.asarray(observations), key, False))
                    observations, transitions, finished = pool.step(actions)
                    chunk_rows.append(transitions)
                    segment.extend(finished)
                    env_steps += budget.num_envs
                    if env_steps >= next_checkpoint or env_steps >= budget.env_steps:
                        break
                rows = ReplayBuffer(*(jnp.asarray(np.concatenate(column), jnp.float32)
                                      for column in zip(*chunk_rows, strict=True)))
                buffer = buffer_insert(buffer, rows, jnp.int32(position))
                added = rows.rewards.shape[0]
                position = (position + added) % self.capacity
                size = min(size + added, self.capacity)
                bar.update(added)
                if size >= budget.learning_starts:
                    update_debt += added * budget.updates_per_step
                    # A fixed chunk length keeps one compiled program; the remainder waits.
                    chunk_updates = int(budget.chunk_env_steps * budget.updates_per_step)
                    while update_debt >= chunk_updates > 0:
                        state, metrics = self.agent.update_chunk(state, buffer,
                                                                 jnp.int32(size), chunk_updates)
                        update_debt -= chunk_updates
                    if metrics:
                        bar.set_postfix(
                            ret=f"{pool.recent_return():.0f}",
                            q=f"{float(metrics['q_mean']):.1f}",
                            alpha=f"{float(metrics['temperature']):.3f}",
                        )
                if env_steps >= next_checkpoint or env_steps >= budget.env_steps:
                    self._save_checkpoint(state, buffer, size, position, env_steps, segment,
                                          pool.open_episodes(), checkpoints,
                                          time.perf_counter() - start, update_debt)
                    if self.on_checkpoint is not None:
                        self.on_checkpoint(len(checkpoints))
                    segment = []
                    next_checkpoint += budget.checkpoint_every
                    last = checkpoints[-1]
                    if self.progress:
                        bar.write(f"checkpoint {last['index']}: {env_steps} env steps, "
                                  f"snapshot return {last['eval_return_mean']:.1f}")
        finally:
            bar.close()
            pool.close()
        progress = self.read_progress()
        assert progress is not None
        return progress

    def _check_same_run(self, previous: dict) -> None:
        config = json.loads(json.dumps(dataclasses.asdict(self.config)))
        same = (
            previous.get("env_id") == self.env_id
            and previous.get("seed") == self.seed
            and previous.get("sac_config") == config
            and previous.get("budget", {}).get("checkpoint_every") == self.budget.checkpoint_every
            and previous.get("budget", {}).get("num_envs") == self.budget.num_envs
        )
        if not same:
            from seqeval.errors import UserError

            raise UserError(
                f"{self.work_dir} holds a SAC run with other settings; delete it or use the "
                "settings it was started with"
            )


@functools.lru_cache(maxsize=16)
def shared_sac(config: SACConfig, observation_dim: int, action_dim: int) -> SAC:
    """One SAC (and so one set of compiled programs) per problem size and config per process."""
    return SAC(config, observation_dim, action_dim)


def policy_fn(agent: SAC, actor_params: Any, seed: int,
              deterministic: bool) -> Callable[[np.ndarray, int], np.ndarray]:
    """A host-side policy (observations, step) -> actions in [-1, 1] for the rollout helpers."""
    key = jax.random.PRNGKey(seed)

    def act(observations: np.ndarray, step: int) -> np.ndarray:
        return np.asarray(agent.policy(actor_params, jnp.asarray(observations),
                                       jax.random.fold_in(key, step), deterministic))

    return act


__all__ = [
    "SAC",
    "SACConfig",
    "SACState",
    "SACTrainer",
    "TrainBudget",
    "ReplayBuffer",
    "policy_fn",
]
