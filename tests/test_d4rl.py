"""D4RL's own HDF5 files: names, layout, episode structure, scores, damaged files, and a real run;
Minari ids that are not local, `datasets download` without a network, `datasets list`."""

from __future__ import annotations

import csv
import json
import socket
from pathlib import Path

import numpy as np
import pytest

from seqeval import d4rl
from seqeval.cli import main
from seqeval.data import load_dataset, load_datasets, make_eval_env_factory

HOPPER_MIN, HOPPER_MAX = -20.272305, 3234.3  # D4RL's infos.py, REF_MIN/MAX_SCORE hopper-*-v0
ROWS = 12
# Episodes of the small files: rows 0-3 end in a terminal, rows 4-7 in a timeout, and rows 8-11
# are a trajectory cut by the end of the file (neither flag).
TERMINALS = np.zeros(ROWS, bool)
TERMINALS[3] = True
TIMEOUTS = np.zeros(ROWS, bool)
TIMEOUTS[7] = True


def hopper_arrays(dtype=np.float32, rows: int = ROWS, seed: int = 0,
                  next_observations: bool = True) -> dict[str, np.ndarray]:
    """Arrays in D4RL's layout for Hopper (11 observation, 3 action dims); rewards 1 per step."""
    rng = np.random.default_rng(seed)
    observations = rng.standard_normal((rows + 1, 11)).astype(dtype)
    terminals = np.zeros(rows, bool)
    timeouts = np.zeros(rows, bool)
    terminals[: ROWS][TERMINALS[: rows]] = True
    timeouts[: ROWS][TIMEOUTS[: rows]] = True
    arrays = {
        "observations": observations[:-1],
        "actions": rng.uniform(-1, 1, (rows, 3)).astype(dtype),
        "rewards": np.ones(rows, dtype),
        "terminals": terminals,
        "timeouts": timeouts,
    }
    if next_observations:
        # D4RL's recorded next observations: distinct from the next row's at episode ends.
        arrays["next_observations"] = (observations[1:] + 0.5).astype(dtype)
    return arrays


def write_medium(folder: Path, arrays: dict | None = None, name: str = "hopper_medium-v2.hdf5"):
    """A float32 file with infos/ and metadata/, as D4RL's v2 medium files are."""
    arrays = hopper_arrays() if arrays is None else arrays
    rows = arrays["observations"].shape[0]
    d4rl.write_file(folder / name, arrays,
                    metadata={"algorithm": "SAC", "iteration": 1000},
                    infos={"qpos": np.zeros((rows, 6), np.float32),
                           "action_log_probs": np.zeros(rows, np.float32)})
    return folder / name


@pytest.fixture
def d4rl_dir(tmp_path, monkeypatch) -> Path:
    folder = tmp_path / "d4rl"
    folder.mkdir()
    monkeypatch.setenv("D4RL_DATASET_DIR", str(folder))
    return folder


# ---------------------------------------------------------------------------------------------
# Names.


def test_d4rl_names_map_to_d4rls_file_names():
    assert d4rl.parse_id("d4rl/hopper-medium-v2").file_name == "hopper_medium-v2.hdf5"
    assert (d4rl.parse_id("d4rl/halfcheetah-medium-replay-v2").file_name
            == "halfcheetah_medium_replay-v2.hdf5")
    assert d4rl.parse_id("d4rl/ant-full-replay-v1").file_name == "ant_full_replay-v1.hdf5"
    # v0 files kept the names of D4RL's infos.py URLs.
    assert d4rl.parse_id("d4rl/hopper-medium-replay-v0").file_name == "hopper_mixed.hdf5"
    assert d4rl.parse_id("d4rl/walker2d-medium-replay-v0").file_name == "walker_mixed.hdf5"
    assert (d4rl.parse_id("d4rl/walker2d-medium-expert-v0").file_name
            == "walker2d_medium_expert.hdf5")
    assert d4rl.parse_id("d4rl/ant-expert-v2").gym_id == "Ant-v5"


