"""One plotting stack: runs grouped into methods (seqeval.runs) the same way by `plot` and
`report`, the shared curve figure, `plot --out`, and bad input in plot and report (one line,
exit code 2, no traceback), through seqeval.cli.main and the installed command."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from helpers import read_csv, write_run

from seqeval import cli, figures, plot, report
from seqeval.errors import UserError
from seqeval.runs import Method, agent_label, load_groups, load_run
from seqeval.style import BAND_LEGEND, SAMPLES_LABEL, SEEDS_LEGEND, method_styles

SEQEVAL = os.path.join(os.path.dirname(sys.executable), "seqeval")
EVALUATION_HEADER = ("samples", "gradient_steps", "seed", "return", "normalized_score",
                     "wall_time", "phase")
PREQUENTIAL_HEADER = "samples,seed,transitions,loss,loss_cumulative"


def labels(groups) -> list[tuple[str, str]]:
    return [(g.dataset, g.label) for g in groups]


@pytest.fixture
def captured(monkeypatch) -> list:
    """Figures handed to figures._save (still open), instead of writing them."""
    figs: list = []

    def keep(fig, out_stem):
        figs.append(fig)
        return [Path(f"{out_stem}.png"), Path(f"{out_stem}.pdf")]

    monkeypatch.setattr(figures, "_save", keep)
    yield figs
    import matplotlib.pyplot as plt

    for fig in figs:
        plt.close(fig)


def legend_labels(fig) -> list[str]:
    return [text.get_text() for legend in fig.legends for text in legend.get_texts()]


# ---------------------------------------------------------------------------------------------
# Methods


def test_agent_settings_make_distinct_methods_labelled_by_what_differs(tmp_path):
    low = write_run(tmp_path / "iql-07", "iql", "d/a-v0", {0: [10, 20, 30, 40]},
                    agent_config={"expectile": 0.7, "beta": 3.0})
    high = write_run(tmp_path / "iql-09", "iql", "d/a-v0", {0: [50, 60, 70, 80]},
                     agent_config={"expectile": 0.9, "beta": 3.0})
    bc = write_run(tmp_path / "bc", "bc", "d/a-v0", {0: [1, 2, 3, 4]},
                   agent_config={"hidden_dims": [64, 64]})
    groups, notes = load_groups([low, high, bc])
    assert labels(groups) == [("d/a-v0", "bc"), ("d/a-v0", "iql expectile=0.7"),
                              ("d/a-v0", "iql expectile=0.9")]
    assert not notes
    # Nothing was pooled across settings: each method has its own seed 0.
    assert [float(g.seeds[0].values[-1]) for g in groups] == [4.0, 40.0, 80.0]
    # The report has one row per method, not one pooled "iql".
    out = tmp_path / "report"
    report.make_report([low, high, bc], out, reps=200, figures=False)
    rows = {r["agent"]: r for r in read_csv(out / "per_dataset.csv")}
    assert set(rows) == {"bc", "iql expectile=0.7", "iql expectile=0.9"}
    assert float(rows["iql expectile=0.9"]["final_mean"]) == pytest.approx(80.0)


def test_modes_and_protocol_settings_make_distinct_methods(tmp_path):
    seq = write_run(tmp_path / "seq", "iql", "d/a-v0", {0: [10, 20, 30, 40]})
    full = write_run(tmp_path / "full", "iql", "d/a-v0", {0: [40, 40, 40, 40]}, mode="full")
    retrain = write_run(tmp_path / "retrain", "iql", "d/a-v0", {0: [5, 25, 35]},
                        mode="retrain", samples=[5000, 10000, 20000],
                        protocol={"sizes": [5000, 10000, 20000], "budgets": [1000, 5000, 15000]})
    coarse = write_run(tmp_path / "coarse", "iql", "d/a-v0", {0: [15, 25, 35, 45]},
                       protocol={"steps_per_increment": 2, "total_gradient_steps": 30000})
    groups, _ = load_groups([seq, full, retrain, coarse])
    # retrain's sizes/budgets are told apart by the mode; derived step totals never label.
    assert labels(groups) == [
        ("d/a-v0", "iql steps_per_increment=1"), ("d/a-v0", "iql steps_per_increment=1 (full)"),
        ("d/a-v0", "iql steps_per_increment=1 (retrain)"),
        ("d/a-v0", "iql steps_per_increment=2")]
    # Alone, a mode needs no settings in its label.
    groups, _ = load_groups([seq, full, retrain])
    assert [g.label for g in groups] == ["iql", "iql (full)", "iql (retrain)"]
    assert [g.method for g in groups] == [Method("iql", "", m)
                                          for m in ("sequential", "full", "retrain")]


def test_a_method_keeps_its_label_on_every_dataset(tmp_path):
    """expectile tells iql apart on d/a, so d/b's only iql is 'iql expectile=0.7' too and the
    aggregates pool it with d/a's 0.7 runs."""
    run_dirs = [
        write_run(tmp_path / "a07", "iql", "d/a-v0", {0: [10, 20, 30, 40], 1: [10, 20, 30, 50]},
                  agent_config={"expectile": 0.7}),
        write_run(tmp_path / "a09", "iql", "d/a-v0", {0: [50, 60, 70, 80], 1: [50, 60, 70, 90]},
                  agent_config={"expectile": 0.9}),
        write_run(tmp_path / "b07", "iql", "d/b-v0", {0: [20, 30, 40, 60], 1: [20, 30, 40, 70]},
                  agent_config={"expectile": 0.7}),
    ]
    groups, _ = load_groups(run_dirs)
    assert labels(groups) == [("d/a-v0", "iql expectile=0.7"), ("d/a-v0", "iql expectile=0.9"),
                              ("d/b-v0", "iql expectile=0.7")]
    out = tmp_path / "report"
    report.make_report(run_dirs, out, reps=200, figures=False)
    aggregated = {r["agent"]: r["datasets"] for r in read_csv(out / "aggregates.csv")}
    assert aggregated == {"iql expectile=0.7": "2"}  # 0.9 ran on d/a only: left out, with a note
    assert "iql expectile=0.9 is left out of the aggregates" in (out / "report.md").read_text()


