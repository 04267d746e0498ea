"""The D4RL-style dataset builder on Pendulum, with tiny SAC budgets in a temporary Minari store."""

from __future__ import annotations

import json
import os
import warnings
from pathlib import Path

import minari
import numpy as np
import pytest

from seqeval.cli import main
from seqeval.envs.datasets import SuiteBuilder, build_datasets, read_card
from seqeval.envs.registry import QUALITIES, get_recipe
from seqeval.envs.sac import SACTrainer
from seqeval.errors import UserError

warnings.filterwarnings("ignore", module="minari")

TINY = {"transitions": 1000, "sac_steps": 2000, "checkpoint_every": 400, "progress": False}
IDS = [f"pendulum/{quality}-v0" for quality in QUALITIES]


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
        assert metadata["num_episodes_average_score"] >= 100
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
        assert minari.load_dataset(f"pendulum/{quality}-v0").total_steps == 1000
    assert minari.load_dataset("pendulum/medium-expert-v0").total_steps == 2000
    # The random and the expert data come from the reference policies: their mean returns agree
    # with the references within sampling error (4 standard errors).
    for quality, ref in (("random", "ref_min_score"), ("expert", "ref_max_score")):
        card = read_card(f"pendulum/{quality}-v0")
        error = card["behaviour_return_std"] * np.sqrt(
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
        assert all(len(e.rewards) == 200 for e in episodes_of(f"pendulum/{quality}-v0"))


def test_medium_expert_is_exactly_medium_then_expert(built):
    joined = episodes_of("pendulum/medium-expert-v0")
    parts = episodes_of("pendulum/medium-v0") + episodes_of("pendulum/expert-v0")
    assert len(joined) == len(parts)
    for a, b in zip(joined, parts, strict=True):
        for field in ("observations", "actions", "rewards", "terminations", "truncations"):
            np.testing.assert_array_equal(getattr(a, field), getattr(b, field))


def test_medium_replay_keeps_collection_order(built):
    """Episodes appear in the order they finished in SAC's replay buffer."""
    card = read_card("pendulum/medium-replay-v0")
    builder = SuiteBuilder(get_recipe("pendulum"), transitions=TINY["transitions"],
                           sac_steps=TINY["sac_steps"], checkpoint_every=TINY["checkpoint_every"],
                           progress=False)
    with np.load(builder.trainer.work_dir / "buffer.npz") as saved:
        buffer_observations = saved["observations"]  # every row, in insertion order
    row_of = {row.tobytes(): index for index, row in enumerate(buffer_observations)}
    episodes = episodes_of("pendulum/medium-replay-v0")
    last_rows = [row_of[e.observations[-2].astype(np.float32).tobytes()] for e in episodes]
    first_rows = [row_of[e.observations[0].astype(np.float32).tobytes()] for e in episodes]
    # Ends are in collection order; every episode's rows lie in the replay up to medium.
    assert last_rows == sorted(last_rows)
    assert max(last_rows) < card["behaviour"]["snapshot"]["env_steps"]
    assert min(first_rows) == 0
    assert sum(len(e.rewards) for e in episodes) == card["transitions"]


def test_rebuild_fills_in_a_missing_dataset_from_the_caches(built):
    kept = minari.load_dataset("pendulum/expert-v0")
    kept_mtime = os.path.getmtime(Path(built) / "pendulum/expert-v0/card.json")
    before = episodes_of("pendulum/medium-expert-v0")
    minari.delete_dataset("pendulum/medium-expert-v0")
    assert build_datasets("pendulum", **TINY) == IDS
    after = episodes_of("pendulum/medium-expert-v0")
    np.testing.assert_array_equal(np.concatenate([e.actions for e in before]),
                                  np.concatenate([e.actions for e in after]))
    assert os.path.getmtime(Path(built) / "pendulum/expert-v0/card.json") == kept_mtime
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
    assert saved_at == [400]
    assert not minari.list_local_datasets()

    # Resuming with other settings would mix two runs: refused with a one-line error.
    other = SuiteBuilder(get_recipe("pendulum"), sac_steps=2000, checkpoint_every=200,
                         progress=False)
    other.work_dir = SuiteBuilder(get_recipe("pendulum"), **TINY).work_dir
    with pytest.raises(UserError, match="other settings"):
        other.train()

    ids = build_datasets("pendulum", **{**TINY, "qualities": ["medium-replay"]})
    assert saved_at == list(range(400, 2001, 400))  # resumed at 800, not restarted at 400
    work = next((tmp_path / ".seqeval_builds").iterdir()) / "sac"
    progress = json.loads((work / "progress.json").read_text())
    assert progress["complete"] and progress["checkpoints"][-1]["gradient_steps"] > 0
    assert ids == ["pendulum/medium-replay-v0"]
    # Every transition before and after the interruption is in the replay record.
    index = len(progress["checkpoints"]) - 1
    replay = SuiteBuilder(get_recipe("pendulum"), sac_steps=2000, checkpoint_every=400,
                          progress=False).trainer.replay_episodes(index)
    assert sum(len(e) for e in replay) == 2000


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
    monkeypatch.setenv("MINARI_DATASETS_PATH", str(tmp_path))
    build_datasets("pendulum", progress=False)
    random_card, expert_card = read_card("pendulum/random-v0"), read_card("pendulum/expert-v0")
    assert -1700 < random_card["ref_min_score"] < -1100
    assert -220 < expert_card["ref_max_score"] < -120
    assert 15 < read_card("pendulum/medium-v0")["behaviour_normalized_score"] < 55
