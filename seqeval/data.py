"""Loading datasets into flat float32 arrays.

A dataset id is one of:
- a local Minari dataset with Box observation and action spaces: the ones seqeval builds
  (`seqeval/<env>/<quality>-v0`, `seqeval datasets build ...`) and Farama's own (e.g.
  `mujoco/hopper/medium-v0`, fetched with `seqeval datasets download ID`), unchanged. Minari's
  reader costs about 2 ms per episode; the flat arrays are therefore cached in
  `<dataset>/seqeval_cache.npz` and rebuilt whenever the dataset's files change;
- `d4rl/<env>-<quality>-v2`: D4RL's own HDF5 file in $D4RL_DATASET_DIR (seqeval/d4rl.py);
- `PATH.hdf5`: a file in D4RL's layout, with its Gymnasium task given by `--env`.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import os
import sys
from pathlib import Path

import numpy as np

from seqeval import d4rl, scores
from seqeval.errors import UserError
from seqeval.fileio import write_npz_atomic

CACHE_NAME = "seqeval_cache.npz"
CACHE_FORMAT = 2  # 2: the cache records which reference scores the metadata holds
ARRAY_FIELDS = (
    "observations",
    "actions",
    "rewards",
    "next_observations",
    "terminations",
    "truncations",
    "episode_starts",
)


# Everything a run reads from a dataset, hashed by `dataset_fingerprint`.
FINGERPRINTED_ARRAYS = (*ARRAY_FIELDS, "action_low", "action_high")


def dataset_fingerprint(data: OfflineData, block_sizes: tuple[int, ...] | list[int] = ()) -> str:
    """SHA-256 of a dataset's content as a run sees it: every array with its dtype and shape,
    the reference scores and the sizes of joined blocks. Any change to the data changes it;
    1M transitions of a 17-d task (~160 MB) hash in ~0.3-1.3 s here, a fraction of loading them.
    Runs record it in config.json (a resume on other data is refused) and studies in each
    run's identity."""
    digest = hashlib.sha256(repr((list(block_sizes), data.ref_min_score,
                                  data.ref_max_score)).encode())
    for name in FINGERPRINTED_ARRAYS:
        array = np.ascontiguousarray(getattr(data, name))
        digest.update(f"\0{name}:{array.dtype.str}:{array.shape}\0".encode())
        digest.update(memoryview(array).cast("B"))
    return digest.hexdigest()


