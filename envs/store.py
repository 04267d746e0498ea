"""seqeval's builds in the local Minari store: where a dataset lives, its card, writing one whole
(staged, then renamed into place) and checking that one is complete, listing the store, and
naming what is damaged or was built under an older id. seqeval.envs.datasets builds them.
"""

from __future__ import annotations

import importlib.metadata
import json
import os
import platform
import shutil
import sys
import warnings
from pathlib import Path
from typing import Any

from seqeval.data import minari_store
from seqeval.envs.registry import NAMESPACE, OLD_NAMESPACES

CARD_NAME = "card.json"


AUTHOR = "seqeval dataset builder"


PACKAGES = ("seqeval", "jax", "jaxlib", "flax", "optax", "numpy", "gymnasium", "mujoco", "minari",
            "h5py")


def minari_root() -> Path:
    """The local Minari store (MINARI_DATASETS_PATH, else ~/.minari/datasets); a UserError
    when that path is not a folder."""
    return minari_store()


def dataset_dir(dataset_id: str) -> Path:
    return minari_root() / dataset_id


def package_versions() -> dict[str, str]:
    versions = {"python": platform.python_version()}
    for name in PACKAGES:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
    return versions


def read_json(path: Path) -> Any:
    return json.loads(path.read_text()) if path.exists() else None


def note(message: str) -> None:
    print(f"seqeval: note: {message}", file=sys.stderr)


FOREIGN = "not built by seqeval"


def dataset_files(root: Path) -> dict[str, int]:
    """Size in bytes of every file of a dataset's `data/` directory, by relative path."""
    return {str(path.relative_to(root)): path.stat().st_size
            for path in sorted((root / "data").rglob("*")) if path.is_file()}


def dataset_problem(dataset_id: str) -> str | None:
    """None when a local dataset is complete (its card is readable, every file it lists is
    there with the recorded size, Minari's metadata and hdf5 file open and agree with the
    card); FOREIGN for a dataset seqeval did not build; else what is wrong."""
    import h5py

    root = dataset_dir(dataset_id)
    try:
        metadata = json.loads((root / "data" / "metadata.json").read_text())
    except (OSError, ValueError):
        metadata = None
    try:
        card = read_json(root / CARD_NAME)
    except (OSError, ValueError):
        return f"{CARD_NAME} is unreadable"
    if card is None:
        if metadata is not None and metadata.get("author") and AUTHOR not in metadata["author"]:
            return FOREIGN
        return f"it has no {CARD_NAME} (an interrupted write)"
    if metadata is None:
        return "data/metadata.json is missing or unreadable"
    for name, size in card.get("files", {}).items():
        path = root / name
        if not path.is_file():
            return f"{name} is missing"
        if path.stat().st_size != size:
            return f"{name} has {path.stat().st_size} bytes, the card says {size}"
    if (metadata.get("total_steps"), metadata.get("total_episodes")) != (
            card.get("transitions"), card.get("episodes")):
        return "its metadata and card count different transitions or episodes"
    data_file = root / "data" / "main_data.hdf5"
    if data_file.exists():
        try:
            with h5py.File(data_file, "r") as handle:
                episodes = len(handle)
        except OSError:
            return "data/main_data.hdf5 is unreadable"
        if episodes != card.get("episodes"):
            return (f"data/main_data.hdf5 holds {episodes} episodes, the card says "
                    f"{card['episodes']}")
    return None


def staging_root() -> Path:
    return minari_root() / ".seqeval_builds" / "staging"


def remove_dead_staging() -> None:
    """Delete what killed builds left in the staging directory (named by their process id)."""
    root = staging_root()
    if not root.is_dir():
        return
    for entry in root.iterdir():
        try:
            pid = int(entry.name.split(".")[1])
            os.kill(pid, 0)
            continue  # a live build's
        except (IndexError, ValueError, ProcessLookupError):
            pass
        except PermissionError:
            continue  # another user's live process
        shutil.rmtree(entry, ignore_errors=True)


def _fsync_tree(root: Path) -> None:
    for path in root.rglob("*"):
        if path.is_file():
            with open(path, "rb") as handle:
                os.fsync(handle.fileno())


def stage_dataset(dataset_id: str, gym_id: str, episodes: list[Any],
                  metadata: dict[str, Any]) -> Path:
    """Write `episodes` (seqeval.envs.rollout.Episode) as Minari dataset `dataset_id` into a
    staging folder of this process, with Minari's `metadata` beside the id, author, Minari
    version and evaluation environment; returns the folder, for `install_dataset`."""
    import gymnasium as gym
    import minari
    from minari.data_collector import EpisodeBuffer
    from minari.dataset.minari_storage import MinariStorage

    buffers = [
        EpisodeBuffer(id=number, seed=e.seed, observations=e.observations,
                      actions=e.actions, rewards=e.rewards, terminations=e.terminations,
                      truncations=e.truncations)
        for number, e in enumerate(episodes)
    ]
    staging = staging_root() / f"{dataset_id.replace('/', '__')}.{os.getpid()}"
    shutil.rmtree(staging, ignore_errors=True)
    (staging / "data").mkdir(parents=True)
    gym_spec = gym.spec(gym_id)
    env = gym.make(gym_spec)
    # Minari's create_dataset_from_buffers writes straight into the store; its storage
    # class writes anywhere, so the dataset is written whole before it appears there.
    storage = MinariStorage.new(staging / "data", observation_space=env.observation_space,
                                action_space=env.action_space, env_spec=gym_spec)
    env.close()
    storage.update_metadata({
        "dataset_id": dataset_id,
        "author": {AUTHOR},
        "algorithm_name": metadata["algorithm_name"],
        "description": metadata["description"],
        "minari_version": minari.__version__,
        "eval_env_spec": gym_spec.to_json(),
        **{k: v for k, v in metadata.items() if k not in ("algorithm_name", "description")},
    })
    storage.update_episodes(buffers)
    return staging


