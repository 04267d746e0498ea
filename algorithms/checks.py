"""What the engine checks about an agent before a run: that it keeps the contract
(`check_agent`), and which code it is (`agent_fingerprint`, for resuming safely).

`check_agent` traces the agent's functions with `jax.eval_shape` (no compilation, no
arithmetic), so an agent's mistake surfaces as one line naming the agent and the problem
(a UserError: exit 2) before any training, instead of as a trace deep inside the compiled
training program or as silently wrong results.
"""

from __future__ import annotations

import ast
import hashlib
import importlib.machinery
import importlib.metadata
import importlib.util
import re
import site
import sys
import sysconfig
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from seqeval.algorithms.base import Agent, Batch, DatasetStats, Spaces
from seqeval.algorithms.registry import ENTRY_POINT_GROUP, USER_AGENT_PREFIX
from seqeval.compilation import jit_once
from seqeval.errors import UserError

CHECK_ROWS = 3  # observations per act/explore check (distinct from any batch or action size)
ACTION_TOLERANCE = 1e-6  # float rounding allowed beyond [-1, 1]


def _problem(agent: Agent, message: str) -> UserError:
    return UserError(f"agent '{agent.name}': {message}")


def _abstract(agent: Agent, hook: str, function: Callable, *args: Any) -> Any:
    """jax.eval_shape(function, *args), with a returned non-array turned into a UserError."""
    try:
        return jax.eval_shape(function, *args)
    except TypeError as error:
        found = re.search(r"returned a value of type (.*?), which is not a valid JAX type",
                          str(error))
        if found is None:
            raise
        raise _problem(agent, f"{hook} returned {found.group(1)}, which is not an array; "
                              "return a pytree of arrays (a NamedTuple, dict or flax "
                              "struct.PyTreeNode; static parts in pytree_node=False fields)"
                       ) from None


def _describe(leaf: Any) -> str:
    return f"{jnp.dtype(leaf.dtype).name}{list(leaf.shape)}"


def _check_scalar_metrics(agent: Agent, hook: str, metrics: Any) -> None:
    if not isinstance(metrics, Mapping):
        raise _problem(agent, f"{hook} returned metrics of type {type(metrics).__name__}; "
                              "return a flat dict of scalar arrays, e.g. {'loss': loss}")
    for name, value in metrics.items():
        if not isinstance(value, jax.ShapeDtypeStruct):
            raise _problem(agent, f"{hook} metric '{name}' is not an array; metrics must be a "
                                  "flat dict of scalar arrays")
        if value.shape != ():
            raise _problem(agent, f"{hook} metric '{name}' has shape {tuple(value.shape)}; "
                                  "metrics must be scalars (reduce it, e.g. with jnp.mean)")


def _check_same_state(agent: Agent, before: Any, after: Any) -> None:
    """`update` must return a state of the same structure, shapes and dtypes (it is the carry
    of the compiled training loop)."""
    paths_before = {jax.tree_util.keystr(p): leaf
                    for p, leaf in jax.tree_util.tree_flatten_with_path(before)[0]}
    paths_after = {jax.tree_util.keystr(p): leaf
                   for p, leaf in jax.tree_util.tree_flatten_with_path(after)[0]}
    missing = sorted(set(paths_before) - set(paths_after))
    added = sorted(set(paths_after) - set(paths_before))
    if missing or added:
        parts = ([f"dropped state{missing[0]}"] if missing else []) + (
            [f"added state{added[0]}"] if added else [])
        raise _problem(agent, f"update changed the state's structure ({', '.join(parts)}); "
                              "return a state with exactly the fields init created")
    if jax.tree.structure(before) != jax.tree.structure(after):
        raise _problem(agent, "update changed a static part of the state (a pytree_node=False "
                              "field such as an apply_fn or optimizer); keep static parts fixed")
    for path, leaf in paths_before.items():
        new = paths_after[path]
        if tuple(leaf.shape) != tuple(new.shape) or jnp.dtype(leaf.dtype) != jnp.dtype(
                new.dtype):
            raise _problem(agent, f"update changed state{path} from {_describe(leaf)} to "
                                  f"{_describe(new)}; the state must keep its shapes and dtypes")


def _check_actions(agent: Agent, hook: str, actions: Any, rows: int, action_dim: int) -> None:
    shape = getattr(actions, "shape", None)
    if shape is None or tuple(shape) != (rows, action_dim):
        got = "a non-array" if shape is None else f"shape {tuple(shape)}"
        raise _problem(agent, f"{hook} returned {got} for {rows} observations; expected "
                              f"({rows}, {action_dim}): one action per observation")


