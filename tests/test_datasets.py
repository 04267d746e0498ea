"""The D4RL-style dataset builder on Pendulum, with tiny SAC budgets in a temporary Minari store."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import warnings
from pathlib import Path

import minari
import numpy as np
import pytest
from helpers import tiny_recipe

from seqeval.cli import main
from seqeval.envs import registry
from seqeval.envs.datasets import SuiteBuilder, build_datasets
from seqeval.envs.registry import QUALITIES, get_recipe
from seqeval.envs.sac import SACTrainer
from seqeval.envs.store import read_card
from seqeval.errors import UserError

warnings.filterwarnings("ignore", module="minari")

# The smallest budget whose SAC expert reliably beats the random policy (it learns from ~4,500
# environment steps on); the builder refuses reference scores where it does not.
# 3,000 SAC steps (the SAC part is most of a tiny build: 24 of 27 s at 6,000): enough for three
# checkpoints, a medium snapshot and an expert that differs from random.
TINY = {"transitions": 1000, "sac_steps": 3000, "checkpoint_every": 1000, "progress": False}
IDS = [f"seqeval/pendulum/{quality}-v0" for quality in QUALITIES]
# Episodes behind each reference score: 20, not the recipe's 100 (D4RL's), which would spend
# most of a tiny build rolling out the two reference policies. The checks of the scores use
# the card's own episode count.
REFERENCE_EPISODES = 20
# SAC on 32x32 networks, not the recipe's 64x64: a tiny build took 14 instead of 20 CPU-s, and
# its expert still clearly beats random (reference returns -1230 against -1564).
SAC_WIDTH = 32
DEFAULT_PENDULUM = registry.RECIPES["pendulum"]


@pytest.fixture(scope="module", autouse=True)
def tiny_pendulum_recipe():
    with pytest.MonkeyPatch.context() as patch:
        patch.setitem(registry.RECIPES, "pendulum",
                      tiny_recipe("pendulum", REFERENCE_EPISODES, SAC_WIDTH))
        yield


@pytest.fixture(scope="module")
def built_store(tmp_path_factory) -> Path:
    """A Minari store with the five Pendulum datasets, built with a tiny SAC budget."""
    store = tmp_path_factory.mktemp("minari_built")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("MINARI_DATASETS_PATH", str(store))
        assert build_datasets("pendulum", **TINY) == IDS
    return store


@pytest.fixture
def built(built_store, monkeypatch) -> Path:
    monkeypatch.setenv("MINARI_DATASETS_PATH", str(built_store))
    return built_store


def episodes_of(dataset_id: str) -> list:
    return list(minari.load_dataset(dataset_id).iterate_episodes())


def test_ids_metadata_reference_scores_and_recovered_env(built):
    medium_steps = None
    for dataset_id in IDS:
        dataset = minari.load_dataset(dataset_id)
        metadata = dataset.storage.metadata
        card = read_card(dataset_id)
        assert card["dataset_id"] == dataset_id
        assert metadata["ref_min_score"] == pytest.approx(card["ref_min_score"])
        assert metadata["ref_max_score"] == pytest.approx(card["ref_max_score"])
        assert metadata["num_episodes_average_score"] == card["reference_episodes"] \
            == REFERENCE_EPISODES
        assert card["ref_min_score"] < card["ref_max_score"]
        refs = np.array([card["ref_min_score"], card["ref_max_score"]])
        np.testing.assert_allclose(minari.get_normalized_score(dataset, refs), [0.0, 1.0])
        assert dataset.total_steps == card["transitions"]
        assert dataset.total_episodes == card["episodes"]
        env = dataset.recover_environment(eval_env=True)
        assert env.spec.id == "Pendulum-v1" and env.spec.max_episode_steps == 200
        for key in ("behaviour_normalized_score", "seeds", "build_seconds", "packages"):
            assert key in card
        assert {"jax", "minari", "gymnasium"} <= set(card["packages"])
        if dataset_id.endswith("/medium-replay-v0"):
            medium_steps = card["behaviour"]["snapshot"]["env_steps"]
            assert dataset.total_steps == medium_steps  # the whole replay up to medium
    for quality in ("random", "medium", "expert"):
        assert minari.load_dataset(f"seqeval/pendulum/{quality}-v0").total_steps == 1000
    assert minari.load_dataset("seqeval/pendulum/medium-expert-v0").total_steps == 2000
    # The random and the expert data come from the reference policies: their mean returns agree
    # with the references within sampling error (4 standard errors; the spread is taken from
    # whichever sample shows more of it: 5 episodes of a half-trained expert may all be lucky).
    for quality, ref in (("random", "ref_min_score"), ("expert", "ref_max_score")):
        card = read_card(f"seqeval/pendulum/{quality}-v0")
        spread = max(card["behaviour_return_std"], card["reference_returns"][quality]["std"])
        error = spread * np.sqrt(
            1 / card["behaviour_return_episodes"] + 1 / card["reference_episodes"])
        assert abs(card["behaviour_return_mean"] - card[ref]) < 4 * error + 1e-6

def test_terminations_and_truncations_follow_the_environment(built):
    for dataset_id in IDS:
        for episode in episodes_of(dataset_id):
            assert not episode.terminations.any()  # Pendulum never terminates
            # Exactly one end marker, on the last step (time limit or a cut).
            assert episode.truncations[-1] and not episode.truncations[:-1].any()
            assert episode.observations.shape[0] == episode.actions.shape[0] + 1
    for quality in ("random", "medium", "expert"):
        assert all(len(e.rewards) == 200 for e in episodes_of(f"seqeval/pendulum/{quality}-v0"))


def test_medium_expert_is_exactly_medium_then_expert(built):
    joined = episodes_of("seqeval/pendulum/medium-expert-v0")
    parts = episodes_of("seqeval/pendulum/medium-v0") + episodes_of("seqeval/pendulum/expert-v0")
    assert len(joined) == len(parts)
    for a, b in zip(joined, parts, strict=True):
        for field in ("observations", "actions", "rewards", "terminations", "truncations"):
            np.testing.assert_array_equal(getattr(a, field), getattr(b, field))


def test_medium_replay_keeps_collection_order(built):
    """Episodes appear in the order they finished in SAC's replay buffer."""
    card = read_card("seqeval/pendulum/medium-replay-v0")
    builder = SuiteBuilder(get_recipe("pendulum"), transitions=TINY["transitions"],
                           sac_steps=TINY["sac_steps"], checkpoint_every=TINY["checkpoint_every"],
                           progress=False)
    last = len(builder.trainer.read_progress()["checkpoints"]) - 1
    buffer_observations = builder.trainer.replay_rows(last)["observations"]  # insertion order
    row_of = {row.tobytes(): index for index, row in enumerate(buffer_observations)}
    episodes = episodes_of("seqeval/pendulum/medium-replay-v0")
    last_rows = [row_of[e.observations[-2].astype(np.float32).tobytes()] for e in episodes]
    first_rows = [row_of[e.observations[0].astype(np.float32).tobytes()] for e in episodes]
    # Ends are in collection order; every episode's rows lie in the replay up to medium.
    assert last_rows == sorted(last_rows)
    assert max(last_rows) < card["behaviour"]["snapshot"]["env_steps"]
    assert min(first_rows) == 0
    assert sum(len(e.rewards) for e in episodes) == card["transitions"]


