"""Which medrun source files a stage depends on: a static import graph of the installed sources.

Why: a run id holds a code fingerprint, and hashing every source made any edit anywhere (a typo in another
paper's docstring) a new id for every run of every pipeline, so nothing was ever reused. ``covered`` follows the
imports of a stage's start modules instead, so an edit changes only the ids of the stages that can execute it.

The walk is conservative, never optimistic: every ``import`` and ``from … import`` counts, including those inside
functions (the pipelines import torch-heavy modules lazily) and relative ones; a package's ``__init__`` counts when
any module below it does; a dynamic import (``importlib.import_module``, ``__import__`` …) in a module that
``DYNAMIC`` does not explain covers the whole top-level folder of that module. ``models.create("name")`` with a
literal name covers the module ``models._MODELS`` names; with anything else, all of ``models/``.

No medrun module is imported: sources are read and parsed with ``ast``, and the parse of each file is cached per
process by its content hash, so a second ``plan`` in the same process only reads and hashes the files.
"""

from __future__ import annotations

import ast
import contextlib
import hashlib
import json
import os
import re
from dataclasses import dataclass
from pathlib import Path

# Modules whose dynamic imports are accounted for, and why. The caller's start modules cover what they load.
DYNAMIC = {
    "medrun.pipelines": "registry() reads every pipeline's SPEC (declarations only); spec.load() and "
                        "manifest_cls() import the pipeline's own package, which is a start module",
    "medrun.pipelines.report": "imports the pipeline's own package to find its paper.yaml",
    "medrun.pipelines.runner": "imports the fixture module of the run's dataset, which is a start module",
    "medrun.datasets": "registry() reads every dataset module's DATASETS; the pipeline's dataset modules are "
                       "start modules",
    "medrun.models": "create(name) imports the module _MODELS names; resolved at each create() call site",
}
DYNAMIC_CALLS = {"import_module", "__import__", "exec_module", "spec_from_file_location", "runpy.run_module",
                 "runpy.run_path"}
MODEL_FACTORIES = {"create", "resolve"}
ALL_MODELS = "*"


@dataclass(frozen=True)
class Source:
    """One module of the source tree: ``label`` is its path as in the repository (``pipelines/ad_lite/x.py``)."""

    label: str
    path: Path
    package: bool


@dataclass(frozen=True)
class Parsed:
    sha256: str
    imports: frozenset[str]  # absolute candidate module names (some are attributes, not modules)
    dynamic: bool  # calls importlib.import_module or the like
    models: frozenset[str]  # names passed to models.create/resolve; ALL_MODELS when one is not a literal


_PARSED: dict[str, Parsed] = {}  # "<module>:<content sha256>" -> Parsed, for this process
_NEW: set[str] = set()  # keys parsed by this process and not yet saved
_LOADED: set[str] = set()  # cache files already merged
_STALE: set[str] = set()  # cache files missing, damaged or from other code: to be rewritten
CACHE_ENTRIES = 4096  # a few versions of every source; older entries cost a re-parse, nothing else


def index(dirs: list[Path]) -> dict[str, Source]:
    """Module name → Source for every ``.py`` under the package folders (``medrun`` itself: its own files only,
    since in an installed wheel it holds the other folders, which have entries of their own)."""
    out: dict[str, Source] = {}
    for d in dirs:
        base = "medrun" if d.name == "medrun" else f"medrun.{d.name}"
        for p in sorted(d.glob("*.py") if d.name == "medrun" else d.rglob("*.py")):
            rel = p.relative_to(d)
            if "__pycache__" in rel.parts:
                continue
            parts = rel.with_suffix("").parts
            package = parts[-1] == "__init__"
            name = ".".join((base, *(parts[:-1] if package else parts)))
            out.setdefault(name, Source(f"{d.name}/{rel.as_posix()}", p, package))
    return out


def parse(name: str, src: Source, data: bytes) -> Parsed:
    """Imports, dynamic-import calls and model names of one module, cached by (name, content hash)."""
    sha = hashlib.sha256(data).hexdigest()
    key = f"{name}:{sha}"
    hit = _PARSED.get(key)
    if hit is None:
        try:
            tree = ast.parse(data, filename=str(src.path))
        except (SyntaxError, ValueError):  # it would fail at import too; cover the file, follow nothing
            tree = ast.Module(body=[], type_ignores=[])
        hit = _PARSED[key] = _scan(tree, name, src.package, sha)
        _NEW.add(key)
    return hit


def load_cache(path: Path) -> None:
    """Merge the parses another process saved (``save_cache``), once per process: ``ast.parse`` of medrun's
    1.4 MB of sources costs about a second, which ``show`` and ``--dry-run`` should not pay on every call."""
    if str(path) in _LOADED:
        return
    _LOADED.add(str(path))
    try:
        saved = json.loads(path.read_text())
        if saved.get("scanner") != _scanner():  # parsed by other code: start afresh
            raise ValueError(path)
        for key, (imps, dynamic, models) in saved["entries"].items():
            _PARSED.setdefault(key, Parsed(key.rpartition(":")[2], frozenset(imps), bool(dynamic), frozenset(models)))
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        _STALE.add(str(path))  # no cache, or a damaged one: parse again, and replace it


