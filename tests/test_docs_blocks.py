"""Every fenced block of README.md and docs/*.md runs as written (#17).

The convention (documented in docs/development.md, "Docs that run"):

* Each document's blocks run in order, in a fresh copy of the folder ``halomail
  quickstart`` makes (``halomail.toml``, the Maildir ``inbox/``, ``outbox/``,
  ``halomail.db`` with its tickets), with that folder on ``PYTHONPATH`` and every
  variable a ``*_env = "NAME"`` key of the document names set to a placeholder.
* ``python``: run as a script with warnings as errors; it must exit 0. A block whose
  first line is a comment naming a file (``# myapp/helpdesk.py``) is that file: it is
  written there before the document's blocks run, and imported by the others.
* ``toml``: a block with ``[[mailboxes]]`` is a whole ``halomail.toml``; any other is
  a fragment whose top-level tables replace the quick start's. Either way the real
  ``halomail check-config`` must accept it. A fragment then stays in ``halomail.toml``
  for the document's later blocks, as it would in a reader's.
* ``sh``: the block is a shell script, run by ``sh -e`` with the installed ``halomail``
  first on ``PATH``. ``console``: its ``$ `` lines are that script (the rest is output).
* ``json``: sample output; it must be valid JSON (one document, or one per line).
* ``text`` and unlabelled blocks are pictures and sample output: shown, never run.
* ``<!-- not-run: reason -->`` on the line before a block skips it: the reason is
  required, and there may be at most :data:`MAX_NOT_RUN` of them. Any other language
  needs that marker.
* A document whose blocks a test of its own runs is listed in :data:`ELSEWHERE` and
  skipped here; that test must exist and read the document.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tomllib
from collections.abc import Mapping
from pathlib import Path

import attrs
import pytest

ROOT = Path(__file__).parent.parent
DOCUMENTS = (ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md")))
BIN = Path(sys.executable).parent

#: Documents a test of their own runs block by block: document → that test module.
ELSEWHERE: Mapping[str, str] = {
    "README.md": "test_readme.py",
    "docs/cli.md": "test_docs_cli.py",
    "docs/mailboxes.md": "test_docs_mailboxes.py",
    "docs/metrics.md": "test_docs_metrics.py",
    "docs/performance.md": "test_bench_real_mail.py",
    "docs/postgresql.md": "test_postgres_docs.py",
    "docs/repository.md": "test_repository_docs.py",
    "docs/rules.md": "test_docs_rules.py",
    "docs/scaling.md": "test_celery_docs.py",
    "docs/sqlalchemy.md": "test_example_sqlalchemy_fastapi.py",
}
#: The most blocks that may be marked ``<!-- not-run: … -->`` in all the documents.
MAX_NOT_RUN = 8
#: Languages that are shown, never run: pictures and sample output.
SHOWN = frozenset({"", "text"})
RUN = frozenset({"python", "toml", "sh", "console", "json"})

# A fence opens a line with ``` and a language word (or none), and a line of ``` closes it.
_FENCE = re.compile(r"^```[ \t]*([\w+-]*)[^\n]*\n(.*?)^```[ \t]*$", re.MULTILINE | re.DOTALL)
_NOT_RUN = re.compile(r"<!--\s*not-run:\s*(.*?)\s*-->\s*\Z", re.DOTALL)
_FILE_COMMENT = re.compile(r"\A#\s*([\w./-]+\.py)\s*\n")
# Splits TOML before each table header line, keeping the header with its section.
_SECTION = re.compile(r"^(?=\[)", re.MULTILINE)
_ENV_NAMES = re.compile(r'^\s*#?\s*\w+_env\s*=\s*"([A-Z][A-Z0-9_]*)"', re.MULTILINE)


@attrs.frozen
class Block:
    """One fenced block: where it is, its language, its text, and why it is not run."""

    document: str
    line: int
    language: str
    text: str
    not_run: str | None

    @property
    def where(self) -> str:
        """``docs/x.md:12``, for failure messages and test ids."""
        return f"{self.document}:{self.line}"


def blocks_of(path: Path) -> list[Block]:
    """The fenced blocks of the document at ``path``, in order."""
    return blocks_in(path.read_text(encoding="utf-8"), path.relative_to(ROOT).as_posix())


def blocks_in(source: str, document: str) -> list[Block]:
    """The fenced blocks of ``source``, the text of ``document``, in order."""
    found = []
    for match in _FENCE.finditer(source):
        before = source[: match.start()].rstrip("\n")
        marker = _NOT_RUN.search(before[-300:])
        reason = marker.group(1) if marker else None
        found.append(
            Block(
                document=document,
                line=source.count("\n", 0, match.start()) + 1,
                language=match.group(1).lower(),
                text=match.group(2),
                not_run=reason,
            )
        )
    return found


ALL_BLOCKS = [block for path in DOCUMENTS for block in blocks_of(path)]
RUN_HERE = [path for path in DOCUMENTS if path.relative_to(ROOT).as_posix() not in ELSEWHERE]


# -- the folder the blocks run in ----------------------------------------------------------


@pytest.fixture(scope="module")
def quickstart(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The folder ``halomail quickstart`` makes, made once for the module."""
    home = tmp_path_factory.mktemp("quickstart")
    made = subprocess.run(
        [str(BIN / "halomail"), "quickstart"],
        cwd=home,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert made.returncode == 0, made.stderr
    return home / "halomail-quickstart"


def _environment(folder: Path, blocks: list[Block]) -> dict[str, str]:
    """The environment a document's blocks run with (see the module's docstring)."""
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}"}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(folder), env.get("PYTHONPATH")]))
    env["PYTHONWARNINGS"] = "error"
    for block in blocks:
        for name in _ENV_NAMES.findall(block.text):
            env.setdefault(name, "docs-placeholder-secret")
    return env


