"""D4RL's own HDF5 files (Fu et al. 2020), read as D4RL wrote them.

`d4rl/<env>-<quality>-v<N>` names the file D4RL downloads into `$D4RL_DATASET_DIR` (D4RL's
variable; default `~/.d4rl/datasets`): `<env>_<quality with underscores>-v<N>.hdf5` for v1 and
v2, the original file names for v0 (`hopper_mixed.hdf5` is hopper-medium-replay-v0). A file in
D4RL's layout at any other path is read the same way (`--dataset PATH.hdf5 --env Hopper-v5`).

The layout: `observations` (N, obs_dim), `actions` (N, act_dim), `rewards` (N,), `terminals`
(N,), `timeouts` (N,), `next_observations` (N, obs_dim) when present, and `infos/*` and
`metadata/*`, which are not read. As in D4RL's `get_dataset`, the first four are required and
`timeouts` is optional: without it, an episode is cut every `max_episode_steps` steps after a
terminal, as D4RL's `qlearning_dataset` does.

Episodes end at `terminals | timeouts`. A `terminals` step is a termination (no bootstrap); a
`timeouts` step a truncation (bootstrap through its next observation); the last step of the
file, when it has neither flag, is a cut trajectory and counts as truncated. Without
`next_observations` (D4RL's older files), the next observation of a step is the following
row's observation within an episode; a truncated episode's last step has no recorded next
observation, so that step is dropped, as D4RL's `qlearning_dataset` drops it, and the step
before it becomes the episode's (truncated) last step; a terminal step keeps its own
observation as a placeholder, never bootstrapped from.

Everything is vectorised numpy on whole arrays (h5py converts float64 files, such as D4RL's
medium-replay ones, to float32 while reading), so loading costs about what reading costs.
"""

from __future__ import annotations

import dataclasses
import os
import re
import sys
from pathlib import Path

import numpy as np

from seqeval.errors import UserError

# D4RL's environment name -> (Gymnasium task evaluated in, observation dim, action dim).
# D4RL recorded its MuJoCo data with the v3 tasks under mujoco-py; the v5 tasks have the same
# observation and action spaces (ant aside, see ANT_CONTACT_FORCE_DIMS).
ENVIRONMENTS: dict[str, tuple[str, int, int]] = {
    "hopper": ("Hopper-v5", 11, 3),
    "halfcheetah": ("HalfCheetah-v5", 17, 6),
    "walker2d": ("Walker2d-v5", 17, 6),
    "ant": ("Ant-v5", 111, 8),
}
# D4RL's ant observations (Ant-v3) end with 84 contact forces (14 bodies x 6) that mujoco-py
# 2.0 left at zero, so its contact cost (computed from them) was zero too; Ant-v5 without
# contact forces and without contact cost gives the first 27, padded with those zeros.
ANT_BASE_DIMS = 27
ANT_CONTACT_FORCE_DIMS = 84

QUALITIES_V1_V2 = ("random", "medium", "expert", "medium-replay", "medium-expert", "full-replay")
QUALITIES_V0 = ("random", "medium", "expert", "medium-replay", "medium-expert")
# v0's files kept their original names (D4RL's infos.py DATASET_URLS).
_V0_FILE_QUALITY = {"medium-replay": "mixed"}
_V0_FILE_ENV = {("walker2d", "medium-replay"): "walker"}

PREFIX = "d4rl/"
_ID = re.compile(r"d4rl/(?P<env>[a-z0-9]+)-(?P<quality>[a-z-]+)-v(?P<version>\d+)")
REQUIRED_KEYS = ("observations", "actions", "rewards", "terminals")
FILE_SUFFIXES = (".hdf5", ".h5")


def dataset_dir() -> Path:
    """Where D4RL keeps its files: $D4RL_DATASET_DIR, else ~/.d4rl/datasets (as D4RL)."""
    return Path(os.environ.get("D4RL_DATASET_DIR") or "~/.d4rl/datasets").expanduser()


def is_d4rl_id(dataset_id: str) -> bool:
    return dataset_id.startswith(PREFIX)


def is_file_path(dataset_id: str) -> bool:
    """A dataset given as a path to a D4RL-layout file (Minari ids never end in .hdf5)."""
    return dataset_id.lower().endswith(FILE_SUFFIXES)