def test_a_run_given_twice_is_counted_once(tmp_path, capsys):
    run = write_run(tmp_path / "bc", "bc", "d/a-v0", {0: [10, 20, 30, 40], 1: [20, 30, 40, 60]})
    copy = tmp_path / "bc-copy"
    shutil.copytree(run, copy)
    other = write_run(tmp_path / "bc-2", "bc", "d/a-v0", {2: [30, 40, 50, 80]})
    for given in ([run, run, other], [run, Path(str(run) + "/"), other], [run, copy, other]):
        groups, notes = load_groups(given)
        (group,) = groups
        assert [c.seed for c in group.seeds] == [0, 1, 2]
        assert notes, given  # and the reader is told
    # plot and report take the same view: three seeds, the note on stderr / in report.md.
    out = tmp_path / "report"
    report.make_report([run, run, other], out, reps=200, figures=False)
    (row,) = read_csv(out / "per_dataset.csv")
    assert row["seeds"] == "3"
    assert float(row["final_mean"]) == pytest.approx(60.0)
    assert "given twice" in (out / "report.md").read_text()
    assert cli.main(["plot", str(run), str(copy), "--out", str(tmp_path / "c.png")]) == 0
    assert "counted once" in capsys.readouterr().err
    # The same seed with different evaluations in two directories cannot be resolved.
    clash = write_run(tmp_path / "clash", "bc", "d/a-v0", {1: [0, 0, 0, 0]})
    with pytest.raises(UserError, match="seed 1 of bc on d/a-v0 is in both .* different"):
        load_groups([run, clash])


