"""What a hostile probe found (issue 21, item 6): each is refused with one line and exit code 2,
leaving nothing behind. In-process through `seqeval.cli.main(argv)`."""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
from pathlib import Path

import pytest
from helpers import EXPERT

from seqeval import context as run_context
from seqeval.cli import main
from seqeval.data import load_datasets

TINY = ["--no-progress", "--initial-size", "9000", "--increment", "500", "--eval-every", "500",
        "--eval-episodes", "1", "--batch-size", "16"]
AGENT_HEAD = '''import dataclasses
import jax.numpy as jnp
from seqeval.agents import Agent

@dataclasses.dataclass(frozen=True)
class Config:
    width: int = 4

def init(config, key, spaces, stats, total_steps):
    return {"w": jnp.zeros(3)}

def update(config, state, batch, key):
    return state, {"loss": jnp.float32(0.0)}

def act(config, state, observations, key, deterministic):
    return jnp.zeros(observations.shape[:-1] + (1,))
'''
AGENT_TAIL = ("\nAGENT = Agent(name='probe', config_class=Config, init=init, update=update, "
              "act=act)\n")


def refused(capsys, argv: list[str], *fragments: str) -> str:
    """Run `seqeval ARGV`; it must exit 2 with one line on stderr holding every fragment."""
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("seqeval: error: "), err
    for fragment in fragments:
        assert fragment in err, err
    return err


def run_argv(agent: str, out: Path, *extra: str, dataset: str = EXPERT) -> list[str]:
    return ["run", "--agent", agent, "--dataset", dataset, "--out", str(out), *TINY, *extra]


# ---------------------------------------------------------------------------------------------
# The demo's output folder.


def test_demo_refuses_a_folder_of_the_users_files(tmp_path, capsys):
    out = tmp_path / "mine"
    (out / "bc").mkdir(parents=True)
    (out / "bc" / "notes.txt").write_text("my notes")
    refused(capsys, ["demo", "--out", str(out), "--figure", str(tmp_path / "f.png")],
            str(out), "did not write")
    assert (out / "bc" / "notes.txt").read_text() == "my notes"
    assert sorted(p.name for p in out.rglob("*")) == ["bc", "notes.txt"]


def test_demo_never_deletes_a_users_file_inside_its_own_folder(tmp_path, capsys):
    from seqeval.demo import DEMO_MARKER, prepare_out_dir

    out = tmp_path / "demo"
    (out / "bc" / "checkpoint").mkdir(parents=True)
    (out / DEMO_MARKER).write_text("")
    for name in ("config.json", "evaluations.csv", "run.lock"):
        (out / "bc" / name).write_text("{}")
    (out / "bc" / "checkpoint" / "state-000001.npz").write_bytes(b"")
    (out / "bc" / "checkpoint" / "mine.npz").write_bytes(b"kept")
    refused(capsys, ["demo", "--out", str(out), "--figure", str(tmp_path / "f.png")],
            "mine.npz", "not written by the demo")
    assert (out / "bc" / "checkpoint" / "mine.npz").read_bytes() == b"kept"
    # Without the user's file, the demo's own run is replaced.
    (out / "bc" / "checkpoint" / "mine.npz").unlink()
    prepare_out_dir(out, [out / "bc", out / "iql"])
    assert not (out / "bc").exists() and (out / DEMO_MARKER).is_file()


# ---------------------------------------------------------------------------------------------
# Agent files.


