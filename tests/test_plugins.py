"""Agents from outside seqeval: a file (`--agent FILE.py:NAME`) and an installed package
registering an entry point in the `seqeval.agents` group, both through `seqeval run`."""

from __future__ import annotations

import importlib
import json
import shutil
import sys
import tomllib
from pathlib import Path

import pytest
from helpers import EXPERT

from seqeval.agents import (
    ENTRY_POINT_GROUP,
    agent_display_name,
    agent_fingerprint,
    available_agents,
    get_agent,
)
from seqeval.algorithms.checks import agent_source_files
from seqeval.cli import main
from seqeval.results import read_evaluations

REPO = Path(__file__).resolve().parents[1]
EXAMPLE = REPO / "docs" / "example_agent.py"
PLUGIN_PACKAGE = Path(__file__).resolve().parent / "plugin_pkg"
# Small, fast protocol settings: two evaluations after 9,000 and 10,000 samples.
FAST = ["--initial-size", "9000", "--increment", "500", "--steps-per-increment", "20",
        "--eval-every", "500", "--eval-episodes", "1", "--batch-size", "64", "--no-progress"]


def install_plugin(site: Path) -> None:
    """Install tests/plugin_pkg into `site` the way pip lays out a wheel: the package plus a
    .dist-info directory whose entry_points.txt comes from the package's pyproject.toml.
    (Built by hand because pip would need network access to fetch a build backend.)"""
    project = tomllib.loads((PLUGIN_PACKAGE / "pyproject.toml").read_text())["project"]
    for package in ("seqeval_mean_action",):
        shutil.copytree(PLUGIN_PACKAGE / package, site / package)
    dist_name = project["name"].replace("-", "_")
    dist_info = site / f"{dist_name}-{project['version']}.dist-info"
    dist_info.mkdir(parents=True)
    (dist_info / "METADATA").write_text(
        f"Metadata-Version: 2.1\nName: {project['name']}\nVersion: {project['version']}\n")
    lines = []
    for group, entries in project["entry-points"].items():
        lines.append(f"[{group}]")
        lines += [f"{name} = {target}" for name, target in entries.items()]
    (dist_info / "entry_points.txt").write_text("\n".join(lines) + "\n")


@pytest.fixture
def installed_plugin(tmp_path, monkeypatch):
    site = tmp_path / "site-packages"
    site.mkdir()
    install_plugin(site)
    monkeypatch.syspath_prepend(str(site))
    importlib.invalidate_caches()
    yield site
    sys.modules.pop("seqeval_mean_action", None)


def test_agent_defined_in_a_file_runs_through_seqeval_run(store, tmp_path, capsys):
    out = tmp_path / "linear"
    code = main(["run", "--agent", f"{EXAMPLE}:AGENT", "--dataset", EXPERT, "--out", str(out),
                 *FAST, "--agent.learning_rate", "3e-3"])
    assert code == 0, capsys.readouterr().err
    config = json.loads((out / "config.json").read_text())
    assert config["agent_config"] == {"learning_rate": 0.003, "exploration_noise": 0.1}
    assert [row["samples"] for row in read_evaluations(out)] == [9_500, 10_000]


def test_agent_from_an_installed_package_entry_point_runs_through_seqeval_run(
        store, tmp_path, installed_plugin, capsys):
    assert "mean_action" in available_agents()
    assert get_agent("mean_action").name == "mean_action"
    out = tmp_path / "mean"
    code = main(["run", "--agent", "mean_action", "--dataset", EXPERT, "--out", str(out), *FAST,
                 "--agent.momentum", "0.9"])
    assert code == 0, capsys.readouterr().err
    config = json.loads((out / "config.json").read_text())
    assert config["agent"] == "mean_action" and config["agent_config"] == {"momentum": 0.9}
    assert len(read_evaluations(out)) == 2
    # `seqeval agents` lists it with its settings.
    assert main(["agents"]) == 0
    assert "--agent.momentum 0.99" in capsys.readouterr().out


def test_entry_point_group_name_is_the_documented_one():
    assert ENTRY_POINT_GROUP == "seqeval.agents"
    assert 'entry-points."seqeval.agents"' in (PLUGIN_PACKAGE / "pyproject.toml").read_text()


@pytest.mark.parametrize("spec,message", [
    ("missing_dir/agent.py:AGENT", "does not exist"),
    (f"{EXAMPLE}:NOPE", "defines no 'NOPE'"),
    (f"{EXAMPLE}:LinearBCConfig", "is not a seqeval Agent"),
    ("no_such_agent", "unknown agent 'no_such_agent'"),
])
def test_bad_agent_specs_exit_2_with_one_line(store, tmp_path, capsys, spec, message):
    code = main(["run", "--agent", spec, "--dataset", EXPERT, "--out", str(tmp_path / "x"),
                 *FAST])
    err = capsys.readouterr().err
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1
    assert "Traceback" not in err


