"""SMS gateways: the national number form, and a PIN that is never silently dropped."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from halomail.config.loader import load_config
from halomail.errors import ConfigError
from halomail.outbound.sms import SmsSettings, compose_sms, sms_address, subscriber_addresses

# A Maildir helpdesk with an SMS provider; the [sms] table is appended by each test.
CONFIG = """\
[storage]
url = "sqlite:///halomail.db"

[outgoing]
transport = "maildir"
path = "outbox"
from_address = "support@helpdesk.example"

[[mailboxes]]
name = "Support"
connection = "maildir"
path = "inbox"

[sms]
provider_domain = "sms.example.net"
from_address = "sms-account@helpdesk.example"
default_country_code = "44"
"""


def _provider(**settings: str) -> SmsSettings:
    """A UK provider's gateway with ``settings`` on top."""
    return SmsSettings(
        "sms.example.net", "sms-account@helpdesk.example", default_country_code="44", **settings
    )


def _check_config(tmp_path: Path, sms: str) -> subprocess.CompletedProcess[str]:
    """``halomail check-config`` on CONFIG plus ``sms`` lines in [sms]."""
    config = tmp_path / "halomail.toml"
    config.write_text(CONFIG + sms, encoding="utf-8")
    for sub in ("cur", "new", "tmp"):
        (tmp_path / "inbox" / sub).mkdir(parents=True, exist_ok=True)
    return subprocess.run(
        [sys.executable, "-m", "halomail.cli", "-c", str(config), "check-config"],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
    )


def test_the_international_form_is_the_default() -> None:
    """+44 7772 817814 becomes 447772817814@ the provider, however it is written."""
    provider = _provider()
    for written in ("+44 7772 817814", "07772 817814", "0044 (0)7772-817814"):
        assert sms_address(written, provider) == "447772817814@sms.example.net"


def test_a_national_provider_gets_the_trunk_prefix_instead_of_the_country_code() -> None:
    """With number_format 'national', +44 7772 817814 becomes 07772817814@ the provider."""
    provider = _provider(number_format="national")
    for written in ("+44 7772 817814", "07772 817814", "0044 7772 817814"):
        assert sms_address(written, provider) == "07772817814@sms.example.net"
    sms = compose_sms("Backup failed", "+44 7772 817814", provider)
    assert (sms.to_address, sms.phone) == ("07772817814@sms.example.net", "447772817814")


def test_a_national_provider_with_no_trunk_prefix_writes_the_bare_national_number() -> None:
    """North America writes 10 digits: country 1, no trunk prefix."""
    provider = SmsSettings(
        "sms.example.net",
        "sms-account@helpdesk.example",
        default_country_code="1",
        number_format="national",
        trunk_prefix="",
    )
    assert sms_address("+1 (555) 010-9999", provider) == "5550109999@sms.example.net"


def test_a_national_provider_refuses_another_countrys_number_with_the_reason() -> None:
    """A French number cannot be written in the UK national form: refused, not mangled."""
    addresses, refused = subscriber_addresses(
        ["+33 6 12 34 56 78", "07772 817814"], _provider(number_format="national")
    )
    assert addresses == ("07772817814@sms.example.net",)
    assert refused[0][0] == "+33 6 12 34 56 78"
    assert "not a +44 number" in refused[0][1]


def test_the_national_form_needs_a_country_and_a_known_format() -> None:
    """No default country, an unknown format or a non-digit trunk prefix is refused."""
    with pytest.raises(ValueError, match="needs default_country_code"):
        SmsSettings("sms.example.net", "a@b.example", number_format="national")
    with pytest.raises(ValueError, match="'number_format' must be in"):
        _provider(number_format="local")
    with pytest.raises(ValueError, match="trunk_prefix"):
        _provider(trunk_prefix="+0")


def test_the_national_form_loads_from_the_configuration(tmp_path: Path) -> None:
    """[sms] number_format and trunk_prefix reach the provider settings."""
    config = tmp_path / "halomail.toml"
    config.write_text(CONFIG + 'number_format = "national"\n', encoding="utf-8")
    (tmp_path / "inbox").mkdir()
    loaded = load_config(config, require_mailbox=False)
    assert loaded.sms is not None
    assert sms_address("+44 7772 817814", loaded.sms) == "07772817814@sms.example.net"
    config.write_text(CONFIG + 'number_format = "nation"\n', encoding="utf-8")
    with pytest.raises(ConfigError, match=r"sms\.number_format") as err:
        load_config(config, require_mailbox=False)
    assert "'international'" in str(err.value)


def test_check_config_refuses_a_password_without_a_placement(tmp_path: Path) -> None:
    """A PIN that would be silently dropped: check-config names the key and the choices."""
    checked = _check_config(tmp_path, 'password = "4711"\n')
    assert checked.returncode == 2, checked.stdout + checked.stderr
    assert "sms.pin_placement" in checked.stderr
    assert "'subject' or 'body-prefix'" in checked.stderr
    assert "4711" not in checked.stdout + checked.stderr
    assert "Traceback" not in checked.stderr


def test_check_config_accepts_a_password_with_its_placement(tmp_path: Path) -> None:
    """The same file with pin_placement set passes check-config."""
    checked = _check_config(tmp_path, 'password = "4711"\npin_placement = "subject"\n')
    assert checked.returncode == 0, checked.stdout + checked.stderr


def test_a_password_the_placement_would_never_send_is_refused() -> None:
    """In Python too: a password with pin_placement 'none' would never reach the provider."""
    with pytest.raises(ValueError, match="never sent with pin_placement 'none'"):
        _provider(password="4711")
    with pytest.raises(ValueError, match="never sent"):
        _provider(password="4711", pin_placement="none")
