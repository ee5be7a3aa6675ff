"""Loading manifests: YAML with line numbers, ``extends:``, ``${ENV}``, ``-o key=value`` overrides, and
validation errors that name the file, line, dotted key, what was expected and what was found.

A manifest is small text a person wrote, so loading is bounded in memory and time whatever the file holds: only
regular files are opened (a FIFO would block ``open``, ``/dev/zero`` never ends), at most ``MAX_BYTES`` are read,
the text must be UTF-8, YAML anchors and aliases are refused (a 1.6 KB alias bomb otherwise expands to gigabytes in
every walk over the data), nesting is capped at ``MAX_DEPTH`` levels, and the text is composed once: the data and
the line of every key come from the same node tree. ``-o`` override values pass through the same checks.
"""

from __future__ import annotations

import copy
import difflib
import os
import re
import stat
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from medrun.errors import UsageError

_NUMBER = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)[eE][-+]?\d+")
_ENV = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")

MAX_BYTES = 1 << 20  # 1 MiB: the repository's largest manifest is under 4 KB
MAX_DEPTH = 64  # nesting levels; manifests use fewer than ten
NAME_KEYS = ("pipeline", "extends")  # top-level keys whose value must be a name (a string)
# libyaml when present: ten times faster, and its scanner refuses nesting deeper than 1000 without recursing
_Loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


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