@pytest.mark.parametrize("dataset_id, message", [
    ("d4rl/hopper-full-replay-v0", "D4RL has no full-replay dataset at v0"),
    ("d4rl/humanoid-medium-v2", "D4RL environment 'humanoid' is not supported"),
    ("d4rl/hopper-medium", "is not a D4RL name"),
    ("d4rl/hopper-great-v2", "D4RL has no great dataset at v2"),
])
def test_unknown_d4rl_names_are_refused(d4rl_dir, tmp_path, capsys, dataset_id, message):
    out = tmp_path / "run"
    assert main(["run", "--agent", "bc", "--dataset", dataset_id, "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and message in err
    assert not out.exists()


def test_a_missing_d4rl_file_names_where_it_was_looked_for(d4rl_dir, tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["run", "--agent", "bc", "--dataset", "d4rl/hopper-expert-v2",
                 "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert str(d4rl_dir / "hopper_expert-v2.hdf5") in err and "D4RL_DATASET_DIR" in err
    assert len(err.splitlines()) == 1 and not out.exists()


# ---------------------------------------------------------------------------------------------
# Layout and episode structure.


def test_v2_file_episodes_flags_and_recorded_next_observations(d4rl_dir):
    arrays = hopper_arrays()
    write_medium(d4rl_dir, arrays)
    data = load_dataset("d4rl/hopper-medium-v2")
    assert data.size == ROWS and data.num_episodes == 3
    assert data.episode_starts.tolist() == [0, 4, 8]
    # terminals: termination; timeouts and the cut last step: truncation (bootstrapped).
    assert np.flatnonzero(data.terminations).tolist() == [3]
    assert np.flatnonzero(data.truncations).tolist() == [7, 11]
    for name in ("observations", "actions", "rewards", "next_observations"):
        assert getattr(data, name).dtype == np.float32
    np.testing.assert_array_equal(data.observations, arrays["observations"])
    np.testing.assert_array_equal(data.next_observations, arrays["next_observations"])
    np.testing.assert_array_equal(data.actions, arrays["actions"])
    assert data.episode_returns().tolist() == [4.0, 4.0, 4.0]
    # Hopper's action space from Hopper-v5, references from D4RL's table.
    assert data.action_low.tolist() == [-1, -1, -1] and data.action_high.tolist() == [1, 1, 1]
    assert (data.ref_min_score, data.ref_max_score) == (HOPPER_MIN, HOPPER_MAX)


def test_float64_replay_without_next_observations(d4rl_dir):
    """D4RL's medium-replay files: float64, no metadata; next observations derived within
    episodes, and the last step of each truncated episode (no recorded next observation)
    dropped, as D4RL's qlearning_dataset drops it."""
    arrays = hopper_arrays(np.float64, next_observations=False)
    arrays["rewards"] = np.arange(ROWS, dtype=np.float64)
    d4rl.write_file(d4rl_dir / "hopper_medium_replay-v2.hdf5", arrays)
    data = load_dataset("d4rl/hopper-medium-replay-v2")
    observations = arrays["observations"].astype(np.float32)
    kept = [0, 1, 2, 3, 4, 5, 6, 8, 9, 10]  # rows 7 (timeout) and 11 (cut) dropped
    assert data.observations.dtype == np.float32 and data.rewards.dtype == np.float32
    np.testing.assert_array_equal(data.observations, observations[kept])
    assert data.rewards.tolist() == kept
    assert data.episode_starts.tolist() == [0, 4, 7]
    assert np.flatnonzero(data.terminations).tolist() == [3]
    # Rows 6 and 10 now end their (truncated) episodes; their next observations are known.
    assert np.flatnonzero(data.truncations).tolist() == [6, 9]
    expected_next = observations[[1, 2, 3, 3, 5, 6, 7, 9, 10, 11]]  # row 3: a terminal
    np.testing.assert_array_equal(data.next_observations, expected_next)


def test_a_step_with_both_flags_terminates_and_one_step_truncated_episodes_vanish():
    observations = np.arange(6, dtype=np.float32).reshape(6, 1)
    arrays = {"observations": observations, "actions": np.zeros((6, 1), np.float32),
              "rewards": np.arange(6, dtype=np.float32)}
    terminals = np.array([0, 1, 0, 0, 0, 0], bool)
    timeouts = np.array([0, 1, 1, 0, 0, 1], bool)
    out = d4rl.episodes(dict(arrays), terminals, timeouts)
    # Row 1 has both flags: a termination. Row 2 is a one-step episode cut by a timeout: with
    # no recorded next observation it is dropped whole. Rows 3-5: row 5 dropped, row 4 ends it.
    assert out["rewards"].tolist() == [0, 1, 3, 4]
    assert out["terminations"].tolist() == [False, True, False, False]
    assert out["truncations"].tolist() == [False, False, False, True]
    assert out["episode_starts"].tolist() == [0, 2]
    assert out["next_observations"][:, 0].tolist() == [1, 1, 4, 5]
    # With recorded next observations nothing is dropped.
    arrays["next_observations"] = observations + 10
    out = d4rl.episodes(dict(arrays), terminals, timeouts)
    assert out["terminations"].tolist() == [False, True, False, False, False, False]
    assert out["truncations"].tolist() == [False, False, True, False, False, True]
    assert out["episode_starts"].tolist() == [0, 2, 3]


def test_derived_timeouts_follow_d4rls_qlearning_dataset():
    terminals = np.zeros(10, bool)
    terminals[4] = True
    # Counted from the start and restarted after the terminal: steps 0,1,2 | 3,4(term) | 5,6,7 |
    assert d4rl._derived_timeouts(terminals, 3).nonzero()[0].tolist() == [2, 7]


def test_a_file_without_timeouts_is_cut_at_the_time_limit(d4rl_dir, capsys):
    arrays = hopper_arrays()
    del arrays["timeouts"]
    write_medium(d4rl_dir, arrays, "hopper_medium-v0.hdf5")
    (d4rl_dir / "hopper_medium-v0.hdf5").rename(d4rl_dir / "hopper_medium.hdf5")
    data = load_dataset("d4rl/hopper-medium-v0")
    assert "has no 'timeouts'" in capsys.readouterr().err
    # Hopper-v5's limit is 1000 steps: only the terminal and the cut end remain.
    assert data.episode_starts.tolist() == [0, 4]
    assert np.flatnonzero(data.truncations).tolist() == [11]


def test_normalized_scores_against_d4rls_references(d4rl_dir):
    write_medium(d4rl_dir)
    data = load_dataset("d4rl/hopper-medium-v2")
    # By hand: 100 * (R - (-20.272305)) / (3234.3 - (-20.272305)).
    assert data.normalized_score(-20.272305) == pytest.approx(0.0)
    assert data.normalized_score(3234.3) == pytest.approx(100.0)
    assert data.normalized_score(1607.0138475) == pytest.approx(50.0)
    assert data.normalized_score(1000.0) == pytest.approx(31.348890, abs=1e-5)
    # The dataset's own episodes return 4 each.
    assert data.average_normalized_return() == pytest.approx(0.7457909, abs=1e-6)
    for env, midpoint in (("halfcheetah", 5927.4105235), ("walker2d", 2296.964504),
                          ("ant", 1777.05)):
        from seqeval.scores import D4RL_REFERENCE_RETURNS, normalized_score
        assert normalized_score(midpoint, *D4RL_REFERENCE_RETURNS[env]) == pytest.approx(50.0)


def test_distribution_shift_list_of_d4rl_files(d4rl_dir):
    write_medium(d4rl_dir)
    write_medium(d4rl_dir, hopper_arrays(rows=8, seed=1), "hopper_random-v2.hdf5")
    data, blocks = load_datasets("d4rl/hopper-random-v2,d4rl/hopper-medium-v2")
    assert blocks == (8, ROWS) and data.episode_starts.tolist() == [0, 4, 8, 12, 16]
    assert data.dataset_id == "d4rl/hopper-random-v2,d4rl/hopper-medium-v2"


def test_a_file_at_any_path_with_its_task(tmp_path, capsys):
    path = write_medium(tmp_path, name="mine.hdf5")
    data = load_dataset(str(path), env="Hopper-v5")
    assert data.size == ROWS and (data.ref_min_score, data.ref_max_score) == (HOPPER_MIN,
                                                                               HOPPER_MAX)
    assert "D4RL's published hopper returns" in capsys.readouterr().err
    env = make_eval_env_factory(str(path), "Hopper-v5")()
    assert env.spec.id == "Hopper-v5" and env.spec.max_episode_steps == 1000
    env.close()


@pytest.mark.parametrize("argv, message", [
    (["--dataset", "{path}"], "needs its task: pass --env"),
    (["--dataset", "{path}", "--env", "NoSuchTask-v9"], "--env NoSuchTask-v9 cannot be made"),
    (["--dataset", "{path}", "--env", "HalfCheetah-v5"],
     "'observations' has shape (12, 11), expected (12, 17)"),
    (["--dataset", "d4rl/hopper-medium-v2", "--env", "Hopper-v5"], "drop --env"),
    (["--dataset", "{missing}", "--env", "Hopper-v5"], "does not exist"),
])
def test_file_arguments_that_do_not_fit(d4rl_dir, tmp_path, capsys, argv, message):
    path = write_medium(d4rl_dir)
    out = tmp_path / "run"
    argv = [a.format(path=path, missing=tmp_path / "none.hdf5") for a in argv]
    assert main(["run", "--agent", "bc", *argv, "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and message in err, err
    assert not out.exists()


def test_ant_is_evaluated_with_d4rls_111_dim_observations():
    env = d4rl.make_env("Ant-v5")
    observation, _ = env.reset(seed=0)
    assert observation.shape == (111,) and not observation[27:].any()
    assert env.observation_space.shape == (111,)
    env.close()


# ---------------------------------------------------------------------------------------------
# Damaged files: one line naming the file and the problem, exit 2, nothing written.


def _drop(key):
    def damage(arrays):
        del arrays[key]
    return damage


def _set(key, value):
    def damage(arrays):
        arrays[key] = value(arrays)
    return damage


def _nan(arrays):
    arrays["observations"][5, 2] = np.nan


@pytest.mark.parametrize("damage, message", [
    (_drop("rewards"), "it has no 'rewards' array"),
    (_drop("terminals"), "it has no 'terminals' array"),
    (_set("actions", lambda a: a["actions"][:-1]), "'actions' has shape (11, 3), expected (12, 3)"),
    (_set("terminals", lambda a: a["terminals"][:-2]),
     "'terminals' has shape (10,), not (12,) like 'rewards'"),
    (_set("observations", lambda a: a["observations"][:, :10]),
     "'observations' has shape (12, 10), expected (12, 11)"),
    (_set("next_observations", lambda a: a["next_observations"][:, :3]),
     "'next_observations' has shape (12, 3), expected (12, 11)"),
    (_set("rewards", lambda a: np.ones((12, 2), np.float32)), "'rewards' has shape (12, 2)"),
    (_nan, "'observations' has 1 NaN/inf values"),
    (_set("actions", lambda a: np.full((12, 3), np.inf, np.float32)),
     "'actions' has 36 NaN/inf values"),
])
def test_damaged_files_are_refused_in_one_line(d4rl_dir, tmp_path, capsys, damage, message):
    arrays = hopper_arrays()
    damage(arrays)
    path = write_medium(d4rl_dir, arrays)
    out = tmp_path / "run"
    assert main(["run", "--agent", "bc", "--dataset", "d4rl/hopper-medium-v2",
                 "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    assert f"D4RL file '{path}'" in err and message in err, err
    assert not out.exists()


def test_a_file_that_is_not_hdf5_is_refused(d4rl_dir, tmp_path, capsys):
    (d4rl_dir / "hopper_medium-v2.hdf5").write_bytes(b"not an hdf5 file" * 10)
    assert main(["run", "--agent", "bc", "--dataset", "d4rl/hopper-medium-v2",
                 "--out", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "cannot be opened as HDF5" in err


def test_a_truncated_hdf5_file_is_refused(d4rl_dir, tmp_path, capsys):
    path = write_medium(d4rl_dir, hopper_arrays(rows=5000))
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    assert main(["run", "--agent", "bc", "--dataset", "d4rl/hopper-medium-v2",
                 "--out", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and f"D4RL file '{path}'" in err


# ---------------------------------------------------------------------------------------------
# A real run on a tiny D4RL-layout hopper file.


def test_a_short_run_on_a_d4rl_hopper_file(d4rl_dir, tmp_path):
    rows = 400
    rng = np.random.default_rng(3)
    observations = rng.standard_normal((rows + 1, 11)).astype(np.float32) * 0.1
    timeouts = np.zeros(rows, bool)
    timeouts[199] = True
    arrays = {"observations": observations[:-1], "actions": rng.uniform(-1, 1, (rows, 3))
              .astype(np.float32), "rewards": rng.uniform(0, 2, rows).astype(np.float32),
              "terminals": np.zeros(rows, bool), "timeouts": timeouts,
              "next_observations": observations[1:]}
    write_medium(d4rl_dir, arrays)
    out = tmp_path / "run"
    code = main(["run", "--agent", "bc", "--dataset", "d4rl/hopper-medium-v2", "--out", str(out),
                 "--initial-size", "200", "--increment", "50", "--eval-every", "200",
                 "--eval-episodes", "1", "--batch-size", "32", "--agent.hidden_dims", "16,16",
                 "--no-progress"])
    assert code == 0
    config = json.loads((out / "config.json").read_text())
    assert config["dataset"] == "d4rl/hopper-medium-v2"
    assert config["dataset_info"]["transitions"] == rows
    assert config["dataset_info"]["ref_min_score"] == HOPPER_MIN
    with open(out / "evaluations.csv") as handle:
        rows_read = list(csv.DictReader(handle))
    assert [int(r["samples"]) for r in rows_read] == [400]  # f_e 200 from T0 200: the end
    for row in rows_read:
        expected = 100 * (float(row["return"]) - HOPPER_MIN) / (HOPPER_MAX - HOPPER_MIN)
        assert float(row["normalized_score"]) == pytest.approx(expected, rel=1e-6)
    # Reports and figures label the run by its D4RL name.
    assert main(["report", str(out), "--out", str(tmp_path / "report")]) == 0
    assert "d4rl/hopper-medium-v2" in "".join(
        p.read_text() for p in (tmp_path / "report").glob("*.md"))


# ---------------------------------------------------------------------------------------------
# Minari ids that are not local, downloading without a network, listing.


def test_a_minari_id_that_is_not_local_says_how_to_fetch_it(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("MINARI_DATASETS_PATH", str(tmp_path / "store"))
    assert main(["run", "--agent", "bc", "--dataset", "mujoco/hopper/simple-v0",
                 "--out", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert "not in the local Minari store" in err
    assert "seqeval datasets download mujoco/hopper/simple-v0" in err
    assert main(["run", "--agent", "bc", "--dataset", "seqeval/hopper/medium-v0",
                 "--out", str(tmp_path / "run")]) == 2
    assert "seqeval datasets build hopper" in capsys.readouterr().err


def test_download_without_a_network_is_one_line(tmp_path, monkeypatch, capsys):
    """Minari's real download path, with every connection refused before it leaves the
    machine (no name lookup, no connection) and huggingface_hub's retry pauses skipped."""
    store = tmp_path / "store"
    monkeypatch.setenv("MINARI_DATASETS_PATH", str(store))
    attempts = []

    def unreachable(*args, **kwargs):
        attempts.append(args)
        raise OSError(101, "Network is unreachable")

    monkeypatch.setattr(socket, "getaddrinfo", unreachable)
    monkeypatch.setattr(socket.socket, "connect", unreachable)
    monkeypatch.setattr("time.sleep", lambda seconds: None)
    assert main(["datasets", "download", "mujoco/hopper/simple-v0"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    assert err.startswith("seqeval: error: cannot download 'mujoco/hopper/simple-v0'")
    assert attempts  # it did try, through Minari
    assert list(store.rglob("*")) == []  # nothing left behind


@pytest.mark.parametrize("argv", [
    ["datasets", "list"],
    ["datasets", "build", "pendulum", "--no-progress"],
    ["run", "--agent", "bc", "--dataset", "seqeval/pendulum/medium-v0", "--out", "{out}"],
    ["datasets", "download", "mujoco/hopper/simple-v0"],
])
def test_a_minari_path_that_is_a_file(tmp_path, monkeypatch, capsys, argv):
    store = tmp_path / "store-file"
    store.write_text("not a folder")
    monkeypatch.setenv("MINARI_DATASETS_PATH", str(store))
    assert main([a.format(out=tmp_path / "run") for a in argv]) == 2
    err = capsys.readouterr().err.strip()
    assert err == (f"seqeval: error: MINARI_DATASETS_PATH={store} is a file, not a folder; "
                   "point MINARI_DATASETS_PATH at a folder (it is created when missing)")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["store-file"]


def test_list_names_damaged_datasets_and_d4rl_files(store, d4rl_dir, tmp_path, monkeypatch,
                                                    capsys):
    from pendulum_data import make_pendulum_dataset

    own = tmp_path / "own-store"
    monkeypatch.setenv("MINARI_DATASETS_PATH", str(own))
    make_pendulum_dataset("test/pendulum-small-v0", episodes=2, expert_fraction=1.0)
    make_pendulum_dataset("test/pendulum-broken-v0", episodes=2, expert_fraction=1.0)
    (own / "test/pendulum-broken-v0/data/metadata.json").write_text("{not json")
    write_medium(d4rl_dir)
    (d4rl_dir / "hopper_expert-v2.hdf5").write_bytes(b"damaged")
    assert main(["datasets", "list"]) == 0
    captured = capsys.readouterr()
    assert "test/pendulum-small-v0" in captured.out
    assert "test/pendulum-broken-v0" not in captured.out
    assert "dataset 'test/pendulum-broken-v0'" in captured.err
    assert "data/metadata.json cannot be read" in captured.err
    assert "D4RL files in" in captured.out
    line = next(x for x in captured.out.splitlines() if x.startswith("d4rl/hopper-medium-v2"))
    # 12 transitions, 3 episodes of return 4: (4 + 20.272305) / 3254.572305 * 100 = 0.7.
    assert line.split()[1:5] == ["12", "3", "0.7", "-20.3"]
    assert f"D4RL file '{d4rl_dir / 'hopper_expert-v2.hdf5'}' cannot be read" in captured.err


def test_list_with_only_a_damaged_dataset_names_it(tmp_path, monkeypatch, capsys):
    from pendulum_data import make_pendulum_dataset

    own = tmp_path / "own-store"
    monkeypatch.setenv("MINARI_DATASETS_PATH", str(own))
    monkeypatch.setenv("D4RL_DATASET_DIR", str(tmp_path / "no-d4rl"))
    make_pendulum_dataset("test/pendulum-broken-v0", episodes=1, expert_fraction=1.0)
    (own / "test/pendulum-broken-v0/data/metadata.json").unlink()
    assert main(["datasets", "list"]) == 0
    captured = capsys.readouterr()
    assert "no local Minari datasets" not in captured.out
    assert "dataset 'test/pendulum-broken-v0'" in captured.err


def test_builds_under_old_ids_get_a_note(tmp_path, monkeypatch, capsys):
    from pendulum_data import make_pendulum_dataset

    own = tmp_path / "own-store"
    monkeypatch.setenv("MINARI_DATASETS_PATH", str(own))
    monkeypatch.setenv("D4RL_DATASET_DIR", str(tmp_path / "no-d4rl"))
    make_pendulum_dataset("pendulum/medium-v0", episodes=1, expert_fraction=1.0)
    card = {"dataset_id": "pendulum/medium-v0", "env": "pendulum", "quality": "medium",
            "transitions": 200, "episodes": 1, "seeds": {"sac": 3},
            "sac_budget": {"env_steps": 6000, "checkpoint_every": 500}}
    (own / "pendulum/medium-v0/card.json").write_text(json.dumps(card))
    # Farama-style ids without seqeval's card are not seqeval's builds.
    make_pendulum_dataset("mujoco/pendulum/other-v0", episodes=1, expert_fraction=1.0)
    assert main(["datasets", "list"]) == 0
    notes = [line for line in capsys.readouterr().err.splitlines() if "old ids" in line]
    assert len(notes) == 1
    assert "(pendulum/medium-v0)" in notes[0] and "seqeval/<env>/<quality>-v0" in notes[0]
    assert ("'seqeval datasets build pendulum --seed 3 --sac-steps 6000 --checkpoint-every 500 "
            "--transitions 200'") in notes[0]
    assert f"rm -r {own / 'pendulum/medium-v0'}" in notes[0]
    # A run asking for the new id is told where the old build is.
    assert main(["run", "--agent", "bc", "--dataset", "seqeval/pendulum/medium-v0",
                 "--out", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert "an earlier seqeval build of it is 'pendulum/medium-v0'" in err


def test_study_specs_take_d4rl_names_and_files(d4rl_dir, tmp_path):
    from seqeval.spec import expand_spec
    from seqeval.study import validate_plan

    write_medium(d4rl_dir)
    path = write_medium(tmp_path, name="mine.hdf5")
    spec = {"study": {"agents": ["bc"], "datasets": ["d4rl/hopper-medium-v2"], "seeds": 1},
            "protocol": {"initial_size": 4, "eval_every": 4}}
    plan = expand_spec(spec)
    validate_plan(plan, tmp_path / "study")
    assert [run.dataset for run in plan] == ["d4rl/hopper-medium-v2"]
    # A file at a path takes its task from [protocol] env.
    spec["study"]["datasets"] = [str(path)]
    spec["protocol"]["env"] = "Hopper-v5"
    validate_plan(expand_spec(spec), tmp_path / "study")
    del spec["protocol"]["env"]
    with pytest.raises(Exception, match="needs its task: pass --env"):
        validate_plan(expand_spec(spec), tmp_path / "study")