@dataclasses.dataclass(frozen=True)
class D4RLName:
    env: str  # hopper, halfcheetah, walker2d, ant
    quality: str  # random, medium, ...
    version: int  # 0, 1 or 2

    @property
    def dataset_id(self) -> str:
        return f"{PREFIX}{self.task}"

    @property
    def task(self) -> str:
        """D4RL's own name, e.g. hopper-medium-v2 (the key of its infos.py tables)."""
        return f"{self.env}-{self.quality}-v{self.version}"

    @property
    def file_name(self) -> str:
        if self.version == 0:
            env = _V0_FILE_ENV.get((self.env, self.quality), self.env)
            quality = _V0_FILE_QUALITY.get(self.quality, self.quality)
            return f"{env}_{quality.replace('-', '_')}.hdf5"
        return f"{self.env}_{self.quality.replace('-', '_')}-v{self.version}.hdf5"

    @property
    def gym_id(self) -> str:
        return ENVIRONMENTS[self.env][0]


def _qualities(version: int) -> tuple[str, ...]:
    return QUALITIES_V0 if version == 0 else QUALITIES_V1_V2


def all_names() -> list[D4RLName]:
    return [D4RLName(env, quality, version) for env in ENVIRONMENTS for version in (0, 1, 2)
            for quality in _qualities(version)]


def parse_id(dataset_id: str) -> D4RLName:
    """The D4RL dataset a `d4rl/...` id names; a UserError naming the valid ones otherwise."""
    example = "e.g. d4rl/hopper-medium-v2"
    match = _ID.fullmatch(dataset_id)
    if match is None:
        raise UserError(f"dataset '{dataset_id}' is not a D4RL name; write "
                        f"d4rl/<env>-<quality>-v<N>, {example}")
    env, quality, version = match["env"], match["quality"], int(match["version"])
    if env not in ENVIRONMENTS:
        raise UserError(f"dataset '{dataset_id}': D4RL environment '{env}' is not supported; "
                        f"choose one of: {', '.join(ENVIRONMENTS)}")
    if version not in (0, 1, 2) or quality not in _qualities(version):
        raise UserError(f"dataset '{dataset_id}': D4RL has no {quality} dataset at v{version}; "
                        f"v1/v2 have {', '.join(QUALITIES_V1_V2)}; v0 has "
                        f"{', '.join(QUALITIES_V0)}")
    return D4RLName(env, quality, version)


def file_for_id(dataset_id: str) -> Path:
    """The local file of a `d4rl/...` id (a UserError saying where it was looked for)."""
    name = parse_id(dataset_id)
    path = dataset_dir() / name.file_name
    if not path.is_file():
        raise UserError(
            f"dataset '{dataset_id}': D4RL's file {path} is not there; download it with D4RL "
            f"(gym.make('{name.task}').get_dataset()) or set D4RL_DATASET_DIR to the folder "
            "that holds it")
    return path


def local_files() -> list[tuple[D4RLName, Path]]:
    """The D4RL files present in $D4RL_DATASET_DIR."""
    folder = dataset_dir()
    if not folder.is_dir():
        return []
    return [(name, folder / name.file_name) for name in all_names()
            if (folder / name.file_name).is_file()]


def env_for_gym_id(gym_id: str) -> str | None:
    """D4RL's environment name of a Gymnasium task id (Hopper-v5 -> hopper), else None."""
    for env, (known, _, _) in ENVIRONMENTS.items():
        if gym_id.split("-v")[0].lower() == known.split("-v")[0].lower():
            return env
    return None


def env_spaces(gym_id: str) -> tuple[int, int, np.ndarray, np.ndarray, int | None]:
    """(observation dim, action dim, action low, action high, max episode steps) of a
    Gymnasium task, as seqeval evaluates it (D4RL's 111-dim ant included)."""
    env = make_env(gym_id)
    try:
        for role, space in (("observation", env.observation_space),
                            ("action", env.action_space)):
            if len(getattr(space, "shape", ()) or ()) != 1 or not hasattr(space, "low"):
                raise UserError(f"--env {gym_id} has a {type(space).__name__} {role} space; "
                                "seqeval needs flat Box observation and action spaces")
        return (int(env.observation_space.shape[0]), int(env.action_space.shape[0]),
                np.asarray(env.action_space.low, np.float32),
                np.asarray(env.action_space.high, np.float32),
                env.spec.max_episode_steps if env.spec is not None else None)
    finally:
        env.close()


