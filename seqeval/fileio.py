"""Atomic file writes: a reader sees the old file or the new one, never half of one."""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

import numpy as np


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


# mkstemp creates files readable by their owner only; files written here get the permissions
# any other new file gets (0666 less the umask, read once at import), like the files beside them.
FILE_MODE = 0o666 & ~_umask()


def _write_atomic(path: Path, mode: str, write: Callable[[IO[Any]], None]) -> None:
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, FILE_MODE)
        with os.fdopen(fd, mode) as handle:
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_json_atomic(path: Path, payload: Any) -> None:
    """Replace `path` with `payload` as indented JSON."""
    _write_atomic(path, "w", lambda h: (json.dump(payload, h, indent=2), h.write("\n")))


def write_npz_atomic(path: Path, arrays: dict[str, np.ndarray]) -> None:
    """Replace `path` with an .npz archive of `arrays`."""
    _write_atomic(path, "wb", lambda h: np.savez(h, **arrays))


def write_text_atomic(path: Path, text: str) -> None:
    """Replace `path` with `text`."""
    _write_atomic(path, "w", lambda h: h.write(text))


def write_bytes_atomic(path: Path, data: bytes) -> None:
    """Replace `path` with `data`."""
    _write_atomic(path, "wb", lambda h: h.write(data))
