"""The agent registry: finding an agent by a built-in name, an installed entry point of the
`seqeval.agents` group, or an agent file (`path/to/file.py[:NAME]`), and naming a failure in
an agent's own code.

Apart from the interface (seqeval.algorithms.base), so that an agent's code (what its
fingerprint hashes: base and every module it imports) is not the code that finds agents.
"""

from __future__ import annotations

import contextlib
import dataclasses
import importlib
import importlib.metadata
import importlib.util
import io
import sys
import tempfile
import traceback
import types
from pathlib import Path
from typing import Any

from seqeval.algorithms.base import Agent
from seqeval.errors import UserError

ENTRY_POINT_GROUP = "seqeval.agents"

# Built-in agents: name -> module defining a module-level `AGENT`. Imported lazily so that a
# run only pays for the agent it uses.
BUILTIN_AGENTS: dict[str, str] = {
    "bc": "seqeval.algorithms.bc",
    "td3_bc": "seqeval.algorithms.td3_bc",
    "iql": "seqeval.algorithms.iql",
    "cql": "seqeval.algorithms.cql",
    "sac": "seqeval.algorithms.sac",
    "rebrac": "seqeval.algorithms.rebrac",
    "awac": "seqeval.algorithms.awac",
}


def _agent_from(obj: Any, where: str) -> Agent:
    if isinstance(obj, types.ModuleType):
        obj = getattr(obj, "AGENT", None)
    if not isinstance(obj, Agent):
        raise UserError(
            f"{where} is not a seqeval Agent; define AGENT = seqeval.agents.Agent(...)"
        )
    config_class = obj.config_class
    if not (isinstance(config_class, type) and dataclasses.is_dataclass(config_class)):
        shown = getattr(config_class, "__name__", type(config_class).__name__)
        raise UserError(f"{where}: its config_class {shown} is not a dataclass; decorate it "
                        "with @dataclasses.dataclass(frozen=True), every field with a default")
    return obj


def _is_file_spec(spec: str) -> bool:
    return spec.endswith(".py") or (":" in spec and spec.rpartition(":")[0].endswith(".py"))


USER_AGENT_PREFIX = "seqeval_user_agent_"  # module names of agents loaded from files


def _forget_modules_in(folder: str) -> None:
    """Drop modules loaded from `folder` (and below) from the import cache, so that an agent
    file importing its neighbours gets their current code, and two agent folders with a
    module of the same name each get their own."""
    inside = folder.rstrip("/") + "/"
    for name, module in list(sys.modules.items()):
        origin = getattr(module, "__file__", None) or ""
        if (origin.startswith(inside) and not origin.startswith(sys.prefix)
                and name.split(".")[0] != "seqeval" and not name.startswith(USER_AGENT_PREFIX)):
            del sys.modules[name]


def _load_from_file(spec: str) -> Agent:
    """`path/to/file.py:NAME`, or `path/to/file.py` for its `AGENT`."""
    path_text, attribute = (spec, "AGENT") if spec.endswith(".py") else spec.rsplit(":", 1)
    path = Path(path_text)
    if not path.is_file():
        raise UserError(f"agent file '{path}' does not exist; use --agent path/to/file.py[:NAME]")
    module_name = f"{USER_AGENT_PREFIX}{abs(hash(path.resolve()))}"
    module_spec = importlib.util.spec_from_file_location(module_name, path)
    assert module_spec is not None and module_spec.loader is not None
    module = importlib.util.module_from_spec(module_spec)
    sys.modules[module_name] = module
    printed, warned = io.StringIO(), io.StringIO()
    argv = sys.argv
    folder = str(path.resolve().parent)
    _forget_modules_in(folder)  # modules beside the file are read afresh, as the file is
    sys.path.insert(0, folder)  # an agent file may import modules beside it
    # The file and its neighbours are compiled from their source, never taken from a cached
    # .pyc: Python trusts a .pyc whose source has the same size and modification second, so a
    # file rewritten within a second would run its old code while runs record the new code's
    # hash (checks.agent_code). Bytecode is looked up under an empty folder and not written.
    pycache = sys.pycache_prefix, sys.dont_write_bytecode
    no_cache = tempfile.TemporaryDirectory(prefix="seqeval-no-pycache-")
    sys.pycache_prefix, sys.dont_write_bytecode = no_cache.name, True
    try:
        # The file's own command line is not seqeval's: a script that parses sys.argv at
        # import sees only its own name, and what it prints is held until it imported well.
        sys.argv = [str(path)]
        with contextlib.redirect_stdout(printed), contextlib.redirect_stderr(warned):
            module_spec.loader.exec_module(module)
    except SystemExit as error:  # sys.exit() or a script's argparse, at import
        sys.modules.pop(module_name, None)
        said = (printed.getvalue() + warned.getvalue()).strip().splitlines()
        raise UserError(f"agent file '{path}' exited while being imported (SystemExit "
                        f"{error.code!r}{': ' + said[-1] if said else ''}); an agent file must "
                        "define an Agent without running a program (put a script's code under "
                        "if __name__ == '__main__':)") from None
    except Exception as error:  # the file's own mistake: one line naming where it failed
        sys.modules.pop(module_name, None)
        raise UserError(f"agent file '{path}' cannot be loaded: {_where_it_failed(error, path)}; "
                        "fix the file") from None
    finally:
        sys.argv = argv
        sys.path.remove(folder)
        sys.pycache_prefix, sys.dont_write_bytecode = pycache
        no_cache.cleanup()
    sys.stdout.write(printed.getvalue())
    sys.stderr.write(warned.getvalue())
    if not hasattr(module, attribute):
        raise UserError(f"agent file '{path}' defines no '{attribute}'; use --agent {path}:NAME "
                        "with the name of its Agent")
    return _agent_from(getattr(module, attribute), f"agent file '{spec}'")