def test_rebuild_fills_in_a_missing_dataset_from_the_caches(built):
    kept = minari.load_dataset("seqeval/pendulum/expert-v0")
    kept_mtime = os.path.getmtime(Path(built) / "seqeval/pendulum/expert-v0/card.json")
    before = episodes_of("seqeval/pendulum/medium-expert-v0")
    minari.delete_dataset("seqeval/pendulum/medium-expert-v0")
    assert build_datasets("pendulum", **TINY) == IDS
    after = episodes_of("seqeval/pendulum/medium-expert-v0")
    np.testing.assert_array_equal(np.concatenate([e.actions for e in before]),
                                  np.concatenate([e.actions for e in after]))
    assert os.path.getmtime(Path(built) / "seqeval/pendulum/expert-v0/card.json") == kept_mtime
    assert kept.total_steps == 1000


def test_datasets_list_shows_cards_and_other_local_datasets(built, capsys):
    from minari.data_collector import EpisodeBuffer

    if "other/plain-v0" not in minari.list_local_datasets():
        observations = np.zeros((3, 3), np.float32)
        minari.create_dataset_from_buffers(
            "other/plain-v0",
            [EpisodeBuffer(id=0, observations=observations,
                           actions=np.zeros((2, 1), np.float32), rewards=np.zeros(2),
                           terminations=np.array([False, True]),
                           truncations=np.array([False, False]))],
            env="Pendulum-v1", algorithm_name="none", author="test", description="no card",
        )
    assert main(["datasets", "list"]) == 0
    out = capsys.readouterr().out
    lines = {line.split()[0]: line.split() for line in out.splitlines() if line.strip()}
    for dataset_id in IDS:
        card = read_card(dataset_id)
        row = lines[dataset_id]
        assert row[1] == str(card["transitions"]) and row[2] == str(card["episodes"])
        assert row[-1] == "yes"
        assert float(row[4]) == pytest.approx(card["ref_min_score"], abs=0.05)
    assert lines["other/plain-v0"][1] == "2" and lines["other/plain-v0"][-1] == "no"


