"""Stepping Gymnasium environments side by side: the one loop behind evaluation
(seqeval.evaluate), online collection (seqeval.online) and the dataset builder.

Policies act in [-1, 1] on every axis; `to_env_actions` rescales to an environment's bounds and
`to_unit_actions` back. `EnvGroup` steps several environments with one batch of actions (one
batched, jitted policy call per step: a call per environment would cost ~0.1 ms each);
`run_episodes` runs one whole episode in each of them (evaluation); `EnvPool` keeps them running,
records whole episodes and resets each with its own seed, derived from (pool seed, environment
index, episode index), so a collection is reproducible, each recorded episode carries the seed
that starts it, and a pool can be restored mid-episode by replaying the recorded actions.
"""

from __future__ import annotations

import dataclasses
import signal
import socket
import subprocess
import sys
from collections import deque
from collections.abc import Callable, Sequence
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np

from seqeval.fileio import write_npz_atomic
from seqeval.seeds import pool_episode_seed

# ---------------------------------------------------------------------------------------------
# Actions: [-1, 1] <-> the environment's bounds


def to_env_actions(actions: np.ndarray, low: np.ndarray, high: np.ndarray) -> np.ndarray:
    """Actions in [-1, 1] (clipped there first) mapped linearly onto [low, high], float32."""
    low, high = np.asarray(low, np.float32), np.asarray(high, np.float32)
    unit = np.clip(np.asarray(actions, np.float32), -1.0, 1.0)
    return (low + (unit + 1.0) * 0.5 * (high - low)).astype(np.float32)


def to_unit_actions(actions: np.ndarray, low: np.ndarray, high: np.ndarray) -> np.ndarray:
    """Actions in [low, high] mapped linearly onto [-1, 1] (and clipped there), float32."""
    scaled = 2.0 * (np.asarray(actions) - low) / (high - low) - 1.0
    return np.clip(scaled, -1.0, 1.0).astype(np.float32)


# ---------------------------------------------------------------------------------------------
# The stepping loop


@dataclasses.dataclass
class Transitions:
    """What one step of an `EnvGroup` did, one row per environment (zeros where not stepped)."""

    observations: np.ndarray  # (n, observation_dim) float64: where each environment acted
    actions: np.ndarray  # (n, action_dim) float32 in [-1, 1], as taken (clipped)
    env_actions: np.ndarray  # (n, action_dim) float32, the same in the environment's bounds
    rewards: np.ndarray  # (n,) float64
    next_observations: np.ndarray  # (n, observation_dim) float64, before any reset
    terminated: np.ndarray  # (n,) bool
    truncated: np.ndarray  # (n,) bool

    @property
    def ended(self) -> np.ndarray:
        return self.terminated | self.truncated


class EnvGroup:
    """Environments stepped in lockstep with one batch of actions in [-1, 1].

    The group keeps each environment's current observation and the return of its episode so
    far; it never resets an environment by itself (callers decide how: seeded or not). Its
    environments live in this process (`ProcessEnvGroup` spreads them over worker processes).
    """

    def __init__(self, envs: Sequence[Any], action_low: np.ndarray | None = None,
                 action_high: np.ndarray | None = None):
        self.envs = list(envs)
        self._setup(self.envs[0].observation_space, self.envs[0].action_space, len(self.envs),
                    action_low, action_high)

    def _setup(self, observation_space: Any, action_space: Any, num_envs: int,
               action_low: np.ndarray | None, action_high: np.ndarray | None) -> None:
        self.action_low = np.asarray(action_space.low if action_low is None else action_low,
                                     np.float32).reshape(-1)
        self.action_high = np.asarray(action_space.high if action_high is None else action_high,
                                      np.float32).reshape(-1)
        self.observation_dim = int(np.prod(observation_space.shape))
        self.action_dim = int(np.prod(action_space.shape))
        self.observations = np.zeros((num_envs, self.observation_dim))
        self.returns = np.zeros(num_envs)  # undiscounted, of each current episode
        self.env_steps = 0  # environment steps taken, for throughput reports

    @property
    def num_envs(self) -> int:
        return len(self.returns)

    def reset(self, index: int, seed: int | None = None) -> np.ndarray:
        """Start a new episode in environment `index` (seeded, or continuing its generator)."""
        observation = self._reset_env(index, seed)
        self.observations[index] = observation
        self.returns[index] = 0.0
        return observation

    def policy_input(self) -> np.ndarray:
        """The current observations, float32, one row per environment."""
        return self.observations.astype(np.float32)

    def step(self, actions: np.ndarray, active: np.ndarray | None = None) -> Transitions:
        """Step the `active` environments (all by default) with `actions` in [-1, 1]."""
        unit = np.clip(np.asarray(actions, np.float32), -1.0, 1.0)
        env_actions = to_env_actions(unit, self.action_low, self.action_high)
        previous = self.observations.copy()
        rewards = np.zeros(self.num_envs)
        terminated = np.zeros(self.num_envs, bool)
        truncated = np.zeros(self.num_envs, bool)
        indices = np.arange(self.num_envs) if active is None else np.flatnonzero(active)
        if len(indices):
            (self.observations[indices], rewards[indices], terminated[indices],
             truncated[indices]) = self._step_envs(env_actions[indices], indices)
        self.returns += rewards
        self.env_steps += len(indices)
        return Transitions(previous, unit, env_actions, rewards, self.observations.copy(),
                           terminated, truncated)

    def _reset_env(self, index: int, seed: int | None) -> np.ndarray:
        return self.envs[index].reset(seed=seed)[0]

    def _step_envs(self, env_actions: np.ndarray, indices: np.ndarray) -> StepResults:
        """Step environments `indices` with their rows of `env_actions` (in their bounds)."""
        return _step_each([self.envs[index] for index in indices], env_actions)

    def close(self) -> None:
        for env in self.envs:
            env.close()


