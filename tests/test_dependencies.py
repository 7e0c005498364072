"""Every third-party module halomail imports is a declared dependency of its extra (#12).

The test reads every module of ``src/halomail`` with the AST (imports at the top and
inside functions alike), finds the distribution each imported module comes from, and
checks that ``pyproject.toml`` declares it where that module is installed: in the core
dependencies, or in the extra the module belongs to.
"""

from __future__ import annotations

import ast
import importlib.metadata
import importlib.util
import re
import sys
import tomllib
from collections.abc import Iterator, Mapping
from functools import cache
from pathlib import Path

ROOT = Path(__file__).parent.parent
SRC = ROOT / "src" / "halomail"

#: Which extra installs what each module needs (the first matching prefix wins); every
#: other module may use the core dependencies only.
EXTRAS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("halomail.backends.graph", ("office365",)),
    ("halomail.backends._graph_http", ("office365",)),
    ("halomail.backends._graph_upload", ("office365",)),
    ("halomail.backends.gmail", ("google",)),
    ("halomail.backends._gmail_http", ("google",)),
    ("halomail.backends.ews", ("ews",)),
    ("halomail.backends._ews_client", ("ews",)),
    # OAuth tokens come from msal (Microsoft) or google-auth (Google).
    ("halomail.backends.auth", ("office365", "google")),
    ("halomail.testing", ("testing",)),
    ("halomail.celery", ("celery",)),
    ("halomail.metrics", ("metrics",)),
    ("halomail.tickets._postgres_base", ("postgres",)),
    ("halomail.contrib.django", ("django",)),
)


def _canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _module_name(path: Path) -> str:
    parts = path.relative_to(SRC.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported_modules(path: Path) -> Iterator[tuple[str, int]]:
    """Every absolute module ``path`` imports (at the top or inside functions), with its line."""
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name, node.lineno
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            yield node.module, node.lineno


def is_third_party(module: str) -> bool:
    """True for a module that neither the standard library nor halomail provides."""
    top = module.partition(".")[0]
    return top not in sys.stdlib_module_names and top not in {"halomail", "__future__"}


@cache
def _packages() -> Mapping[str, list[str]]:
    return importlib.metadata.packages_distributions()


def distribution_of(module: str) -> str:
    """The distribution that installs ``module`` (canonical name).

    A top-level name several distributions share (``google``) is resolved by finding
    which of them holds the module's file.
    """
    candidates = sorted({_canonical(d) for d in _packages().get(module.partition(".")[0], [])})
    if len(candidates) == 1:
        return candidates[0]
    spec = importlib.util.find_spec(module)
    assert spec is not None, f"{module} is not installed"
    assert spec.origin is not None, f"{module} has no file"
    origin = Path(spec.origin).resolve()
    for name in candidates:
        dist = importlib.metadata.distribution(name)
        if any(Path(str(dist.locate_file(f))).resolve() == origin for f in dist.files or ()):
            return name
    raise AssertionError(f"no installed distribution holds {module} ({candidates})")


def _requirement_name(requirement: str) -> str:
    match = re.match(r"[A-Za-z0-9][A-Za-z0-9._-]*", requirement)
    assert match is not None, requirement
    return _canonical(match.group(0))


def declared(extras: tuple[str, ...] = ()) -> frozenset[str]:
    """The distributions the core declares, plus those of ``extras`` (self-references expanded)."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    optional: dict[str, list[str]] = project["optional-dependencies"]
    names = {_requirement_name(r) for r in project["dependencies"]}
    pending, seen = list(extras), set()
    while pending:
        extra = pending.pop()
        if extra in seen or extra not in optional:
            continue
        seen.add(extra)
        for requirement in optional[extra]:
            inner = re.fullmatch(r"halomail\[([^\]]+)\]", requirement.replace(" ", ""))
            if inner:
                pending.extend(inner.group(1).split(","))
            else:
                names.add(_requirement_name(requirement))
    return frozenset(names)


def extras_of(module: str) -> tuple[str, ...]:
    """The extras whose installation ``module`` may rely on (none: the core only)."""
    for prefix, extras in EXTRAS:
        if module == prefix or module.startswith(prefix + "."):
            return extras
    return ()


def undeclared_imports() -> list[str]:
    """Every third-party import of src/halomail that its module's extras do not declare."""
    problems = []
    for path in sorted(SRC.rglob("*.py")):
        module = _module_name(path)
        extras = extras_of(module)
        allowed = declared(extras)
        for imported, line in imported_modules(path):
            if not is_third_party(imported):
                continue
            dist = distribution_of(imported)
            if dist not in allowed:
                where = f"[{'|'.join(extras)}]" if extras else "the core dependencies"
                problems.append(f"{module}:{line} imports {imported} ({dist}), not in {where}")
    return problems


def test_every_third_party_import_is_declared_where_its_module_is_installed() -> None:
    """No module of halomail imports a distribution that its extra does not declare."""
    assert undeclared_imports() == []


def test_the_walk_finds_imports_inside_functions_and_resolves_shared_namespaces(
    tmp_path: Path,
) -> None:
    """The check sees a function-level import and tells google-auth from google-api-core."""
    module = tmp_path / "example.py"
    module.write_text(
        "import os\n"
        "from halomail import parse_email\n"
        "def token():\n"
        "    from google.auth import exceptions\n"
        "    import requests.adapters\n"
    )
    found = [name for name, _line in imported_modules(module) if is_third_party(name)]
    assert found == ["google.auth", "requests.adapters"]
    assert [distribution_of(name) for name in found] == ["google-auth", "requests"]
    assert distribution_of("googleapiclient.discovery") == "google-api-python-client"


def test_an_undeclared_distribution_is_reported() -> None:
    """A distribution that only an extra declares is not available to the core."""
    assert "msal" in declared(("office365",))
    assert "msal" not in declared()
    assert "exchangelib" in declared(("all",))
    assert extras_of("halomail.backends.ews") == ("ews",)
    assert extras_of("halomail.runner") == ()


def test_exchangelib_has_an_upper_bound_the_installed_version_meets() -> None:
    """The EWS backend overrides exchangelib internals, so its next major version is excluded."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    (requirement,) = [
        r for r in project["optional-dependencies"]["ews"] if _requirement_name(r) == "exchangelib"
    ]
    assert "<6" in requirement.replace(" ", "")
    assert int(importlib.metadata.version("exchangelib").split(".")[0]) < 6
