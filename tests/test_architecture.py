"""The layers of docs/architecture.md, redrawn from the imports (module-level and inside
functions): no import circles, and every import goes to the same layer or one below."""

from __future__ import annotations

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src"

# lowest first; a module may import its own layer and the layers before it
LAYERS = [
    ("utilities", ["tabes.files", "tabes.progress", "tabes.dist", "tabes.hardware"]),
    ("protocol", ["tabes.protocol", "tabes.cache"]),
    ("ops", ["tabes.ops"]),
    ("models", ["tabes.models", "tabes.loading"]),
    ("samplers", ["tabes.samplers"]),
    ("generate", ["tabes.generate", "tabes.blocks"]),
    ("search", ["tabes.search", "tabes.dfs"]),
    ("tasks", ["tabes.tasks", "tabes.train"]),
    ("bench, integrations, serve", ["tabes.bench", "tabes.integrations", "tabes.serve"]),
    ("cli", ["tabes.cli"]),
]


def _modules() -> dict[str, Path]:
    out = {}
    for p in (SRC / "tabes").rglob("*.py"):
        parts = list(p.relative_to(SRC).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = p
    return out


def import_graph() -> dict[str, set[str]]:
    """module -> the tabes modules it imports anywhere in its file."""
    mods = _modules()
    edges: dict[str, set[str]] = {m: set() for m in mods}
    for m, path in mods.items():
        for node in ast.walk(ast.parse(path.read_text())):
            targets: list[str] = []
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("tabes"):
                subs = [f"{node.module}.{a.name}" for a in node.names if f"{node.module}.{a.name}" in mods]
                targets = subs if len(subs) == len(node.names) else [node.module, *subs]
            elif isinstance(node, ast.Import):
                targets = [a.name for a in node.names if a.name.startswith("tabes")]
            edges[m] |= {t for t in targets if t in mods and t != m}
    return edges


def layer(module: str) -> int:
    if module == "tabes":  # the package's public API re-exports; nothing inside imports it
        return len(LAYERS)
    for i, (_, prefixes) in enumerate(LAYERS):
        if any(module == p or module.startswith(p + ".") for p in prefixes):
            return i
    raise AssertionError(f"{module} is in no layer of docs/architecture.md")


def test_no_import_circles():
    edges = import_graph()
    state: dict[str, int] = {}
    cycles = []

    def visit(u: str, stack: list[str]) -> None:
        state[u] = 1
        stack.append(u)
        for v in sorted(edges[u]):
            if state.get(v) == 1:
                cycles.append(stack[stack.index(v) :] + [v])
            elif v not in state:
                visit(v, stack)
        stack.pop()
        state[u] = 2

    for m in sorted(edges):
        if m not in state:
            visit(m, [])
    assert not cycles, cycles


def test_imports_point_down_the_layers():
    bad = [
        f"{m} ({LAYERS[layer(m)][0]}) imports {t} ({LAYERS[layer(t)][0] if layer(t) < len(LAYERS) else 'the package API'})"
        for m, targets in import_graph().items()
        for t in targets
        if layer(t) > layer(m)
    ]
    assert not bad, bad