def abstract_batch(spaces: Spaces, rows: int) -> Batch:
    """The shapes and dtypes of a batch of `rows` transitions, as the engine passes them."""
    def array(*shape: int) -> jax.ShapeDtypeStruct:
        return jax.ShapeDtypeStruct(shape, jnp.float32)

    return Batch(observations=array(rows, spaces.observation_dim),
                 actions=array(rows, spaces.action_dim), rewards=array(rows),
                 next_observations=array(rows, spaces.observation_dim),
                 terminals=array(rows), next_actions=array(rows, spaces.action_dim),
                 next_action_valid=array(rows))


def check_agent(agent: Agent, config: Any, spaces: Spaces, stats: DatasetStats, batch_size: int,
                sample: Batch | None = None, total_steps: int = 1_000) -> None:
    """Check `agent` against the interface before training; raise a UserError naming the agent
    and the first problem found.

    Traced with `jax.eval_shape`: `init` returns a pytree of arrays; `update` on a batch of
    `batch_size` returns (state, metrics) with the state's structure, shapes and dtypes
    unchanged and metrics a dict of scalars; `act` (greedy and not) and `explore` return
    (rows, action_dim); `score` on one transition (as the prequential scorer calls it)
    returns scalars. With `sample`, a few real transitions, the initial state also acts on
    their observations for real, and its actions must be finite and in [-1, 1] (a range that
    only real values show).
    """
    key = jax.random.PRNGKey(0)
    state = _abstract(agent, "init", lambda k: agent.init(config, k, spaces, stats, total_steps),
                      key)
    result = _abstract(agent, "update", lambda s, b, k: agent.update(config, s, b, k), state,
                       abstract_batch(spaces, batch_size), key)
    if not (isinstance(result, tuple) and len(result) == 2):
        raise _problem(agent, "update must return a pair (state, metrics)")
    new_state, metrics = result
    _check_same_state(agent, state, new_state)
    _check_scalar_metrics(agent, "update", metrics)

    observations = jax.ShapeDtypeStruct((CHECK_ROWS, spaces.observation_dim), jnp.float32)
    for deterministic in (True, False):
        actions = _abstract(agent, "act",
                            lambda s, o, k, d=deterministic: agent.act(config, s, o, k, d),
                            state, observations, key)
        _check_actions(agent, f"act(deterministic={deterministic})", actions, CHECK_ROWS,
                       spaces.action_dim)
    if agent.explore is not None:
        actions = _abstract(agent, "explore", lambda s, o, k: agent.explore(config, s, o, k),
                            state, observations, key)
        _check_actions(agent, "explore", actions, CHECK_ROWS, spaces.action_dim)
    if agent.score is not None:
        scores = _abstract(agent, "score", lambda s, b: agent.score(config, s, b), state,
                           abstract_batch(spaces, 1))
        _check_scalar_metrics(agent, "score", scores)

    if sample is not None:
        _check_real_actions(agent, config, spaces, stats, total_steps, sample.observations)


def _check_real_actions(agent: Agent, config: Any, spaces: Spaces, stats: DatasetStats,
                        total_steps: int, observations: jax.Array) -> None:
    """The initial state's actions on real observations: finite and within [-1, 1]."""
    key = jax.random.PRNGKey(0)

    def initial_actions(key: jax.Array, observations: jax.Array):
        state = agent.init(config, key, spaces, stats, total_steps)
        greedy = agent.act(config, state, observations, key, True)
        return greedy, agent.explore_actions(config, state, observations, key)

    for hook, actions in zip(("act", "explore"), jit_once(initial_actions)(key, observations),
                             strict=True):
        values = np.asarray(actions, np.float64)
        if not np.all(np.isfinite(values)):
            raise _problem(agent, f"{hook} returned non-finite actions on dataset "
                                  "observations with its initial state")
        largest = float(np.max(np.abs(values))) if values.size else 0.0
        if largest > 1.0 + ACTION_TOLERANCE:
            raise _problem(agent, f"{hook} returned actions outside [-1, 1] (largest |a| = "
                                  f"{largest:.3g}) on dataset observations; squash (tanh) or "
                                  "clip them: seqeval rescales [-1, 1] to the action bounds")


# ---------------------------------------------------------------------------------------------
# Which code an agent is.

