"""Experiment trackers: what TensorBoard and W&B hold equals the run's CSV files, point for
point; a resumed run logs nothing twice and loses nothing; a missing tracker is refused in one
line; finished runs and studies are exported after the fact.

W&B runs in its offline mode with every directory under tmp_path (no network, nothing in
$HOME); its offline files are read back record by record. TensorBoard's own event reader reads
the event files.
"""

from __future__ import annotations

import json
import struct
import sys
import time
from collections import defaultdict
from pathlib import Path

import numpy as np
import pytest
from helpers import EXPERT

from seqeval import tracking
from seqeval.cli import main
from seqeval.results import read_evaluations, read_prequential, read_training

# 2 seeds; offline: chunks to 9250, 9500, 9750, 10000; the logged run adds an online chunk of
# 250 environment steps (10250).
RUN = ["--agent", "bc", "--dataset", EXPERT, "--initial-size", "9000", "--increment", "50",
       "--steps-per-increment", "2", "--eval-every", "250", "--eval-episodes", "1",
       "--batch-size", "32", "--seeds", "2", "--agent.hidden_dims", "8,8", "--no-progress"]
ONLINE = ["--online-steps", "250", "--online-block", "250"]
STEPS = [9250, 9500, 9750, 10000, 10250]


def offline_wandb(patch: pytest.MonkeyPatch, root: Path) -> None:
    """W&B offline, its directories under `root`: it never reaches the network or $HOME."""
    for name in ("WANDB_DIR", "WANDB_API_KEY", "WANDB_PROJECT", "WANDB_RUN_ID", "WANDB_RESUME",
                 "WANDB_RUN_GROUP", "WANDB_NAME", "WANDB_TAGS"):
        patch.delenv(name, raising=False)
    patch.setenv("WANDB_MODE", "offline")
    patch.setenv("WANDB_SILENT", "true")
    for name in ("WANDB_CONFIG_DIR", "WANDB_CACHE_DIR", "WANDB_DATA_DIR",
                 "WANDB_ARTIFACT_DIR"):
        (root / name.lower()).mkdir(parents=True, exist_ok=True)
        patch.setenv(name, str(root / name.lower()))


@pytest.fixture(autouse=True)
def _offline(tmp_path, monkeypatch):
    offline_wandb(monkeypatch, tmp_path / "wandb-home")


@pytest.fixture(scope="module")
def logged(pendulum_store, tmp_path_factory) -> Path:
    """A run logged to TensorBoard and W&B as it went."""
    root = tmp_path_factory.mktemp("logged")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("MINARI_DATASETS_PATH", str(pendulum_store))
        offline_wandb(patch, root / "wandb-home")
        assert main(["run", "--out", str(root / "run"), *RUN, *ONLINE,
                     "--log", "tensorboard,wandb",
                     "--wandb-project", "tests"]) == 0
    return root / "run"


# ---------------------------------------------------------------------------------------------
# Reading the trackers back


