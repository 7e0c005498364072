"""The layout shows the layers, and stays that way (#12, design.md §2).

The import contracts in ``pyproject.toml`` (``[tool.importlinter]``) say which layer may
import which; import-linter checks them here, so a test fails the moment an import points
up the layers or closes a cycle. Modules also stay small enough to read.
"""

from __future__ import annotations

import importlib.util
import os
import re
import shlex
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).parent.parent
SRC = ROOT / "src" / "halomail"
DOCS = ROOT / "docs"
LINT_IMPORTS = Path(sys.executable).parent / "lint-imports"

#: The longest a module may grow before it should be split by job.
MAX_LINES = 800


def documented_command() -> list[str]:
    """The import check as docs/development.md tells developers to run it."""
    text = (DOCS / "development.md").read_text()
    (command,) = re.findall(r"^lint-imports.*$", text, re.MULTILINE)
    return shlex.split(command)


def lint_imports(cwd: Path, *, pythonpath: Path | None = None) -> subprocess.CompletedProcess[str]:
    """Run the documented ``lint-imports`` command on the pyproject.toml in ``cwd``."""
    env = dict(os.environ)
    if pythonpath is not None:
        env["PYTHONPATH"] = str(pythonpath)
    _program, *arguments = documented_command()
    return subprocess.run(
        [str(LINT_IMPORTS), *arguments, "--no-logo"],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        check=False,
        timeout=240,
    )


def test_the_import_contracts_are_kept() -> None:
    """Every import points down the layers of design.md §2 and no imports form a cycle."""
    result = lint_imports(ROOT)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Contracts: 2 kept, 0 broken." in result.stdout
    assert not (ROOT / ".import_linter_cache").exists()


def test_an_import_up_the_layers_breaks_the_contracts(tmp_path: Path) -> None:
    """A parser module importing the runner breaks the layers and closes a cycle."""
    shutil.copytree(
        SRC, tmp_path / "src" / "halomail", ignore=shutil.ignore_patterns("__pycache__")
    )
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    models = tmp_path / "src" / "halomail" / "inbound" / "models.py"
    models.write_text(models.read_text() + "\nfrom halomail.runner import MailProcessor\n")
    result = lint_imports(tmp_path, pythonpath=tmp_path / "src")
    assert result.returncode == 1, result.stdout + result.stderr
    assert "halomail.inbound is not allowed to import halomail.runner" in result.stdout
    assert "Contracts: 0 kept, 2 broken." in result.stdout


def _line_counts() -> dict[str, int]:
    return {
        path.relative_to(SRC).as_posix(): len(path.read_text().splitlines())
        for path in sorted(SRC.rglob("*.py"))
    }


def test_no_module_is_over_800_lines() -> None:
    """Modules stay readable: none over 800 lines (split a module by job before it grows)."""
    too_long = {name: lines for name, lines in _line_counts().items() if lines > MAX_LINES}
    assert too_long == {}


def _contract_layers() -> list[str]:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["importlinter"]
    (layers,) = [c for c in config["contracts"] if c["type"] == "layers"]
    return [layer.replace("(", "").replace(")", "") for layer in layers["layers"]]


def test_the_architecture_doc_shows_the_contracts_layers() -> None:
    """docs/architecture.md lists exactly the layers of the contract, top to bottom."""
    text = (DOCS / "architecture.md").read_text()
    (block,) = re.findall(r"```text\n(.*?)```", text, re.DOTALL)
    assert block.splitlines() == _contract_layers()


def test_every_module_the_architecture_doc_names_exists() -> None:
    """Each `halomail.x` or `x.y` module named in docs/architecture.md is real (or pending)."""
    text = (DOCS / "architecture.md").read_text()
    layers = {name.strip() for line in _contract_layers() for name in line.split("|")}
    short = {layer.removeprefix("halomail.") for layer in layers}
    named = set(re.findall(r"`(halomail(?:\.[a-z0-9_]+)+)`", text))
    named |= {
        f"halomail.{name}"
        for name in re.findall(r"`([a-z0-9_]+\.[a-z0-9_]+)`", text)
        if name.partition(".")[0] in short
    }
    named.discard("halomail.toml")  # the configuration file, not a module
    assert len(named) > 30
    missing = {module for module in named if importlib.util.find_spec(module) is None}
    assert missing == set()
