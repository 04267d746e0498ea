"""Normalized scores: one definition, finite reference scores only, D4RL's references for
Farama's MuJoCo ids when a dataset has none."""

from __future__ import annotations

import json
import math
import warnings

import minari
import numpy as np
import pytest
from helpers import EXPERT
from minari.data_collector import EpisodeBuffer

from seqeval import data as data_module
from seqeval.cli import main
from seqeval.data import dataset_root, load_dataset
from seqeval.envs.rollout import collect_episodes
from seqeval.errors import UserError
from seqeval.scores import (
    D4RL_REFERENCE_RETURNS,
    check_reference_scores,
    d4rl_reference_returns,
    normalized_score,
)

warnings.filterwarnings("ignore", module="minari")

HOPPER_ID = "mujoco/hopper/medium-v0"


def make_hopper_dataset(dataset_id: str, transitions: int = 300, seed: int = 0) -> None:
    """Random-action Hopper-v5 episodes written with Minari's own API, without reference
    scores (as Farama publishes its mujoco/hopper datasets)."""
    rng = np.random.default_rng(seed)
    episodes = collect_episodes(lambda observations, step: rng.uniform(-1, 1, (2, 3)),
                                "Hopper-v5", transitions, num_envs=2, seed=seed)
    buffers = [EpisodeBuffer(id=number, observations=e.observations, actions=e.actions,
                             rewards=e.rewards, terminations=e.terminations,
                             truncations=e.truncations) for number, e in enumerate(episodes)]
    minari.create_dataset_from_buffers(dataset_id, buffers, env="Hopper-v5",
                                       algorithm_name="random actions (tests)", author="tests",
                                       description="a hand-made stand-in for Farama's data")


@pytest.fixture
def hopper_store(tmp_path, monkeypatch):
    monkeypatch.setenv("MINARI_DATASETS_PATH", str(tmp_path))
    monkeypatch.setattr(data_module, "_NOTED_D4RL_REFERENCES", set())
    make_hopper_dataset(HOPPER_ID)
    return tmp_path


def test_normalized_score_is_d4rl_formula():
    returns = np.array([-20.0, 500.0, 3300.0])
    expected = 100.0 * (returns - (-20.0)) / (3300.0 - (-20.0))
    np.testing.assert_allclose(normalized_score(returns, -20.0, 3300.0), expected, rtol=1e-12)
    assert float(normalized_score(-20.0, -20.0, 3300.0)) == 0.0
    assert float(normalized_score(3300.0, -20.0, 3300.0)) == 100.0


@pytest.mark.parametrize("ref_min, ref_max, message", [
    (-math.inf, 0.0, "must be finite"),
    (0.0, math.nan, "must be finite"),
    (5.0, 5.0, "must exceed"),
    (10.0, -10.0, "must exceed"),
    ("low", 1.0, "must be numbers"),
])
def test_bad_reference_scores_are_rejected_with_the_fix(ref_min, ref_max, message):
    with pytest.raises(UserError, match=message) as raised:
        check_reference_scores(ref_min, ref_max, "somewhere", "do this")
    assert str(raised.value).endswith("do this")
    assert check_reference_scores(-1554, -149, "x", "y") == (-1554.0, -149.0)


def test_d4rl_table_is_d4rl_infos():
    # D4RL's d4rl/infos.py: REF_MIN_SCORE / REF_MAX_SCORE of e.g. 'hopper-medium-v2'.
    assert D4RL_REFERENCE_RETURNS["hopper"] == (-20.272305, 3234.3)
    assert D4RL_REFERENCE_RETURNS["halfcheetah"] == (-280.178953, 12135.0)
    assert D4RL_REFERENCE_RETURNS["walker2d"] == (1.629008, 4592.3)
    assert D4RL_REFERENCE_RETURNS["ant"] == (-325.6, 3879.7)
    assert d4rl_reference_returns("mujoco/walker2d/expert-v0") == ("walker2d", 1.629008, 4592.3)
    assert d4rl_reference_returns("mujoco/humanoid/expert-v0") is None
    assert d4rl_reference_returns("seqeval/pendulum/medium-v0") is None
    assert d4rl_reference_returns("other/hopper/medium-v0") is None


def test_farama_mujoco_dataset_without_refs_uses_d4rl_and_says_so_once(hopper_store, capsys):
    metadata = minari.load_dataset(HOPPER_ID).storage.metadata
    assert metadata.get("ref_min_score") is None  # the stand-in has none, like Farama's
    data = load_dataset(HOPPER_ID)
    assert (data.ref_min_score, data.ref_max_score) == (-20.272305, 3234.3)
    returns = data.episode_returns()
    np.testing.assert_allclose(data.normalized_score(returns),
                               100.0 * (returns + 20.272305) / (3234.3 + 20.272305))
    load_dataset(HOPPER_ID)  # a second load (now from the cache) says nothing more
    err = capsys.readouterr().err
    notes = [line for line in err.splitlines() if "D4RL" in line]
    assert len(notes) == 1 and HOPPER_ID in notes[0] and "--ref-scores" in notes[0]


def test_run_on_farama_style_hopper_reports_normalized_scores(hopper_store, tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["run", "--agent", "bc", "--dataset", HOPPER_ID, "--out", str(out),
                 "--initial-size", "40", "--increment", "20", "--eval-every", "40",
                 "--eval-episodes", "1", "--batch-size", "16", "--agent.hidden_dims", "8",
                 "--no-progress"]) == 0
    info = json.loads((out / "config.json").read_text())["dataset_info"]
    assert (info["ref_min_score"], info["ref_max_score"]) == (-20.272305, 3234.3)
    lines = (out / "evaluations.csv").read_text().splitlines()
    header = lines[0].split(",")
    rows = [dict(zip(header, line.split(","), strict=True)) for line in lines[1:]]
    assert rows
    for row in rows:
        expected = 100.0 * (float(row["return"]) + 20.272305) / (3234.3 + 20.272305)
        assert float(row["normalized_score"]) == pytest.approx(expected, rel=1e-4, abs=1e-3)
    assert capsys.readouterr().err.count("D4RL's published hopper") == 1


def test_non_finite_refs_in_metadata_are_rejected_in_one_line(store, tmp_path, monkeypatch,
                                                              capsys):
    metadata_path = dataset_root(EXPERT) / "data" / "metadata.json"
    original = metadata_path.read_text()
    try:
        metadata = json.loads(original)
        metadata["ref_min_score"] = -math.inf  # json writes -Infinity, as Python reads back
        metadata_path.write_text(json.dumps(metadata))
        with pytest.raises(UserError, match="must be finite") as raised:
            load_dataset(EXPERT)
        assert "metadata.json" in str(raised.value) and "\n" not in str(raised.value)
        assert main(["run", "--agent", "bc", "--dataset", EXPERT, "--out",
                     str(tmp_path / "run"), "--no-progress"]) == 2
        err = capsys.readouterr().err.strip()
        assert "must be finite" in err and "\n" not in err and "Traceback" not in err
    finally:
        metadata_path.write_text(original)


@pytest.mark.parametrize("refs", ["-inf,0", "0,nan", "-150,-1554"])
def test_bad_ref_scores_flag_exits_2_in_one_line(store, tmp_path, refs, capsys):
    out = tmp_path / "run"
    assert main(["run", "--agent", "bc", "--dataset", EXPERT, "--out", str(out),
                 f"--ref-scores={refs}", "--no-progress"]) == 2
    err = capsys.readouterr().err.strip()
    assert "--ref-scores" in err and "\n" not in err and "Traceback" not in err
    assert not (out / "evaluations.csv").exists()