def make_env(gym_id: str):
    """The Gymnasium task; ant (D4RL's 111-dim observations) is Ant-v5 without contact forces,
    padded with zeros where D4RL's data has them, and without the contact cost that those
    zeros made zero in D4RL's rewards."""
    import gymnasium as gym

    try:
        if env_for_gym_id(gym_id) == "ant":
            env = gym.make(gym_id, include_cfrc_ext_in_observation=False,
                           contact_cost_weight=0.0)
            return _pad_observations(env, ANT_CONTACT_FORCE_DIMS)
        return gym.make(gym_id)
    except UserError:
        raise
    except Exception as error:  # unknown id (gym.error.Error), missing module (ImportError)
        detail = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise UserError(f"--env {gym_id} cannot be made ({detail}); pass a Gymnasium task id "
                        "such as Hopper-v5, with its package installed") from None


def _pad_observations(env, zeros: int):
    import gymnasium as gym

    low = np.concatenate([env.observation_space.low, np.zeros(zeros)]).astype(np.float64)
    high = np.concatenate([env.observation_space.high, np.zeros(zeros)]).astype(np.float64)
    space = gym.spaces.Box(low, high, dtype=np.float64)
    return gym.wrappers.TransformObservation(
        env, lambda obs: np.concatenate([obs, np.zeros(zeros, obs.dtype)]), space)


# ---------------------------------------------------------------------------------------------
# Reading a file.


def _problem(path: Path, problem: str) -> UserError:
    return UserError(f"D4RL file '{path}': {problem}; replace the file with an intact copy in "
                     "D4RL's layout (download it again)")


def _read_float(handle, key: str, path: Path) -> np.ndarray:
    dataset = handle[key]
    if not np.issubdtype(dataset.dtype, np.number) and dataset.dtype != bool:
        raise _problem(path, f"'{key}' holds {dataset.dtype}, not numbers")
    # h5py converts while reading: a float64 file is never held as float64 in memory.
    return dataset.astype(np.float32)[()] if dataset.dtype != np.float32 else dataset[()]


def _read_flags(handle, key: str, path: Path, rows: int) -> np.ndarray:
    values = np.asarray(handle[key][()])
    if values.ndim == 2 and values.shape[1] == 1:
        values = values[:, 0]
    if values.shape != (rows,):
        raise _problem(path, f"'{key}' has shape {values.shape}, not ({rows},) like 'rewards'")
    return values.astype(bool)


def _derived_timeouts(terminals: np.ndarray, max_steps: int) -> np.ndarray:
    """D4RL's qlearning_dataset without timeouts: a time limit every `max_steps` steps,
    counted from the start and from each terminal."""
    rows = np.arange(terminals.size)
    starts = np.zeros(terminals.size, bool)
    starts[0:1] = True
    starts[1:] = terminals[:-1]
    first = np.maximum.accumulate(np.where(starts, rows, 0))
    return (rows - first) % max_steps == max_steps - 1


def read_file(path: Path, observation_dim: int, action_dim: int,
              max_episode_steps: int | None) -> dict[str, np.ndarray]:
    """Flat arrays (seqeval.data.ARRAY_FIELDS) of a D4RL-layout file, checked against the
    task's shapes; any problem is one UserError naming the file."""
    import h5py

    try:
        handle = h5py.File(path, "r")
    except OSError as error:
        raise _problem(path, f"it cannot be opened as HDF5 ({str(error).splitlines()[0]})") \
            from None
    with handle:
        missing = [key for key in REQUIRED_KEYS if key not in handle]
        if missing:
            raise _problem(path, f"it has no '{missing[0]}' array")
        for key in (*REQUIRED_KEYS, "timeouts", "next_observations"):
            if key in handle and not isinstance(handle[key], h5py.Dataset):
                raise _problem(path, f"'{key}' is a group, not an array")
        try:
            rewards = _read_float(handle, "rewards", path)
            if rewards.ndim == 2 and rewards.shape[1] == 1:
                rewards = rewards[:, 0]
            if rewards.ndim != 1:
                raise _problem(path, f"'rewards' has shape {rewards.shape}, not (N,)")
            rows = rewards.shape[0]
            arrays = {"rewards": rewards}
            for key, width in (("observations", observation_dim), ("actions", action_dim),
                               ("next_observations", observation_dim)):
                if key not in handle:
                    continue
                shape = handle[key].shape
                if len(shape) != 2 or shape[0] != rows or shape[1] != width:
                    raise _problem(path, f"'{key}' has shape {shape}, expected ({rows}, "
                                   f"{width}) for this task ({rows} rewards)")
                arrays[key] = _read_float(handle, key, path)
            terminals = _read_flags(handle, "terminals", path, rows)
            derived = "timeouts" not in handle
            timeouts = (_read_flags(handle, "timeouts", path, rows) if not derived else None)
        except UserError:
            raise
        except Exception as error:  # data damaged past the header (h5py's OSError, ...)
            raise _problem(path, f"it cannot be read ({type(error).__name__}: "
                           f"{str(error).splitlines()[0] if str(error) else ''})") from None
    if rows == 0:
        raise _problem(path, "it holds no transitions")
    for key in ("observations", "actions", "rewards", "next_observations"):
        # The sum is finite exactly when every value is (NaN and inf propagate; float32 sums
        # of finite values this size cannot overflow to inf at D4RL's magnitudes, and if one
        # did the exact count below is 0 and loading goes on).
        if key in arrays and not np.isfinite(arrays[key].sum(dtype=np.float64)):
            bad = int(arrays[key].size - np.count_nonzero(np.isfinite(arrays[key])))
            if bad:
                raise _problem(path, f"'{key}' has {bad} NaN/inf values")
    if derived:
        if max_episode_steps is None:
            raise _problem(path, "it has no 'timeouts' array and the task has no time limit "
                           "to derive them from")
        timeouts = _derived_timeouts(terminals, max_episode_steps)
        print(f"seqeval: note: D4RL file '{path}' has no 'timeouts'; an episode is cut every "
              f"{max_episode_steps} steps after a terminal, as D4RL's qlearning_dataset does",
              file=sys.stderr)
    return episodes(arrays, terminals, timeouts)


