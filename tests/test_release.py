"""The release a user installs: the wheel and sdist build, pass `twine check`, and work.

One module-scoped build (``python -m build`` without isolation, so it needs no network)
makes the sdist and, from it, the wheel; the tests read both archives as a user's
tools would, then install the wheel into a fresh virtual environment (no system site
packages, halomail's dependencies from a wheelhouse pinned to this environment's
versions, ``--no-index``) and run ``halomail quickstart`` from it.
"""

from __future__ import annotations

import contextlib
import email
import email.policy
import importlib.metadata
import os
import re
import sqlite3
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import pytest

from halomail import __version__

ROOT = Path(__file__).parent.parent
SRC = ROOT / "src" / "halomail"
VERSION = "0.1.0"

pytestmark = pytest.mark.slow


def run(command: list[str], *, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    """Run a command with a clean environment; fail with its output when it fails."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    result = subprocess.run(
        command, cwd=cwd, env=env, capture_output=True, text=True, timeout=600, check=False
    )
    assert result.returncode == 0, f"{command}:\n{result.stdout}\n{result.stderr}"
    return result


@pytest.fixture(scope="module")
def dist(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The sdist and the wheel built from it, in a folder of their own."""
    out = tmp_path_factory.mktemp("dist")
    run([sys.executable, "-m", "build", "--no-isolation", "--outdir", str(out), str(ROOT)])
    return out


def the_sdist(dist: Path) -> Path:
    """The one source archive of the build."""
    (sdist,) = dist.glob("halomail-*.tar.gz")
    return sdist


def the_wheel(dist: Path) -> Path:
    """The one wheel of the build."""
    (wheel,) = dist.glob("halomail-*.whl")
    return wheel


def test_the_version_is_the_release() -> None:
    """halomail.__version__ is 0.1.0, the version the archives carry."""
    assert __version__ == VERSION


def test_the_changelog_describes_this_release() -> None:
    """CHANGELOG.md's newest release is this version, dated, under an Unreleased section."""
    text = (ROOT / "CHANGELOG.md").read_text(encoding="utf-8")
    headings = re.findall(r"^## \[([^\]]+)\](?: - (\d{4}-\d{2}-\d{2}))?$", text, re.MULTILINE)
    assert headings[0] == ("Unreleased", "")
    assert headings[1][0] == VERSION
    assert headings[1][1], "the release heading carries its date"
    release = text.split(f"## [{VERSION}]", 1)[1].split("\n## [", 1)[0]
    assert "### Added" in release
    assert f"[{VERSION}]: " in text, "the heading's link is defined at the end"


def test_both_archives_are_named_for_the_version(dist: Path) -> None:
    """The build makes halomail-0.1.0.tar.gz and a pure-Python halomail-0.1.0 wheel."""
    assert the_sdist(dist).name == f"halomail-{VERSION}.tar.gz"
    assert the_wheel(dist).name == f"halomail-{VERSION}-py3-none-any.whl"


def test_twine_check_strict_passes_on_both(dist: Path) -> None:
    """`twine check --strict` (what PyPI would refuse) passes on the sdist and the wheel."""
    result = run(
        [sys.executable, "-m", "twine", "check", "--strict", *map(str, sorted(dist.iterdir()))]
    )
    assert result.stdout.count("PASSED") == 2, result.stdout


def test_the_metadata_names_the_project_home_classifiers_and_license(dist: Path) -> None:
    """The wheel's METADATA has the version, the project URLs, the classifiers, the license."""
    with zipfile.ZipFile(the_wheel(dist)) as wheel:
        raw = wheel.read(f"halomail-{VERSION}.dist-info/METADATA")
    metadata = email.message_from_bytes(raw, policy=email.policy.compat32)
    assert metadata["Version"] == VERSION
    assert metadata["Requires-Python"] == ">=3.11"
    urls = dict(url.split(", ", 1) for url in metadata.get_all("Project-URL", []))
    assert urls["Homepage"] == "https://github.com/halomail/halomail"
    assert urls["Documentation"] == "https://halomail.github.io/halomail/"
    assert {"Source", "Changelog", "Issues"} <= set(urls)
    classifiers = set(metadata.get_all("Classifier", []))
    for version in ("3.11", "3.12", "3.13"):
        assert f"Programming Language :: Python :: {version}" in classifiers
    assert "Typing :: Typed" in classifiers
    assert "Operating System :: OS Independent" in classifiers
    assert any(c.startswith("Topic :: Communications :: Email") for c in classifiers)
    assert metadata["License-Expression"] == "MIT"
    assert "LICENSE" in (metadata.get_all("License-File") or [])
    assert "# halomail" in str(metadata.get_payload())  # the README is the description


def test_the_sdist_holds_what_a_user_needs_and_no_caches(dist: Path) -> None:
    """The sdist has the license, README, CHANGELOG, py.typed and data files; no caches."""
    prefix = f"halomail-{VERSION}/"
    with tarfile.open(the_sdist(dist)) as sdist:
        names = {name.removeprefix(prefix) for name in sdist.getnames()}
    for needed in ("LICENSE", "README.md", "CHANGELOG.md", "pyproject.toml", "PKG-INFO"):
        assert needed in names
    for path in package_data_files():
        assert f"src/halomail/{path}" in names, path
    assert "src/halomail/__init__.py" in names
    # A user can run the suite from the sdist, as CI does (README's quick start).
    assert {"tests/test_release.py", "scripts/test", ".ci/run"} <= names
    assert "docs/repository.md" in names
    assert "examples/sqlalchemy_fastapi/repository.py" in names
    if (ROOT / "mkdocs.yml").is_file():  # the docs site builds from the sdist too
        assert "mkdocs.yml" in names
    assert not [n for n in names if "__pycache__" in n or n.endswith(".pyc")]
    assert not [n for n in names if n.startswith((".venv", ".git/", "dist/"))]


def test_the_wheel_holds_the_package_its_data_and_no_tests(dist: Path) -> None:
    """The wheel has halomail with py.typed and its data files; no tests, caches or examples."""
    with zipfile.ZipFile(the_wheel(dist)) as wheel:
        names = set(wheel.namelist())
    for path in package_data_files():
        assert f"halomail/{path}" in names, path
    assert "halomail/cli.py" in names
    assert f"halomail-{VERSION}.dist-info/licenses/LICENSE" in names
    tops = {name.split("/")[0] for name in names}
    assert tops == {"halomail", f"halomail-{VERSION}.dist-info"}
    assert not [n for n in names if "__pycache__" in n or n.endswith(".pyc")]


def package_data_files() -> list[str]:
    """The non-Python files of the package a user needs: py.typed, the quickstart's emails,
    and the Django app's templates and static files when that app is present."""
    files = ["py.typed"]
    files += [f"_quickstart/{p.name}" for p in sorted((SRC / "_quickstart").glob("*.eml"))]
    django = SRC / "contrib" / "django"
    for folder in ("templates", "static"):
        if (django / folder).is_dir():
            files += [
                p.relative_to(SRC).as_posix()
                for p in sorted((django / folder).rglob("*"))
                if p.is_file() and "__pycache__" not in p.parts
            ]
    assert len(files) >= 6  # py.typed and the five quickstart emails at least
    return files


def test_the_wheel_installs_into_a_fresh_venv_and_quickstart_makes_tickets(
    dist: Path, tmp_path: Path
) -> None:
    """In a fresh venv the wheel installs offline, and `halomail quickstart` makes tickets."""
    wheelhouse = tmp_path / "wheelhouse"
    constraints = tmp_path / "constraints.txt"
    constraints.write_text("".join(f"{name}=={version}\n" for name, version in runtime_pins()))
    # The wheels of halomail's dependencies, at the versions this suite runs with (from
    # pip's cache or an index), so that the install below needs no network.
    run(
        [
            sys.executable, "-m", "pip", "wheel", "--quiet", "--wheel-dir", str(wheelhouse),
            "--constraint", str(constraints), str(the_wheel(dist)),
        ]
    )  # fmt: skip
    venv = tmp_path / "venv"
    run([sys.executable, "-m", "venv", str(venv)])
    python = venv / "bin" / "python"
    run(
        [
            str(python), "-m", "pip", "install", "--quiet", "--no-index",
            "--find-links", str(wheelhouse), "halomail",
        ]
    )  # fmt: skip
    where = run([str(python), "-c", "import halomail; print(halomail.__file__)"], cwd=tmp_path)
    assert Path(where.stdout.strip()).is_relative_to(venv), where.stdout
    assert run([str(venv / "bin" / "halomail"), "--version"]).stdout.strip() == (
        f"halomail {VERSION}"
    )

    quickstart = run([str(venv / "bin" / "halomail"), "quickstart", "qs"], cwd=tmp_path)
    assert "Printer on the 3rd floor is jamming" in quickstart.stdout
    assert "2 acknowledgements written" in quickstart.stdout
    with contextlib.closing(sqlite3.connect(tmp_path / "qs" / "halomail.db")) as database:
        summaries = [row[0] for row in database.execute("SELECT summary FROM tickets")]
    assert "Printer on the 3rd floor is jamming" in summaries
    assert len(summaries) == 4


def runtime_pins() -> list[tuple[str, str]]:
    """Each of halomail's core dependencies with the version installed here."""
    requirements = [r for r in importlib.metadata.requires("halomail") or [] if "extra ==" not in r]
    names = [re.split(r"[<>=!~\[; ]", r, maxsplit=1)[0] for r in requirements]
    assert "attrs" in names
    return [(name, importlib.metadata.version(name)) for name in names]