@dataclasses.dataclass
class OfflineData:
    """A dataset as flat arrays of N transitions, in the dataset's own (logged) order."""

    dataset_id: str
    observations: np.ndarray  # (N, observation_dim) float32
    actions: np.ndarray  # (N, action_dim) float32, in the environment's units
    rewards: np.ndarray  # (N,) float32
    next_observations: np.ndarray  # (N, observation_dim) float32
    terminations: np.ndarray  # (N,) bool: the episode ended in a terminal state
    truncations: np.ndarray  # (N,) bool: the episode was cut (time limit); bootstrap through
    episode_starts: np.ndarray  # (E,) int64 index of each episode's first transition
    action_low: np.ndarray  # (action_dim,) float32
    action_high: np.ndarray  # (action_dim,) float32
    ref_min_score: float | None  # random policy's mean return (D4RL normalisation)
    ref_max_score: float | None  # expert policy's mean return

    @property
    def size(self) -> int:
        return int(self.rewards.shape[0])

    @property
    def observation_dim(self) -> int:
        return int(self.observations.shape[1])

    @property
    def action_dim(self) -> int:
        return int(self.actions.shape[1])

    @property
    def num_episodes(self) -> int:
        return int(self.episode_starts.shape[0])

    @property
    def has_reference_scores(self) -> bool:
        return self.ref_min_score is not None and self.ref_max_score is not None

    def next_action_rows(self) -> np.ndarray:
        """(N,) int64: for each transition, the row of the same episode's next transition
        (whose action is the one taken at this transition's next observation), or -1 where
        there is none: the episode ends here (terminated, truncated, or its last logged step)
        or the next row does not start at this transition's next observation."""
        rows = np.arange(1, self.size + 1, dtype=np.int64)
        ends = self.terminations | self.truncations
        ends[self.episode_starts[self.episode_starts > 0] - 1] = True
        if self.size:
            ends[-1] = True
            chained = np.all(self.next_observations[:-1] == self.observations[1:], axis=1)
            ends[:-1] |= ~chained
        rows[ends] = -1
        return rows

    def episode_returns(self) -> np.ndarray:
        """Undiscounted return of every episode in the dataset."""
        return np.add.reduceat(self.rewards.astype(np.float64), self.episode_starts)

    def normalized_score(self, returns: np.ndarray | float) -> np.ndarray | None:
        """D4RL's 0-100 normalized score, or None without reference scores."""
        if not self.has_reference_scores:
            return None
        return scores.normalized_score(returns, self.ref_min_score, self.ref_max_score)

    def average_normalized_return(self) -> float | None:
        """The dataset's own mean episode return on the normalized scale (the dashed line)."""
        score = self.normalized_score(self.episode_returns().mean())
        return None if score is None else float(score)

    def info(self) -> dict:
        """JSON-ready description stored in each run's config.json."""
        return {
            "transitions": self.size,
            "episodes": self.num_episodes,
            "observation_dim": self.observation_dim,
            "action_dim": self.action_dim,
            "ref_min_score": self.ref_min_score,
            "ref_max_score": self.ref_max_score,
            "average_return": float(self.episode_returns().mean()),
            "average_normalized_return": self.average_normalized_return(),
        }

    def with_reference_scores(self, ref_min: float, ref_max: float) -> OfflineData:
        ref_min, ref_max = scores.check_reference_scores(
            ref_min, ref_max, f"--ref-scores {ref_min},{ref_max}",
            "pass finite returns MIN,MAX with MAX > MIN")
        return dataclasses.replace(self, ref_min_score=ref_min, ref_max_score=ref_max)

    def validate(self) -> None:
        """Reject data the protocol cannot use, with a message naming the problem and the fix."""
        if self.size == 0:
            raise UserError(f"dataset '{self.dataset_id}' is empty; rebuild it or choose another")
        for name in ("observations", "actions", "rewards", "next_observations"):
            values = getattr(self, name)
            bad = int(np.size(values) - np.count_nonzero(np.isfinite(values)))
            if bad:
                raise UserError(
                    f"dataset '{self.dataset_id}' has {bad} NaN/inf values in '{name}'; "
                    "clean or rebuild the dataset"
                )


SEQEVAL_NAMESPACE = "seqeval"


def minari_store() -> Path:
    """The local Minari store (MINARI_DATASETS_PATH, else ~/.minari/datasets), created when
    missing; a UserError when that path cannot be a directory."""
    from minari.storage import get_dataset_path

    setting = os.environ.get("MINARI_DATASETS_PATH")
    where = (f"MINARI_DATASETS_PATH={setting}" if setting is not None
             else "the Minari store ~/.minari/datasets")
    if setting is not None and Path(setting).exists() and not Path(setting).is_dir():
        raise UserError(f"{where} is a file, not a folder; point MINARI_DATASETS_PATH at a "
                        "folder (it is created when missing)")
    try:
        return Path(get_dataset_path())
    except OSError as error:  # a file above it (NotADirectoryError), no permission
        raise UserError(f"{where} cannot be used as a folder ({error.strerror or error}); "
                        "point MINARI_DATASETS_PATH at a folder") from None


def dataset_root(dataset_id: str) -> Path:
    """The directory of a local Minari dataset (honours MINARI_DATASETS_PATH)."""
    return minari_store() / dataset_id


def local_dataset_ids() -> list[str]:
    import warnings

    import minari

    minari_store()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # damaged datasets are named by `datasets list`
        return sorted(minari.list_local_datasets())