def _where_it_failed(error: Exception, path: Path) -> str:
    """'line N: ErrorType: message' of an exception raised while executing the file `path`
    (the file's last line in the traceback; a SyntaxError carries its own)."""
    if isinstance(error, SyntaxError):  # in the file, or in a module it imports
        elsewhere = error.filename and Path(error.filename).resolve() != path.resolve()
        where = f"{error.filename} line" if elsewhere else "line"
        return f"{where} {error.lineno}: {type(error).__name__}: {error.msg}"
    line = None
    for frame in traceback.extract_tb(error.__traceback__):
        if Path(frame.filename).resolve() == path.resolve():
            line = frame.lineno
    message = str(error).splitlines()[0] if str(error) else ""
    where = f"line {line}: " if line is not None else ""
    return f"{where}{type(error).__name__}" + (f": {message}" if message else "")


def agent_code_error(agent: Agent, spec: str, error: Exception) -> UserError | None:
    """The one-line UserError for an exception raised inside the agent's own code (its hooks'
    files: a `check_config`, `init` or `update` that raises), naming the file, the line, the
    function and the error; None when no frame of the agent's code is in the traceback (the
    error is seqeval's own)."""
    hooks = (agent.init, agent.update, agent.act, agent.explore, agent.score,
             agent.check_config)
    files = {Path(hook.__code__.co_filename).resolve() for hook in hooks
             if hook is not None and hasattr(hook, "__code__")}
    inside = [frame for frame in traceback.extract_tb(error.__traceback__)
              if Path(frame.filename).resolve() in files]
    if not inside:
        return None
    frame = inside[-1]
    message = str(error).splitlines()[0] if str(error) else ""
    return UserError(f"agent '{spec}' failed in {frame.name} ({frame.filename} line "
                     f"{frame.lineno}): {type(error).__name__}"
                     f"{': ' + message if message else ''}; fix the agent's code")


def _entry_points() -> dict[str, importlib.metadata.EntryPoint]:
    return {ep.name: ep for ep in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP)}


def available_agents() -> list[str]:
    """Names usable with `--agent`: built-ins first, then installed entry points."""
    builtin = [n for n, m in BUILTIN_AGENTS.items() if importlib.util.find_spec(m) is not None]
    return builtin + sorted(set(_entry_points()) - set(builtin))


def get_agent(name: str) -> Agent:
    """Find an agent: a built-in name, an entry point name, `path/to/file.py:NAME`, or
    `path/to/file.py` (its `AGENT`)."""
    if _is_file_spec(name):
        return _load_from_file(name)
    if name in BUILTIN_AGENTS and importlib.util.find_spec(BUILTIN_AGENTS[name]) is not None:
        return _agent_from(importlib.import_module(BUILTIN_AGENTS[name]), f"agent '{name}'")
    entry_points = _entry_points()
    if name in entry_points:
        try:
            loaded = entry_points[name].load()
        except Exception as error:  # the package's own mistake: one line naming it
            message = str(error).splitlines()[0] if str(error) else ""
            raise UserError(f"agent '{name}' (entry point {entry_points[name].value}) cannot be "
                            f"loaded: {type(error).__name__}{': ' + message if message else ''}"
                            "; fix or reinstall its package") from None
        return _agent_from(loaded, f"entry point '{name}'")
    known = ", ".join(available_agents())
    raise UserError(
        f"unknown agent '{name}'; choose one of: {known} (or --agent path/to/file.py[:NAME])"
    )


def agent_display_name(spec: str) -> str:
    """The label of the agent `spec` names (in plots, reports, progress): its `Agent.name`,
    whether it comes built in, from a package or from a file."""
    return get_agent(spec).name
