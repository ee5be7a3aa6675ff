"""Loading manifests: YAML with line numbers, ``extends:``, ``${ENV}``, ``-o key=value`` overrides, and
validation errors that name the file, line, dotted key, what was expected and what was found.
"""

from __future__ import annotations

import copy
import difflib
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from medrun.errors import UsageError

_NUMBER = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)[eE][-+]?\d+")
_ENV = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


@dataclass
class Resolved:
    """A manifest after ``extends:``, ``${ENV}`` and overrides, before validation."""

    data: dict
    source: Path | None
    lines: dict[str, str] = field(default_factory=dict)  # dotted key -> "file:line"

    def where(self, dotted: str) -> str:
        parts = dotted.split(".")
        for n in range(len(parts), 0, -1):  # the nearest enclosing key that has a line
            key = ".".join(parts[:n])
            if key in self.lines:
                return self.lines[key]
        return str(self.source or "<manifest>")


def _read_yaml(path: Path) -> tuple[Any, dict[str, str]]:
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise UsageError("manifest not found", file=path, fix="check the path, or run `medrun list`") from None
    except OSError as e:
        raise UsageError(f"cannot read manifest: {e.strerror}", file=path) from None
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
        data = yaml.safe_load(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f"{path}:{mark.line + 1}" if mark else str(path)
        problem = getattr(e, "problem", None) or str(e).splitlines()[0]
        raise UsageError(f"{where}: invalid YAML: {problem}", fix="fix the syntax at that line") from None
    lines: dict[str, str] = {}
    _collect_lines(node, "", path, lines)
    return data if data is not None else {}, lines


def _collect_lines(node, prefix: str, path: Path, out: dict[str, str]) -> None:
    if isinstance(node, yaml.MappingNode):
        for key_node, value_node in node.value:
            dotted = f"{prefix}.{key_node.value}" if prefix else str(key_node.value)
            out[dotted] = f"{path}:{key_node.start_mark.line + 1}"
            _collect_lines(value_node, dotted, path, out)


def _merge(base: dict, child: dict) -> dict:
    out = copy.deepcopy(base)
    for k, v in child.items():
        out[k] = _merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else copy.deepcopy(v)
    return out


def _substitute_env(value, where: str):
    if isinstance(value, dict):
        return {k: _substitute_env(v, where) for k, v in value.items()}
    if isinstance(value, list):
        return [_substitute_env(v, where) for v in value]
    if not isinstance(value, str):
        return value

    def repl(m: re.Match) -> str:
        name, default = m.group(1), m.group(2)
        if name in os.environ:
            return os.environ[name]
        if default is not None:
            return default
        raise UsageError(f"{where}: environment variable {name} is not set", fix=f"export {name}=... or give a default: ${{{name}:-value}}")

    return _ENV.sub(repl, value)


def load_file(path: Path, _seen: tuple[Path, ...] = ()) -> Resolved:
    path = Path(path).resolve()
    if path in _seen:
        raise UsageError("`extends:` loops back to this file", file=path, fix="remove the cycle")
    data, lines = _read_yaml(path)
    if not isinstance(data, dict):
        raise UsageError("a manifest must be a mapping of sections", file=path, fix="see `medrun show --schema`")
    parent = data.pop("extends", None)
    lines.pop("extends", None)
    if parent is not None:
        base = load_file((path.parent / str(parent)), _seen + (path,))
        data = _merge(base.data, data)
        lines = {**base.lines, **lines}
    data = {k: _substitute_env(v, lines.get(k, str(path))) for k, v in data.items()}
    return Resolved(data=data, source=path, lines=lines)


def parse_override(text: str) -> tuple[str, Any]:
    """``train.epochs=3`` -> ("train.epochs", 3). Values are typed as YAML scalars/lists."""
    key, sep, raw = text.partition("=")
    key = key.strip()
    if not sep or not key or not re.fullmatch(r"[A-Za-z_][\w-]*(\.[A-Za-z_][\w-]*)*", key):
        raise UsageError(f"bad override {text!r}: expected key=value", fix="e.g. -o train.epochs=3 -o model.num_classes=4")
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError:
        value = raw
    if isinstance(value, str) and _NUMBER.fullmatch(value.strip()):  # YAML 1.1 reads 1e-3 as a string
        value = float(value)
    return key, value


def apply_overrides(resolved: Resolved, overrides: list[str] | dict[str, Any]) -> Resolved:
    items = overrides.items() if isinstance(overrides, dict) else (parse_override(o) for o in overrides)
    data = copy.deepcopy(resolved.data)
    lines = dict(resolved.lines)
    for key, value in items:
        node = data
        parts = key.split(".")
        for p in parts[:-1]:
            if not isinstance(node.get(p), dict):
                node[p] = {}
            node = node[p]
        node[parts[-1]] = value
        lines[key] = f"override {key}={value!r}"
    return Resolved(data=data, source=resolved.source, lines=lines)


def validate(resolved: Resolved, schema):
    """Validate with a pydantic model; raise one UsageError line per problem (the first few)."""
    from pydantic import ValidationError

    try:
        return schema.model_validate(resolved.data)
    except ValidationError as e:
        problems = [_describe(err, resolved, schema) for err in e.errors()]
        head = problems[0]
        if len(problems) > 1:
            head += f" (and {len(problems) - 1} more: " + "; ".join(p.split(": ", 1)[-1] for p in problems[1:4]) + ")"
        raise UsageError(head) from None


def _describe(err: dict, resolved: Resolved, schema) -> str:
    loc = [str(p) for p in err["loc"]]
    dotted = ".".join(loc)
    where = resolved.where(dotted)
    if err["type"] == "extra_forbidden":
        valid = _fields_at(schema, err["loc"][:-1])
        near = difflib.get_close_matches(loc[-1], valid, n=1)
        hint = f"did you mean '{near[0]}'?" if near else f"valid keys: {', '.join(valid)}"
        return f"{where}: unknown key '{dotted}' — {hint}"
    if err["type"] == "missing":
        return f"{where}: missing required key '{dotted}'"
    found = err.get("input")
    return f"{where}: '{dotted}': {err['msg'].lower()}, found {found!r}"


def _fields_at(schema, loc) -> list[str]:
    from typing import get_args

    model = schema
    for part in loc:
        if isinstance(part, int) or not hasattr(model, "model_fields"):
            return []
        info = model.model_fields.get(part)
        if info is None:
            return []
        ann = info.annotation
        model = next((a for a in (ann, *get_args(ann)) if hasattr(a, "model_fields")), None)
        if model is None:
            return []
    return sorted(model.model_fields)