def test_interrupted_build_resumes_after_the_first_checkpoint(tmp_path, monkeypatch):
    monkeypatch.setenv("MINARI_DATASETS_PATH", str(tmp_path))
    original = SACTrainer._save_checkpoint
    saved_at: list[int] = []

    def interrupting(self, *args, **kwargs):
        original(self, *args, **kwargs)
        saved_at.append(self.read_progress()["env_steps"])
        if len(saved_at) == 1:
            raise KeyboardInterrupt  # as if the user pressed Ctrl-C right after it

    monkeypatch.setattr(SACTrainer, "_save_checkpoint", interrupting)
    with pytest.raises(KeyboardInterrupt):
        build_datasets("pendulum", **TINY)
    assert saved_at == [1000]
    assert not minari.list_local_datasets()

    # Resuming with other settings would mix two runs: refused with a one-line error.
    other = SuiteBuilder(get_recipe("pendulum"), sac_steps=TINY["sac_steps"], checkpoint_every=500,
                         progress=False)
    other.work_dir = SuiteBuilder(get_recipe("pendulum"), **TINY).work_dir
    with pytest.raises(UserError, match="other settings"):
        other.train()

    ids = build_datasets("pendulum", **{**TINY, "qualities": ["medium-replay"]})
    assert saved_at == list(range(1000, 3001, 1000))  # resumed at 2000, not restarted
    work = next((tmp_path / ".seqeval_builds").iterdir()) / "sac"
    progress = json.loads((work / "progress.json").read_text())
    assert progress["complete"] and progress["checkpoints"][-1]["gradient_steps"] > 0
    assert ids == ["seqeval/pendulum/medium-replay-v0"]
    # Every transition before and after the interruption is in the replay record.
    index = len(progress["checkpoints"]) - 1
    replay = SuiteBuilder(get_recipe("pendulum"), sac_steps=TINY["sac_steps"],
                          checkpoint_every=TINY["checkpoint_every"],
                          progress=False).trainer.replay_episodes(index)
    assert sum(len(e) for e in replay) == TINY["sac_steps"]


