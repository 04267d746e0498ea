"""Derived seeds: the one helper reproduces, number for number, the seeds seqeval derived before
it existed (old runs and builds must resume identically), and the streams stay apart."""

from __future__ import annotations

import numpy as np
import pytest

from seqeval.seeds import STREAMS, derive_seed, pool_episode_seed


@pytest.mark.parametrize("base", [0, 1, 3, 12_345, 2_000_000_000])
def test_derived_seeds_are_the_old_ones(base):
    # The expressions each call site used before seqeval.seeds, written out by hand.
    evaluation_index, episodes, episode, chunk, snapshot, checkpoint = 4, 10, 7, 3, 5, 2
    old = {
        ("evaluation episode", evaluation_index * episodes + episode):
            (base * 1_000_003 + evaluation_index * episodes + episode) % (2**31 - 1),
        ("online reset", chunk): (base * 7_919 + 1_000_000 + chunk) % (2**31 - 1),
        ("sac environments", 0): base * 1_000_003,
        ("sac snapshot evaluation", snapshot): base * 7919 + snapshot,
        ("random policy", 0): base + 10_007,
        ("reference random", 0): base * 1000 + 17 + False,
        ("reference expert", 0): base * 1000 + 17 + True,
        ("medium rescoring", checkpoint): base * 1000 + 500 + checkpoint,
        ("collect random", 0): base * 1000 + 101,
        ("collect medium", 0): base * 1000 + 202,
        ("collect expert", 0): base * 1000 + 303,
    }
    assert {purpose for purpose, _ in old} == set(STREAMS)
    for (purpose, index), expected in old.items():
        assert derive_seed(base, purpose, index) == expected, purpose


def test_hand_computed_values():
    assert derive_seed(3, "evaluation episode", 47) == 3_000_056
    assert derive_seed(2_000, "evaluation episode", 0) == 2_000_006_000 % 2_147_483_647
    assert derive_seed(3_000, "evaluation episode", 0) == 852_525_353  # wrapped
    assert derive_seed(1, "online reset", 2) == 1_007_921
    assert derive_seed(2, "collect medium") == 2_202
    assert derive_seed(0, "random policy") == 10_007


def test_pool_episode_seed_is_the_old_hash():
    expected = int(np.random.SeedSequence([7, 1, 2]).generate_state(1)[0] & 0x7FFFFFFF)
    assert pool_episode_seed(7, 1, 2) == expected
    assert pool_episode_seed(7, 1, 2) != pool_episode_seed(7, 2, 1)


def test_unknown_purpose_is_refused():
    with pytest.raises(KeyError):
        derive_seed(0, "evaluation")
