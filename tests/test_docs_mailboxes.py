"""docs/mailboxes.md: every configuration and Python block works as written (#12).

Each ``toml`` block is loaded by the real configuration loader and every backend it
names is built (as ``halomail check-config`` does, without connecting), in a folder where
the files it names exist and with the environment variables it names set. Fragments (a
few keys for a Google mailbox) are tried inside the Google block they belong to. Each
``python`` block is run as it is, beside a service-account key file.
"""

from __future__ import annotations

import json
import re
import tomllib
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from halomail.app import check_config
from halomail.config.loader import parse_config

DOC = Path(__file__).parent.parent / "docs" / "mailboxes.md"
BLOCKS = re.findall(r"^```(\w+)\n(.*?)^```", DOC.read_text(), re.MULTILINE | re.DOTALL)
TOML = [body for language, body in BLOCKS if language == "toml"]
PYTHON = [body for language, body in BLOCKS if language == "python"]

#: Keys whose value is a file halomail reads, and keys that name a folder.
FILE_KEYS = frozenset({"credentials_file", "tls_ca_file", "certificate_file"})
FOLDER_KEYS = frozenset({"path"})


@pytest.fixture(scope="module")
def service_account_json() -> str:
    """A well-formed service-account key file's content (its key is real, never used)."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    private = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    return json.dumps(
        {
            "type": "service_account",
            "project_id": "helpdesk",
            "private_key_id": "1",
            "private_key": private.decode(),
            "client_email": "halomail@helpdesk.iam.gserviceaccount.com",
            "client_id": "1",
            "token_uri": "https://oauth2.googleapis.com/token",
        }
    )


def _tables(data: dict[str, Any]) -> list[dict[str, Any]]:
    return [*data.get("mailboxes", []), *([data["outgoing"]] if "outgoing" in data else [])]


def _prepare(data: dict[str, Any], folder: Path, service_account: str) -> dict[str, str]:
    """Create the files and folders ``data`` names under ``folder``; return its env vars."""
    env: dict[str, str] = {}
    for table in _tables(data):
        for key, value in table.items():
            if key.endswith("_env"):
                env[value] = f"value-of-{value.lower()}"
            elif key in FOLDER_KEYS:
                for sub in ("cur", "new", "tmp"):
                    (folder / value / sub).mkdir(parents=True, exist_ok=True)
            elif key in FILE_KEYS:
                path = folder / value
                path.write_text(service_account if key == "credentials_file" else "")
            elif key == "seen_file":
                (folder / value).parent.mkdir(parents=True, exist_ok=True)
    return env


def _google_block() -> str:
    (block,) = [b for b in TOML if 'connection = "google"' in b]
    return block


def _as_configurations() -> list[tuple[str, str]]:
    """Each block as a whole configuration: fragments go into the Google mailbox."""
    found = []
    for number, block in enumerate(TOML, 1):
        if block.lstrip().startswith("["):
            found.append((f"block-{number}", block))
            continue
        mailbox = _google_block().partition("[outgoing]")[0]
        mailbox = re.sub(r"^credentials_file = .*$", "", mailbox, flags=re.MULTILINE)
        found.append((f"block-{number}-in-the-google-mailbox", mailbox + block))
    return found


def test_the_guide_has_the_blocks_this_test_reads() -> None:
    """The guide still holds its configuration and Python examples (the test is not vacuous)."""
    assert len(TOML) >= 9
    assert len(PYTHON) >= 2


@pytest.mark.parametrize(("name", "text"), _as_configurations())
def test_each_configuration_block_loads_and_builds_every_backend(
    name: str, text: str, tmp_path: Path, service_account_json: str
) -> None:
    """The block is a valid configuration: loaded, and each backend built without connecting."""
    data = tomllib.loads(text)
    env = _prepare(data, tmp_path, service_account_json)
    config = parse_config(data, base_dir=tmp_path, env=env)
    assert [m.name for m in config.mailboxes] == [t["name"] for t in data.get("mailboxes", [])]
    if "outgoing" in data:
        assert config.outgoing.transport == data["outgoing"]["transport"]
    check_config(config)


@pytest.mark.parametrize("number", range(len(PYTHON)))
def test_each_python_block_runs(
    number: int, tmp_path: Path, service_account_json: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The Python example builds its connector and transport as written (nothing connects)."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "halomail-service-account.json").write_text(service_account_json)
    namespace: dict[str, Any] = {}
    exec(compile(PYTHON[number], f"mailboxes.md python block {number + 1}", "exec"), namespace)  # noqa: S102 - our own docs
    assert {"connector", "transport"} <= namespace.keys()
    assert namespace["connector"].name == "Support"