@pytest.mark.parametrize("name, source, fragments", [
    ("init_raises", AGENT_HEAD.replace('return {"w": jnp.zeros(3)}',
                                       'raise ValueError("no init today")') + AGENT_TAIL,
     ("failed in init", "init_raises.py line 10", "ValueError: no init today")),
    ("update_raises", AGENT_HEAD.replace('return state, {"loss": jnp.float32(0.0)}',
                                         'raise KeyError("gone")') + AGENT_TAIL,
     ("failed in update", "update_raises.py line 13", "KeyError: 'gone'")),
    ("not_dataclass", AGENT_HEAD.replace("@dataclasses.dataclass(frozen=True)\n", "")
     + AGENT_TAIL, ("not_dataclass.py", "config_class Config is not a dataclass")),
    ("exits", "import sys\nsys.exit()\n", ("exits.py", "exited while being imported")),
    ("script", "import argparse\nparser = argparse.ArgumentParser(prog='train_mine')\n"
               "parser.add_argument('--lr', required=True)\nparser.parse_args()\n",
     ("script.py", "exited while being imported", "required: --lr")),
])
def test_a_broken_agent_file_is_named_in_one_line(store, tmp_path, capsys, name, source,
                                                  fragments):
    path = tmp_path / f"{name}.py"
    path.write_text(source)
    out = tmp_path / "out"
    refused(capsys, run_argv(str(path), out), *fragments)
    assert not out.exists()
    if name in ("not_dataclass", "exits", "script"):  # refused at load: `agents` too
        err = refused(capsys, ["agents", str(path)], *fragments)
        assert "usage" not in err


# ---------------------------------------------------------------------------------------------
# Datasets.


def _store_with(tmp_path: Path, pendulum_store: Path, name: str, env_spec) -> Path:
    """A store holding a copy of the expert dataset as test/NAME-v0 with another env_spec."""
    store = tmp_path / "store"
    target = store / "test" / f"{name}-v0"
    shutil.copytree(pendulum_store / EXPERT, target,
                    ignore=shutil.ignore_patterns("seqeval_cache.npz"))
    metadata_path = target / "data" / "metadata.json"
    metadata = json.loads(metadata_path.read_text())
    metadata["dataset_id"] = f"test/{name}-v0"
    metadata["env_spec"] = None if env_spec is None else json.dumps(
        env_spec(json.loads(metadata["env_spec"])))
    metadata_path.write_text(json.dumps(metadata))
    return store


@pytest.mark.parametrize("name, env_spec, fragment", [
    ("missing-module", lambda spec: {**spec, "id": "Thing-v0",
                                     "entry_point": "no_such_simulator.envs:Thing"},
     "module 'no_such_simulator' is not installed"),
    ("no-env", None, "records no environment"),
])
def test_a_dataset_that_cannot_be_evaluated_is_refused_before_the_run_directory(
        pendulum_store, tmp_path, capsys, monkeypatch, name, env_spec, fragment):
    monkeypatch.setenv("MINARI_DATASETS_PATH", str(_store_with(tmp_path, pendulum_store, name,
                                                               env_spec)))
    out = tmp_path / "out"
    refused(capsys, run_argv("bc", out, dataset=f"test/{name}-v0"), f"test/{name}-v0", fragment)
    assert not out.exists()


def test_a_dataset_id_with_a_trailing_space_leaves_nothing(store, tmp_path, capsys):
    out = tmp_path / "out"
    assert main(run_argv("bc", out, dataset=EXPERT + " ")) == 2
    assert not out.exists()


@pytest.fixture(scope="module")
def tiny_run(pendulum_store, tmp_path_factory) -> Path:
    """A finished tiny BC run on the expert dataset (to resume on other data)."""
    out = tmp_path_factory.mktemp("tiny") / "run"
    previous = os.environ.get("MINARI_DATASETS_PATH")
    os.environ["MINARI_DATASETS_PATH"] = str(pendulum_store)
    try:
        assert main(run_argv("bc", out, "--agent.hidden_dims", "8")) == 0
    finally:
        if previous is None:
            del os.environ["MINARI_DATASETS_PATH"]
        else:
            os.environ["MINARI_DATASETS_PATH"] = previous
    return out