# (next observations, rewards, terminated, truncated) of the environments stepped, in order.
StepResults = tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]


def _step_each(envs: Sequence[Any], env_actions: np.ndarray) -> StepResults:
    outcomes = [env.step(action) for env, action in zip(envs, env_actions, strict=True)]
    observations, rewards, terminated, truncated, _ = zip(*outcomes, strict=True)
    return (np.asarray(observations, np.float64), np.asarray(rewards, np.float64),
            np.asarray(terminated, bool), np.asarray(truncated, bool))


class ProcessEnvGroup(EnvGroup):
    """An `EnvGroup` whose environments are spread over `workers` processes, each stepping its
    share while the others step theirs: for environments that cost more to step than a message
    between processes (MuJoCo locomotion), on a host with cores to spare (a GPU machine's).

    `make_env` must be picklable by reference to an importable module (a module-level
    function or class, or a functools.partial of one), not to the script being run.
    Workers are fresh interpreters (`python -P -m seqeval.envs.rollout`), never forked from a
    process running JAX's threads, and never re-running the caller's main script as
    multiprocessing's "spawn" would. Results equal `EnvGroup`'s bit for bit: every environment
    is reset with its own seed and stepped with its own row of the one batch of actions,
    whichever process holds it.
    """

    def __init__(self, make_env: Callable[[], Any], num_envs: int, workers: int,
                 action_low: np.ndarray | None = None, action_high: np.ndarray | None = None):
        workers = max(1, min(int(workers), num_envs))
        bounds = np.linspace(0, num_envs, workers + 1).round().astype(int)
        self._starts = bounds[:-1]
        self._owner = np.repeat(np.arange(workers), np.diff(bounds))  # environment -> worker
        self._connections: list[Connection] = []
        self._processes: list[subprocess.Popen] = []
        try:
            for worker, count in enumerate(np.diff(bounds)):
                ours, theirs = socket.socketpair()
                with theirs:
                    self._processes.append(subprocess.Popen(
                        # -P: the working directory's own folders (a user's `seqeval/`)
                        # never shadow the installed package.
                        [sys.executable, "-P", "-m", "seqeval.envs.rollout",
                         str(theirs.fileno())],
                        pass_fds=(theirs.fileno(),), stdin=subprocess.DEVNULL))
                self._connections.append(Connection(ours.detach()))
                self._send(worker, sys.path)  # where make_env's module is found
                self._send(worker, (make_env, int(count)))
            spaces = [self._receive(worker) for worker in range(workers)][0]
        except BaseException:
            self.close()
            raise
        self._setup(*spaces, num_envs, action_low, action_high)

    def _lost(self, worker: int) -> RuntimeError:
        try:
            code = self._processes[worker].wait(timeout=5)
        except subprocess.TimeoutExpired:
            code = None
        return RuntimeError(f"environment worker {worker} stopped unexpectedly (exit code "
                            f"{code})")

    def _send(self, worker: int, message: Any) -> None:
        try:
            self._connections[worker].send(message)
        except OSError:
            raise self._lost(worker) from None

    def _receive(self, worker: int) -> Any:
        try:
            status, payload = self._connections[worker].recv()
        except (EOFError, OSError):
            raise self._lost(worker) from None
        if status != "ok":
            raise RuntimeError(f"environment worker {worker} failed: {payload}")
        return payload

    def _reset_env(self, index: int, seed: int | None) -> np.ndarray:
        worker = self._owner[index]
        self._send(worker, ("reset", (index - self._starts[worker], seed)))
        return self._receive(worker)

    def _step_envs(self, env_actions: np.ndarray, indices: np.ndarray) -> StepResults:
        owners = self._owner[indices]
        busy = np.unique(owners)
        for worker in busy:  # every worker steps its share before any answer is read
            mine = owners == worker
            self._send(worker, ("step", (indices[mine] - self._starts[worker], env_actions[mine])))
        parts = [self._receive(worker) for worker in busy]
        # Workers hold contiguous, ascending ranges, so their answers concatenate in order.
        return tuple(np.concatenate(column) for column in zip(*parts, strict=True))

    def close(self) -> None:
        for connection in self._connections:
            try:
                connection.send(("close", None))
            except (OSError, ValueError):
                pass  # that worker is gone already
            connection.close()
        for process in self._processes:
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        self._connections, self._processes = [], []