# A build in a real subprocess that SIGKILLs itself at a chosen point: right after the SAC
# checkpoint with the given index is committed, or halfway through writing the first dataset's
# episodes (Minari's hdf5 writer), or not at all.
KILLED_BUILD = """
import json, os, signal, sys
from seqeval.envs import registry, sac
from seqeval.envs.datasets import build_datasets
from minari.dataset._storages.hdf5_storage import HDF5Storage

sys.path.insert(0, sys.argv[5])
from helpers import tiny_recipe

point = sys.argv[1]
registry.RECIPES["pendulum"] = tiny_recipe("pendulum", int(sys.argv[3]), int(sys.argv[4]))
if point == "checkpoint":
    save = sac.SACTrainer._save_checkpoint

    def save_then_die(self, *args, **kwargs):
        save(self, *args, **kwargs)
        if len(self.read_progress()["checkpoints"]) == 2:
            os.kill(os.getpid(), signal.SIGKILL)

    sac.SACTrainer._save_checkpoint = save_then_die
elif point == "write":
    write = HDF5Storage.update_episodes

    def write_half_then_die(self, episodes):
        episodes = list(episodes)
        write(self, episodes[: len(episodes) // 2])
        os.kill(os.getpid(), signal.SIGKILL)

    HDF5Storage.update_episodes = write_half_then_die
build_datasets("pendulum", **json.loads(sys.argv[2]))
"""


def run_build(store: Path, point: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "MINARI_DATASETS_PATH": str(store)}
    return subprocess.run([sys.executable, "-c", KILLED_BUILD, point, json.dumps(TINY),
                           str(REFERENCE_EPISODES), str(SAC_WIDTH),
                           str(Path(__file__).parent)], env=env,
                          capture_output=True, text=True, timeout=1200)


def suite_contents(store: Path, monkeypatch) -> dict:
    """Every dataset's arrays and card (without times), the SAC progress (without times) and
    the reference scores of one store."""
    monkeypatch.setenv("MINARI_DATASETS_PATH", str(store))
    contents = {}
    for dataset_id in IDS:
        episodes = episodes_of(dataset_id)
        arrays = {field: np.concatenate([getattr(e, field) for e in episodes])
                  for field in ("observations", "actions", "rewards", "terminations",
                                "truncations")}
        card = {k: v for k, v in read_card(dataset_id).items()
                if k not in ("build_seconds", "created")}
        contents[dataset_id] = (arrays, card, [e.id for e in episodes])
    work = next((store / ".seqeval_builds").glob("pendulum-*"))
    progress = json.loads((work / "sac" / "progress.json").read_text())
    progress.pop("train_seconds")
    contents["progress"] = progress
    contents["references"] = json.loads((work / "reference_scores.json").read_text())
    return contents


def test_build_killed_after_a_checkpoint_and_while_writing_equals_an_uninterrupted_one(
        built_store, tmp_path, monkeypatch):
    killed = run_build(tmp_path, "checkpoint")
    assert killed.returncode == -9, killed.stderr
    progress = json.loads(next(tmp_path.glob(".seqeval_builds/*/sac/progress.json")).read_text())
    assert len(progress["checkpoints"]) == 2 and not progress["complete"]

    killed = run_build(tmp_path, "write")  # resumes SAC, then dies writing the first dataset
    assert killed.returncode == -9, killed.stderr
    monkeypatch.setenv("MINARI_DATASETS_PATH", str(tmp_path))
    assert not minari.list_local_datasets()  # nothing half-written in the store

    finished = run_build(tmp_path, "none")
    assert finished.returncode == 0, finished.stderr
    assert "did not replay" not in finished.stderr
    resumed, uninterrupted = (suite_contents(store, monkeypatch)
                              for store in (tmp_path, built_store))
    assert resumed["progress"] == uninterrupted["progress"]
    assert resumed["progress"]["inexact_resumes"] == []
    assert resumed["references"] == uninterrupted["references"]
    for dataset_id in IDS:
        arrays, card, episode_ids = resumed[dataset_id]
        expected_arrays, expected_card, expected_ids = uninterrupted[dataset_id]
        assert card == expected_card, dataset_id
        assert episode_ids == expected_ids
        for field, values in arrays.items():
            np.testing.assert_array_equal(values, expected_arrays[field], err_msg=dataset_id)