@pytest.mark.parametrize("field", ["observations", "rewards"])
def test_resuming_on_changed_data_is_refused_naming_the_dataset(store, tiny_run, tmp_path,
                                                                 capsys, monkeypatch, field):
    config = json.loads((tiny_run / "config.json").read_text())
    data, blocks = load_datasets(EXPERT)
    assert config["dataset_fingerprint"] == run_context.dataset_fingerprint(data)
    changed = dataclasses.replace(data, **{field: getattr(data, field) * 1.001})
    monkeypatch.setattr(run_context, "load_datasets", lambda spec, env=None: (changed, blocks))
    copy = tmp_path / "run"
    shutil.copytree(tiny_run, copy)
    def files() -> dict[str, bytes]:  # the lock file records its last holder: not compared
        return {p.name: p.read_bytes() for p in copy.iterdir()
                if p.is_file() and p.name != "run.lock"}

    before = files()
    refused(capsys, run_argv("bc", copy, "--agent.hidden_dims", "8"),
            f"the dataset '{EXPERT}' changed", "restore the data")
    assert files() == before


def test_the_fingerprint_sees_any_array_change(store):
    data, _ = load_datasets(EXPERT)
    reference = run_context.dataset_fingerprint(data)
    assert run_context.dataset_fingerprint(dataclasses.replace(data)) == reference
    for field in run_context.FINGERPRINTED_ARRAYS:
        array = getattr(data, field).copy()
        array.flat[len(array.flat) // 2] = not array.flat[len(array.flat) // 2] \
            if array.dtype == bool else array.flat[len(array.flat) // 2] + 1
        assert run_context.dataset_fingerprint(
            dataclasses.replace(data, **{field: array})) != reference, field


# ---------------------------------------------------------------------------------------------
# Flags.


@pytest.mark.parametrize("extra, fragment", [
    (["--sizes", "1000,2000"], "--sizes only apply to --mode retrain"),
    (["--retrain-steps", "100"], "--retrain-steps only apply"),
    (["--mode", "full", "--sizes", "1000", "--retrain-min-steps", "5"],
     "--sizes and --retrain-min-steps only apply to --mode retrain (this run is full)"),
])
def test_retrain_flags_on_a_sequential_run_are_refused(tmp_path, capsys, extra, fragment):
    out = tmp_path / "out"
    refused(capsys, run_argv("bc", out, *extra), fragment)
    assert not out.exists()


@pytest.mark.parametrize("command", ["report", "select"])
def test_a_negative_bootstrap_seed_is_refused(tiny_run, tmp_path, capsys, command):
    out = tmp_path / "report"
    refused(capsys, [command, str(tiny_run), "--out", str(out), "--seed", "-1"],
            "--seed", ">= 0")
    assert not out.exists()


@pytest.mark.parametrize("command", ["report", "plot"])
def test_a_run_that_diverged_before_evaluating_is_named_diverged(tiny_run, tmp_path, capsys,
                                                                command):
    run = tmp_path / "diverged"
    shutil.copytree(tiny_run, run)
    (run / "evaluations.csv").unlink()
    (run / "summary.json").write_text(json.dumps({"status": "diverged", "samples": 9000,
                                                  "gradient_steps": 1, "seed": 0}))
    err = refused(capsys, [command, str(run), "--out", str(tmp_path / "out")], "diverged")
    assert "let the run reach" not in err
    assert not (tmp_path / "out").exists()


def test_an_estimate_above_the_free_memory_is_refused():
    estimate = {"agent states": 150, "training batches": 10}
    run_context.check_memory(estimate, (160, "this machine"))
    with pytest.raises(run_context.UserError, match="160 B of memory"):
        run_context.check_memory(estimate, (100, "this machine"))  # between 1x and 2x free


def test_a_run_larger_than_the_free_memory_leaves_nothing(store, tmp_path, capsys, monkeypatch):
    out = tmp_path / "out"
    monkeypatch.setattr(run_context, "available_memory", lambda: (10_000, "this machine"))
    refused(capsys, run_argv("bc", out, "--seeds", "4"), "of memory", "is free on this machine")
    assert not out.exists()

