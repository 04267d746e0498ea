"""One seqeval run: settings in, a run directory of results out.

Modes (docs/protocol.md):
- sequential: the dataset grows from T0 by `increment` transitions, K gradient steps each;
- full: the paper's "Normal" baseline, the whole dataset from step 0 for the same number of
  gradient steps, evaluated at the same gradient-step points (drawn at the matching samples);
- retrain: a fresh agent per dataset size, all sizes trained in one vmapped program.
Sequential and full runs may continue with an online fine-tuning phase (`online_steps`).
(seqeval.sequential and seqeval.retrain hold the modes; seqeval.results the files.)

The runner holds no global state: everything a run needs is in `RunSettings`, everything it
produces is in its run directory, which the run holds locked. A killed run started again with
the same settings resumes from its last checkpoint and produces the same numbers; Ctrl-C stops
it after the current step.
"""

from __future__ import annotations

import errno

from seqeval.context import StopRequest, load_context
from seqeval.errors import UserError
from seqeval.results import check_out_path
from seqeval.retrain import run_retrain
from seqeval.sequential import run_sequential
from seqeval.settings import MODES, RunSettings

__all__ = ["MODES", "RunSettings", "run"]

# Errors that mean the run directory cannot be written: the run stops with one line.
_WRITE_ERRORS = {errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM, errno.EIO,
                 errno.EFBIG}


def run(settings: RunSettings) -> dict:
    """Run (or resume) an evaluation; returns the summary written to summary.json."""
    check_out_path(settings.out)  # before the data and the agent are loaded
    with StopRequest() as stop:
        context = load_context(settings, stop)
        context.run_dir.lock()
        try:
            mode = run_retrain if settings.mode == "retrain" else run_sequential
            return mode(context)
        except OSError as error:
            if error.errno not in _WRITE_ERRORS:
                raise
            raise UserError(
                f"writing the run directory '{settings.out}' failed ({error.strerror}); free "
                "space or fix its permissions, then run the same command again to resume"
            ) from None
        finally:
            context.run_dir.unlock()
