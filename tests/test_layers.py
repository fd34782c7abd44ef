"""Data flows one way (docs/architecture.md): the row schema and the graders at the bottom, then
the inner-loop engine, the families that plan and run units, and at the top what reads run
folders (report/) and what drives runs (runner, rl, cli). Checked on the source's import
statements (any depth, lazy imports inside functions included), so a shortcut back up fails here."""
from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

import sealbench

ROOT = Path(sealbench.__file__).parent

# What each lower part may import from sealbench (besides itself).
ALLOWED = {
    "schema": set(),
    "grading": set(),
    "stats": set(),
    "config": {"grading"},
    "inputs": {"config"},
    "store": {"schema"},
    "engine": {"config"},
    "families": {"config", "engine", "grading", "inputs", "schema", "stats"},
}
# Parts below report/: none of them may import it.
BELOW_REPORT = set(ALLOWED) | {"registry", "edits", "executors", "executors_ray"}


def _part(module: str) -> str:
    """sealbench.families.squad.metrics -> families; sealbench.store -> store."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else parts[0]


def import_graph() -> dict[str, set[str]]:
    """part -> the sealbench parts its modules import, from every `import`/`from` in the source."""
    edges: dict[str, set[str]] = defaultdict(set)
    for path in ROOT.rglob("*.py"):
        rel = path.relative_to(ROOT.parent).with_suffix("")
        module = ".".join(rel.parts[:-1] if rel.name == "__init__" else rel.parts)
        package = module if rel.name == "__init__" else module.rsplit(".", 1)[0]
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            targets = []
            if isinstance(node, ast.ImportFrom):
                if node.level:
                    base = package.split(".")[: len(package.split(".")) - node.level + 1]
                    target = ".".join(base + ([node.module] if node.module else []))
                else:
                    target = node.module or ""
                if target == "sealbench":  # from sealbench import store / from .. import store
                    targets = [f"sealbench.{a.name}" for a in node.names]
                elif target.startswith("sealbench."):
                    targets = [target]
            elif isinstance(node, ast.Import):
                targets = [a.name for a in node.names if a.name.startswith("sealbench.")]
            for target in targets:
                if _part(target) != _part(module):
                    edges[_part(module)].add(_part(target))
    return edges


def test_the_graph_is_read_from_the_source():
    edges = import_graph()
    # a known edge each way of reading: relative (families -> engine), lazy (store -> schema)
    assert "engine" in edges["families"] and "schema" in edges["store"] and "report" in edges["runner"]


def test_lower_parts_import_only_what_lies_below_them():
    edges = import_graph()
    wrong = {part: sorted(edges[part] - allowed) for part, allowed in ALLOWED.items() if edges[part] - allowed}
    assert not wrong, f"imports against the flow (part -> what it may not import): {wrong}"


def test_nothing_below_report_imports_it():
    edges = import_graph()
    assert not [part for part in BELOW_REPORT if "report" in edges[part]]
