"""Every code block of docs/metrics.md works: the install line, the Python, the YAML, the PromQL."""

from __future__ import annotations

import re
import subprocess
import sys
import tomllib
import urllib.request
from pathlib import Path

import pytest
import yaml

from halomail.metrics import METRIC_NAMES, start_metrics_server
from tests.conftest import make_email

ROOT = Path(__file__).parent.parent
METRICS_MD = ROOT / "docs" / "metrics.md"

CONFIG = """\
[storage]
url = "sqlite:///halomail.db"

[[mailboxes]]
name = "Support"
connection = "maildir"
path = "inbox"
"""


def blocks(language: str) -> list[str]:
    """The fenced blocks of docs/metrics.md in ``language``, in order."""
    return re.findall(rf"```{language}\n(.*?)```", METRICS_MD.read_text(), re.DOTALL)


def test_every_block_is_one_this_file_checks() -> None:
    """The doc has only sh, python, yaml and promql blocks (each checked below)."""
    languages = re.findall(r"^```(\w+)$", METRICS_MD.read_text(), re.M)
    assert sorted(set(languages)) == ["promql", "python", "sh", "yaml"]
    assert len(languages) == 5


def test_the_install_line_names_the_declared_extra() -> None:
    """`pip install 'halomail[metrics]'` installs prometheus_client, as pyproject declares."""
    (block,) = blocks("sh")
    assert block.strip() == "pip install 'halomail[metrics]'"
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"][
        "optional-dependencies"
    ]
    assert any(req.startswith("prometheus-client") for req in extras["metrics"])


def test_the_python_block_processes_mail_and_serves_metrics(tmp_path: Path) -> None:
    """The Python block, run in a folder with halomail.toml, processes the email and serves.

    Its port 9464 becomes 0 (any free port), so the test never meets a taken port.
    """
    (block,) = blocks("python")
    assert "start_metrics_server(9464)" in block
    (tmp_path / "halomail.toml").write_text(CONFIG)
    for sub in ("cur", "new", "tmp"):
        (tmp_path / "inbox" / sub).mkdir(parents=True)
    (tmp_path / "inbox" / "new" / "1.eml").write_bytes(make_email())
    done = subprocess.run(
        [
            sys.executable,
            "-c",
            block.replace("start_metrics_server(9464)", "start_metrics_server(0)"),
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert re.fullmatch(r"1 emails; metrics at http://127\.0\.0\.1:\d+/metrics\n", done.stdout)


def test_the_scrape_config_parses_and_names_targets() -> None:
    """The scrape configuration is YAML with one halomail job and its targets."""
    config = yaml.safe_load(blocks("yaml")[0])
    (job,) = config["scrape_configs"]
    assert job["job_name"] == "halomail"
    (static,) = job["static_configs"]
    assert all(re.fullmatch(r"[\w.-]+:9464", target) for target in static["targets"])


def test_the_alert_rules_parse_as_a_prometheus_rule_file() -> None:
    """The alerting rules are YAML of the rule-file shape: alert, expr, for, labels."""
    rules = yaml.safe_load(blocks("yaml")[1])
    (group,) = rules["groups"]
    names = [rule["alert"] for rule in group["rules"]]
    assert names == [
        "HalomailMailboxFailing",
        "HalomailOutboxBacklogGrowing",
        "HalomailEmailsQuarantined",
    ]
    by_name = {rule["alert"]: rule for rule in group["rules"]}
    assert by_name["HalomailMailboxFailing"]["for"] == "15m"
    assert all(rule["expr"] and rule["labels"]["severity"] for rule in group["rules"])


def _expressions() -> list[str]:
    rules = yaml.safe_load(blocks("yaml")[1])["groups"][0]["rules"]
    queries = [line for line in blocks("promql")[0].splitlines() if line.strip()]
    return [rule["expr"] for rule in rules] + queries


@pytest.mark.parametrize("expression", _expressions())
def test_every_expression_names_only_metrics_the_server_exports(expression: str) -> None:
    """Each PromQL expression uses metrics a real scrape declares, with balanced brackets."""
    server = start_metrics_server(0)
    try:
        with urllib.request.urlopen(server.url, timeout=10) as response:  # noqa: S310
            exported = set(re.findall(r"^# TYPE (halomail_\w+) ", response.read().decode(), re.M))
    finally:
        server.close()
    used = set(re.findall(r"halomail_\w+", expression))
    assert used
    assert used <= exported
    for opening, closing in ("()", "[]", "{}"):
        assert expression.count(opening) == expression.count(closing)


def test_the_table_lists_exactly_the_exported_metrics() -> None:
    """The doc's table has one row per metric halomail exports, and no other."""
    rows = re.findall(r"^\| `(halomail_\w+)", METRICS_MD.read_text(), re.M)
    assert sorted(rows) == sorted(METRIC_NAMES)
