"""Reading a YAML file a user gives us, within limits: the one loader for configs, rigs and mappings.

A YAML file is small text, but the format lets a small file stand for a huge value: aliases (``*name``)
repeat an anchored value, so nine lines of nested aliases (a "billion laughs" file) describe 10^9
strings, and printing such a value in an error message takes gigabytes. :func:`load_yaml` therefore

* refuses a file larger than ``max_bytes`` (:data:`MAX_BYTES`, 64 KiB; real configs and rigs are a
  few KiB) before parsing it, and never reads more than that from it (``/dev/zero`` is refused too);
* refuses aliases that would add more than :data:`MAX_ALIAS_NODES` values when expanded, a recursive
  alias (a value that contains itself), and values nested deeper than :data:`MAX_DEPTH` levels;
* builds only plain data (YAML's safe schema: mappings, lists, strings, numbers, booleans, null,
  timestamps), plus tuples for ``!!python/tuple`` when ``python_tuples`` is set (MSST configs use it);
* turns every problem into ONE exception of the caller's class whose message names the file and
  quotes at most a short excerpt (:func:`excerpt`) of the offending text.

Aliases and anchors within the bound work as usual (``<<: *defaults`` merges too).
"""
from __future__ import annotations

import os
import reprlib
from typing import Any

import yaml

from ..errors import ConfigError

MAX_BYTES = 64 * 1024          # a file larger than this is refused unread (real ones: < 8 KiB)
MAX_ALIAS_NODES = 10_000       # values that aliases may add when expanded (real files: none)
MAX_DEPTH = 64                 # nesting levels, aliases followed (real files: 3 or 4)
EXCERPT_CHARS = 60             # the most of a value an error message quotes

_CAP = 1 << 62                 # expanded sizes are counted up to here (they can be astronomically large)


class _Limited(Exception):
    """Raised inside the loader when a limit is hit; turned into the caller's error class."""


class _BoundedLoader(yaml.SafeLoader):
    """The safe loader with a nesting limit while composing (composition recurses per level)."""

    def __init__(self, stream):
        super().__init__(stream)
        self._depth = 0

    def compose_node(self, parent, index):
        self._depth += 1
        try:
            if self._depth > MAX_DEPTH:
                raise _Limited(f"values are nested more than {MAX_DEPTH} levels deep")
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1


class _TupleLoader(_BoundedLoader):
    """Also understands ``!!python/tuple`` (MSST configs write band lists that way)."""


def _construct_tuple(loader: yaml.SafeLoader, node: yaml.Node) -> tuple:
    return tuple(loader.construct_sequence(node, deep=True))


_TupleLoader.add_constructor("tag:yaml.org,2002:python/tuple", _construct_tuple)


def _children(node: yaml.Node) -> list:
    if isinstance(node, yaml.SequenceNode):
        return node.value
    if isinstance(node, yaml.MappingNode):
        return [n for pair in node.value for n in pair]
    return []


def check_graph(root: yaml.Node) -> None:
    """Refuse a composed document whose aliases expand too far, loop, or nest too deep.

    Aliases share one node object, so the document is a graph; this walks it once (iteratively, with
    each node's expanded size and height memoized) and raises :class:`_Limited` on the first excess.
    """
    size: dict[int, int] = {}
    height: dict[int, int] = {}
    on_path: set[int] = set()
    distinct = 0
    stack: list[tuple[yaml.Node, bool]] = [(root, False)]
    while stack:
        node, finished = stack.pop()
        key = id(node)
        if finished:
            kids = _children(node)
            size[key] = min(_CAP, 1 + sum(size[id(k)] for k in kids))
            height[key] = 1 + max((height[id(k)] for k in kids), default=0)
            on_path.discard(key)
            if height[key] > MAX_DEPTH:
                raise _Limited(f"values are nested more than {MAX_DEPTH} levels deep (aliases followed)")
            if size[key] - distinct > MAX_ALIAS_NODES:
                raise _Limited(f"aliases (*name) would expand to more than {MAX_ALIAS_NODES} values "
                               "(a 'billion laughs' file?); repeat values without aliases, or fewer")
            continue
        if key in size:
            continue
        if key in on_path:
            raise _Limited("an alias refers to a value that contains it (a recursive alias)")
        on_path.add(key)
        distinct += 1
        stack.append((node, True))
        for kid in _children(node):
            if id(kid) in on_path:
                raise _Limited("an alias refers to a value that contains it (a recursive alias)")
            if id(kid) not in size:
                stack.append((kid, False))
    if size[id(root)] - distinct > MAX_ALIAS_NODES:
        raise _Limited(f"aliases (*name) would expand to more than {MAX_ALIAS_NODES} values "
                       "(a 'billion laughs' file?); repeat values without aliases, or fewer")


