"""Retrain mode's schedule: members train in a shrinking set, each exactly its own budget."""

from __future__ import annotations

import json

import jax
import numpy as np
import pytest
from helpers import EXPERT

from seqeval import protocol, retrain
from seqeval.context import StopRequest, load_context
from seqeval.results import read_evaluations, read_training
from seqeval.runner import RunSettings, run

# Budgets: 50, 50, 80 (T0 2000, increment 100, floor 50); with 30-step segments the second
# segment is cut at step 50, where the two smaller sizes are done.
SETTINGS = dict(agent="bc", dataset=EXPERT, mode="retrain", initial_size=2_000, increment=100,
                sizes=(500, 2_000, 10_000), retrain_min_steps=50, num_seeds=2,
                agent_overrides=(("hidden_dims", "16,16"),), eval_episodes=1, batch_size=32,
                progress=False)
SEGMENT = 30


def _phases(budgets, segment):
    return [[(p.start, p.steps, p.members.tolist()) for p in phases]
            for phases in retrain.retrain_phases(np.asarray(budgets), segment)]


def test_phases_cut_segments_where_budgets_end():
    assert _phases([50, 80], 30) == [[(0, 30, [0, 1])],
                                     [(30, 20, [0, 1]), (50, 10, [1])],
                                     [(60, 20, [1])]]
    assert _phases([40, 40], 40) == [[(0, 40, [0, 1])]]


def test_a_default_grid_computes_only_its_useful_updates():
    # The paper's settings on a 30k-transition dataset: T0 5000, one step per transition.
    sizes = protocol.geometric_sizes(5_000, 30_000)
    budgets = np.array([max(1_000, s - 5_000) for s in sizes])
    useful, computed = retrain.computed_updates(budgets, retrain.RETRAIN_SEGMENT_STEPS)
    assert useful == computed == budgets.sum()
    assert len(sizes) * budgets.max() > 2.5 * useful  # what masking finished members cost
    for phases in retrain.retrain_phases(budgets, 5_000):
        assert {p.start // 5_000 for p in phases} == {phases[0].start // 5_000}
    per_member = np.zeros(len(budgets), int)
    for phases in retrain.retrain_phases(budgets, 5_000):
        for phase in phases:
            assert (budgets[phase.members] > phase.start).all()
            assert (budgets[np.setdiff1d(np.arange(len(budgets)), phase.members)]
                    <= phase.start).all()
            per_member[phase.members] += phase.steps
    np.testing.assert_array_equal(per_member, budgets)


def _leaves(out):
    progress = json.loads((out / "checkpoint" / "progress.json").read_text())
    with np.load(out / "checkpoint" / progress["arrays"]) as stored:
        return [stored[f"leaf_{i:04d}"] for i in range(len(stored.files))], progress


def test_members_end_where_the_masked_program_ends_them(store, tmp_path, monkeypatch):
    """The phased run equals one masked program of all members (the former schedule, where
    each member is unchanged past its budget): the same states, member by member."""
    monkeypatch.setattr(retrain, "RETRAIN_SEGMENT_STEPS", SEGMENT)
    settings = RunSettings(out=str(tmp_path / "phased"), **SETTINGS)
    run(settings)
    phased, progress = _leaves(tmp_path / "phased")
    assert progress["gradient_steps"] == 80 and progress["segment"] == 4  # 3 segments, eval

    with StopRequest() as stop:
        context = load_context(settings, stop)
    budgets = np.repeat([50, 50, 80], 2)
    trained = retrain._initial_members(context, 3, budgets)
    masked = protocol.make_retrain_trainer(context.agent, context.agent_config,
                                           protocol.RetrainTraining(32, 80))
    states, keys, _, _ = masked(trained["states"], trained["train_keys"],
                                context.orders[np.tile([0, 1], 3)], context.device_data,
                                np.repeat([500, 2_000, 10_000], 2).astype(np.int32), budgets)
    expected = jax.tree.leaves({"states": states, "train_keys": keys})
    assert len(expected) == len(phased)
    for got, want in zip(phased, expected, strict=True):
        np.testing.assert_allclose(got, np.asarray(want), rtol=1e-5, atol=1e-6)
    summary = json.loads((tmp_path / "phased" / "summary.json").read_text())
    assert summary["vmapped_updates_per_second"] == pytest.approx(
        summary["updates_per_second"])


@pytest.mark.slow  # three runs: ~30 s on an idle machine
def test_an_interrupted_retrain_run_resumes_to_the_same_files(store, tmp_path, monkeypatch):
    monkeypatch.setattr(retrain, "RETRAIN_SEGMENT_STEPS", SEGMENT)
    run(RunSettings(out=str(tmp_path / "whole"), **SETTINGS))

    original_check, calls = StopRequest.check, []

    def stop_before_the_third_segment(self):
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt
        original_check(self)

    out = tmp_path / "resumed"
    monkeypatch.setattr(StopRequest, "check", stop_before_the_third_segment)
    with pytest.raises(KeyboardInterrupt):
        run(RunSettings(out=str(out), **SETTINGS))
    assert _leaves(out)[1]["segment"] == 2
    assert {r["gradient_steps"] for r in read_training(out)} == {30, 50, 60}
    monkeypatch.setattr(StopRequest, "check", original_check)
    run(RunSettings(out=str(out), **SETTINGS))

    def without_times(rows):
        return [{k: v for k, v in r.items() if k != "wall_time"} for r in rows]

    assert read_training(out) == read_training(tmp_path / "whole")
    assert without_times(read_evaluations(out)) == without_times(
        read_evaluations(tmp_path / "whole"))
    for got, want in zip(_leaves(out)[0], _leaves(tmp_path / "whole")[0], strict=True):
        np.testing.assert_array_equal(got, want)