FINGERPRINT_LENGTH = 16  # hex digits kept of the SHA-256


def _agent_module(agent: Agent):
    """The module that defines the agent's functions (or, failing that, its config class)."""
    for obj in (agent.init, agent.update, agent.act, agent.config_class):
        module = sys.modules.get(getattr(obj, "__module__", None) or "")
        if module is not None and getattr(module, "__file__", None):
            return module
    return None


def agent_source_files(agent: Agent) -> tuple[dict[str, Path], str]:
    """The files whose contents define the agent (name -> path), and a label of its
    distribution.

    The agent's own module, and every module it imports, directly or through another, from
    seqeval or from the user's own files (anything not installed in site-packages or the
    standard library: a module beside an agent file counts). For an agent from an installed
    package (any other package), also every .py file of its top-level package, labelled with
    the distribution's name and version (an editable install changes files, not its version).
    Names are module names (a file agent's own file: its file name), so a fingerprint does not
    depend on where the code is installed.
    """
    module = _agent_module(agent)
    if module is None:
        return {}, ""
    top_name = module.__name__.split(".")[0]
    top = sys.modules.get(top_name)
    package_dirs = list(getattr(top, "__path__", None) or []) if top is not None else []
    files = _own_import_closure(module)
    if top_name == "seqeval" or not package_dirs:
        return files, ""
    # The package's own modules: every file of it, by its path in the package.
    files = {name: path for name, path in files.items()
             if name != top_name and not name.startswith(f"{top_name}.")}
    for directory in map(Path, package_dirs):
        for path in directory.rglob("*.py"):
            if "__pycache__" not in path.parts:
                files[(Path(top_name) / path.relative_to(directory)).as_posix()] = path
    return files, _distribution_label(top_name)


def _installed_roots() -> tuple[Path, ...]:
    """Folders of installed code (the standard library and site-packages): modules there are
    versioned by their distribution, not fingerprinted file by file."""
    paths = sysconfig.get_paths()
    roots = {paths[k] for k in ("stdlib", "platstdlib", "purelib", "platlib") if k in paths}
    roots.update(site.getsitepackages())
    roots.add(site.getusersitepackages())
    return tuple(Path(r).resolve() for r in roots if r)


def _is_own(path: Path, module_name: str, installed: tuple[Path, ...]) -> bool:
    if module_name == "seqeval" or module_name.startswith("seqeval."):
        return True  # the seqeval code an agent builds on (also when installed)
    return not any(path.is_relative_to(root) for root in installed)


def _imported_names(module_name: str, path: Path, is_package: bool) -> set[str]:
    """Names of the modules a source file imports (anywhere in it), and what `from M import
    X` might name as a submodule (M.X; kept only if it is a module)."""
    tree = ast.parse(path.read_bytes(), filename=str(path))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                package = module_name if is_package else module_name.rpartition(".")[0]
                parts = package.split(".")[:len(package.split(".")) - node.level + 1]
                base = ".".join(p for p in [*parts, node.module or ""] if p)
            else:
                base = node.module or ""
            if base:
                names.add(base)
                names.update(f"{base}.{alias.name}" for alias in node.names)
    # `import a.b.c` runs a/__init__.py and a/b/__init__.py too.
    return {".".join(n.split(".")[:i]) for n in names for i in range(1, n.count(".") + 2)}


def _module_file(name: str, beside: Path | None = None) -> tuple[Path, bool] | None:
    """The source file of module `name` and whether it is a package; None for a built-in, an
    extension or a name that is not a module. A name that a folder `beside` (an agent file's)
    holds is that folder's module, as the agent file imports it, whatever else of that name
    is loaded; any other is the loaded module, or found without running it."""
    if beside is not None and name.split(".")[0] != "seqeval":
        locations: list[str] | None = [str(beside)]
        spec = None
        for depth in range(name.count(".") + 1):
            spec = importlib.machinery.PathFinder.find_spec(
                ".".join(name.split(".")[:depth + 1]), locations)
            locations = None if spec is None else spec.submodule_search_locations
            if spec is None or (locations is None and depth < name.count(".")):
                spec = None
                break
        if spec is not None and spec.origin:
            origin = spec.origin
            is_package = spec.submodule_search_locations is not None
            return (Path(origin).resolve(), is_package) if origin.endswith(".py") else None
    module = sys.modules.get(name)
    origin = getattr(module, "__file__", None) if module is not None else None
    is_package = module is not None and hasattr(module, "__path__")
    if module is None:
        parent = name.rpartition(".")[0]
        if parent and parent not in sys.modules:
            return None  # finding it would import its parent: not a module of the closure
        try:
            spec = importlib.util.find_spec(name)
        except (ImportError, ValueError, AttributeError):
            return None
        if spec is None:
            return None
        origin, is_package = spec.origin, spec.submodule_search_locations is not None
    if not origin or not origin.endswith(".py"):
        return None
    return Path(origin).resolve(), is_package


