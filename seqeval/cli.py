"""The `seqeval` command line: run, plot, datasets, report, agents, demo.

User errors (unknown names, bad settings, broken data) print one line and exit with code 2.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import os
import signal
import sys
import warnings
from collections.abc import Sequence

from seqeval.errors import DivergenceError, UserError
from seqeval.settings import (
    RunSettings,
    add_run_arguments,
    check_settings,
    join_negative_values,
    run_flag,
    settings_from_arguments,
)

AGENT_PREFIX = "--agent."


def parse_agent_overrides(extra: Sequence[str]) -> tuple[tuple[str, str], ...]:
    """`--agent.KEY VALUE` / `--agent.KEY=VALUE` pairs left over by argparse."""
    overrides = []
    items = list(extra)
    while items:
        item = items.pop(0)
        if not item.startswith(AGENT_PREFIX):
            raise UserError(f"unrecognised argument '{item}'; agent settings are "
                            "--agent.KEY VALUE (see 'seqeval agents')")
        key, sep, value = item[len(AGENT_PREFIX):].partition("=")
        if not sep:
            if not items:
                raise UserError(f"{item} needs a value: {item} VALUE")
            value = items.pop(0)
        overrides.append((key.replace("-", "_"), value))
    return tuple(overrides)


RETRAIN_ONLY = ("sizes", "retrain_steps", "retrain_min_steps")


def check_retrain_flags(settings: RunSettings) -> None:
    """Retrain mode's flags on a sequential or full run would be ignored: refuse them.
    (A study may set them for all its runs, where a mode axis mixes modes; only the command
    line, where the user typed them for this run, refuses.)"""
    if settings.mode == "retrain":
        return
    defaults = RunSettings(agent="", dataset="", out="")
    given = [run_flag(name) for name in RETRAIN_ONLY
             if getattr(settings, name) != getattr(defaults, name)]
    if given:
        raise UserError(f"{' and '.join(given)} only apply to --mode retrain (this run is "
                        f"{settings.mode}); drop {'them' if len(given) > 1 else 'it'} or pass "
                        "--mode retrain")


def cmd_run(args: argparse.Namespace, extra: Sequence[str]) -> int:
    settings = settings_from_arguments(args, parse_agent_overrides(extra))
    check_settings(settings)  # before JAX is imported: a wrong flag is answered at once
    check_retrain_flags(settings)
    from seqeval.results import check_out_path

    check_out_path(settings.out)
    from seqeval.runner import run

    summary = run(settings)
    score = summary.get("last_mean_normalized_score")
    shown = f"normalized score {score:.1f}" if score is not None else (
        f"return {summary['last_mean_return']:.1f}")
    if args.mode == "retrain":
        print(f"{args.out}: retrained at {len(summary['sizes'])} sizes, at the full dataset "
              f"{shown}")
    else:
        print(f"{args.out}: {summary['samples']} samples, {summary['gradient_steps']} "
              f"gradient steps, final {shown}")
    return 0


def cmd_plot(args: argparse.Namespace) -> int:
    from seqeval.plot import plot_runs
    from seqeval.study import expand_run_dirs

    out = args.out or os.path.join(args.run_dirs[0], "curve.png")
    args.run_dirs = [str(path) for path in expand_run_dirs(  # studies -> their runs
        args.run_dirs, all_runs=args.all_runs)]
    for path in plot_runs(args.run_dirs, out, title=args.title):
        print(path)
    return 0


def cmd_agents(args: argparse.Namespace) -> int:
    import dataclasses

    from seqeval.algorithms.registry import available_agents, get_agent

    if args.markdown:
        from seqeval.agent_table import defaults_markdown

        print(defaults_markdown([get_agent(spec) for spec in args.agents or available_agents()]),
              end="")
        return 0
    for spec in args.agents or available_agents():
        agent = get_agent(spec)
        label = agent.name if agent.name == spec else f"{agent.name} ({spec})"
        print(f"{label}: {agent.description}")
        if agent.default_batch_size is not None:
            print(f"    batch size {agent.default_batch_size} (the agent's; --batch-size "
                  "overrides)")
        for field in dataclasses.fields(agent.config_class):
            print(f"    --agent.{field.name} {field.default!r}")
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from seqeval.demo import run_demo

    return run_demo(out_dir=args.out, figure=args.figure)


class _Parser(argparse.ArgumentParser):
    """argparse whose errors are seqeval's own: one line, exit code 2 (no usage dump)."""

    def error(self, message: str):
        raise UserError(f"{message} (see '{self.prog} --help')")


