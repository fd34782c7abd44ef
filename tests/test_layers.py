"""Data flows one way (docs/architecture.md): the row schema and the graders at the bottom, then
the inner-loop engine, the families that plan and run units, and at the top what reads run
folders (report/) and what drives runs (runner, rl, cli). Checked on the source's import
statements (any depth, lazy imports inside functions included; `if TYPE_CHECKING:` blocks, which
name annotations only, excepted), so a shortcut back up fails here."""
from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

import sealbench

ROOT = Path(sealbench.__file__).parent

# What each lower part may import from sealbench (besides itself). "facts": the families' declared
# facts (sealbench/families/__init__.py and families/*/__init__.py: names, tasks, fixed graders),
# which import nothing, so every part may read them.
FACTS = {"sealbench.families", "sealbench.families.squad", "sealbench.families.arc"}
ALLOWED = {
    "schema": {"facts"},
    "grading": set(),
    "stats": set(),
    "config": {"grading", "facts"},
    "inputs": {"config"},
    "store": {"schema", "facts"},
    "engine": {"config"},
    "families": {"config", "engine", "grading", "inputs", "schema", "stats", "facts"},
}
# Parts below report/: none of them may import it.
BELOW_REPORT = set(ALLOWED) | {"registry", "edits", "executors", "executors_ray"}


def _part(module: str) -> str:
    """sealbench.families.squad.metrics -> families; sealbench.store -> store; the families'
    facts packages -> facts."""
    if module in FACTS:
        return "facts"
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else parts[0]


def import_graph() -> dict[str, set[str]]:
    """part -> the sealbench parts its modules import, from every `import`/`from` in the source."""
    edges: dict[str, set[str]] = defaultdict(set)
    for path in ROOT.rglob("*.py"):
        rel = path.relative_to(ROOT.parent).with_suffix("")
        module = ".".join(rel.parts[:-1] if rel.name == "__init__" else rel.parts)
        package = module if rel.name == "__init__" else module.rsplit(".", 1)[0]
        tree = ast.parse(path.read_text(encoding="utf-8"))
        typing_only = {id(n) for block in ast.walk(tree)  # `if TYPE_CHECKING:` names annotations only
                       if isinstance(block, ast.If) and getattr(block.test, "id", None) == "TYPE_CHECKING"
                       for stmt in block.body for n in ast.walk(stmt)}
        for node in ast.walk(tree):
            if id(node) in typing_only:
                continue
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
                if target.startswith("sealbench.families.") and target not in FACTS and module in FACTS:
                    edges["facts"].add(_part(target))  # a facts file loading a family: not allowed
                elif _part(target) != _part(module):
                    edges[_part(module)].add(_part(target))
    return edges


def test_the_graph_is_read_from_the_source():
    edges = import_graph()
    # a known edge each way of reading: relative (families -> engine), lazy (store -> schema)
    assert "engine" in edges["families"] and "schema" in edges["store"] and "report" in edges["runner"]


def test_the_families_facts_import_nothing():
    assert not import_graph()["facts"]


def test_lower_parts_import_only_what_lies_below_them():
    edges = import_graph()
    wrong = {part: sorted(edges[part] - allowed) for part, allowed in ALLOWED.items() if edges[part] - allowed}
    assert not wrong, f"imports against the flow (part -> what it may not import): {wrong}"


def test_nothing_below_report_imports_it():
    edges = import_graph()
    assert not [part for part in BELOW_REPORT if "report" in edges[part]]