def test_plot_and_report_draw_the_same_methods(tmp_path, captured):
    run_dirs = [
        write_run(tmp_path / "iql-07", "iql", "d/a-v0", {0: [10, 20, 30, 40]},
                  agent_config={"expectile": 0.7}),
        write_run(tmp_path / "iql-09", "iql", "d/a-v0", {0: [50, 60, 70, 80]},
                  agent_config={"expectile": 0.9}),
        write_run(tmp_path / "iql-full", "iql", "d/a-v0", {0: [40] * 4}, mode="full",
                  agent_config={"expectile": 0.7}),
    ]
    plot.plot_runs(run_dirs, tmp_path / "plot.png")
    report.make_report(run_dirs, tmp_path / "report", reps=200)
    plotted, curves = captured[0], captured[1]
    expected = ["iql expectile=0.7", "iql expectile=0.7 (full)", "iql expectile=0.9",
                "dataset average"]
    assert legend_labels(plotted) == legend_labels(curves) == expected
    # One colour per agent variant, kept across modes; a line style per mode.
    styles = method_styles(g.method for g in load_groups(run_dirs)[0])
    assert styles["iql expectile=0.7"][0] == styles["iql expectile=0.7 (full)"][0]
    assert styles["iql expectile=0.7"][0] != styles["iql expectile=0.9"][0]
    assert (styles["iql expectile=0.7"][1], styles["iql expectile=0.7 (full)"][1]) == ("-", "--")
    # The x axis says what x is, in both.
    for fig in (plotted, curves):
        assert {ax.get_xlabel() for ax in fig.axes} - {""} == {SAMPLES_LABEL}


def test_agent_labels_come_from_agent_name_or_the_spec(tmp_path):
    assert agent_label("iql") == "iql"
    assert agent_label("my/agents.py:FastIQL") == "FastIQL"
    assert agent_label("my/fast_iql.py:AGENT") == "fast_iql"
    run = write_run(tmp_path / "run", "my/fast_iql.py:AGENT", "d/a-v0", {0: [1, 2, 3, 4]})
    config = json.loads((run / "config.json").read_text())
    assert load_run(run).config.agent_name == "fast_iql"
    (run / "config.json").write_text(json.dumps({**config, "agent_name": "iql_fast"}))
    assert load_run(run).config.agent_name == "iql_fast"
    # Two specs with one name are two methods, told apart by the spec.
    other = write_run(tmp_path / "other", "lib/fast_iql.py:AGENT", "d/a-v0", {0: [1, 2, 3, 4]})
    twin = write_run(tmp_path / "twin", "my/fast_iql.py:AGENT", "d/a-v0", {1: [1, 2, 3, 5]})
    groups, _ = load_groups([other, twin])
    assert [g.label for g in groups] == ["fast_iql [lib/fast_iql.py:AGENT]",
                                         "fast_iql [my/fast_iql.py:AGENT]"]


# ---------------------------------------------------------------------------------------------
# The figure and `plot --out`


def test_online_phase_and_retrain_points_share_one_axis(tmp_path, captured):
    online = {0: [(23_000, 80.0), (26_000, 90.0)], 1: [(23_000, 70.0), (26_000, 75.0)]}
    seq = write_run(tmp_path / "td3", "td3_bc", "d/a-v0", {0: [50, 60, 70, 80], 1: [50] * 4},
                    online=online)
    retrain = write_run(tmp_path / "td3-r", "td3_bc", "d/a-v0", {0: [20, 40, 60], 1: [30, 40, 70]},
                        mode="retrain", samples=[5000, 10000, 20000])
    plot.plot_runs([seq, retrain], tmp_path / "fig.png", title="demo")
    (fig,) = captured
    (ax,) = fig.axes
    vertical = [line for line in ax.get_lines() if np.ptp(line.get_xdata()) == 0]
    assert [float(line.get_xdata()[0]) for line in vertical] == [20_000]  # where data ends
    texts = {t.get_text() for t in ax.texts}
    assert {"offline", "online"} <= texts
    sequential = max(ax.get_lines(), key=lambda line: len(line.get_xdata()))
    assert float(np.max(sequential.get_xdata())) == 26_000  # online continues the same line
    # Two seeds each: each seed's line (points for retraining), no band, and the legend says so.
    assert legend_labels(fig) == ["td3_bc", "td3_bc (retrain)", "dataset average",
                                  SEEDS_LEGEND]
    assert ax.get_title() == "demo"  # one panel: the title replaces the dataset's