BUILTIN_COMMANDS = ("run", "plot", "agents", "demo")
# Subcommands that live with their subsystems (imported only when they may be the command).
SUBSYSTEM_MODULES = ("seqeval.envs.cli", "seqeval.report", "seqeval.sweep", "seqeval.select",
                     "seqeval.export")


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The parser of every subcommand; given `command` (one of BUILTIN_COMMANDS), only the
    built-in ones, sparing the imports of the subsystems' modules."""
    parser = _Parser(
        prog="seqeval",
        description="Sequential evaluation of offline RL agents: data-efficiency curves.",
    )
    sub = parser.add_subparsers(dest="command", required=True)

    run_parser = sub.add_parser("run", help="run a sequential evaluation",
                                epilog="agent settings: --agent.KEY VALUE (see 'seqeval agents')")
    add_run_arguments(run_parser)
    run_parser.set_defaults(func=cmd_run, takes_extra=True)

    plot_parser = sub.add_parser("plot", help="plot data-efficiency curves of runs")
    plot_parser.add_argument("run_dirs", nargs="+", metavar="RUN_DIR",
                             help="run directories, or study directories (seqeval sweep) "
                             "standing for their complete runs")
    plot_parser.add_argument("--out", default=None,
                             help="PNG path (a PDF beside it), or a directory for DIR/curve.png "
                             "(default RUN_DIR/curve.png)")
    plot_parser.add_argument("--title", default=None)
    from seqeval.study import add_all_runs_flag

    add_all_runs_flag(plot_parser)
    plot_parser.set_defaults(func=cmd_plot)

    agents_parser = sub.add_parser("agents", help="list agents and their settings")
    agents_parser.add_argument("agents", nargs="*", metavar="AGENT",
                               help="only these (a name, path/to/file.py or file.py:NAME); "
                                    "default: every installed agent")
    agents_parser.add_argument("--markdown", action="store_true",
                               help="print the settings as Markdown tables (docs/agents.md)")
    agents_parser.set_defaults(func=cmd_agents)

    demo_parser = sub.add_parser("demo", help="build Pendulum datasets and compare every agent")
    demo_parser.add_argument("--out", default="runs/demo", help="where the demo's runs go")
    demo_parser.add_argument("--figure", default="figures/demo.png")
    demo_parser.set_defaults(func=cmd_demo)

    if command in BUILTIN_COMMANDS:
        return parser
    for module in SUBSYSTEM_MODULES:
        if importlib.util.find_spec(module) is not None:
            importlib.import_module(module).register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    warnings.filterwarnings("ignore", module="minari")
    argv = sys.argv[1:] if argv is None else argv
    parser = build_parser(next((a for a in argv if not a.startswith("-")), None))
    try:
        args, extra = parser.parse_known_args(join_negative_values(argv))
        if getattr(args, "takes_extra", False):
            return args.func(args, extra)
        if extra:
            raise UserError(f"unrecognised arguments: {' '.join(extra)}")
        return args.func(args)
    except UserError as error:
        print(f"seqeval: error: {error}", file=sys.stderr)
        return 2
    except DivergenceError as error:
        print(f"seqeval: diverged: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("seqeval: interrupted; run the same command again to resume", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # The reader went away (`seqeval agents | head -1`): stop quietly, as Unix tools do,
        # and keep Python's final flush of stdout from failing again.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 128 + signal.SIGPIPE


if __name__ == "__main__":
    sys.exit(main())
