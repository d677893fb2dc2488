"""Self-contained model versions: every logged model carries the Shelfwise code it unpickles.

A registered version must load from its own logged environment and nothing else: an environment
built from the version's ``requirements.txt`` alone (``mlflow models serve``, a container, another
machine) has no Shelfwise installed. A pickled forecaster (and the cloudpickled pyfunc wrapper)
refer to their classes by module name (``shelfwise.models.forecast.HybridProphetXGBoost``), so the
version needs those modules with it.

Route: MLflow ``code_paths`` with a staged copy of exactly the modules the model needs, laid out as
``shelfwise/<subpackage>/<module>.py`` (each sub-package's ``__init__.py`` too, never a
``shelfwise/__init__.py``: ``shelfwise`` stays a namespace package). MLflow copies the folder to
``<model>/code/`` and puts that directory on ``sys.path`` when it loads the model. Chosen over

- models-from-code: the model script would still import ``shelfwise.models.forecast`` to read the
  fitted forecaster, so it needs the code shipped some other way anyway;
- the Shelfwise wheel as a logged requirement: it needs a package index (or a wheel file) to hold
  every build, every commit is version 0.1.0 so the pin cannot name the code that trained the
  model, and the wheel drags the whole platform (Prefect, BentoML, Evidently) into a model's
  environment.

With ``code_paths`` the version holds the exact code that trained it (a later Shelfwise cannot break
loading an older champion), needs no index or wheel server, and its requirements stay third-party
pins, derived here from what the staged code imports and what the pickled objects reference, pinned
to the installed (``requirements.lock``) versions.

Within a process that has Shelfwise installed (serving, the gate, flows, tests) one module name can
only have one copy. MLflow 3.17 prepends the code directory to ``sys.path`` and evicts nothing from
``sys.modules``, so whether the installed or the logged copy serves a class depends on what was
imported first. ``load_local_pyfunc`` makes that deterministic: it imports the installed
sub-packages the version ships before loading (their ``__path__`` then decides where submodules come
from, so the installed classes serve the unpickled objects, and ``isinstance`` checks hold), and it
takes the code directory off ``sys.path`` again afterwards.
"""

from __future__ import annotations

import ast
import importlib
import importlib.util
import io
import logging
import pickle
import shutil
import sys
import tempfile
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from functools import cache
from importlib.metadata import PackageNotFoundError, packages_distributions, version
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

NAMESPACE = "shelfwise"
CODE_DIR = "code"  # where MLflow puts code_paths inside a model directory
# the pyfunc loader itself plus what pandas may need for Parquet-born (Arrow) columns
BASE_PACKAGES = ("mlflow", "cloudpickle", "pyarrow")


@dataclass(frozen=True)
class ModelCode:
    """What to pass to ``log_model``: ``code_paths`` (None: the model needs no Shelfwise code)
    and the pinned ``pip_requirements``."""

    code_paths: list[str] | None
    requirements: list[str]
    modules: tuple[str, ...]


def _is_ours(module: str) -> bool:
    return module == NAMESPACE or module.startswith(NAMESPACE + ".")


def _top(module: str) -> str:
    return module.split(".", 1)[0]


# --------------------------------------------------------------------------- what a model needs


class _RecordingUnpickler(pickle.Unpickler):
    def __init__(self, data: Any, seen: set[str]) -> None:
        super().__init__(data)
        self._seen = seen

    def find_class(self, module: str, name: str) -> Any:
        self._seen.add(module)
        return super().find_class(module, name)


def pickled_modules(obj: object) -> set[str]:
    """Module of every global (class, function) the pickle of ``obj`` refers to by name."""
    seen: set[str] = set()
    _RecordingUnpickler(io.BytesIO(pickle.dumps(obj, protocol=5)), seen).load()
    return seen


def _origin(module: str) -> Path | None:
    try:
        spec = importlib.util.find_spec(module)
    except (ImportError, ValueError):  # a name imported from a module, not a module
        return None
    if spec is None or not spec.origin or not spec.origin.endswith(".py"):
        return None
    return Path(spec.origin)


def _imported_names(tree: ast.AST, module: str, is_package: bool) -> set[str]:
    """Absolute names every import statement (module level or inside functions) refers to;
    for ``from a import b`` both ``a`` and ``a.b`` (``b`` may be a module)."""
    package = module if is_package else module.rpartition(".")[0]
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = importlib.util.resolve_name("." * node.level + base, package)
            names.add(base)
            names.update(f"{base}.{alias.name}" for alias in node.names)
    return names


def shelfwise_closure(roots: Iterable[str]) -> tuple[dict[str, Path], set[str]]:
    """(Shelfwise module -> source file, third-party top-level imports) of ``roots`` and every
    Shelfwise module they import, transitively (static: ``ast``, lazy imports included)."""
    files: dict[str, Path] = {}
    external: set[str] = set()
    todo = [m for m in roots if _is_ours(m)]
    while todo:
        module = todo.pop()
        if module in files:
            continue
        path = _origin(module)
        if path is None:
            continue
        files[module] = path
        tree = ast.parse(path.read_text(), filename=str(path))
        for name in _imported_names(tree, module, path.name == "__init__.py"):
            if _is_ours(name):
                todo.append(name)
            else:
                external.add(_top(name))
    return files, external