@pytest.mark.parametrize("damage", ["truncate data", "delete card", "garbage metadata"])
def test_a_broken_dataset_is_rebuilt_and_said_so(built, damage, capsys):
    dataset_id = "seqeval/pendulum/expert-v0"
    root = Path(built) / dataset_id
    before = episodes_of(dataset_id)
    if damage == "truncate data":
        data_file = root / "data" / "main_data.hdf5"
        data_file.write_bytes(data_file.read_bytes()[: data_file.stat().st_size // 2])
    elif damage == "delete card":
        (root / "card.json").unlink()
    else:
        (root / "data" / "metadata.json").write_text("{not json")
    assert build_datasets("pendulum", **TINY) == IDS
    err = capsys.readouterr().err
    assert f"rebuilding {dataset_id}" in err and err.count("rebuilding") == 1
    after = episodes_of(dataset_id)
    assert len(after) == len(before)
    for a, b in zip(after, before, strict=True):
        np.testing.assert_array_equal(a.observations, b.observations)
        np.testing.assert_array_equal(a.actions, b.actions)
    assert build_datasets("pendulum", **TINY) == IDS  # now complete: kept silently
    assert "rebuilding" not in capsys.readouterr().err


def test_a_dataset_seqeval_did_not_build_is_kept(tmp_path, monkeypatch, capsys):
    from minari.data_collector import EpisodeBuffer

    monkeypatch.setenv("MINARI_DATASETS_PATH", str(tmp_path))
    minari.create_dataset_from_buffers(
        "seqeval/pendulum/expert-v0",
        [EpisodeBuffer(id=0, observations=np.zeros((3, 3), np.float32),
                       actions=np.zeros((2, 1), np.float32), rewards=np.zeros(2),
                       terminations=np.array([False, True]), truncations=np.array([False, False]))],
        env="Pendulum-v1", algorithm_name="someone else's", author="someone else",
        description="not seqeval's")
    builder = SuiteBuilder(get_recipe("pendulum"), **TINY)
    assert not builder._needs_building("expert", force=False)
    assert "kept seqeval/pendulum/expert-v0: it was not built by seqeval" in capsys.readouterr().err
    assert builder._needs_building("expert", force=True)


@pytest.mark.parametrize("args, message", [
    (["datasets", "build", "cartpole"], "unknown environment 'cartpole'"),
    (["datasets", "build", "pendulum", "--quality", "great"], "unknown dataset quality"),
    (["datasets", "build", "pendulum", "--transitions", "0"], "--transitions must be positive"),
    (["datasets", "build", "pendulum", "--transitions", "-5"], "--transitions must be positive"),
    (["datasets", "build", "pendulum", "--sac-steps", "0"], "--sac-steps must be positive"),
])
def test_bad_input_exits_2_with_one_line(args, message, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("MINARI_DATASETS_PATH", str(tmp_path))
    assert main(args) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and "\n" not in err and "Traceback" not in err


@pytest.mark.slow
def test_default_pendulum_suite_reaches_d4rl_like_levels(tmp_path, monkeypatch):
    """The demo's default build: expert about -150, random about -1200 to -1500."""
    monkeypatch.setitem(registry.RECIPES, "pendulum", DEFAULT_PENDULUM)  # 100 episodes
    monkeypatch.setenv("MINARI_DATASETS_PATH", str(tmp_path))
    build_datasets("pendulum", progress=False)
    random_card = read_card("seqeval/pendulum/random-v0")
    expert_card = read_card("seqeval/pendulum/expert-v0")
    assert -1700 < random_card["ref_min_score"] < -1100
    assert -220 < expert_card["ref_max_score"] < -120
    assert 15 < read_card("seqeval/pendulum/medium-v0")["behaviour_normalized_score"] < 55
