"""Imports point one way (docs/DESIGN.md §2): checked on the source with ast."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

# physical folder or file -> first-party modules it may import ("x.*" = x and below)
ALLOWED: dict[str, tuple[str, ...]] = {
    "monoq/core": ("monoq.core.*", "monoq.errors"),
    "monoq/errors.py": (),
    "backends": ("monoq.core.*", "monoq.errors", "monoq.backends.*"),
    # the public API, and a plugin's own modules (the http kind's transport loads lazily)
    "plugins": ("monoq", "monoq.errors", "monoq.plugins.*"),
    "monoq/api": ("monoq.core.*", "monoq.errors", "monoq.client", "monoq.registry",
                  "monoq.config", "monoq.api.*", "monoq.metrics", "monoq.ui.*", "monoq.tracing"),
    "monoq/ui": ("monoq.core.*", "monoq.errors", "monoq.client", "monoq.registry",
                 "monoq.config", "monoq.api.*", "monoq.ui.*"),
    "monoq/client.py": ("monoq.core.*", "monoq.errors", "monoq.registry", "monoq.config",
                        "monoq.tracing"),
    "monoq/tracing.py": ("monoq.core.*", "monoq.errors", "monoq.config"),
    "monoq/worker.py": ("monoq.core.*", "monoq.errors", "monoq.client", "monoq.registry",
                        "monoq.metrics", "monoq.plugin", "monoq.context", "monoq.isolation",
                        "monoq.stacks", "monoq.tracing"),
    "monoq/isolation.py": ("monoq.core.*", "monoq.errors", "monoq.context", "monoq.registry"),
    "monoq/stacks.py": ("monoq.core.*",),
    "monoq/context.py": ("monoq.core.*", "monoq.errors", "monoq.plugin"),
    "monoq/plugin.py": ("monoq.errors",),
    # the generic settings engine knows nothing of monoq's sections (monoq.config)
    "monoq/configspec.py": ("monoq.core.*", "monoq.errors"),
    "monoq/testing": ("monoq.core.*", "monoq.errors", "monoq.testing.*"),
    "monoq/scheduler.py": ("monoq.core.*", "monoq.errors", "monoq.client", "monoq.metrics"),
}


def _first_party_imports(path: Path) -> list[str]:
    names: list[str] = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            # `from monoq import metrics` imports the module monoq.metrics
            package = ROOT / Path(*node.module.split("."))
            for alias in node.names:
                sub = package / alias.name
                is_module = sub.is_dir() or sub.with_suffix(".py").is_file()
                names.append(f"{node.module}.{alias.name}" if is_module else node.module)
    return [n for n in names if n.split(".")[0] in ("monoq", "backends", "plugins")]


def _is_allowed(name: str, allowed: tuple[str, ...]) -> bool:
    for rule in allowed:
        if rule.endswith(".*"):
            base = rule[:-2]
            if name == base or name.startswith(base + "."):
                return True
        elif name == rule:
            return True
    return False


@pytest.mark.parametrize("where", sorted(ALLOWED))
def test_imports_follow_layering(where: str) -> None:
    target = ROOT / where
    paths = [target] if target.is_file() else sorted(target.rglob("*.py"))
    assert paths, f"nothing to check under {where}"
    for path in paths:
        for name in _first_party_imports(path):
            assert _is_allowed(name, ALLOWED[where]), f"{path.relative_to(ROOT)} imports {name}"


def test_the_checker_catches_a_bad_import(tmp_path: Path) -> None:
    bad = tmp_path / "bad.py"
    bad.write_text("import monoq.worker\nfrom backends import memory\n")
    names = _first_party_imports(bad)
    assert names == ["monoq.worker", "backends.memory"]
    assert not _is_allowed("monoq.worker", ALLOWED["plugins"])
    assert not _is_allowed("backends.memory", ALLOWED["backends"])
    assert not _is_allowed("monoq.worker", ALLOWED["backends"])


def test_importing_monoq_in_a_handler_package_stays_light() -> None:
    """A handler module's ``import monoq`` (for ``@monoq.handler`` and ``monoq.Context``) does
    not bring in the worker, the HTTP server or the Prometheus client."""
    code = ("import sys, monoq; monoq.Context; "
            "print(sorted(m for m in ('monoq.worker', 'monoq.metrics', 'prometheus_client', "
            "'litestar', 'uvicorn', 'redis') if m in sys.modules))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          check=True, cwd=ROOT)
    assert done.stdout.strip() == "[]"
