"""The builder on Hopper-v5 with a tiny budget: ids, metadata, terminations, a sequential run."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import minari
import numpy as np
import pytest
from helpers import tiny_recipe

from seqeval.cli import main
from seqeval.envs import registry
from seqeval.envs.datasets import build_datasets
from seqeval.envs.registry import QUALITIES
from seqeval.envs.store import read_card

warnings.filterwarnings("ignore", module="minari")

IDS = [f"seqeval/hopper/{quality}-v0" for quality in QUALITIES]


@pytest.fixture(scope="module")
def hopper_store(tmp_path_factory) -> Path:
    store = tmp_path_factory.mktemp("minari_hopper")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("MINARI_DATASETS_PATH", str(store))
        # 20 episodes behind each reference score, not D4RL's 100: most of a tiny build's
        # time would go to rolling out the two reference policies. SAC with 32x32 networks, not
        # the recipe's 256x256: its 1,200 updates were two thirds of the build's CPU time
        # (45 -> 16 CPU-s), and what is checked here does not depend on how well it learns.
        patch.setitem(registry.RECIPES, "hopper", tiny_recipe("hopper", 20, 32))
        ids = build_datasets("hopper", transitions=1500, sac_steps=1200, checkpoint_every=300,
                             progress=False)
    assert ids == IDS
    return store


@pytest.fixture
def hopper(hopper_store, monkeypatch) -> Path:
    monkeypatch.setenv("MINARI_DATASETS_PATH", str(hopper_store))
    return hopper_store


def test_hopper_ids_metadata_and_terminations(hopper):
    for dataset_id in IDS:
        dataset = minari.load_dataset(dataset_id)
        card = read_card(dataset_id)
        refs = np.array([card["ref_min_score"], card["ref_max_score"]])
        np.testing.assert_allclose(minari.get_normalized_score(dataset, refs), [0.0, 1.0])
        env = dataset.recover_environment(eval_env=True)
        assert env.spec.id == "Hopper-v5"
        assert dataset.observation_space.shape == (11,) and dataset.action_space.shape == (3,)
        episodes = list(dataset.iterate_episodes())
        assert sum(len(e.rewards) for e in episodes) == card["transitions"]
        for episode in episodes:
            ends = episode.terminations | episode.truncations
            # One end marker, on the last step; never both terminated and truncated.
            assert ends[-1] and not ends[:-1].any()
            assert not (episode.terminations & episode.truncations).any()
        # An untrained hopper falls: its episodes end by termination, not by the time limit.
        if dataset_id.endswith("/random-v0"):
            assert sum(e.terminations[-1] for e in episodes) >= len(episodes) - 1
    assert minari.load_dataset("seqeval/hopper/medium-expert-v0").total_steps == 3000


def test_sequential_run_on_a_built_hopper_dataset(hopper, tmp_path):
    run_dir = tmp_path / "run"
    code = main(["run", "--agent", "bc", "--dataset", "seqeval/hopper/medium-v0",
                 "--out", str(run_dir), "--initial-size", "500", "--increment", "10",
                 "--eval-every", "500", "--eval-episodes", "2", "--batch-size", "32",
                 "--agent.hidden_dims", "16,16", "--no-progress"])
    assert code == 0
    config = json.loads((run_dir / "config.json").read_text())
    info = config["dataset_info"]
    card = read_card("seqeval/hopper/medium-v0")
    assert info["transitions"] == 1500
    assert info["ref_min_score"] == pytest.approx(card["ref_min_score"])
    assert info["ref_max_score"] == pytest.approx(card["ref_max_score"])
    rows = (run_dir / "evaluations.csv").read_text().splitlines()[1:]
    assert [int(row.split(",")[0]) for row in rows] == [1000, 1500]
    assert all(row.split(",")[4] != "" for row in rows)  # normalized scores present