def test_a_file_agent_is_named_by_its_agent_name_and_defaults_to_AGENT(store, tmp_path, capsys):
    assert get_agent(str(EXAMPLE)).name == "linear_bc"
    assert agent_display_name(f"{EXAMPLE}:AGENT") == "linear_bc"
    assert agent_display_name("td3_bc") == "td3_bc"
    out = tmp_path / "linear"
    code = main(["run", "--agent", str(EXAMPLE), "--dataset", EXPERT, "--out", str(out), *FAST])
    assert code == 0, capsys.readouterr().err
    assert len(read_evaluations(out)) == 2
    # `seqeval agents SPEC` lists only that agent, under its own name.
    capsys.readouterr()
    assert main(["agents", f"{EXAMPLE}:AGENT"]) == 0
    listing = capsys.readouterr().out
    assert listing.startswith(f"linear_bc ({EXAMPLE}:AGENT): linear behavioural cloning")
    assert "--agent.learning_rate 0.01" in listing and "td3_bc" not in listing


def test_agents_listing_shows_an_agents_own_batch_size(capsys):
    assert main(["agents", "rebrac", "bc"]) == 0
    listing = capsys.readouterr().out
    assert "rebrac: " in listing and "batch size 1024" in listing
    assert listing.count("batch size") == 1  # bc keeps the protocol's


def test_fingerprint_follows_a_file_agents_source(tmp_path):
    copy = tmp_path / "agent.py"
    copy.write_text(EXAMPLE.read_text())
    first = agent_fingerprint(get_agent(str(copy)))
    assert agent_fingerprint(get_agent(f"{copy}:AGENT")) == first  # same code, same print
    copy.write_text(EXAMPLE.read_text().replace("learning_rate: float = 1e-2",
                                                "learning_rate: float = 2e-2"))
    assert agent_fingerprint(get_agent(str(copy))) != first


def test_a_file_agent_runs_its_current_source_never_a_stale_cached_pyc(tmp_path):
    """Python trusts a cached .pyc whose source kept its size and modification second: an
    agent file (or a module beside it) rewritten within a second must still run its new code,
    the code its fingerprint hashes."""
    import os
    import py_compile

    (tmp_path / "helper.py").write_text("SCALE = 0.1\n")
    agent_file = tmp_path / "agent.py"
    agent_file.write_text(EXAMPLE.read_text().replace(
        "from seqeval.agents import", "from helper import SCALE\nfrom seqeval.agents import")
        + "\nAGENT_SCALE = SCALE\n")
    stamps = {path: path.stat().st_mtime_ns for path in (agent_file, tmp_path / "helper.py")}
    for path in stamps:  # the caches an earlier import would have left
        py_compile.compile(str(path), doraise=True)
    (tmp_path / "helper.py").write_text("SCALE = 0.2\n")  # same size, same timestamp
    agent_file.write_text(agent_file.read_text().replace("learning_rate: float = 1e-2",
                                                         "learning_rate: float = 2e-2"))
    for path, stamp in stamps.items():
        os.utime(path, ns=(stamp, stamp))
    agent = get_agent(str(agent_file))
    assert agent.make_config({}).learning_rate == 2e-2
    assert sys.modules["helper"].SCALE == 0.2
    assert sorted(p.name for p in (tmp_path / "__pycache__").iterdir()) == sorted(
        f"{name}.{sys.implementation.cache_tag}.pyc" for name in ("agent", "helper"))


def test_fingerprint_of_builtin_agents_covers_the_seqeval_modules_they_import():
    bc, td3 = get_agent("bc"), get_agent("td3_bc")
    assert agent_fingerprint(bc) == agent_fingerprint(get_agent("bc"))
    assert agent_fingerprint(bc) != agent_fingerprint(td3)
    files, label = agent_source_files(td3)
    assert {path.name for path in files.values()} >= {"td3_bc.py", "nets.py", "base.py"}
    assert "bc.py" not in {path.name for path in files.values()} and label == ""


def test_fingerprint_of_an_entry_point_agent_covers_its_package(installed_plugin):
    agent = get_agent("mean_action")
    files, label = agent_source_files(agent)
    assert [name for name in files if name.split(".")[0] != "seqeval"] == [
        "seqeval_mean_action/__init__.py"]
    assert "seqeval.agents" in files  # the seqeval modules it builds on count too
    assert label == "seqeval-mean-action==0.1.0"
    before = agent_fingerprint(agent)
    (installed_plugin / "seqeval_mean_action" / "helpers.py").write_text("SCALE = 2\n")
    assert agent_fingerprint(agent) != before