_REPR = reprlib.Repr()
_REPR.maxlevel = 3
_REPR.maxstring = EXCERPT_CHARS
_REPR.maxother = EXCERPT_CHARS
_REPR.maxlong = 40
for _name in ("maxdict", "maxlist", "maxtuple", "maxset", "maxfrozenset", "maxdeque", "maxarray"):
    setattr(_REPR, _name, 4)


def excerpt(value: Any, limit: int = EXCERPT_CHARS) -> str:
    """``repr(value)`` cut to about ``limit`` characters, in time and memory bounded by the limit.

    For error messages: a value from a file can be huge (a long string, a big list, a shared nested
    structure); this quotes its beginning and says how long a string was.
    """
    try:
        text = _REPR.repr(value)
    except Exception:  # noqa: BLE001 - e.g. an int too long to convert to text
        text = f"<{type(value).__name__}>"
    if len(text) > limit:
        text = text[:limit] + "..."
    if isinstance(value, str) and len(value) > limit:
        text += f" ({len(value)} characters)"
    return text


def _read_bounded(path: str, max_bytes: int, what: str, error: type[Exception]) -> bytes:
    try:
        with open(path, "rb") as fh:
            try:
                st = os.fstat(fh.fileno())
                if st.st_size > max_bytes:
                    raise error(f"{path}: the {what} is {_size(st.st_size)}; a {what} may be at most "
                                f"{_size(max_bytes)} (is this the right file?)")
            except OSError:
                pass
            data = fh.read(max_bytes + 1)
    except FileNotFoundError:
        raise error(f"{what} not found: {path}") from None
    except OSError as exc:
        raise error(f"cannot read {what} {path}: {exc.strerror or exc}") from exc
    if len(data) > max_bytes:
        raise error(f"{path}: the {what} is larger than {_size(max_bytes)}, the most a {what} may be "
                    "(is this the right file?)")
    return data


def _size(n: int) -> str:
    if n >= 1 << 20:
        return f"{n / (1 << 20):.1f} MiB"
    if n >= 1 << 10:
        return f"{n / (1 << 10):.0f} KiB"
    return f"{n} bytes"


def _yaml_problem(exc: yaml.YAMLError) -> str:
    """One short line from PyYAML's multi-line message (its snippets quote the file's lines)."""
    parts = []
    for attr in ("context", "problem"):
        text = getattr(exc, attr, None)
        if text:
            parts.append(str(text))
    mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
    if not parts:
        parts = [" ".join(l.strip() for l in str(exc).strip().splitlines()[:3])]
    line = " ".join(parts)
    if len(line) > 200:
        line = line[:200] + "..."
    if mark is not None:
        line += f" (line {mark.line + 1}, column {mark.column + 1})"
    return line


def load_yaml(path: str | os.PathLike, what: str = "YAML file", *, error: type[Exception] = ConfigError,
              max_bytes: int = MAX_BYTES, python_tuples: bool = False) -> Any:
    """The data in the YAML file ``path``, within the limits above; else one ``error(message)``.

    ``what`` names the kind of file in messages ("rig file", "config", "mapping file"); ``error`` is the
    exception class to raise (a ``StemstreamError`` subclass, so the command line prints one line).
    """
    path = os.fspath(path)
    raw = _read_bounded(path, max_bytes, what, error)
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise error(f"{path} is not a YAML {what}: it is not UTF-8 text (a binary file such as audio or a "
                    "checkpoint?)") from None
    loader = (_TupleLoader if python_tuples else _BoundedLoader)(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        check_graph(node)
        return loader.construct_document(node)
    except _Limited as exc:
        raise error(f"{path}: {exc}; refused") from None
    except yaml.YAMLError as exc:
        raise error(f"{path} is not valid YAML: {_yaml_problem(exc)}") from exc
    except RecursionError:
        raise error(f"{path}: values are nested too deeply; refused") from None
    except (ValueError, OverflowError) as exc:   # e.g. an integer of thousands of digits, a bad date
        raise error(f"{path}: a value cannot be read: {excerpt(str(exc), 120)}") from exc
    finally:
        loader.dispose()