def _env_worker(connection: Connection) -> None:
    """A `ProcessEnvGroup` worker: makes its environments, then answers the group's calls
    (reset, step, close) until it is closed or the group's process is gone."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the run's to handle, then close
    envs: list[Any] = []
    try:
        sys.path[:] = connection.recv()
        make_env, count = connection.recv()
        envs = [make_env() for _ in range(count)]
        connection.send(("ok", (envs[0].observation_space, envs[0].action_space)))
        while True:
            try:
                command, payload = connection.recv()
            except (EOFError, OSError):
                break  # the group's process ended without closing us
            if command == "close":
                break
            if command == "reset":
                index, seed = payload
                connection.send(("ok", envs[index].reset(seed=seed)[0]))
            else:  # "step"
                indices, env_actions = payload
                connection.send(("ok", _step_each([envs[i] for i in indices], env_actions)))
    except Exception as error:  # an environment's own error: the group raises it
        try:
            connection.send(("error", f"{type(error).__name__}: {error}".splitlines()[0]))
        except OSError:
            pass
    finally:
        for env in envs:
            env.close()


def make_env_group(make_env: Callable[[], Any], num_envs: int, workers: int = 1,
                   action_low: np.ndarray | None = None,
                   action_high: np.ndarray | None = None) -> EnvGroup:
    """`num_envs` environments in this process (`workers` <= 1) or spread over `workers`
    processes; the two give the same results."""
    if workers <= 1 or num_envs <= 1:
        return EnvGroup([make_env() for _ in range(num_envs)], action_low, action_high)
    return ProcessEnvGroup(make_env, num_envs, workers, action_low, action_high)


def run_episodes(group: EnvGroup, policy: Callable[[np.ndarray], np.ndarray],
                 seeds: Sequence[int]) -> np.ndarray:
    """Undiscounted returns of one whole episode in each of the first `len(seeds)`
    environments, each reset with its seed.

    `policy(observations[n, obs] float32) -> actions[n, act]` in [-1, 1] is called on all n
    environments every step (one batch shape, so a jitted policy compiles once); those whose
    episode ended keep their last observation and are no longer stepped. Taking one whole
    episode per environment does not under-count long episodes (the first episodes to finish
    would favour short ones, i.e. early falls).
    """
    for index, seed in enumerate(seeds):
        group.reset(index, seed)
    active = np.arange(group.num_envs) < len(seeds)
    while active.any():
        active &= ~group.step(policy(group.policy_input()), active).ended
    return group.returns[:len(seeds)].copy()


# ---------------------------------------------------------------------------------------------
# Whole episodes, as Minari stores them (the dataset builder)


@dataclasses.dataclass
class Episode:
    """One episode as Minari stores it: T+1 observations, T of everything else."""

    observations: np.ndarray  # (T + 1, observation_dim)
    actions: np.ndarray  # (T, action_dim), in the environment's bounds
    rewards: np.ndarray  # (T,)
    terminations: np.ndarray  # (T,) bool
    truncations: np.ndarray  # (T,) bool
    seed: int

    def __len__(self) -> int:
        return int(self.rewards.shape[0])

    @property
    def episode_return(self) -> float:
        return float(np.sum(self.rewards))

    def cut(self, length: int) -> Episode:
        """The first `length` steps, marked truncated at the cut unless it ends there anyway."""
        if length >= len(self):
            return self
        truncations = self.truncations[:length].copy()
        terminations = self.terminations[:length].copy()
        truncations[-1] = not terminations[-1]
        return Episode(self.observations[: length + 1], self.actions[:length],
                       self.rewards[:length], terminations, truncations, self.seed)


class EnvPool:
    """`num_envs` copies of one environment stepped in lockstep, resetting each when it ends
    and recording every episode."""

    def __init__(self, env_id: str, num_envs: int, seed: int):
        self.env_id = env_id
        self.seed = int(seed)
        self.group = EnvGroup([gym.make(env_id) for _ in range(num_envs)])
        self.action_dtype = self.group.envs[0].action_space.dtype
        self.observation_dtype = self.group.envs[0].observation_space.dtype
        self.observation_dim = self.group.observation_dim
        self.action_dim = self.group.action_dim
        self.episode_counts = [0] * num_envs  # episodes started in each environment
        self._recent_returns: deque[float] = deque(maxlen=20)
        self._open: list[dict] = [{} for _ in range(num_envs)]

    @property
    def num_envs(self) -> int:
        return self.group.num_envs

    def _reset_env(self, index: int) -> None:
        seed = pool_episode_seed(self.seed, index, self.episode_counts[index])
        self.episode_counts[index] += 1
        observation = self.group.reset(index, seed)
        self._open[index] = {"seed": seed, "observations": [observation], "actions": [],
                             "rewards": [], "terminations": [], "truncations": []}

    def reset(self) -> np.ndarray:
        """Start a fresh episode in every environment; returns float32 observations."""
        for index in range(self.num_envs):
            self._reset_env(index)
        return self.group.policy_input()

    def _finish(self, record: dict, truncate: bool = False) -> Episode:
        truncations = np.asarray(record["truncations"], bool)
        if truncate:
            truncations[-1] = truncations[-1] or not record["terminations"][-1]
        return Episode(
            observations=np.asarray(record["observations"], self.observation_dtype),
            actions=np.asarray(record["actions"], self.action_dtype),
            rewards=np.asarray(record["rewards"], np.float64),
            terminations=np.asarray(record["terminations"], bool),
            truncations=truncations,
            seed=record["seed"],
        )

    def step(self, actions: np.ndarray) -> tuple[np.ndarray, tuple[np.ndarray, ...],
                                                   list[Episode]]:
        """Step every environment with `actions` in [-1, 1].

        Returns the observations to act on next (float32), the transitions just made as
        (observations, actions in [-1, 1], rewards, next observations, terminals) float32
        arrays, and the episodes that ended on this step (environments that ended are reset).
        """
        step = self.group.step(actions)
        finished: list[Episode] = []
        for index in range(self.num_envs):
            record = self._open[index]
            record["observations"].append(step.next_observations[index])
            record["actions"].append(step.env_actions[index])
            record["rewards"].append(float(step.rewards[index]))
            record["terminations"].append(bool(step.terminated[index]))
            record["truncations"].append(bool(step.truncated[index]))
            if step.ended[index]:
                episode = self._finish(record)
                self._recent_returns.append(episode.episode_return)
                finished.append(episode)
                self._reset_env(index)
        transitions = (step.observations.astype(np.float32), step.actions,
                       step.rewards.astype(np.float32),
                       step.next_observations.astype(np.float32),
                       step.terminated.astype(np.float32))
        return self.group.policy_input(), transitions, finished

    def open_episodes(self) -> list[Episode]:
        """Copies of the unfinished episodes, ended here as truncated; the pool runs on."""
        return [self._finish(record, truncate=True) for record in self._open
                if record and record["rewards"]]

    def open_env_indices(self) -> list[int]:
        """The environment of each of `open_episodes()`, in the same order."""
        return [index for index, record in enumerate(self._open)
                if record and record["rewards"]]

    def restore(self, episode_counts: Sequence[int], open_episodes: Sequence[Episode],
                env_indices: Sequence[int]) -> list[Episode]:
        """Put the pool back where `episode_counts` and the running episodes were saved
        (`open_episodes()`, `open_env_indices()`): each environment is reset with the seed of
        its running episode and the recorded actions are replayed.

        Returns the running episodes that could not be continued because a replay did not
        reproduce the recorded observations and rewards (an environment that is not
        deterministic); their environments start new episodes. Empty when the restore is exact.
        """
        self.episode_counts = [int(count) for count in episode_counts]
        running = dict(zip(env_indices, open_episodes, strict=True))
        lost: list[Episode] = []
        for index in range(self.num_envs):
            self.episode_counts[index] -= 1
            self._reset_env(index)
            episode = running.get(index)
            if episode is None:
                continue
            if not self._replay(index, episode):
                lost.append(episode)
                self._reset_env(index)
        return lost

    def _replay(self, index: int, episode: Episode) -> bool:
        """Step environment `index` (just reset) through `episode`'s actions; whether every
        step reproduced the recording."""
        record = self._open[index]
        if record["seed"] != episode.seed or not np.array_equal(
                np.asarray(record["observations"][0], self.observation_dtype),
                episode.observations[0]):
            return False
        for position, action in enumerate(episode.actions):
            observation, reward, terminated, truncated, _ = self.group.envs[index].step(action)
            if (terminated or truncated or float(reward) != float(episode.rewards[position])
                    or not np.array_equal(np.asarray(observation, self.observation_dtype),
                                          episode.observations[position + 1])):
                return False
            record["observations"].append(observation)
            record["actions"].append(action)
            record["rewards"].append(float(reward))
            record["terminations"].append(False)
            record["truncations"].append(False)
            self.group.observations[index] = observation
            self.group.returns[index] += float(reward)
        return True

    def recent_return(self) -> float:
        return float(np.mean(self._recent_returns)) if self._recent_returns else float("nan")

    def close(self) -> None:
        self.group.close()


PolicyFn = Callable[[np.ndarray, int], np.ndarray]  # (observations float32, step) -> [-1, 1]


def collect_episodes(policy: PolicyFn, env_id: str, transitions: int, num_envs: int, seed: int,
                     on_progress: Callable[[int], None] | None = None) -> list[Episode]:
    """Episodes of `policy` totalling exactly `transitions` steps, in order of completion.

    The last episode is cut (and marked truncated) to land on `transitions` exactly, like the
    last episode of a D4RL dataset.
    """
    pool = EnvPool(env_id, num_envs, seed)
    observations = pool.reset()
    episodes: list[Episode] = []
    collected = step = 0
    try:
        while collected < transitions:
            observations, _, finished = pool.step(policy(observations, step))
            step += 1
            for episode in finished:
                if collected >= transitions:
                    break
                episode = episode.cut(transitions - collected)
                episodes.append(episode)
                collected += len(episode)
                if on_progress is not None:
                    on_progress(len(episode))
    finally:
        pool.close()
    return episodes


def rollout_returns(policy: PolicyFn, env_id: str, episodes: int, seed: int,
                    num_envs: int = 25) -> np.ndarray:
    """Returns of exactly `episodes` episodes: one per environment, in waves of `num_envs`."""
    group = EnvGroup([gym.make(env_id) for _ in range(min(num_envs, episodes))])
    steps = 0

    def counted(observations: np.ndarray) -> np.ndarray:
        nonlocal steps
        steps += 1
        return policy(observations, steps - 1)

    returns: list[float] = []
    try:
        for wave in range(0, episodes, group.num_envs):
            count = min(group.num_envs, episodes - wave)
            seeds = [pool_episode_seed(seed, wave + index, 0) for index in range(count)]
            returns.extend(run_episodes(group, counted, seeds).tolist())
    finally:
        group.close()
    return np.asarray(returns)


# ---------------------------------------------------------------------------------------------
# Episode lists on disk (one npz: concatenated arrays + lengths)


def save_episodes(path: Path, episodes: list[Episode], **extra: np.ndarray) -> None:
    """Write `episodes` (and any `extra` arrays) atomically to one npz."""
    if episodes:
        arrays = {name: np.concatenate([getattr(e, name) for e in episodes])
                  for name in ("observations", "actions", "rewards", "terminations",
                               "truncations")}
    else:
        arrays = {}
    write_npz_atomic(Path(path), {"lengths": np.asarray([len(e) for e in episodes], np.int64),
                                  "seeds": np.asarray([e.seed for e in episodes], np.int64),
                                  **arrays, **extra})


def load_episodes(path: Path) -> list[Episode]:
    with np.load(path) as data:
        lengths = data["lengths"]
        if lengths.size == 0:
            return []
        seeds = data["seeds"]
        columns = {name: data[name] for name in ("observations", "actions", "rewards",
                                                 "terminations", "truncations")}
    episodes = []
    step_start = 0
    for number, length in enumerate(lengths):
        length = int(length)
        observation_start = step_start + number  # each episode stores one extra observation
        episodes.append(Episode(
            observations=columns["observations"][observation_start:observation_start + length + 1],
            actions=columns["actions"][step_start:step_start + length],
            rewards=columns["rewards"][step_start:step_start + length],
            terminations=columns["terminations"][step_start:step_start + length],
            truncations=columns["truncations"][step_start:step_start + length],
            seed=int(seeds[number]),
        ))
        step_start += length
    return episodes


if __name__ == "__main__":  # a ProcessEnvGroup worker; argv[1]: its socket's descriptor
    _env_worker(Connection(int(sys.argv[1])))