def _run(argv: list[str], folder: Path, env: dict[str, str], stdin: str | None = None) -> str:
    """Run ``argv`` in ``folder``; the failure message when it does not exit 0, else ''."""
    done = subprocess.run(
        argv,
        cwd=folder,
        env=env,
        input=stdin,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    if done.returncode == 0:
        return ""
    return f"exit {done.returncode}\n{done.stdout[-2000:]}\n{done.stderr[-2000:]}"


def _merged(base: str, fragment: str) -> str:
    """The quick start's configuration with the fragment's top-level tables put in instead."""
    replaced = set(tomllib.loads(fragment))
    kept = [section for section in _SECTION.split(base) if _top_key(section) not in replaced]
    return "".join(kept).rstrip("\n") + "\n\n" + fragment


def _top_key(section: str) -> str | None:
    """The top-level key a ``[table]`` or ``[[array]]`` section of TOML belongs to."""
    header = re.match(r"\[\[?\s*([\w-]+)", section)
    return header.group(1) if header else None


def _run_block(block: Block, folder: Path, env: dict[str, str]) -> str:
    """Run one block by its language; the failure message, or '' when it worked."""
    if block.language == "python":
        return _run([sys.executable, "-"], folder, env, stdin=block.text)
    if block.language == "toml":
        data = tomllib.loads(block.text)
        config = folder / "docs-block.toml"
        if "mailboxes" in data:
            config.write_text(block.text, encoding="utf-8")
            return _run(["halomail", "-c", str(config), "check-config"], folder, env)
        base = (folder / "halomail.toml").read_text(encoding="utf-8")
        config.write_text(_merged(base, block.text), encoding="utf-8")
        failure = _run(["halomail", "-c", str(config), "check-config"], folder, env)
        if not failure:  # as a reader would: the fragment is now part of their halomail.toml
            shutil.copyfile(config, folder / "halomail.toml")
        return failure
    if block.language == "json":  # sample output: one JSON document, or one per line
        try:
            json.loads(block.text)
        except ValueError:
            try:
                for line in filter(None, block.text.splitlines()):
                    json.loads(line)
            except ValueError as exc:
                return f"not JSON: {exc}"
        return ""
    if block.language == "sh":
        return _run(["sh", "-e"], folder, env, stdin=block.text)
    assert block.language == "console"
    script = "\n".join(line[2:] for line in block.text.splitlines() if line.startswith("$ "))
    return _run(["sh", "-e"], folder, env, stdin=script)


@pytest.fixture
def folder(quickstart: Path, tmp_path: Path) -> Path:
    """A fresh copy of the quick start's folder for one document."""
    copy = tmp_path / "halomail-quickstart"
    shutil.copytree(quickstart, copy)
    return copy


# -- the tests -------------------------------------------------------------------------------


@pytest.mark.parametrize("path", RUN_HERE, ids=lambda path: path.relative_to(ROOT).as_posix())
def test_every_block_of_the_document_runs_as_written(path: Path, folder: Path) -> None:
    """Each block of the document, in order, runs by its language in the quick start's folder."""
    blocks = blocks_of(path)
    env = _environment(folder, blocks)
    runnable = [b for b in blocks if b.not_run is None and b.language not in SHOWN]
    for block in runnable:  # files first: the other blocks import them
        named = _FILE_COMMENT.match(block.text) if block.language == "python" else None
        if named:
            target = folder / named.group(1)
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(block.text, encoding="utf-8")
            (target.parent / "__init__.py").touch()
    failures = []
    for block in runnable:
        assert block.language in RUN, (
            f"{block.where}: a {block.language!r} block cannot be run here: "
            "mark it <!-- not-run: reason --> or label it text"
        )
        problem = _run_block(block, folder, env)
        if problem:
            failures.append(f"{block.where} ({block.language}): {problem}")
    assert not failures, "\n\n".join(failures)


def test_few_blocks_are_marked_not_run_and_each_says_why() -> None:
    """At most MAX_NOT_RUN blocks are skipped, each with its reason."""
    marked = [block for block in ALL_BLOCKS if block.not_run is not None]
    assert all(block.not_run for block in marked), [b.where for b in marked if not b.not_run]
    assert len(marked) <= MAX_NOT_RUN, "\n".join(f"{b.where}: {b.not_run}" for b in marked)


def test_documents_run_elsewhere_have_a_test_that_reads_them() -> None:
    """Each document of ELSEWHERE exists, and the test named for it reads it."""
    for document, module in ELSEWHERE.items():
        assert (ROOT / document).is_file(), document
        test = (ROOT / "tests" / module).read_text(encoding="utf-8")
        assert Path(document).name in test, f"tests/{module} does not read {document}"


def test_the_block_finder_sees_languages_markers_and_lines() -> None:
    """The parser finds each block's language, line and not-run reason, and nothing else."""
    sample = (
        "# T\n\n```toml\n[a]\n```\n\n<!-- not-run: needs a phone -->\n```sh\ncall\n```\n\n"
        "```\nplain\n```\n"
    )
    found = blocks_in(sample, "sample.md")
    assert [(b.where, b.language, b.text, b.not_run) for b in found] == [
        ("sample.md:3", "toml", "[a]\n", None),
        ("sample.md:8", "sh", "call\n", "needs a phone"),
        ("sample.md:12", "", "plain\n", None),
    ]


def test_a_fragment_merges_into_the_quick_starts_configuration() -> None:
    """A fragment's tables replace the quick start's; the rest stays as written."""
    base = '# top\n[storage]\nurl = "sqlite:///a.db"\n\n[[mailboxes]]\nname = "Support"\n'
    fragment = '[storage]\nrepository = "m:f"\n[processing]\nspam = "ticket"\n'
    assert tomllib.loads(_merged(base, fragment)) == {
        "storage": {"repository": "m:f"},
        "mailboxes": [{"name": "Support"}],
        "processing": {"spam": "ticket"},
    }


def test_no_document_promises_for_later_what_is_already_here() -> None:
    """No document says a shipped feature comes "in a later release" or is "coming"."""
    promises = re.compile(r"\ba later release\b|\(coming\)|\bcoming soon\b", re.IGNORECASE)
    found = [
        f"{path.relative_to(ROOT)}:{number}: {line.strip()}"
        for path in DOCUMENTS
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1)
        if promises.search(line)
    ]
    assert found == []