def save_cache(path: Path) -> None:
    """Write this process's parses beside the saved ones (temp file + rename; a lost race loses only time)."""
    if not _NEW and str(path) not in _STALE:
        return
    keys = list(_PARSED)[-CACHE_ENTRIES:]
    entries = {k: [sorted(_PARSED[k].imports), _PARSED[k].dynamic, sorted(_PARSED[k].models)] for k in keys}
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp.write_text(json.dumps({"scanner": _scanner(), "entries": entries}))
        os.replace(tmp, path)
        _NEW.clear()
        _STALE.discard(str(path))
    except OSError:  # a read-only or full cache only costs time
        with contextlib.suppress(OSError):
            tmp.unlink(missing_ok=True)


def _scanner() -> str:
    """The sha256 of this module: a saved parse is reused only by the code that made it."""
    return hashlib.sha256(Path(__file__).read_bytes()).hexdigest()


def _from_base(node: ast.ImportFrom, name: str, package: bool) -> str:
    if not node.level:
        return node.module or ""
    parts = (name if package else name.rpartition(".")[0]).split(".")
    parts = parts[:len(parts) - (node.level - 1)]
    return ".".join([*parts, *([node.module] if node.module else [])])


def _scan(tree: ast.AST, name: str, package: bool, sha: str) -> Parsed:
    """One walk: every import (with what it may bind as a submodule), dynamic-import calls, model names."""
    imps, calls, pkg_aliases, fn_aliases = set(), [], set(), set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            imps.update(a.name for a in node.names)
            pkg_aliases.update(a.asname for a in node.names if a.name == "medrun.models" and a.asname)
        elif isinstance(node, ast.ImportFrom):
            base = _from_base(node, name, package)
            imps.add(base)
            imps.update(f"{base}.{a.name}" for a in node.names)
            pkg_aliases.update(a.asname or a.name for a in node.names if base == "medrun" and a.name == "models")
            fn_aliases.update(a.asname or a.name for a in node.names
                              if base == "medrun.models" and a.name in MODEL_FACTORIES)
        elif isinstance(node, ast.Call):
            calls.append(node)
    dynamic = any(_call_name(c) in DYNAMIC_CALLS for c in calls)
    models = {_first_name(c) for c in calls if _is_model_factory(c.func, pkg_aliases, fn_aliases)}
    return Parsed(sha, frozenset(imps), dynamic, frozenset(models))


def _call_name(node: ast.Call) -> str:
    """``import_module`` for ``importlib.import_module(…)`` or ``import_module(…)``; ``runpy.run_path`` as such."""
    f = node.func
    if isinstance(f, ast.Attribute):
        return f"runpy.{f.attr}" if isinstance(f.value, ast.Name) and f.value.id == "runpy" else f.attr
    return f.id if isinstance(f, ast.Name) else ""


def _is_model_factory(f: ast.expr, pkg_aliases: set[str], fn_aliases: set[str]) -> bool:
    """``models.create``, ``medrun.models.create``, or a name imported as ``create``/``resolve`` from medrun.models."""
    if isinstance(f, ast.Name):
        return f.id in fn_aliases
    if not (isinstance(f, ast.Attribute) and f.attr in MODEL_FACTORIES):
        return False
    v = f.value
    return (isinstance(v, ast.Name) and v.id in pkg_aliases) or (
        isinstance(v, ast.Attribute) and v.attr == "models" and isinstance(v.value, ast.Name) and v.value.id == "medrun"
    )


def _first_name(call: ast.Call) -> str:
    arg = call.args[0] if call.args else None
    return arg.value if isinstance(arg, ast.Constant) and isinstance(arg.value, str) else ALL_MODELS


def model_table(idx: dict[str, Source]) -> dict[str, str] | None:
    """``models._MODELS`` (name → module name), read from its literal, or None when there is no literal."""
    src = idx.get("medrun.models")
    found = src and re.search(r"^_MODELS\b[^=\n]*=\s*(\{.*?^\})", src.path.read_text(), re.M | re.S)
    try:
        table = ast.literal_eval(found.group(1)) if found else None
        return {k: f"medrun.models.{v.split(':')[0]}" for k, v in table.items()} if table else None
    except (ValueError, SyntaxError, AttributeError, TypeError):
        return None


def _ancestors(name: str) -> list[str]:
    parts = name.split(".")
    return [".".join(parts[:i]) for i in range(1, len(parts))]


def _under(idx: dict[str, Source], prefix: str) -> list[str]:
    return [n for n in idx if n == prefix or n.startswith(prefix + ".")]


def expand(roots, idx: dict[str, Source]) -> list[str]:
    """Start module names; ``pkg.*`` stands for the package and every module below it."""
    out = []
    for r in roots:
        out += _under(idx, r[:-2]) if r.endswith(".*") else [r]
    return out


def covered(roots, idx: dict[str, Source]) -> dict[str, Parsed]:
    """The transitive closure of imports from ``roots`` over the source tree: module name → Parsed."""
    seen: dict[str, Parsed] = {}
    models = None
    stack = expand(roots, idx)
    while stack:
        name = stack.pop()
        if name in seen or name not in idx:
            continue
        info = seen[name] = parse(name, idx[name], idx[name].path.read_bytes())
        stack += [c for c in info.imports if c in idx] + _ancestors(name)
        if info.dynamic and name not in DYNAMIC:  # unknown dynamic import: its whole top-level folder
            stack += _under(idx, ".".join(name.split(".")[:2]))
        if info.models:
            models = model_table(idx) if models is None else models
            for m in info.models:
                stack += [models[m]] if models and m in models else _under(idx, "medrun.models")
    return seen