def _not_local(dataset_id: str) -> UserError:
    """An id that is in no store: where it would come from, as a command."""
    store = minari_store()
    parts = dataset_id.split("/")
    if parts[0] == SEQEVAL_NAMESPACE and len(parts) == 3:
        # Before seqeval had its own namespace it wrote pendulum/... and mujoco/<env>/...
        old_id = "/".join(["pendulum" if parts[1] == "pendulum" else f"mujoco/{parts[1]}",
                           parts[2]])
        old = (f" (an earlier seqeval build of it is '{old_id}'; 'seqeval datasets list' says "
               "how to rebuild it under the new id)"
               if (store / old_id / "card.json").is_file() else "")
        return UserError(f"unknown dataset '{dataset_id}': it is not in the local Minari store "
                         f"({store}); build it with: seqeval datasets build {parts[1]}{old}")
    return UserError(f"unknown dataset '{dataset_id}': it is not in the local Minari store "
                     f"({store}); "
                     f"fetch it with: seqeval datasets download {dataset_id} (or build "
                     "seqeval's own with 'seqeval datasets build pendulum'; "
                     "'seqeval datasets list' shows what is here)")


def download(dataset_id: str) -> Path:
    """Fetch a Minari dataset from Farama's server with Minari's own API."""
    import logging

    import minari

    minari_store()
    if d4rl.is_d4rl_id(dataset_id) or d4rl.is_file_path(dataset_id):
        raise UserError(f"'{dataset_id}' is a D4RL file, not a Minari dataset; download it with "
                        "D4RL into $D4RL_DATASET_DIR")
    # huggingface_hub logs each retry (its loggers configure themselves when first imported);
    # the outcome is said in one line below.
    silenced = logging.root.manager.disable
    logging.disable(logging.WARNING)
    try:
        minari.download_dataset(dataset_id)
    except Exception as error:  # no network (requests/urllib3/huggingface errors), unknown id
        detail = str(error).splitlines()[0] if str(error) else ""
        raise UserError(f"cannot download '{dataset_id}' ({type(error).__name__}"
                        f"{': ' + detail[:200] if detail else ''}); check the id (Farama's "
                        "list: https://minari.farama.org) and the network connection") from None
    finally:
        logging.disable(silenced)
    return dataset_root(dataset_id)


def _fingerprint(root: Path) -> str:
    """Changes whenever any file of the dataset changes (size or modification time)."""
    digest = hashlib.sha256(str(CACHE_FORMAT).encode())
    for path in sorted((root / "data").rglob("*")):
        if path.is_file():
            stat = path.stat()
            digest.update(f"{path.relative_to(root)}:{stat.st_size}:{stat.st_mtime_ns}".encode())
    return digest.hexdigest()


def _damaged_dataset(dataset_id: str, error: Exception) -> UserError:
    detail = str(error).splitlines()[0] if str(error) else ""
    return UserError(
        f"dataset '{dataset_id}' cannot be read ({type(error).__name__}"
        f"{': ' + detail if detail else ''}); its files in {dataset_root(dataset_id) / 'data'} "
        "are damaged or incomplete: rebuild it ('seqeval datasets build ...') or download it "
        "again")


def _open_minari(dataset_id: str):
    """minari.load_dataset, with damaged files (metadata.json, HDF5) as a UserError."""
    import minari

    try:
        return minari.load_dataset(dataset_id)
    except Exception as error:  # JSONDecodeError, OSError from h5py, Minari's ValueError...
        raise _damaged_dataset(dataset_id, error) from None


def _read_minari(dataset_id: str) -> dict:
    """Read every episode through Minari's API (slow; the result is cached)."""
    try:
        return _read_episodes(dataset_id, _open_minari(dataset_id))
    except UserError:
        raise
    except Exception as error:  # an HDF5 file damaged past its header
        raise _damaged_dataset(dataset_id, error) from None


