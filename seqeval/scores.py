"""D4RL's normalized score, the one definition used everywhere, and D4RL's reference returns.

score = 100 * (return - ref_min) / (ref_max - ref_min), where ref_min is the mean return of a
random policy and ref_max that of an expert (Fu et al. 2020, "D4RL: Datasets for Deep
Data-Driven Reinforcement Learning", arXiv 2004.07219). 0 is random, 100 expert.

Farama's own `mujoco/<env>/<quality>-v0` datasets carry no reference scores (Minari issue 323);
for the four locomotion tasks D4RL published them, and seqeval uses those when a dataset has
none of its own, for D4RL's files (`d4rl/<env>-<quality>-v2`) and for a D4RL-layout file run
with `--env Hopper-v5` and the like.
"""

from __future__ import annotations

import math
import re

import numpy as np

from seqeval.errors import UserError

# (random, expert) mean returns: REF_MIN_SCORE / REF_MAX_SCORE of D4RL's d4rl/infos.py
# (github.com/Farama-Foundation/D4RL, commit 0ace16de). Checked there key by key: the v0
# entries of random, medium, expert, medium-replay and medium-expert each hold these values,
# and the v1/v2 entries (those five and full-replay) are copied from `<env>-random-v0`, so
# one pair per environment is every dataset's.
D4RL_REFERENCE_RETURNS: dict[str, tuple[float, float]] = {
    "hopper": (-20.272305, 3234.3),
    "halfcheetah": (-280.178953, 12135.0),
    "walker2d": (1.629008, 4592.3),
    "ant": (-325.6, 3879.7),
}

_FARAMA_MUJOCO_ID = re.compile(r"mujoco/(?P<env>[a-z0-9]+)/[^/]+-v\d+")
_D4RL_ID = re.compile(r"d4rl/(?P<env>[a-z0-9]+)-[a-z-]+-v\d+")
# A Gymnasium task id: Hopper-v5, HalfCheetah-v5, Walker2d-v5, Ant-v5.
_GYM_ID = re.compile(r"(?P<env>[A-Za-z0-9]+)-v\d+")


def normalized_score(returns: np.ndarray | float, ref_min: float,
                     ref_max: float) -> np.ndarray:
    """D4RL's 0-100 normalized score of undiscounted returns."""
    return 100.0 * (np.asarray(returns, np.float64) - ref_min) / (ref_max - ref_min)


def check_reference_scores(ref_min: float, ref_max: float, source: str,
                           fix: str) -> tuple[float, float]:
    """(ref_min, ref_max) as floats; a UserError naming `source` and `fix` unless both are
    finite and ref_max > ref_min (anything else gives NaN or infinite scores)."""
    try:
        low, high = float(ref_min), float(ref_max)
    except (TypeError, ValueError):
        raise UserError(f"{source}: reference scores must be numbers, got {ref_min!r} and "
                        f"{ref_max!r}; {fix}") from None
    if not (math.isfinite(low) and math.isfinite(high)):
        raise UserError(f"{source}: reference scores must be finite, got {low:g},{high:g}; {fix}")
    if not high > low:
        raise UserError(f"{source}: the expert reference ({high:g}) must exceed the random one "
                        f"({low:g}); {fix}")
    return low, high


def d4rl_reference_returns(dataset_id: str) -> tuple[str, float, float] | None:
    """(task, random return, expert return) D4RL published for a `mujoco/<env>/...` or a
    `d4rl/<env>-...` id, or a Gymnasium task id (Hopper-v5); None for other tasks."""
    match = (_FARAMA_MUJOCO_ID.fullmatch(dataset_id) or _D4RL_ID.fullmatch(dataset_id)
             or _GYM_ID.fullmatch(dataset_id))
    env = match["env"].lower() if match is not None else None
    if env not in D4RL_REFERENCE_RETURNS:
        return None
    return (env, *D4RL_REFERENCE_RETURNS[env])