def episodes(arrays: dict[str, np.ndarray], terminals: np.ndarray,
             timeouts: np.ndarray) -> dict[str, np.ndarray]:
    """Episode structure from D4RL's flags (see the module docstring)."""
    observations = arrays["observations"]
    ends = terminals | timeouts
    ends[-1] = True  # a cut last trajectory ends with the file
    terminations = terminals.copy()
    truncations = ends & ~terminals
    next_observations = arrays.get("next_observations")
    keep = None
    if next_observations is None:
        next_observations = np.empty_like(observations)
        next_observations[:-1] = observations[1:]
        # A terminal's next observation is never bootstrapped from: its own is a placeholder.
        next_observations[terminations] = observations[terminations]
        # A truncated step's next observation was never recorded: drop the step; the one
        # before it (same episode) ends the episode instead, its next observation known.
        dropped = truncations
        before = np.flatnonzero(dropped) - 1
        before = before[(before >= 0) & ~ends[np.maximum(before, 0)]]
        truncations = np.zeros_like(dropped)
        truncations[before] = True
        keep = ~dropped
    out = {
        "observations": observations,
        "actions": arrays["actions"],
        "rewards": arrays["rewards"],
        "next_observations": next_observations,
        "terminations": terminations,
        "truncations": truncations,
    }
    if keep is not None and not keep.all():
        rows = np.flatnonzero(keep)  # take is about twice as fast as a boolean mask here
        out = {key: value.take(rows, axis=0) for key, value in out.items()}
    last = out["terminations"] | out["truncations"]
    starts = np.flatnonzero(np.concatenate([[True], last[:-1]])) if last.size else last
    out["episode_starts"] = np.asarray(starts, np.int64)
    return out


def check_ant_contact_forces(path: Path, observations: np.ndarray) -> None:
    """D4RL's ant files carry zero contact forces; evaluation pads zeros in their place, so
    non-zero ones mean the policy will see other inputs in the environment than in the data."""
    if observations.shape[1] == ANT_BASE_DIMS + ANT_CONTACT_FORCE_DIMS and np.any(
            observations[:, ANT_BASE_DIMS:]):
        print(f"seqeval: note: D4RL file '{path}' has non-zero contact forces in observation "
              f"columns {ANT_BASE_DIMS}-{ANT_BASE_DIMS + ANT_CONTACT_FORCE_DIMS - 1}; the "
              "evaluation environment (Ant-v5) gives zeros there, as mujoco-py 2.0 did",
              file=sys.stderr)


def write_file(path: Path, arrays: dict[str, np.ndarray],
               metadata: dict[str, object] | None = None,
               infos: dict[str, np.ndarray] | None = None) -> None:
    """Write `arrays` (observations, actions, rewards, terminals, timeouts, and
    next_observations if given) as D4RL wrote its files: top-level datasets, `infos/*` and
    `metadata/*` (for tests and benchmarks; D4RL's own files come from D4RL)."""
    import h5py

    with h5py.File(path, "w") as handle:
        for key, values in arrays.items():
            handle.create_dataset(key, data=values)
        for key, values in (infos or {}).items():
            handle.create_dataset(f"infos/{key}", data=values)
        for key, value in (metadata or {}).items():
            handle[f"metadata/{key}"] = value