def _read_episodes(dataset_id: str, dataset) -> dict:
    import gymnasium as gym

    for role, space in (("observation", dataset.observation_space),
                        ("action", dataset.action_space)):
        if not isinstance(space, gym.spaces.Box) or len(space.shape) != 1:
            raise UserError(
                f"dataset '{dataset_id}' has a {type(space).__name__} {role} space {space}; "
                "seqeval needs flat Box observation and action spaces"
            )
    parts: dict[str, list[np.ndarray]] = {f: [] for f in ARRAY_FIELDS}
    start = 0
    for episode in dataset.iterate_episodes():
        observations = np.asarray(episode.observations, np.float32)
        length = len(episode.rewards)
        if length == 0:
            continue
        parts["observations"].append(observations[:-1])
        parts["next_observations"].append(observations[1:])
        parts["actions"].append(np.asarray(episode.actions, np.float32).reshape(length, -1))
        parts["rewards"].append(np.asarray(episode.rewards, np.float32))
        parts["terminations"].append(np.asarray(episode.terminations, bool))
        parts["truncations"].append(np.asarray(episode.truncations, bool))
        parts["episode_starts"].append(np.array([start], np.int64))
        start += length
    obs_dim = int(np.prod(dataset.observation_space.shape))
    act_dim = int(np.prod(dataset.action_space.shape))
    empty = {
        "observations": np.zeros((0, obs_dim), np.float32),
        "next_observations": np.zeros((0, obs_dim), np.float32),
        "actions": np.zeros((0, act_dim), np.float32),
        "rewards": np.zeros(0, np.float32),
        "terminations": np.zeros(0, bool),
        "truncations": np.zeros(0, bool),
        "episode_starts": np.zeros(0, np.int64),
    }
    arrays = {f: (np.concatenate(v) if v else empty[f]) for f, v in parts.items()}
    metadata = dataset.storage.metadata
    arrays["action_low"] = np.asarray(dataset.action_space.low, np.float32).reshape(-1)
    arrays["action_high"] = np.asarray(dataset.action_space.high, np.float32).reshape(-1)
    ref = [metadata.get("ref_min_score"), metadata.get("ref_max_score")]
    arrays["ref_present"] = np.array([r is not None for r in ref])
    try:
        arrays["ref_scores"] = np.array([np.nan if r is None else r for r in ref], np.float64)
    except (TypeError, ValueError):
        raise UserError(f"dataset '{dataset_id}' has reference scores that are not numbers "
                        f"({ref[0]!r}, {ref[1]!r}); {_metadata_fix(dataset_id)}") from None
    return arrays


def _metadata_fix(dataset_id: str) -> str:
    return (f"correct ref_min_score/ref_max_score in "
            f"{dataset_root(dataset_id) / 'data' / 'metadata.json'}, or rebuild the dataset")


_NOTED_D4RL_REFERENCES: set[str] = set()


def _reference_scores(dataset_id: str, arrays: dict) -> tuple[float | None, float | None]:
    """The dataset's own reference scores (rejected unless finite with max > min); else, for
    Farama's MuJoCo ids, D4RL's published ones (said once per task); else none."""
    if bool(np.all(arrays["ref_present"])):
        return scores.check_reference_scores(*arrays["ref_scores"], f"dataset '{dataset_id}'",
                                             _metadata_fix(dataset_id))
    published = scores.d4rl_reference_returns(dataset_id)
    if published is None:
        return None, None
    task, ref_min, ref_max = published
    if task not in _NOTED_D4RL_REFERENCES:
        _NOTED_D4RL_REFERENCES.add(task)
        print(f"seqeval: note: dataset '{dataset_id}' has no reference scores; normalizing "
              f"with D4RL's published {task} returns (random {ref_min:g}, expert {ref_max:g}); "
              "pass --ref-scores MIN,MAX to use others", file=sys.stderr)
    return ref_min, ref_max


CACHE_KEYS = (*ARRAY_FIELDS, "action_low", "action_high", "ref_present", "ref_scores")