def _own_import_closure(module: Any) -> dict[str, Path]:
    """The agent's module file and the files of the seqeval and user modules it imports,
    followed through those modules' own imports."""
    installed = _installed_roots()
    own_path = Path(module.__file__).resolve()
    own_name = module.__name__
    label = own_path.name if own_name.startswith(USER_AGENT_PREFIX) else own_name
    files = {label: own_path}
    beside = own_path.parent if own_name.startswith(USER_AGENT_PREFIX) else None
    frontier = [(own_name, own_path, hasattr(module, "__path__"))]
    seen = {own_name}
    while frontier:
        name, path, is_package = frontier.pop()
        for imported in sorted(_imported_names(name, path, is_package) - seen):
            seen.add(imported)
            found = _module_file(imported, beside)
            if found is None or not _is_own(found[0], imported, installed):
                continue
            files[imported] = found[0]
            frontier.append((imported, *found))
    return files


def _distribution_label(top_name: str) -> str:
    """'name==version' of the installed distributions providing package `top_name`."""
    names = set(importlib.metadata.packages_distributions().get(top_name, []))
    for entry_point in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
        if entry_point.module.split(".")[0] == top_name and entry_point.dist is not None:
            names.add(entry_point.dist.name)
    return ",".join(f"{name}=={importlib.metadata.version(name)}" for name in sorted(names))


def agent_code(agent: Agent) -> dict[str, str]:
    """A SHA-256 of each file that defines the agent (`agent_source_files`), by name, and of
    its distribution label under "" when it has one: what tells two versions of an agent's
    code apart, file by file."""
    files, label = agent_source_files(agent)
    code = {name: hashlib.sha256(files[name].read_bytes()).hexdigest() for name in sorted(files)}
    if label:
        code[""] = hashlib.sha256(label.encode()).hexdigest()
    return code


# The evaluator's modules whose code decides a run's numbers: how the data is read, ordered,
# batched and trained on, how agents act in and are scored by the environment, how seeds are
# derived, programs compiled and values written. The rest of seqeval (the CLI, studies,
# reports, trackers, settings whose values a run records anyway) leaves a run's numbers as
# they are; tests/test_study_identity.py makes every module a run imports choose a side.
EVALUATOR_MODULES = (
    "seqeval.compilation", "seqeval.context", "seqeval.csvfile", "seqeval.d4rl", "seqeval.data",
    "seqeval.envs.rollout", "seqeval.evaluate", "seqeval.online", "seqeval.protocol",
    "seqeval.results", "seqeval.retrain", "seqeval.scores", "seqeval.seeds", "seqeval.sequential",
)


def evaluator_code() -> dict[str, str]:
    """A SHA-256 of each evaluator module that decides a run's numbers (EVALUATOR_MODULES), by
    module name: with the agent's own code, what makes two runs' numbers comparable."""
    code = {}
    for name in EVALUATOR_MODULES:
        spec = importlib.util.find_spec(name)
        assert spec is not None and spec.origin is not None, name
        code[name] = hashlib.sha256(Path(spec.origin).read_bytes()).hexdigest()
    return code


def evaluator_fingerprint() -> str:
    """A short hash of `evaluator_code`: a resumed run compares it with the one it started
    with, as it does the agent's."""
    return _short_digest("seqeval-evaluator", evaluator_code())


def _short_digest(label: str, code: dict[str, str]) -> str:
    digest = hashlib.sha256(label.encode())
    for name, file_hash in code.items():
        digest.update(f"\0{name}\0{file_hash}".encode())
    return digest.hexdigest()[:FINGERPRINT_LENGTH]


def agent_fingerprint(agent: Agent) -> str:
    """A short hash of the agent's source code (`agent_code`): equal for the same code,
    different when any file it is made of changes. A resumed run compares it with the one it
    started with."""
    return _short_digest(f"seqeval-agent:{agent.name}", agent_code(agent))
