"""The import layers: the import-linter contracts of pyproject.toml hold.

`[tool.importlinter]` in pyproject.toml lists the layers from the command line down to the
value objects, the order inside `rememr1.agent`, and forbids import circles in every
package. This test runs those contracts the way `lint-imports` does (imports inside
functions and under TYPE_CHECKING count) and, if one is broken, fails with import-linter's
report: which module imports which, and on which line.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

try:
    import tomllib
except ImportError:  # Python 3.10
    import tomli as tomllib

ROOT = Path(__file__).resolve().parents[1]
PYPROJECT = ROOT / "pyproject.toml"


def contracts() -> list[dict]:
    return tomllib.loads(PYPROJECT.read_text(encoding="utf-8"))["tool"]["importlinter"]["contracts"]


def test_the_contracts_cover_layers_and_cycles():
    """The contracts the layering rests on are declared: a layers contract over every
    top-level module of rememr1 (exhaustive), one inside the agent, and no cycles."""
    by_id = {c["id"]: c for c in contracts()}
    assert by_id["layers"]["type"] == "layers" and by_id["layers"]["containers"] == ["rememr1"]
    assert by_id["layers"]["exhaustive"] is True
    assert by_id["layers"]["layers"][0] == "cli"
    assert by_id["agent-layers"]["containers"] == ["rememr1.agent"]
    assert by_id["no-cycles"]["type"] == "acyclic_siblings" and by_id["no-cycles"]["ancestors"] == ["rememr1"]


def lint(config: Path) -> tuple[int, str]:
    """`lint-imports` over one config file: its exit status and its report."""
    proc = subprocess.run(
        [sys.executable, "-c", "import sys; from importlinter.cli import lint_imports_command; "
                               "sys.exit(lint_imports_command())",
         str(config), "--no-cache"],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
    )
    report = proc.stdout + proc.stderr
    return proc.returncode, report[max(report.find("Contracts"), 0):]  # after the logo


def test_import_contracts_are_kept():
    """`lint-imports` over pyproject.toml: every contract kept."""
    status, report = lint(PYPROJECT)
    assert status == 0, "import contracts broken:\n" + report
    assert "0 broken" in report


def test_an_upward_import_is_reported(tmp_path):
    """The check bites: with the viewer placed under evaluation, the viewer's imports of
    the report are upward imports, and the report names them."""
    text = PYPROJECT.read_text(encoding="utf-8")
    assert text.count('    "viewer",\n    "eval",\n') == 1
    inverted = tmp_path / "pyproject.toml"
    inverted.write_text(text.replace('    "viewer",\n    "eval",\n', '    "eval",\n    "viewer",\n'))
    status, report = lint(inverted)
    assert status != 0
    assert "rememr1.viewer is not allowed to import rememr1.eval" in report