def _read_cache(cache: Path, fingerprint: str) -> dict | None:
    """The cached arrays, or None when the cache is stale or cannot be read (then rebuilt)."""
    try:
        with np.load(cache) as stored:
            if str(stored["fingerprint"]) != fingerprint:
                return None
            return {k: stored[k] for k in CACHE_KEYS}
    except Exception as error:  # a damaged archive fails in many ways (BadZipFile, zlib, EOF...)
        print(f"seqeval: note: the dataset cache '{cache}' cannot be read "
              f"({type(error).__name__}); rebuilding it", file=sys.stderr)
        return None


def load_dataset(dataset_id: str, use_cache: bool = True, env: str | None = None) -> OfflineData:
    """Flat arrays of a dataset (a Minari id, `d4rl/<env>-<quality>-v2`, or a D4RL-layout
    `PATH.hdf5` whose Gymnasium task `env` names); raises UserError when it cannot be used."""
    if d4rl.is_d4rl_id(dataset_id) or d4rl.is_file_path(dataset_id):
        return load_d4rl(dataset_id, env)
    if env is not None:
        raise UserError(f"--env {env} is for a dataset file (PATH.hdf5); '{dataset_id}' "
                        "records its own environment: drop --env")
    root = dataset_root(dataset_id)
    if not (root / "data").is_dir():
        raise _not_local(dataset_id)
    fingerprint = _fingerprint(root)
    cache = root / CACHE_NAME
    arrays = None
    if use_cache and cache.is_file():
        arrays = _read_cache(cache, fingerprint)
    if arrays is None:
        arrays = _read_minari(dataset_id)
        if use_cache:
            try:
                write_npz_atomic(cache, {**arrays, "fingerprint": np.array(fingerprint)})
            except OSError:
                pass  # read-only store: work without a cache
    ref_min, ref_max = _reference_scores(dataset_id, arrays)
    data = OfflineData(
        dataset_id=dataset_id,
        **{f: arrays[f] for f in ARRAY_FIELDS},
        action_low=arrays["action_low"],
        action_high=arrays["action_high"],
        ref_min_score=ref_min,
        ref_max_score=ref_max,
    )
    data.validate()
    return data


def load_d4rl(dataset_id: str, env: str | None = None) -> OfflineData:
    """A D4RL file by its D4RL name (`d4rl/hopper-medium-v2`) or its path (with `env`)."""
    path, gym_id = _d4rl_file_and_task(dataset_id, env)
    observation_dim, action_dim, low, high, max_steps = d4rl.env_spaces(gym_id)
    arrays = d4rl.read_file(path, observation_dim, action_dim, max_steps)
    if d4rl.env_for_gym_id(gym_id) == "ant":
        d4rl.check_ant_contact_forces(path, arrays["observations"])
    ref_min = ref_max = None
    published = scores.d4rl_reference_returns(dataset_id if env is None else gym_id)
    if published is not None:
        task, ref_min, ref_max = published
        if env is not None and task not in _NOTED_D4RL_REFERENCES:
            _NOTED_D4RL_REFERENCES.add(task)
            print(f"seqeval: note: normalizing '{dataset_id}' with D4RL's published {task} "
                  f"returns (random {ref_min:g}, expert {ref_max:g}); pass --ref-scores "
                  "MIN,MAX to use others", file=sys.stderr)
    data = OfflineData(dataset_id=dataset_id, **arrays, action_low=low, action_high=high,
                       ref_min_score=ref_min, ref_max_score=ref_max)
    if data.size == 0:  # every step dropped; non-finite values were refused naming the file
        data.validate()
    return data


def _d4rl_file_and_task(dataset_id: str, env: str | None) -> tuple[Path, str]:
    if d4rl.is_d4rl_id(dataset_id):
        if env is not None:
            raise UserError(f"--env {env}: '{dataset_id}' names its task "
                            f"({d4rl.parse_id(dataset_id).gym_id}); drop --env")
        return d4rl.file_for_id(dataset_id), d4rl.parse_id(dataset_id).gym_id
    if env is None:
        raise UserError(f"dataset file '{dataset_id}' needs its task: pass --env with a "
                        "Gymnasium id, e.g. --env Hopper-v5")
    path = Path(dataset_id).expanduser()
    if not path.is_file():
        raise UserError(f"dataset file '{dataset_id}' does not exist; pass the path of a "
                        "D4RL-layout .hdf5 file")
    return path, env