def install_dataset(staging: Path, dataset_id: str) -> None:
    """Move a completely written dataset from `staging` into the store (replacing any
    dataset already there only once the new one is complete)."""
    from minari.namespace import create_namespace, list_local_namespaces

    _fsync_tree(staging)
    final = dataset_dir(dataset_id)
    namespace = dataset_id.rpartition("/")[0]
    if namespace and namespace not in list_local_namespaces():
        create_namespace(namespace)
    final.parent.mkdir(parents=True, exist_ok=True)
    if final.exists():
        replaced = staging.with_name(staging.name + ".replaced")
        os.rename(final, replaced)
        os.rename(staging, final)
        shutil.rmtree(replaced)
    else:
        os.rename(staging, final)


def read_card(dataset_id: str) -> dict | None:
    return read_json(dataset_dir(dataset_id) / CARD_NAME)


def list_datasets() -> list[dict]:
    """Every readable local Minari dataset: its card when seqeval built it, else Minari's
    metadata (`damaged_datasets` names the others)."""
    import minari

    minari_store()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        local = minari.list_local_datasets()
    rows = []
    for dataset_id, metadata in local.items():
        card = read_card(dataset_id)
        if card is not None:
            rows.append({**card, "has_card": True})
            continue
        rows.append({
            "dataset_id": dataset_id,
            "transitions": metadata.get("total_steps"),
            "episodes": metadata.get("total_episodes"),
            "behaviour_normalized_score": None,
            "ref_min_score": metadata.get("ref_min_score"),
            "ref_max_score": metadata.get("ref_max_score"),
            "has_card": False,
        })
    return rows


def damaged_datasets() -> list[tuple[str, str]]:
    """(id, problem) of every folder in the store that looks like a Minari dataset (it has a
    `data/` folder, as Minari decides) but that Minari cannot list."""
    from minari.dataset.minari_storage import MinariStorage

    root = minari_store()
    found: list[tuple[str, str]] = []

    def visit(folder: Path) -> None:
        if (folder / "data").is_dir():
            dataset_id = folder.relative_to(root).as_posix()
            try:
                metadata = MinariStorage.read_raw_metadata(str(folder / "data"))
                if metadata.get("dataset_id") != dataset_id:
                    found.append((dataset_id, f"its metadata names it "
                                  f"'{metadata.get('dataset_id')}'"))
            except Exception as error:  # missing or damaged metadata.json
                detail = str(error).splitlines()[0] if str(error) else ""
                found.append((dataset_id, f"data/metadata.json cannot be read "
                              f"({type(error).__name__}{': ' + detail[:120] if detail else ''})"))
            return
        try:
            children = sorted(folder.iterdir())
        except OSError as error:  # a folder we may not read
            found.append((folder.relative_to(root).as_posix() or ".",
                          f"its folder cannot be read ({error.strerror or error})"))
            return
        for child in children:
            if child.is_dir() and not child.name.startswith("."):
                visit(child)

    visit(root)
    return found


def old_builds() -> dict[str, list[tuple[str, dict]]]:
    """seqeval's builds under the ids it used before its own namespace (`pendulum/...`,
    `mujoco/<env>/...`, recognised by seqeval's card), by environment."""
    found: dict[str, list[tuple[str, dict]]] = {}
    for row in list_datasets():
        dataset_id = row["dataset_id"]
        env = row.get("env")
        if (not row.get("has_card") or env not in OLD_NAMESPACES
                or not dataset_id.startswith(OLD_NAMESPACES[env] + "/")):
            continue
        found.setdefault(env, []).append((dataset_id, row))
    return found


def old_builds_note() -> str | None:
    """One line saying how to rebuild old-id builds under seqeval's namespace, or None."""
    found = old_builds()
    if not found:
        return None
    commands, folders = [], []
    for env, builds in found.items():
        cards = [card for _, card in builds]
        plain = [c for c in cards if c.get("quality") in ("random", "medium", "expert")]
        card = (plain or cards)[0]
        budget = card.get("sac_budget", {})
        command = f"seqeval datasets build {env} --seed {card.get('seeds', {}).get('sac', 0)}"
        if "env_steps" in budget:
            command += f" --sac-steps {budget['env_steps']}"
        if "checkpoint_every" in budget:
            command += f" --checkpoint-every {budget['checkpoint_every']}"
        if plain:
            command += f" --transitions {card['transitions']}"
        commands.append(f"'{command}'")
        folders += [str(dataset_dir(dataset_id)) for dataset_id, _ in builds]
    ids = [dataset_id for builds in found.values() for dataset_id, _ in builds]
    return (f"{len(ids)} dataset(s) built by an earlier seqeval sit under old ids "
            f"({', '.join(ids)}); seqeval's builds are now {NAMESPACE}/<env>/<quality>-v0: "
            f"rebuild them with {' and '.join(commands)} (the SAC training cached in "
            f"{minari_root() / '.seqeval_builds'} is reused), then delete the old folders: "
            f"rm -r {' '.join(folders)}")