def test_two_seeds_draw_each_seed_and_three_a_t_band_and_the_legend_says_which(tmp_path,
                                                                             captured):
    """With 2 seeds the 95% t band is the mean +- 12.7 standard errors: it would fill the
    panel and hide the curves. Below 3 seeds each seed is a thin line instead."""
    two = write_run(tmp_path / "two", "bc", "d/a-v0", {0: [10, 30, 50, 60], 1: [30, 50, 70, 80]})
    three = write_run(tmp_path / "three", "iql", "d/b-v0",
                      {0: [10, 30, 50, 60], 1: [30, 50, 70, 80], 2: [20, 40, 60, 70]})
    plot.plot_runs([two], tmp_path / "two.png")
    plot.plot_runs([three], tmp_path / "three.png")
    plot.plot_runs([two, three], tmp_path / "both.png")
    (two_fig, three_fig, both_fig) = captured
    (ax,) = two_fig.axes
    assert not ax.collections  # no band
    seed_lines = [line for line in ax.get_lines() if line.get_linewidth() < 1.0
                  and len(line.get_xdata()) == 4]
    assert sorted(tuple(line.get_ydata()) for line in seed_lines) == [(10, 30, 50, 60),
                                                                      (30, 50, 70, 80)]
    mean = [line for line in ax.get_lines() if list(line.get_ydata()) == [20, 40, 60, 70]]
    assert len(mean) == 1
    # The axis follows the curves, not the band (2 seeds: +-12.7 standard errors of 10 = 127).
    low, high = ax.get_ylim()
    assert low > 0 - 30 and high < 80 + 30
    assert legend_labels(two_fig) == ["bc", "dataset average", SEEDS_LEGEND]

    (ax,) = three_fig.axes
    (band,) = ax.collections  # the 95% t interval of the mean, and no per-seed lines
    assert all(line.get_linewidth() >= 1.0 for line in ax.get_lines()
               if len(line.get_xdata()) == 4)
    assert legend_labels(three_fig) == ["iql", "dataset average", BAND_LEGEND]
    assert legend_labels(both_fig)[-2:] == [BAND_LEGEND, SEEDS_LEGEND]
    assert figures.spread_drawn(1) is None and figures.spread_drawn(5) == "band"


def test_plot_out_directory_and_default(tmp_path, capsys):
    run = write_run(tmp_path / "run", "bc", "d/a-v0", {0: [10, 20, 30, 40]})
    figures_dir = tmp_path / "figs"
    figures_dir.mkdir()
    assert cli.main(["plot", str(run), "--out", str(figures_dir)]) == 0
    assert sorted(p.name for p in figures_dir.iterdir()) == ["curve.pdf", "curve.png"]
    assert not (tmp_path / "figs.png").exists()
    assert str(figures_dir / "curve.png") in capsys.readouterr().out
    new_dir = tmp_path / "new"
    assert cli.main(["plot", str(run), "--out", f"{new_dir}/"]) == 0
    assert (new_dir / "curve.png").stat().st_size > 10_000
    assert cli.main(["plot", str(run), "--out", str(tmp_path / "a" / "b.pdf")]) == 0
    assert (tmp_path / "a" / "b.png").is_file() and (tmp_path / "a" / "b.pdf").is_file()
    assert cli.main(["plot", str(run)]) == 0
    assert (run / "curve.png").is_file()


# ---------------------------------------------------------------------------------------------
# Bad input


def _garbage(row: str):
    def damage(run: Path) -> None:
        with open(run / "evaluations.csv", "a") as handle:
            handle.write(row)
    return damage


def _write(name: str, text: str | bytes):
    def damage(run: Path) -> None:
        path = run / name
        if isinstance(text, bytes):
            path.write_bytes(text)
        else:
            path.write_text(text)
    return damage


def _config(change):
    def damage(run: Path) -> None:
        config = json.loads((run / "config.json").read_text())
        (run / "config.json").write_text(json.dumps(change(config)))
    return damage


