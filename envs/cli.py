"""`seqeval datasets build|list|download`: build D4RL-style datasets locally, list what is
available (Minari datasets and D4RL's files), fetch Farama's Minari datasets."""

from __future__ import annotations

import argparse
import math
import sys

from seqeval.envs.registry import QUALITIES, RECIPES


def _note(message: str | None) -> None:
    if message:
        print(f"seqeval: note: {message}", file=sys.stderr)


def cmd_build(args: argparse.Namespace) -> int:
    from seqeval.envs.datasets import build_datasets
    from seqeval.envs.store import minari_root, old_builds_note, read_card

    minari_root()  # a store that cannot be a folder is refused before anything is built
    _note(old_builds_note())

    ids = build_datasets(
        args.env,
        qualities=args.quality,
        transitions=args.transitions,
        seed=args.seed,
        sac_steps=args.sac_steps,
        checkpoint_every=args.checkpoint_every,
        force=args.force,
        progress=not args.no_progress,
    )
    print(format_table([card for card in (read_card(i) for i in ids) if card is not None]))
    return 0


def _number(value: object, digits: int = 1) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "-"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def format_table(rows: list[dict]) -> str:
    """A plain-text table: id, transitions, episodes, behaviour score, reference scores."""
    header = ("dataset", "transitions", "episodes", "behaviour score", "ref min", "ref max",
              "card")
    lines = [header]
    for row in sorted(rows, key=lambda r: r["dataset_id"]):
        lines.append((
            row["dataset_id"],
            _number(row.get("transitions")),
            _number(row.get("episodes")),
            _number(row.get("behaviour_normalized_score")),
            _number(row.get("ref_min_score")),
            _number(row.get("ref_max_score")),
            "yes" if row.get("has_card", True) else "no",
        ))
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    out = []
    for number, line in enumerate(lines):
        cells = [line[0].ljust(widths[0])] + [c.rjust(w) for c, w in zip(line[1:], widths[1:],
                                                                          strict=True)]
        out.append("  ".join(cells))
        if number == 0:
            out.append("  ".join("-" * w for w in widths))
    return "\n".join(out)


def d4rl_rows() -> tuple[list[dict], list[tuple[str, str]]]:
    """A table row for each D4RL file in $D4RL_DATASET_DIR (read: rewards and episode flags
    only), and (file, problem) for those that cannot be read."""
    import h5py
    import numpy as np

    from seqeval import d4rl, scores

    rows, damaged = [], []
    for name, path in d4rl.local_files():
        try:
            with h5py.File(path, "r") as handle:
                rewards = np.asarray(handle["rewards"][()], np.float64).reshape(-1)
                ends = np.asarray(handle["terminals"][()], bool).reshape(-1)
                if "timeouts" in handle:
                    ends = ends | np.asarray(handle["timeouts"][()], bool).reshape(-1)
        except Exception as error:  # not HDF5, a key missing, damaged data
            damaged.append((str(path), f"{type(error).__name__}: "
                            f"{str(error).splitlines()[0] if str(error) else ''}"))
            continue
        if ends.shape != rewards.shape or not rewards.size:
            damaged.append((str(path), "'terminals' and 'rewards' differ in length"))
            continue
        starts = np.flatnonzero(np.concatenate([[True], ends[:-1]]))
        ref_min, ref_max = scores.D4RL_REFERENCE_RETURNS[name.env]
        average = np.add.reduceat(rewards, starts).mean()
        rows.append({"dataset_id": name.dataset_id, "transitions": int(rewards.size),
                     "episodes": int(starts.size),
                     "behaviour_normalized_score": float(
                         scores.normalized_score(average, ref_min, ref_max)),
                     "ref_min_score": ref_min, "ref_max_score": ref_max, "has_card": False})
    return rows, damaged


def cmd_list(args: argparse.Namespace) -> int:
    from seqeval import d4rl
    from seqeval.envs.store import (
        damaged_datasets,
        list_datasets,
        minari_root,
        old_builds_note,
    )

    root = minari_root()
    rows = list_datasets()
    damaged = damaged_datasets()
    if rows:
        print(format_table(rows))
        print(f"\n(store: {root}; behaviour score is the behaviour policy's normalized "
              "score, 0 = random, 100 = expert)")
    elif not damaged:
        print(f"no local Minari datasets in {root}; build some with: seqeval datasets build "
              "pendulum, or fetch Farama's with: seqeval datasets download ID")
    for dataset_id, problem in damaged:
        print(f"seqeval: warning: dataset '{dataset_id}' in {root} cannot be read ({problem}); "
              f"rebuild or download it again, or delete {root / dataset_id}", file=sys.stderr)
    _note(old_builds_note())
    files, damaged_files = d4rl_rows()
    if files:
        print(f"\nD4RL files in {d4rl.dataset_dir()} (run them as --dataset ID):")
        print(format_table(files))
    for path, problem in damaged_files:
        print(f"seqeval: warning: D4RL file '{path}' cannot be read ({problem}); download it "
              "again", file=sys.stderr)
    return 0


def cmd_download(args: argparse.Namespace) -> int:
    from seqeval.data import download

    print(f"downloaded {args.dataset_id} into {download(args.dataset_id)}")
    return 0


def _positive_int(text: str) -> int:
    # Parsed as int here; the builder raises the user-facing error for values <= 0.
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, got '{text}'") from None


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add `datasets build|list` to the seqeval command line."""
    datasets = subparsers.add_parser(
        "datasets", help="build, list or download datasets (Minari; D4RL's files are listed)")
    commands = datasets.add_subparsers(dest="datasets_command", metavar="{build,list,download}")
    commands.required = True

    build = commands.add_parser(
        "build",
        help="train SAC behaviour policies and write Minari datasets",
        description="Build D4RL-style datasets (random, medium, expert, medium-replay, "
                    "medium-expert) into the local Minari store (MINARI_DATASETS_PATH). "
                    "Datasets that already exist are kept; an interrupted build resumes.",
    )
    # The environment is checked by the builder, so a typo gets seqeval's one-line error.
    build.add_argument("env", help=f"one of: {', '.join(RECIPES)}")
    build.add_argument("--quality", nargs="+", default=None, metavar="Q",
                       help=f"qualities to build (default all): {', '.join(QUALITIES)}")
    build.add_argument("--transitions", type=_positive_int, default=None,
                       help="transitions per dataset (medium-expert gets twice this; "
                            "default 20000 for pendulum, 1000000 for MuJoCo)")
    build.add_argument("--seed", type=int, default=0, help="SAC and collection seed")
    build.add_argument("--sac-steps", type=_positive_int, default=None,
                       help="SAC environment steps (= gradient steps); default 15000 for "
                            "pendulum, 1000000 for MuJoCo")
    build.add_argument("--checkpoint-every", type=_positive_int, default=None,
                       help="environment steps between SAC checkpoints/snapshots")
    build.add_argument("--force", action="store_true",
                       help="rebuild datasets that already exist")
    build.add_argument("--no-progress", action="store_true", help="no progress bars")
    build.set_defaults(func=cmd_build)

    listing = commands.add_parser(
        "list", help="list local Minari datasets and their cards, and D4RL's files")
    listing.set_defaults(func=cmd_list)

    fetch = commands.add_parser(
        "download", help="fetch a Minari dataset from Farama's server (minari.download_dataset)",
        description="Download a remote Minari dataset (e.g. mujoco/hopper/simple-v0) into the "
                    "local store (MINARI_DATASETS_PATH) with Minari's own download API.")
    fetch.add_argument("dataset_id", metavar="ID", help="Minari dataset id")
    fetch.set_defaults(func=cmd_download)
