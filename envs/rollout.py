"""Stepping several Gymnasium environments side by side and recording whole episodes.

Policies act in [-1, 1] on every axis; `EnvPool` rescales to the environment's bounds. Every
episode is reset with its own seed, derived from (pool seed, environment index, episode index),
so a collection is reproducible and each recorded episode carries the seed that starts it.
"""

from __future__ import annotations

import dataclasses
import os
from collections import deque
from collections.abc import Callable
from pathlib import Path

import gymnasium as gym
import numpy as np


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


def episode_seed(pool_seed: int, env_index: int, episode_index: int) -> int:
    return int(np.random.SeedSequence([pool_seed, env_index, episode_index]).generate_state(1)[0]
               & 0x7FFFFFFF)


class EnvPool:
    """`num_envs` copies of one environment stepped in lockstep, resetting each when it ends."""

    def __init__(self, env_id: str, num_envs: int, seed: int):
        self.env_id = env_id
        self.seed = int(seed)
        self.envs = [gym.make(env_id) for _ in range(num_envs)]
        space = self.envs[0].action_space
        self.action_low = np.asarray(space.low, np.float64)
        self.action_high = np.asarray(space.high, np.float64)
        self.action_dtype = space.dtype
        self.observation_dtype = self.envs[0].observation_space.dtype
        self.observation_dim = int(np.prod(self.envs[0].observation_space.shape))
        self.action_dim = int(np.prod(space.shape))
        self._episode_counts = [0] * num_envs
        self._recent_returns: deque[float] = deque(maxlen=20)
        self._open: list[dict] = []
        self._observations = np.zeros((num_envs, self.observation_dim))

    @property
    def num_envs(self) -> int:
        return len(self.envs)

    def _reset_env(self, index: int) -> None:
        seed = episode_seed(self.seed, index, self._episode_counts[index])
        self._episode_counts[index] += 1
        observation, _ = self.envs[index].reset(seed=seed)
        self._observations[index] = observation
        self._open[index] = {"seed": seed, "observations": [observation], "actions": [],
                             "rewards": [], "terminations": [], "truncations": []}

    def reset(self) -> np.ndarray:
        """Start a fresh episode in every environment; returns float32 observations."""
        self._open = [{} for _ in self.envs]
        for index in range(self.num_envs):
            self._reset_env(index)
        return self._observations.astype(np.float32)

    def _finish(self, record: dict, truncate: bool = False) -> Episode:
        truncations = np.asarray(record["truncations"], bool)
        if truncate:
            truncations[-1] = truncations[-1] or not record["terminations"][-1]
        episode = Episode(
            observations=np.asarray(record["observations"], self.observation_dtype),
            actions=np.asarray(record["actions"], self.action_dtype),
            rewards=np.asarray(record["rewards"], np.float64),
            terminations=np.asarray(record["terminations"], bool),
            truncations=truncations,
            seed=record["seed"],
        )
        return episode

    def step(self, actions: np.ndarray) -> tuple[np.ndarray, tuple[np.ndarray, ...],
                                                   list[Episode]]:
        """Step every environment with `actions` in [-1, 1].

        Returns the observations to act on next (float32), the transitions just made as
        (observations, actions in [-1, 1], rewards, next observations, terminals) arrays, and
        the episodes that ended on this step (environments that ended are reset).
        """
        actions = np.clip(np.asarray(actions, np.float64), -1.0, 1.0)
        env_actions = self.action_low + 0.5 * (actions + 1.0) * (self.action_high - self.action_low)
        previous = self._observations.copy()
        next_observations = np.empty_like(previous)
        rewards = np.empty(self.num_envs)
        terminals = np.empty(self.num_envs)
        finished: list[Episode] = []
        for index, env in enumerate(self.envs):
            env_action = env_actions[index].astype(self.action_dtype)
            observation, reward, terminated, truncated, _ = env.step(env_action)
            record = self._open[index]
            record["observations"].append(observation)
            record["actions"].append(env_action)
            record["rewards"].append(float(reward))
            record["terminations"].append(bool(terminated))
            record["truncations"].append(bool(truncated))
            next_observations[index] = observation
            rewards[index] = reward
            terminals[index] = float(terminated)
            self._observations[index] = observation
            if terminated or truncated:
                episode = self._finish(record)
                self._recent_returns.append(episode.episode_return)
                finished.append(episode)
                self._reset_env(index)
        transitions = (previous.astype(np.float32), actions.astype(np.float32),
                       rewards.astype(np.float32), next_observations.astype(np.float32),
                       terminals.astype(np.float32))
        return self._observations.astype(np.float32), transitions, finished

    def open_episodes(self) -> list[Episode]:
        """Copies of the unfinished episodes, ended here as truncated; the pool runs on."""
        return [self._finish(record, truncate=True) for record in self._open
                if record and record["rewards"]]

    def recent_return(self) -> float:
        return float(np.mean(self._recent_returns)) if self._recent_returns else float("nan")

    def close(self) -> None:
        for env in self.envs:
            env.close()


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
    """Returns of exactly `episodes` episodes, one per environment in waves of `num_envs`.

    Each environment runs one whole episode per wave, so long episodes are not under-counted
    (taking the first episodes to finish would favour short ones, i.e. early falls).
    """
    num_envs = min(num_envs, episodes)
    envs = [gym.make(env_id) for _ in range(num_envs)]
    space = envs[0].action_space
    low, high = np.asarray(space.low, np.float64), np.asarray(space.high, np.float64)
    returns: list[float] = []
    step = 0
    try:
        for wave in range(0, episodes, num_envs):
            count = min(num_envs, episodes - wave)
            observations = np.zeros((num_envs, int(np.prod(envs[0].observation_space.shape))))
            for index in range(count):
                observations[index] = envs[index].reset(
                    seed=episode_seed(seed, wave + index, 0))[0]
            done = np.zeros(num_envs, bool)
            done[count:] = True
            totals = np.zeros(num_envs)
            while not done.all():
                # Always the full batch, so the jitted policy compiles once.
                actions = np.clip(np.asarray(policy(observations.astype(np.float32), step),
                                             np.float64), -1.0, 1.0)
                step += 1
                env_actions = low + 0.5 * (actions + 1.0) * (high - low)
                for index in np.flatnonzero(~done):
                    observation, reward, terminated, truncated, _ = envs[index].step(
                        env_actions[index].astype(space.dtype))
                    observations[index] = observation
                    totals[index] += reward
                    done[index] = terminated or truncated
            returns.extend(totals[:count].tolist())
    finally:
        for env in envs:
            env.close()
    return np.asarray(returns)


# ---------------------------------------------------------------------------------------------
# Episode lists on disk (one npz: concatenated arrays + lengths)


def save_episodes(path: Path, episodes: list[Episode]) -> None:
    path = Path(path)
    tmp = path.with_name(path.stem + ".tmp.npz")
    if episodes:
        arrays = {name: np.concatenate([getattr(e, name) for e in episodes])
                  for name in ("observations", "actions", "rewards", "terminations",
                               "truncations")}
    else:
        arrays = {}
    np.savez(tmp, lengths=np.asarray([len(e) for e in episodes], np.int64),
             seeds=np.asarray([e.seed for e in episodes], np.int64), **arrays)
    os.replace(tmp, path)


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
