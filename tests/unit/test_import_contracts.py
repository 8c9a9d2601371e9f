"""The package layering of pyproject.toml (import-linter contracts) holds: the clinical core stays pure."""

from __future__ import annotations

import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import grimp

REPO = Path(__file__).resolve().parents[2]
FORBIDDEN_IN_CORE = (
    "pydicom",
    "pynetdicom",
    "highdicom",
    "sqlalchemy",
    "alembic",
    "socket",
    "http",
    "urllib",
)


def _lint_imports() -> str:
    local = Path(sys.executable).with_name("lint-imports")
    return str(local) if local.exists() else (shutil.which("lint-imports") or "lint-imports")


def _contract_packages() -> set[str]:
    config = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))
    names: set[str] = set()
    for contract in config["tool"]["importlinter"]["contracts"]:
        for key in ("source_modules", "forbidden_modules", "layers"):
            for entry in contract.get(key, []):
                names.update(part.strip(" ()") for part in entry.split("|"))
    return {n for n in names if n.startswith("agent.")}


def _exists(module: str) -> bool:
    path = REPO / module.replace(".", "/")
    return (path / "__init__.py").exists() or path.with_suffix(".py").exists()


def test_import_contracts_are_kept() -> None:
    missing = sorted(n for n in _contract_packages() if not _exists(n))
    assert not missing, f"packages named in the contracts do not exist: {', '.join(missing)}"
    proc = subprocess.run(
        [_lint_imports(), "--no-cache"], cwd=REPO, capture_output=True, text=True, timeout=120, check=False
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "The clinical core is pure" in proc.stdout


def test_the_clinical_core_imports_nothing_but_itself_and_the_standard_library() -> None:
    graph = grimp.build_graph("agent", include_external_packages=True, cache_dir=None)
    core = {m for m in graph.modules if m == "agent.response" or m.startswith("agent.response.")}
    assert "agent.response.recist" in core
    for module in core:
        for imported in graph.find_modules_directly_imported_by(module):
            if imported.startswith("agent."):
                assert imported.startswith("agent.response"), f"{module} imports {imported}"
            else:
                assert imported.split(".")[0] not in FORBIDDEN_IN_CORE, f"{module} imports {imported}"
