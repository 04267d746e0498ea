"""Atomic writes: whole files or none, no temporary files left, ordinary permissions."""

from __future__ import annotations

import json
import os
import stat

import numpy as np
import pytest

from seqeval.fileio import (
    FILE_MODE,
    write_bytes_atomic,
    write_json_atomic,
    write_npz_atomic,
    write_text_atomic,
)


def test_each_writer_replaces_the_file_with_ordinary_permissions(tmp_path):
    plain = tmp_path / "plain.txt"
    plain.write_text("made the usual way")
    write_json_atomic(tmp_path / "a.json", {"x": [1, 2]})
    write_text_atomic(tmp_path / "b.txt", "old")
    write_text_atomic(tmp_path / "b.txt", "new")
    write_bytes_atomic(tmp_path / "c.bin", b"\x00\x01")
    write_npz_atomic(tmp_path / "d.npz", {"v": np.arange(3)})
    assert json.loads((tmp_path / "a.json").read_text()) == {"x": [1, 2]}
    assert (tmp_path / "b.txt").read_text() == "new"
    assert (tmp_path / "c.bin").read_bytes() == b"\x00\x01"
    with np.load(tmp_path / "d.npz") as saved:
        np.testing.assert_array_equal(saved["v"], np.arange(3))
    modes = {path.name: stat.S_IMODE(path.stat().st_mode) for path in tmp_path.iterdir()}
    assert set(modes.values()) == {stat.S_IMODE(plain.stat().st_mode)} == {FILE_MODE}
    assert sorted(os.listdir(tmp_path)) == ["a.json", "b.txt", "c.bin", "d.npz", "plain.txt"]


def test_a_failed_write_keeps_the_old_file_and_leaves_no_temporary(tmp_path):
    path = tmp_path / "a.json"
    write_json_atomic(path, {"kept": True})
    with pytest.raises(TypeError):
        write_json_atomic(path, {"bad": object()})
    assert json.loads(path.read_text()) == {"kept": True}
    assert os.listdir(tmp_path) == ["a.json"]