def _read_bytes(path: Path) -> bytes:
    """The file's bytes, refusing anything but a regular file before opening it, and anything over MAX_BYTES."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        raise UsageError("manifest not found", file=path, fix="check the path, or run `medrun list`") from None
    except OSError as e:
        raise UsageError(f"cannot read manifest: {e.strerror}", file=path) from None
    _check_regular(st, path)
    try:  # O_NONBLOCK: were a FIFO swapped in after the stat, open would not block; fstat then refuses it
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    except OSError as e:
        raise UsageError(f"cannot read manifest: {e.strerror}", file=path) from None
    with os.fdopen(fd, "rb") as f:
        _check_regular(os.fstat(f.fileno()), path)
        raw = f.read(MAX_BYTES + 1)
    if len(raw) > MAX_BYTES:
        _too_big(path, len(raw))
    return raw


def _check_regular(st: os.stat_result, path: Path) -> None:
    if stat.S_ISDIR(st.st_mode):
        raise UsageError(f"{path} is a folder, not a manifest file", fix="name a .yaml file")
    if not stat.S_ISREG(st.st_mode):
        raise UsageError(f"{path} is not a regular file (a device, FIFO or socket)", fix="name a .yaml file")
    if st.st_size > MAX_BYTES:
        _too_big(path, st.st_size)


def _too_big(where, size: int) -> None:
    raise UsageError(f"{where}: over the {MAX_BYTES >> 20} MiB limit for a manifest ({size} bytes)",
                     fix="a manifest holds settings: keep case lists and other data in files beside the data")


def _decode(raw: bytes, path: Path) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as e:
        line = raw.count(b"\n", 0, e.start) + 1
        raise UsageError(f"{path}:{line}: manifest is not UTF-8 text (byte 0x{raw[e.start]:02x})",
                         fix="save the file as UTF-8") from None


def parse_yaml(text: str, where: str) -> tuple[Any, yaml.Node | None]:
    """(data, root node) of one YAML document, composed once. Raises ``yaml.YAMLError`` for invalid YAML and
    UsageError for aliases, nesting deeper than MAX_DEPTH, or a recursion overflow in the pure-Python parser."""
    loader = _Loader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None, None
        _check_tree(node, text, where)
        return loader.construct_document(node), node
    except RecursionError:
        raise UsageError(f"{where}: YAML nested too deeply", fix=f"use at most {MAX_DEPTH} levels") from None
    finally:
        loader.dispose()


def _check_tree(root: yaml.Node, text: str, where: str) -> None:
    """Walk the composed graph once, without recursion. An alias makes a node reachable twice; refusing it keeps
    every later walk (lines, ``${ENV}``, merging) linear in the text."""
    seen: set[int] = set()
    stack = [(root, 1)]
    while stack:
        node, depth = stack.pop()
        if id(node) in seen:
            raise UsageError(f"{where}:{_alias_line(text)}: YAML anchors and aliases are not allowed in manifests",
                             fix="write the values out, or share them with `extends:`")
        seen.add(id(node))
        if depth > MAX_DEPTH:
            raise UsageError(f"{where}:{node.start_mark.line + 1}: YAML nested more than {MAX_DEPTH} levels deep",
                             fix="a manifest needs only a few levels of sections")
        if isinstance(node, yaml.MappingNode):
            stack.extend((child, depth + 1) for pair in node.value for child in pair)
        elif isinstance(node, yaml.SequenceNode):
            stack.extend((child, depth + 1) for child in node.value)


def _alias_line(text: str) -> int | str:
    """Line of the first ``*alias`` (only called on the error path; parsing events expands nothing)."""
    for event in yaml.parse(text, Loader=_Loader):
        if isinstance(event, yaml.AliasEvent):
            return event.start_mark.line + 1
    return "?"


def _yaml_problem(e: yaml.YAMLError, text: str) -> tuple[int | None, str]:
    mark = getattr(e, "problem_mark", None)
    if mark is not None:
        return mark.line + 1, getattr(e, "problem", None) or str(e).splitlines()[0]
    if isinstance(e, yaml.reader.ReaderError):  # a control character the YAML spec forbids
        return text.count("\n", 0, e.position) + 1, f"unacceptable character #x{e.character:04x}"
    return None, str(e).splitlines()[0]


def _read_yaml(path: Path) -> tuple[Any, dict[str, str]]:
    text = _decode(_read_bytes(path), path)
    try:
        data, node = parse_yaml(text, str(path))
    except yaml.YAMLError as e:
        line, problem = _yaml_problem(e, text)
        where = f"{path}:{line}" if line else str(path)
        raise UsageError(f"{where}: invalid YAML: {_plain(problem)}", fix="fix the syntax at that line") from None
    lines: dict[str, str] = {}
    if node is not None:
        _collect_lines(node, "", path, lines)
    return data if data is not None else {}, lines


def _plain(text: str) -> str:
    """Messages are printed with rich markup: square brackets would be read as tags."""
    return str(text).replace("[", "(").replace("]", ")")


def _show(value) -> str:
    """A found value for an error line, without square brackets (rich markup)."""
    if isinstance(value, list | tuple):
        return f"a list ({', '.join(_show(v) for v in value[:5])}{', …' if len(value) > 5 else ''})"
    if isinstance(value, dict):
        return f"a mapping ({', '.join(map(str, list(value)[:5]))}{', …' if len(value) > 5 else ''})"
    return _plain(repr(value))


def _check_names(data: dict, lines: dict[str, str], where) -> None:
    """``pipeline: [ad-lite]`` and the like: a list or mapping where a name belongs, refused with its line."""
    for key in NAME_KEYS:
        value = data.get(key)
        if value is not None and not isinstance(value, str):
            raise UsageError(f"{lines.get(key, where)}: '{key}' must be a name, found {_show(value)}",
                             fix=f"write `{key}: <name>` (see `medrun list`)" if key == "pipeline" else
                             "write `extends: <relative path of a manifest>`")


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
        raise UsageError(
            f"{where}: environment variable {name} is not set",
            fix=f"export {name}=... or give a default: ${{{name}:-value}}",
        )

    return _ENV.sub(repl, value)


def load_file(path: Path, _seen: tuple[Path, ...] = ()) -> Resolved:
    path = Path(path).resolve()
    if path in _seen:
        raise UsageError("`extends:` loops back to this file", file=path, fix="remove the cycle")
    if len(_seen) >= MAX_DEPTH:
        raise UsageError(f"`extends:` chain longer than {MAX_DEPTH} files", file=path, fix="shorten the chain")
    data, lines = _read_yaml(path)
    if not isinstance(data, dict):
        raise UsageError("a manifest must be a mapping of sections", file=path, fix="see `medrun show --schema`")
    _check_names(data, lines, path)
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
        raise UsageError(
            f"bad override {text!r}: expected key=value", fix="e.g. -o train.epochs=3 -o model.num_classes=4"
        )
    if len(raw.encode("utf-8", "surrogateescape")) > MAX_BYTES:
        _too_big(f"override {key}", len(raw))
    try:
        value = parse_yaml(raw, f"override {key}")[0] if raw.strip() else ""
    except yaml.YAMLError:  # not YAML: the text itself, as before
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
        lines[key] = f"override {key}={_show(value)}"
    _check_names(data, lines, resolved.source or "<manifest>")
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
    return f"{where}: '{dotted}': {_plain(err['msg'].lower())}, found {_show(found)}"


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
