"""Every seed seqeval derives from a user's seed, in one place.

A run's or a dataset build's seed is the one number a user chooses; each purpose that needs its
own random stream (evaluation episodes, online resets, dataset collection, ...) derives its
seed from it here, so the streams stay apart and can be read side by side. The rules are those
seqeval has always used: changing one would change every derived number, and a resumed run or
build would no longer continue what it started (tests/test_seeds.py pins them).
"""

from __future__ import annotations

import dataclasses

import numpy as np

SEED_MODULUS = 2**31 - 1  # reset seeds of the evaluation and online streams stay below it


@dataclasses.dataclass(frozen=True)
class SeedStream:
    """seed = base * multiplier + offset + index (modulo SEED_MODULUS when `wrapped`)."""

    multiplier: int
    offset: int
    wrapped: bool


STREAMS: dict[str, SeedStream] = {
    # seqeval run: index = evaluation_index * episodes + episode.
    "evaluation episode": SeedStream(1_000_003, 0, wrapped=True),
    # seqeval run --online-steps: index = the online chunk.
    "online reset": SeedStream(7_919, 1_000_000, wrapped=True),
    # seqeval datasets build: the base is the build's --seed.
    "sac environments": SeedStream(1_000_003, 0, wrapped=False),  # the SAC trainer's pool
    "sac snapshot evaluation": SeedStream(7_919, 0, wrapped=False),  # index = the snapshot
    "random policy": SeedStream(1, 10_007, wrapped=False),  # the random actor's init key
    "reference random": SeedStream(1_000, 17, wrapped=False),  # reference-score rollouts
    "reference expert": SeedStream(1_000, 18, wrapped=False),
    "medium rescoring": SeedStream(1_000, 500, wrapped=False),  # index = the checkpoint
    "collect random": SeedStream(1_000, 101, wrapped=False),
    "collect medium": SeedStream(1_000, 202, wrapped=False),
    "collect expert": SeedStream(1_000, 303, wrapped=False),
}


def derive_seed(base: int, purpose: str, index: int = 0) -> int:
    """The seed of `purpose` (a key of STREAMS) for the user's seed `base`, its `index`-th."""
    stream = STREAMS[purpose]
    seed = base * stream.multiplier + stream.offset + index
    return seed % SEED_MODULUS if stream.wrapped else seed


def pool_episode_seed(pool_seed: int, env_index: int, episode_index: int) -> int:
    """Reset seed of one episode of an environment pool (dataset collection): hashed, so the
    episodes of neighbouring pools and environments never share a seed."""
    return int(np.random.SeedSequence([pool_seed, env_index, episode_index]).generate_state(1)[0]
               & 0x7FFFFFFF)
