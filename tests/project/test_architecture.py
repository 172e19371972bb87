"""The house rules of the code, read from the imports themselves (every import, also inside functions).

* ``bridge`` uses ``streamer``, never the reverse;
* inside ``streamer`` each package imports only the layers below it (models < msst < inference <
  stream < lab, and inference < cluster; ``audio``, ``outputs``, ``errors`` and ``assets`` are the ground), so
  runtime code never imports the lab tooling, ``stream`` never imports offline ``demix`` and nothing but the
  CLI reaches the cluster job (the one place Ray is imported);
* in ``bridge`` the audio path (``plugin``, ``mix``, ``live``, ``control``) never imports the lab tooling; the
  CLI may;
* no module imports its own package's ``__init__`` face;
* no circles.
"""
from __future__ import annotations

import ast
import pathlib

import pytest

from conftest import REPO

PACKAGES = ("streamer", "bridge")

# who may import whom: the key's modules may import modules starting with any of the values
ALLOWED = {
    "streamer.errors": (),
    "streamer.assets": (),
    "streamer.audio": ("streamer.errors",),
    "streamer.outputs": ("streamer.audio", "streamer.errors"),
    "streamer.models": ("streamer.models",),
    "streamer.msst": ("streamer.msst", "streamer.models", "streamer.errors"),
    "streamer.formats": ("streamer.formats", "streamer.audio", "streamer.errors"),
    "streamer.inference": ("streamer.inference", "streamer.msst", "streamer.models", "streamer.audio",
                           "streamer.outputs", "streamer.formats", "streamer.errors"),
    "streamer.stream": ("streamer.stream", "streamer.inference.runner", "streamer.inference.precision",
                        "streamer.inference.chunks", "streamer.inference.residual", "streamer.msst", "streamer.errors"),
    "streamer.cluster": ("streamer.cluster", "streamer.inference", "streamer.msst", "streamer.audio",
                         "streamer.outputs", "streamer.errors"),
    "streamer.remote": ("streamer.remote", "streamer.stream", "streamer.inference", "streamer.msst",
                        "streamer.audio", "streamer.outputs", "streamer.errors"),
    "streamer.lab": ("streamer.lab", "streamer.stream", "streamer.inference", "streamer.msst", "streamer.models",
                     "streamer.audio", "streamer.outputs", "streamer.errors", "streamer.assets",
                     "streamer.remote"),   # the GPU check times the service's batch call and stream state
    "bridge.mix": ("bridge.mix", "streamer.errors", "streamer.audio"),
    "bridge.plugin": ("bridge.plugin", "bridge.mix", "streamer.stream", "streamer.inference", "streamer.msst",
                      "streamer.formats", "streamer.remote", "bridge.midi",
                      "streamer.audio", "streamer.errors"),
    "bridge.control": ("bridge.control", "bridge.mix", "streamer.errors"),
    "bridge.midi": ("bridge.midi", "bridge.control", "bridge.mix", "streamer.errors", "streamer.msst"),
    "bridge.web": ("bridge.web", "bridge.control", "streamer.errors"),
    "bridge.live": ("bridge.live", "bridge.control", "bridge.web", "bridge.midi", "bridge.plugin", "bridge.mix",
                    "streamer.audio", "streamer.outputs", "streamer.errors"),
    "bridge.serve": ("bridge.serve", "streamer.remote", "streamer.stream", "streamer.inference", "streamer.msst",
                     "streamer.errors"),
    "bridge.cli": ("bridge", "streamer"),
}
FACES = {"streamer": "streamer/__init__.py", "bridge": "bridge/__init__.py"}


def module_name(path: pathlib.Path) -> str:
    parts = list(path.relative_to(REPO).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def source_files() -> list[pathlib.Path]:
    return sorted(p for pkg in PACKAGES for p in (REPO / pkg).rglob("*.py"))


def is_package(name: str) -> bool:
    return (REPO / name.replace(".", "/") / "__init__.py").exists()


def imports_of(path: pathlib.Path) -> list[tuple[str, int]]:
    """(module imported, line) for every import in the file, relative ones resolved; ``from X import y``
    counts as importing X.y when that is a module, else X."""
    me = module_name(path)
    package = me if path.name == "__init__.py" else me.rpartition(".")[0]
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found += [(alias.name, node.lineno) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            for alias in node.names:
                sub = f"{target}.{alias.name}"
                is_module = (REPO / (sub.replace(".", "/") + ".py")).exists() or is_package(sub)
                found.append((sub if is_module else target, node.lineno))
    return [(name, line) for name, line in found if name.split(".")[0] in PACKAGES]


def owner(name: str) -> str:
    """The most specific ALLOWED key a module belongs to."""
    keys = [k for k in ALLOWED if name == k or name.startswith(k + ".")]
    if not keys:
        raise AssertionError(f"{name}: no house rule says where it belongs; add it to ALLOWED")
    return max(keys, key=len)


GRAPH = {module_name(p): imports_of(p) for p in source_files()}


def test_every_module_has_a_place():
    for name in GRAPH:
        if name not in PACKAGES:
            owner(name)


@pytest.mark.parametrize("name", sorted(n for n in GRAPH if n not in PACKAGES))
def test_imports_run_down_the_layers(name):
    allowed = ALLOWED[owner(name)]
    bad = [f"line {line}: {target}" for target, line in GRAPH[name]
           if not any(target == a or target.startswith(a + ".") for a in allowed)]
    assert not bad, f"{name} may import only {', '.join(allowed) or 'nothing of the project'}; it imports " + \
        "; ".join(bad)


def test_streamer_never_imports_bridge():
    for name, imports in GRAPH.items():
        if name.startswith("streamer"):
            assert not [t for t, _ in imports if t.startswith("bridge")], name


def test_no_module_imports_its_own_package_face():
    for name, imports in GRAPH.items():
        for target, line in imports:
            face_of_own_package = is_package(target) and name.startswith(target + ".")
            assert not face_of_own_package, f"{name} line {line} imports its own package's face {target}"


def test_no_circles():
    edges = {n: {t for t, _ in imps if t in GRAPH and t != n} for n, imps in GRAPH.items()}
    # a package face handing on its children's names is not a circle of code: leave faces' edges out
    edges = {n: (set() if is_package(n) else ts) for n, ts in edges.items()}
    state: dict[str, int] = {}
    path: list[str] = []

    def visit(n: str) -> None:
        state[n] = 1
        path.append(n)
        for t in edges[n]:
            if state.get(t) == 1:
                raise AssertionError("circle: " + " -> ".join(path[path.index(t):] + [t]))
            if not state.get(t):
                visit(t)
        path.pop()
        state[n] = 2

    for n in sorted(edges):
        if not state.get(n):
            visit(n)


def test_nothing_reads_outside_the_repository():
    outside = "/".join(("..", "shared"))  # spelled apart so this file does not match itself
    files = source_files() + sorted((REPO / "tests").rglob("*.py")) + sorted((REPO / "examples").rglob("*.py"))
    for path in files + [REPO / "Makefile", REPO / "pyproject.toml", REPO / ".ci" / "run"]:
        assert outside not in path.read_text(), f"{path} reads {outside}: the project must be self-contained"


def test_each_package_says_its_job():
    for init in sorted(p for pkg in PACKAGES for p in (REPO / pkg).rglob("__init__.py")):
        doc = ast.get_docstring(ast.parse(init.read_text()))
        assert doc and len(doc) > 30, f"{init} needs a docstring saying the package's job"