def tensorboard_scalars(log_dir: Path) -> dict[str, list[tuple[int, float]]]:
    """tag -> [(step, value)] as TensorBoard reads the event files (every event kept)."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    accumulator = EventAccumulator(str(log_dir), size_guidance={"scalars": 0})
    accumulator.Reload()
    return {tag: [(e.step, e.value) for e in accumulator.Scalars(tag)]
            for tag in accumulator.Tags()["scalars"]}


def wandb_records(path: Path) -> list:
    """The records of a .wandb file: a 7-byte header, then LevelDB-style log records in 32 KiB
    blocks (CRC, length, type: full, or first/middle/last pieces), each a protobuf Record."""
    from wandb.proto import wandb_internal_pb2

    data = path.read_bytes()
    assert data[:4] == b":W&B" or not data
    position, block, pieces, records = 7, 32768, b"", []
    while position + 7 <= len(data):
        left = block - position % block
        if left < 7:
            position += left
            continue
        _, length, kind = struct.unpack_from("<IHB", data, position)
        if kind == 0:  # padding to the end of the block
            position += left
            continue
        if position + 7 + length > len(data):  # a record still being written
            break
        piece = data[position + 7:position + 7 + length]
        position += 7 + length
        pieces = piece if kind in (1, 2) else pieces + piece
        if kind in (1, 4):
            record = wandb_internal_pb2.Record()
            record.ParseFromString(pieces)
            records.append(record)
    return records


def finished_records(path: Path) -> list:
    """The records of a finished session's .wandb file. W&B's service writes the file on its
    own after `finish()` returns, so wait (30 s at most) for the exit record it ends with."""
    deadline = time.monotonic() + 30
    while True:
        records = wandb_records(path)
        if any(r.WhichOneof("record_type") == "exit" for r in records) \
                or time.monotonic() > deadline:
            return records
        time.sleep(0.1)


def wandb_sessions(run_dir: Path) -> list[dict]:
    """Each offline session of the run: its run record and history rows, oldest first."""
    sessions = []
    for path in sorted(run_dir.glob("wandb/offline-run-*/run-*.wandb")):
        run, history = None, []
        for record in finished_records(path):
            kind = record.WhichOneof("record_type")
            if kind == "run":
                run = record.run
            elif kind == "history":
                history.append({item.key or "/".join(item.nested_key):
                                json.loads(item.value_json) for item in record.history.item})
        sessions.append({"run": run, "history": history})
    return sessions


def expected_values(run_dir: Path) -> dict[str, dict[int, float]]:
    """tag -> step -> value, computed here from the CSV files (means over seeds by hand)."""
    expected: dict[str, dict[int, float]] = defaultdict(dict)
    by_step: dict[tuple[str, int], list[float]] = defaultdict(list)
    for row in read_evaluations(run_dir):
        for key in ("normalized_score", "return"):
            expected[f"eval/{key}/seed_{row['seed']}"][row["samples"]] = row[key]
            by_step[(f"eval/{key}", row["samples"])].append(row[key])
        expected["phase/online"][row["samples"]] = float(row["phase"] == "online")
    for row in read_training(run_dir):
        for key, value in row.items():
            if key not in ("samples", "gradient_steps", "seed", "phase"):
                by_step[(f"train/{key}", row["samples"])].append(value)
    for row in read_prequential(run_dir):
        for key, value in row.losses.items():
            step = row.samples + row.transitions
            by_step[(f"prequential/{key}", step)].append(value)
            by_step[(f"prequential/{key}_cumulative", step)].append(row.cumulative[key])
    for (tag, step), values in by_step.items():
        expected[tag][step] = float(np.mean(values))
    return expected


def assert_tensorboard_equals_csv(run_dir: Path) -> None:
    scalars = tensorboard_scalars(run_dir / "tensorboard")
    expected = expected_values(run_dir)
    assert set(expected) <= set(scalars)
    for tag, points in expected.items():
        steps = [step for step, _ in scalars[tag]]
        assert len(steps) == len(set(steps)), f"{tag} has a step twice: {steps}"
        assert sorted(steps) == sorted(points), tag
        for step, value in scalars[tag]:
            # event files hold float32; the CSV 6 significant digits
            assert value == pytest.approx(points[step], rel=1e-6, abs=1e-6), (tag, step)


# ---------------------------------------------------------------------------------------------
# Logged as the run goes


def test_tensorboard_events_equal_the_csv_files_point_for_point(logged):
    assert_tensorboard_equals_csv(logged)
    scalars = tensorboard_scalars(logged / "tensorboard")
    assert [step for step, _ in scalars["eval/normalized_score"]] == STEPS
    assert [value for _, value in scalars["phase/online"]] == [0, 0, 0, 0, 1]
    assert "train/actor_loss" in scalars and "prequential/action_mse" in scalars
    # updates per second: every chunk after the first (a rate needs two checkpoints)
    assert [step for step, _ in scalars["perf/updates_per_second"]] == STEPS
    assert all(value > 0 for _, value in scalars["perf/updates_per_second"])


def test_tensorboard_holds_the_whole_config_as_hyperparameters(logged):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from tensorboard.plugins.hparams import plugin_data_pb2

    accumulator = EventAccumulator(str(logged / "tensorboard"))
    accumulator.Reload()
    content = accumulator.PluginTagToContent("hparams")["_hparams_/session_start_info"]
    hparams = plugin_data_pb2.HParamsPluginData.FromString(content).session_start_info.hparams
    config = json.loads((logged / "config.json").read_text())
    assert hparams["agent_config.hidden_dims"].string_value == "[8, 8]"
    assert hparams["protocol.increment"].number_value == config["protocol"]["increment"] == 50
    assert hparams["agent_fingerprint"].string_value == config["agent_fingerprint"]
    assert hparams["seqeval_version"].string_value == tracking.seqeval_version()


def test_a_wandb_offline_run_holds_the_history_and_the_config(logged):
    (session,) = wandb_sessions(logged)
    run = session["run"]
    state = json.loads((logged / "tracking.json").read_text())
    assert run.run_id == state["wandb_run_id"]
    assert run.display_name == "bc on test/pendulum-expert-v0"
    assert run.project == "tests"
    assert list(run.tags) == ["bc", EXPERT, "sequential"]
    config = {item.key: json.loads(item.value_json) for item in run.config.update}
    written = json.loads((logged / "config.json").read_text())
    for key, value in written.items():
        assert config[key] == value, key
    assert config["seqeval_version"] == tracking.seqeval_version()
    # one history row per chunk, at its samples, holding the CSV files' numbers
    history = session["history"]
    assert [row["samples"] for row in history] == STEPS
    expected = expected_values(logged)
    for row in history:
        for tag, points in expected.items():
            if row["samples"] in points:  # the online chunk is not scored prequentially
                assert row[tag] == pytest.approx(points[row["samples"]], rel=1e-9), tag
    assert not any(key.startswith("prequential/") for key in history[-1])


def test_export_of_a_finished_run_rebuilds_its_event_files_once(logged, tmp_path, capsys):
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(logged, copy, ignore=shutil.ignore_patterns("tensorboard", "wandb"))
    assert main(["export", str(copy), "--to", "tensorboard"]) == 0
    assert_tensorboard_equals_csv(copy)
    assert main(["export", str(copy), "--to", "tensorboard"]) == 0
    assert capsys.readouterr().out.count(": 0 values to") == 1  # the second adds nothing
    assert_tensorboard_equals_csv(copy)


# ---------------------------------------------------------------------------------------------
# Resume


class Killed(BaseException):
    """Stands for SIGKILL at a chosen point (nothing catches it)."""


def test_a_resumed_run_logs_nothing_twice_and_loses_nothing(store, tmp_path, monkeypatch):
    """Killed after its second checkpoint, when TensorBoard had the chunk but tracking.json
    did not count it yet, and W&B did not have it: resumed, TensorBoard holds each step once
    and W&B gets the chunk it missed, in the same W&B run."""
    out = tmp_path / "run"
    write_state = tracking.Tracking._write_state

    def killed_after_tensorboard(self):
        if self.state["logged_rows"].get("tensorboard", {}).get("evaluations.csv") == 4:
            raise Killed  # chunk 2 is in the event file, not yet counted, not in W&B
        return write_state(self)

    monkeypatch.setattr(tracking.Tracking, "_write_state", killed_after_tensorboard)
    args = ["run", "--out", str(out), *RUN, "--log", "tensorboard,wandb"]
    with pytest.raises(Killed):
        main(args)
    monkeypatch.setattr(tracking.Tracking, "_write_state", write_state)
    before = tensorboard_scalars(out / "tensorboard")["eval/normalized_score"]
    assert [step for step, _ in before] == STEPS[:2]
    (killed,) = wandb_sessions(out)
    assert [row["samples"] for row in killed["history"]] == STEPS[:1]
    assert main(args) == 0

    assert_tensorboard_equals_csv(out)  # every step once, equal to the CSV files
    assert len(list((out / "tensorboard").glob("events.out.tfevents.*"))) == 2
    killed, resumed = wandb_sessions(out)
    assert killed["run"].run_id == resumed["run"].run_id  # the same W&B run continues
    rows = killed["history"] + resumed["history"]
    assert [row["_step"] for row in rows] == [0, 1, 2, 3]
    assert [row["samples"] for row in rows] == STEPS[:4]
    expected = expected_values(out)
    for row in rows:
        assert row["eval/normalized_score"] == pytest.approx(
            expected["eval/normalized_score"][row["samples"]], rel=1e-9)


@pytest.mark.slow
def test_retrain_mode_logs_each_size_against_samples_and_its_losses_against_steps(
        store, tmp_path):
    out = tmp_path / "run"
    assert main(["run", "--out", str(out), *RUN, "--mode", "retrain", "--sizes", "2000,9000",
                 "--retrain-steps", "60", "--log", "tensorboard"]) == 0
    scalars = tensorboard_scalars(out / "tensorboard")
    rows = read_evaluations(out)
    for row in rows:
        step_values = dict(scalars[f"eval/normalized_score/seed_{row['seed']}"])
        assert step_values[row["samples"]] == pytest.approx(row["normalized_score"], rel=1e-6)
    means = {size: np.mean([r["normalized_score"] for r in rows if r["samples"] == size])
             for size in (2000, 9000)}
    assert dict(scalars["eval/normalized_score"]) == pytest.approx(means, rel=1e-6)
    for size in (2000, 9000):
        losses = [r["actor_loss"] for r in read_training(out) if r["samples"] == size]
        assert dict(scalars[f"train/size_{size}/actor_loss"]) == pytest.approx(
            {60: np.mean(losses)}, rel=1e-6)


# ---------------------------------------------------------------------------------------------
# Refusals


@pytest.mark.parametrize("backend, module", [("tensorboard", "tensorboardX"),
                                             ("wandb", "wandb")])
def test_a_missing_tracker_is_refused_in_one_line_before_anything_runs(
        store, tmp_path, monkeypatch, capsys, backend, module):
    monkeypatch.setitem(sys.modules, module, None)  # `import` of it fails as if not installed
    out = tmp_path / "run"
    assert main(["run", "--out", str(out), *RUN, "--log", f"{backend}"]) == 2
    error = capsys.readouterr().err
    assert error.count("\n") == 1
    assert f"pip install 'seqeval[{backend}]'" in error
    assert not out.exists()
    assert main(["export", str(tmp_path), "--to", backend]) == 2
    assert f"pip install 'seqeval[{backend}]'" in capsys.readouterr().err


def test_an_unknown_tracker_is_refused(store, tmp_path, capsys):
    assert main(["run", "--out", str(tmp_path / "run"), *RUN, "--log", "mlflow"]) == 2
    error = capsys.readouterr().err
    assert "unknown tracker 'mlflow'" in error and error.count("\n") == 1


def test_a_tracker_that_cannot_start_leaves_nothing_behind(store, tmp_path, monkeypatch,
                                                           capsys):
    out = tmp_path / "run"
    assert main(["run", "--out", str(out), *RUN, "--log", "tensorboard,wandb",
                 "--wandb-project", "a/b"]) == 2  # W&B refuses the name
    error = capsys.readouterr().err
    assert error.count("\n") == 1
    assert "W&B could not start (Invalid project name 'a/b'" in error
    assert sorted(p.name for p in out.iterdir()) == ["run.lock"]


# ---------------------------------------------------------------------------------------------
# Studies


def test_a_study_logs_with_its_spec_and_exports_to_wandb_with_its_name_as_group(
        store, tmp_path, capsys):
    """A tiny study run without Ray (each planned run in this process): [study] log puts each
    run's events in its directory; export sends its runs to W&B, grouped by the study."""
    from seqeval.runner import run
    from seqeval.spec import expand_spec
    from seqeval.study import StudyDir

    spec = {"study": {"agents": ["bc"], "datasets": [EXPERT], "seeds": 1,
                      "log": ["tensorboard"]},
            "protocol": {"initial_size": 9500, "increment": 50, "eval_every": 250,
                         "eval_episodes": 1, "batch_size": 32},
            "agent": {"hidden_dims": [[8], [8, 8]]}}
    plan = expand_spec(spec)
    assert [p.log for p in plan] == [("tensorboard",)] * 2
    study = StudyDir(tmp_path / "pendulum-study")
    state = {"runs": []}
    records = study.merge_plan(state, plan, tmp_path / "spec.toml", "")
    for planned, record in zip(plan, records, strict=True):
        run(planned.run_settings(study.run_dir(record)))
        record["status"] = "complete"
    study.save(state)
    for record in records:
        assert_tensorboard_equals_csv(study.run_dir(record))

    assert main(["export", str(study.path), "--to", "wandb"]) == 0
    assert capsys.readouterr().out.count("values to W&B") == 2
    for record in records:
        (session,) = wandb_sessions(study.run_dir(record))
        assert session["run"].run_group == "pendulum-study"
        assert session["run"].display_name == f"{record['label']} on {EXPERT}"
        assert [row["samples"] for row in session["history"]] == [9750, 10000]
    assert main(["export", str(study.path), "--to", "wandb"]) == 0  # again: nothing new
    assert capsys.readouterr().out.count(": 0 values to W&B") == 2


def test_study_log_key_is_checked(tmp_path):
    from seqeval.errors import UserError
    from seqeval.spec import expand_spec

    with pytest.raises(UserError, match=r"\[study\] log: unknown tracker 'tb'"):
        expand_spec({"study": {"agents": ["bc"], "datasets": [EXPERT], "log": ["tb"]}})