# Expected text: the damaged file's name where seqeval.results' readers refuse the file (their
# messages are theirs), else what seqeval.runs says.
BAD_RUNS = {
    "text in a number column": (_garbage("20000,4500,2,abc,,1.0,offline\n"), "evaluations.csv'"),
    "a row with extra fields": (_garbage("20000,4500,2,1,2,3,offline,x,y\n"), "evaluations.csv'"),
    "a truncated row": (_garbage("25000,45\n"), "evaluations.csv'"),
    "nan in a score": (_garbage("25000,4500,0,nan,nan,1.0,offline\n"), "evaluations.csv'"),
    "an unknown phase": (_garbage("25000,4500,0,1,2,1.0,warmup\n"), "phase 'warmup'"),
    "binary evaluations": (_write("evaluations.csv", b"\xff\xfe\x00garbage"), "evaluations.csv'"),
    "two runs into one dir": (_garbage("20000,20000,0,1,2,1.0,offline\n"), "two rows for seed 0"),
    "header only": (_write("evaluations.csv", ",".join(EVALUATION_HEADER) + "\n"),
                    "no evaluations yet"),
    "no evaluations file": (lambda run: (run / "evaluations.csv").unlink(), "no evaluations yet"),
    "no config.json": (lambda run: (run / "config.json").unlink(), "not a seqeval run"),
    "config.json not JSON": (_write("config.json", '{"agent": "bc",'), "not a JSON object"),
    "config.json binary": (_write("config.json", b"\x00\xff\xfe"), "not a JSON object"),
    "config.json a list": (_write("config.json", "[1, 2]"), "not a JSON object"),
    "config.json without dataset": (_config(lambda c: {k: v for k, v in c.items()
                                                        if k != "dataset"}), "lacks a valid"),
    "config.json dataset_info a string": (_config(lambda c: {**c, "dataset_info": "x"}),
                                          "lacks a valid dataset_info"),
    "config.json mode not a name": (_config(lambda c: {**c, "mode": 3}), "is not a mode name"),
    "garbage prequential row": (_write("prequential.csv", f"{PREQUENTIAL_HEADER}\n"
                                       "5000,0,5000,oops,1\n"), "prequential.csv'"),
    "repeated prequential chunk": (_write("prequential.csv", f"{PREQUENTIAL_HEADER}\n"
                                          "5000,0,5000,1,5000\n5000,0,5000,1,10000\n"),
                                   "prequential.csv'"),
    "garbage training row": (_write("training.csv", "samples,gradient_steps,seed,phase,loss\n"
                                    "5000,10,0,offline,1,2,3\n"), "training.csv'"),
}


def _assert_one_line_error(code: int, err: str, message: str) -> None:
    assert code == 2
    assert "Traceback" not in err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("seqeval: error: "), err
    assert message in lines[0]


@pytest.mark.parametrize("command", ["plot", "report"])
@pytest.mark.parametrize("case", sorted(BAD_RUNS))
def test_a_damaged_run_is_one_line_and_exit_2(case, command, tmp_path, capsys):
    damage, message = BAD_RUNS[case]
    run = write_run(tmp_path / "run", "bc", "d/a-v0", {0: [10, 20, 30, 40], 1: [1, 2, 3, 4]})
    damage(run)
    out = tmp_path / "out"
    code = cli.main([command, str(run), "--out", str(out)])
    _assert_one_line_error(code, capsys.readouterr().err, message)
    assert not out.exists()  # nothing written


@pytest.mark.parametrize("command", ["plot", "report"])
def test_missing_paths_and_files_are_one_line_and_exit_2(command, tmp_path, capsys):
    run = write_run(tmp_path / "run", "bc", "d/a-v0", {0: [10, 20, 30, 40]})
    for args, message in [([str(tmp_path / "nope")], "does not exist"),
                          ([str(run / "config.json")], "is a file, not a run directory"),
                          ([str(tmp_path)], "not a seqeval run")]:
        code = cli.main([command, *args, "--out", str(tmp_path / "out")])
        _assert_one_line_error(code, capsys.readouterr().err, message)


def test_unwritable_plot_out_is_one_line_and_exit_2(tmp_path, capsys):
    run = write_run(tmp_path / "run", "bc", "d/a-v0", {0: [10, 20, 30, 40]})
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    code = cli.main(["plot", str(run), "--out", str(blocker / "fig.png")])
    _assert_one_line_error(code, capsys.readouterr().err, "cannot write")
    code = cli.main(["report", str(run), "--out", str(blocker)])
    _assert_one_line_error(code, capsys.readouterr().err, "is a file")
    code = cli.main(["report", str(run), "--out", str(blocker / "report")])
    _assert_one_line_error(code, capsys.readouterr().err, "cannot write the report")