def _packages_of(modules: Iterable[str]) -> set[str]:
    """Every enclosing sub-package (``shelfwise.models`` of ``shelfwise.models.forecast``),
    never the ``shelfwise`` namespace itself."""
    out: set[str] = set()
    for module in modules:
        parts = module.split(".")
        out.update(".".join(parts[:i]) for i in range(2, len(parts)))
    return out


# --------------------------------------------------------------------------- staging


def stage_code(files: dict[str, Path], dst: Path) -> Path:
    """Copy ``files`` (module -> source) to ``dst/shelfwise/<sub>/...``, with each enclosing
    sub-package's ``__init__.py`` and no ``shelfwise/__init__.py``. Returns ``dst/shelfwise``."""
    root = dst / NAMESPACE
    for package in sorted(_packages_of(files)):
        init = _origin(package)
        if init is not None and init.name == "__init__.py":
            files = {package: init, **files}
    for module, src in sorted(files.items()):
        rel = Path(*module.split(".")[1:])
        target = root / rel / "__init__.py" if src.name == "__init__.py" else root / f"{rel}.py"
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(src, target)
    if not root.is_dir():
        root.mkdir(parents=True)
    return root


# --------------------------------------------------------------------------- requirements


@cache
def _distributions() -> dict[str, list[str]]:
    return packages_distributions()


def _canonical(name: str) -> str:
    return name.lower().replace("_", "-").replace(".", "-")


def distributions_of(top_level: str) -> list[str]:
    """Installed distributions providing import name ``top_level`` (the one named like it when
    several share the folder: ``mlflow``, not ``mlflow-skinny``). Stdlib and ours: none."""
    if top_level in sys.stdlib_module_names or top_level in ("__future__", NAMESPACE):
        return []
    dists = [_canonical(d) for d in _distributions().get(top_level, [])]
    same = [d for d in dists if d == _canonical(top_level)]
    return same or sorted(set(dists))


def pinned_requirements(packages: Iterable[str]) -> list[str]:
    """``name==installed version`` for each installed distribution (sorted, unique)."""
    out = set()
    for pkg in packages:
        try:
            out.add(f"{_canonical(pkg)}=={version(pkg)}")
        except PackageNotFoundError:
            logger.debug("%s is not installed: not pinned", pkg)
    return sorted(out)


def requirements_for(
    top_level_imports: Iterable[str], extra_packages: Sequence[str] = BASE_PACKAGES
) -> list[str]:
    """Pinned distributions behind ``top_level_imports`` plus ``extra_packages``."""
    dists = {d for name in top_level_imports for d in distributions_of(name)}
    return pinned_requirements([*dists, *extra_packages])


# --------------------------------------------------------------------------- logging


@contextmanager
def model_code(
    objects: Sequence[object], extra_packages: Sequence[str] = BASE_PACKAGES
) -> Iterator[ModelCode]:
    """Stage the Shelfwise code ``objects`` need (in a temporary folder, for the duration of
    the block) and pin the packages that code and the objects' pickles import."""
    referenced: set[str] = set()
    for obj in objects:
        referenced |= pickled_modules(obj)
    roots = {m for m in referenced if _is_ours(m)}
    files, external = shelfwise_closure(roots)
    external |= {_top(m) for m in referenced if not _is_ours(m)}
    requirements = requirements_for(external, extra_packages)
    if not files:
        yield ModelCode(None, requirements, ())
        return
    with tempfile.TemporaryDirectory(prefix="shelfwise-code-") as tmp:
        root = stage_code(files, Path(tmp))
        logger.info("logging %s Shelfwise module(s) with the model", len(files))
        yield ModelCode([str(root)], requirements, tuple(sorted(files)))


@contextmanager
def preserved_sys_path() -> Iterator[None]:
    """Undo what MLflow adds to ``sys.path`` (a model's code directory) inside the block."""
    before = list(sys.path)
    try:
        yield
    finally:
        sys.path[:] = before


# --------------------------------------------------------------------------- in-process loading


def shipped_subpackages(model_dir: str | Path) -> list[str]:
    """``shelfwise.<sub>`` of every sub-package a local model directory ships in ``code/``."""
    root = Path(model_dir) / CODE_DIR / NAMESPACE
    if not root.is_dir():
        return []
    return sorted(f"{NAMESPACE}.{p.name}" for p in root.iterdir() if p.is_dir())


def pin_installed(subpackages: Iterable[str]) -> None:
    """Import the installed copy of each sub-package (when installed) before a model's code
    directory can shadow it."""
    for name in subpackages:
        try:
            importlib.import_module(name)
        except ImportError:
            logger.info("%s is not installed here: the model's own copy will serve", name)


def load_local_pyfunc(model_dir: str | Path) -> Any:
    """``mlflow.pyfunc.load_model`` of a local model directory with the installed Shelfwise
    classes (see the module docstring); ``sys.path`` is left as it was."""
    import mlflow.pyfunc

    pin_installed(shipped_subpackages(model_dir))
    with preserved_sys_path():
        return mlflow.pyfunc.load_model(str(model_dir))


def load_pyfunc(model_uri: str) -> Any:
    """Download ``model_uri`` (``models:/``, ``runs:/``, a path) and ``load_local_pyfunc`` it."""
    import mlflow.artifacts

    with tempfile.TemporaryDirectory(prefix="shelfwise-model-") as tmp:
        local = mlflow.artifacts.download_artifacts(artifact_uri=model_uri, dst_path=tmp)
        return load_local_pyfunc(local)
