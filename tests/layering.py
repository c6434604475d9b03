"""The layering rule of LeukEdge's folders, checked on the source with ``ast`` (no imports run).

core/ is the bottom layer (package ``leukedge``); each stage is a folder (package
``leukedge.<stage>``). An import of another layer must follow :data:`ALLOWED` (at module top
or inside a function alike) and may not name another layer's private names (``_x``) or
private modules. :func:`check` returns one line per violation.
"""
from __future__ import annotations

import ast
from pathlib import Path

#: folder -> package
PACKAGES = {"core": "leukedge", "train": "leukedge.train", "compress": "leukedge.compress",
            "edge_app": "leukedge.edge_app", "benchmarks": "leukedge.benchmarks"}
STAGES = ("train", "compress", "edge_app", "benchmarks")
#: layer -> the other layers it may import. core imports no stage; the app (and its install
#: without TensorFlow) uses core only; benchmarks measure train's Keras models and input
#: pipeline and the app's screening path (`bench captures` screens exactly like `predict`); compress turns train's models into releases and fits the app's OOD gate for them.
ALLOWED = {
    "core": set(),
    "train": {"core"},
    "edge_app": {"core"},
    "benchmarks": {"core", "train", "edge_app"},
    "compress": {"core", "train", "edge_app"},
}


def layer_of(module: str) -> str | None:
    """The layer of an absolute module name (None: not LeukEdge)."""
    parts = module.split(".")
    if parts[0] != "leukedge":
        return None
    return parts[1] if len(parts) > 1 and parts[1] in STAGES else "core"


def _module_name(folder: str, path: Path, root: Path) -> str:
    parts = list(path.relative_to(root / folder).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join([PACKAGES[folder]] + parts)


def _absolute(node: ast.ImportFrom, module: str, is_package: bool) -> str:
    if not node.level:
        return node.module or ""
    base = module.split(".")
    if not is_package:
        base = base[:-1]  # a module's own package
    base = base[:len(base) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def _private(name: str) -> bool:
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))


def imports(tree: ast.AST, module: str, is_package: bool):
    """``(line, target module, imported name or None)`` of every import in ``tree``; ``from
    leukedge import train`` names the module ``leukedge.train``."""
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for a in node.names:
                yield node.lineno, a.name, None
        elif isinstance(node, ast.ImportFrom):
            target = _absolute(node, module, is_package)
            for a in node.names:
                if layer_of(f"{target}.{a.name}") in STAGES and layer_of(target) == "core":
                    yield node.lineno, f"{target}.{a.name}", None  # from leukedge import train
                else:
                    yield node.lineno, target, a.name


def check_file(path: Path, folder: str, root: Path) -> list[str]:
    """Violations in one source file of ``root/folder`` (a key of :data:`PACKAGES`)."""
    module = _module_name(folder, path, root)
    me = "core" if folder == "core" else folder
    tree = ast.parse(path.read_text(), filename=str(path))
    out = []
    foreign = {}  # local name -> module of another layer bound to it (``import leukedge.x.y as m``)
    for node in ast.walk(tree):
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            base = _absolute(node, module, path.stem == "__init__") if isinstance(node, ast.ImportFrom) else ""
            for a in node.names:
                full = f"{base}.{a.name}" if base else a.name
                if layer_of(full) not in (None, me) and (a.asname or isinstance(node, ast.ImportFrom)):
                    foreign[a.asname or a.name] = full
    for node in ast.walk(tree):
        if (isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id in foreign
                and _private(node.attr)):
            out.append(f"{path.relative_to(root)}:{node.lineno}: private name {node.attr} of "
                       f"{foreign[node.value.id]} used outside {layer_of(foreign[node.value.id])}")
    for line, target, name in imports(tree, module, path.stem == "__init__"):
        layer = layer_of(target)
        if layer is None or layer == me:
            continue
        where = f"{path.relative_to(root)}:{line}"
        if layer not in ALLOWED[me]:
            out.append(f"{where}: {me} may not import {layer} ({target})")
        if name and _private(name):
            out.append(f"{where}: private name {name} of {target} used outside {layer}")
        if any(_private(p) for p in target.split(".")[1:]):
            out.append(f"{where}: private module {target} used outside {layer}")
    return out


def check(root: Path) -> list[str]:
    """Violations in every ``.py`` file of the layer folders under ``root``."""
    root, out = Path(root), []
    for folder in PACKAGES:
        for path in sorted((root / folder).rglob("*.py")):
            out += check_file(path, folder, root)
    return out