def test_bad_input_through_the_installed_command(tmp_path):
    run = write_run(tmp_path / "run", "bc", "d/a-v0", {0: [10, 20, 30, 40]})
    damaged = write_run(tmp_path / "damaged", "bc", "d/a-v0", {0: [10, 20, 30, 40]})
    _garbage("oops,1,2\n")(damaged)
    (tmp_path / "dir").mkdir()
    cases = [
        (["plot", str(tmp_path / "missing")], 2, "does not exist"),
        (["plot", str(damaged)], 2, "evaluations.csv"),
        (["report", str(damaged), "--out", str(tmp_path / "r")], 2, "evaluations.csv"),
        (["plot", str(run), "--out", str(tmp_path / "dir")], 0, ""),
    ]
    for args, code, message in cases:
        result = subprocess.run([SEQEVAL, *args], capture_output=True, text=True, check=False)
        assert result.returncode == code, (args, result.stderr)
        if code:
            _assert_one_line_error(code, result.stderr, message)
    assert (tmp_path / "dir" / "curve.png").is_file() and not (tmp_path / "dir.png").exists()


# ---------------------------------------------------------------------------------------------
# Real runs


def test_real_runs_of_two_iql_settings_stay_apart(store, tmp_path, captured):
    """Two small real IQL runs differing only in expectile, one given twice to plot."""
    from helpers import EXPERT

    small = ["--agent", "iql", "--dataset", EXPERT, "--initial-size", "2000", "--increment",
             "80", "--steps-per-increment", "2", "--eval-every", "4000", "--eval-episodes",
             "2", "--batch-size", "64", "--no-progress", "--agent.actor_hidden_dims", "32,32",
             "--agent.critic_hidden_dims", "32,32", "--agent.value_hidden_dims", "32,32"]
    run_dirs = []
    for expectile in ("0.7", "0.9"):
        run_dirs.append(tmp_path / f"iql-{expectile}")
        assert cli.main(["run", "--out", str(run_dirs[-1]), *small,
                         "--agent.expectile", expectile]) == 0
    groups, _ = load_groups([*run_dirs, run_dirs[0]])
    assert [g.label for g in groups] == ["iql expectile=0.7", "iql expectile=0.9"]
    assert [len(g.seeds) for g in groups] == [1, 1]
    assert all(g.prequential for g in groups)  # the engine's prequential.csv, read back
    assert cli.main(["plot", *map(str, run_dirs), str(run_dirs[0]), "--out",
                     str(tmp_path / "fig.png")]) == 0
    assert legend_labels(captured[-1])[:2] == ["iql expectile=0.7", "iql expectile=0.9"]
    out = tmp_path / "report"
    assert cli.main(["report", *map(str, run_dirs), "--out", str(out), "--reps", "200"]) == 0
    rows = {r["agent"]: r for r in read_csv(out / "per_dataset.csv")}
    assert set(rows) == {"iql expectile=0.7", "iql expectile=0.9"}
    for expectile, run_dir in zip(("0.7", "0.9"), run_dirs, strict=True):
        final = [r for r in read_csv(run_dir / "evaluations.csv")][-1]
        assert float(rows[f"iql expectile={expectile}"]["final_mean"]) == pytest.approx(
            float(final["normalized_score"]), abs=1e-4)


@pytest.mark.slow
def test_demo_draws_the_whole_mission(store, tmp_path, capsys, captured):
    """`seqeval demo` for two agents: builds Pendulum, runs sequential + online and retrain,
    and draws them in one panel through the report's figure code."""
    from seqeval.demo import DEMO_RETRAIN_SIZES, run_demo

    assert run_demo(out_dir=str(tmp_path / "runs"), figure=str(tmp_path / "demo.png"),
                    agents=["bc", "td3_bc"]) == 0
    (fig,) = captured
    assert legend_labels(fig) == ["bc", "td3_bc", "td3_bc (retrain)", "dataset average",
                                  BAND_LEGEND]  # 4 seeds
    (ax,) = fig.axes
    assert ax.get_xlabel() == SAMPLES_LABEL and {"offline", "online"} <= {
        t.get_text() for t in ax.texts}
    phases = {r["phase"] for r in read_csv(tmp_path / "runs" / "bc" / "evaluations.csv")}
    assert phases == {"offline", "online"}
    retrained = read_csv(tmp_path / "runs" / "td3_bc-retrain" / "evaluations.csv")
    assert sorted({int(r["samples"]) for r in retrained}) == list(DEMO_RETRAIN_SIZES)
    table = capsys.readouterr().out
    assert "td3_bc" in table and "figure:" in table