def source_files(dataset_id: str) -> list[Path]:
    """The files a dataset's arrays are read from (for content fingerprints): a D4RL file, or
    every file of a Minari dataset's `data/` folder."""
    if d4rl.is_d4rl_id(dataset_id):
        return [d4rl.file_for_id(dataset_id)]
    if d4rl.is_file_path(dataset_id):
        return [Path(dataset_id).expanduser()]
    root = dataset_root(dataset_id) / "data"
    return sorted(path for path in root.rglob("*") if path.is_file())


def make_eval_env_factory(dataset_id: str, env: str | None = None):
    """A zero-argument function creating the dataset's evaluation environment: the Gymnasium
    v5 task for D4RL files, Minari's `recover_environment(eval_env=True)` otherwise."""
    if d4rl.is_d4rl_id(dataset_id) or d4rl.is_file_path(dataset_id):
        gym_id = _d4rl_file_and_task(dataset_id, env)[1]
        return functools.partial(d4rl.make_env, gym_id)
    dataset = _open_minari(dataset_id)
    if dataset.env_spec is None:
        raise UserError(
            f"dataset '{dataset_id}' records no environment; seqeval cannot evaluate in it"
        )
    return _MinariEvalEnv(dataset_id, dataset)


class _MinariEvalEnv:
    """A Minari dataset's evaluation environment, made on call; picklable (by id), so that
    evaluation worker processes can make their own."""

    def __init__(self, dataset_id: str, dataset=None):
        self.dataset_id = dataset_id
        self._dataset = dataset

    def __call__(self):
        if self._dataset is None:
            self._dataset = _open_minari(self.dataset_id)
        return self._dataset.recover_environment(eval_env=True)

    def __getstate__(self) -> dict:
        return {"dataset_id": self.dataset_id, "_dataset": None}


def concatenate(parts: list[OfflineData]) -> OfflineData:
    """Datasets of one task, one after the other (a distribution-shift dataset)."""
    first = parts[0]
    for part in parts[1:]:
        if (part.observation_dim, part.action_dim) != (first.observation_dim, first.action_dim):
            raise UserError(
                f"cannot concatenate '{first.dataset_id}' and '{part.dataset_id}': their "
                "observation/action shapes differ; use datasets of one task"
            )
    offsets = np.cumsum([0] + [p.size for p in parts[:-1]])
    with_refs = [p for p in parts if p.has_reference_scores]
    return OfflineData(
        dataset_id=",".join(p.dataset_id for p in parts),
        **{f: np.concatenate([getattr(p, f) for p in parts])
           for f in ARRAY_FIELDS if f != "episode_starts"},
        episode_starts=np.concatenate([p.episode_starts + o for p, o in zip(parts, offsets,
                                                                           strict=True)]),
        action_low=first.action_low,
        action_high=first.action_high,
        ref_min_score=with_refs[0].ref_min_score if with_refs else None,
        ref_max_score=with_refs[0].ref_max_score if with_refs else None,
    )


def load_datasets(spec: str, env: str | None = None) -> tuple[OfflineData, tuple[int, ...]]:
    """A dataset id, or several joined by commas (fed in that order); returns the data and
    the size of each block (one block for a single dataset). `env`: the task of PATH.hdf5
    datasets."""
    ids = [part.strip() for part in spec.split(",") if part.strip()]
    if not ids:
        raise UserError("--dataset is empty; pass a Minari dataset id")
    parts = [load_dataset(dataset_id, env=env) for dataset_id in ids]
    data = parts[0] if len(parts) == 1 else concatenate(parts)
    return data, tuple(p.size for p in parts)
