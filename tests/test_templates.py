"""The ``$`` template language, template values, message groups and their configuration."""

from __future__ import annotations

import datetime as dt
import logging
import re
import tomllib
from pathlib import Path

import pytest

from halomail.errors import ConfigError, TemplateError
from halomail.templates.render import (
    VARIABLES,
    MessageGroup,
    MessageKind,
    RenderedMessage,
    Template,
    TemplateRenderer,
    TemplateValues,
    Variable,
    default_message_group,
    message_groups_from_config,
)
from halomail.tickets.models import (
    Action,
    ActionKind,
    Customer,
    Ticket,
    TicketStatus,
    User,
)

GOLDEN = Path(__file__).parent / "golden_renders"
DOCS = Path(__file__).parent.parent / "docs" / "templates.md"
WHEN = dt.datetime(2024, 5, 1, 9, 30, tzinfo=dt.UTC)


def make_ticket(**changes: object) -> Ticket:
    """The sample ticket of these tests (fields overridable)."""
    fields: dict[str, object] = {
        "id": 1234,
        "summary": "Printer on floor 3 is jammed",
        "details": "The printer jams on every page.\nIt started this morning.",
        "ticket_type": "Incident",
        "user_email": "alice@customer.example",
        "status": TicketStatus.OPEN,
        "created_at": WHEN,
        "updated_at": WHEN,
        "user_name": "Alice Martin",
        "mailbox": "Support",
        "customer": "Customer Ltd",
        "priority": "P2",
        "category": "Hardware",
        "team": "Service Desk",
        "agent": "amy@helpdesk.example",
        "custom_fields": {"Serial Number": "SN-778", "site": "HQ"},
    }
    fields.update(changes)
    return Ticket(**fields)


def render_text(source: str, values: TemplateValues) -> str:
    """The text body of a one-off template."""
    return Template("subject", source, name="test").render(values).text


# -- the catalogue ------------------------------------------------------------------


def test_the_catalogue_has_every_required_variable_and_alias() -> None:
    """The catalogue lists the issue's variables with their aliases, each described."""
    by_name = {v.name: v for v in VARIABLES}
    assert set(by_name) == {
        "ticketid", "summary", "details", "status", "tickettype", "priority", "category",
        "username", "useremail", "userphone", "customername", "sitename", "agentname",
        "agentemail", "teamname", "dateoccurred", "actionnote", "actionby", "mailboxname",
        "ticketurl", "tag", "servicename", "servicestatus", "signature",
    }  # fmt: skip
    assert by_name["ticketid"].aliases == ("faultid",)
    assert by_name["summary"].aliases == ("symptom",)
    assert by_name["customername"].aliases == ("clientname",)
    assert by_name["actionnote"].aliases == ("note",)
    assert all(isinstance(v, Variable) and v.description.endswith(".") for v in VARIABLES)


_ALL_NAMES = [(v.name, name) for v in VARIABLES for name in (v.name, *v.aliases)]


@pytest.mark.parametrize(("canonical", "written"), _ALL_NAMES)
def test_each_variable_and_alias_renders_its_value_in_any_case(
    canonical: str, written: str
) -> None:
    """``$name``, its alias and its upper-case spelling all render the variable's value."""
    values = TemplateValues({canonical: f"<{canonical} value>"})
    template = Template(f"${written.upper()}", f"[${written}]", name="test")
    rendered = template.render(values)
    assert rendered.subject == f"<{canonical} value>"
    assert rendered.text == f"[<{canonical} value>]"


def test_for_ticket_fills_every_variable_from_the_ticket_and_its_people() -> None:
    """for_ticket maps the ticket, user, customer, action and arguments onto the catalogue."""
    action = Action(
        id=9,
        ticket_id=1234,
        kind=ActionKind.NOTE,
        body="A replacement part is on its way.",
        created_at=WHEN,
        from_address="amy@helpdesk.example",
    )
    values = TemplateValues.for_ticket(
        make_ticket(user_name=""),
        action=action,
        user=User(1, "alice@customer.example", "Alice M.", phone=None, mobile="+44 7700 900000"),
        customer=Customer(2, "Customer Holdings"),
        agent_name="Amy Agent",
        site_name="Head Office",
        ticket_url="https://helpdesk.example/t/1234",
        tag="[ID:1234]",
        signature="Amy\nService Desk",
    )
    assert dict(values.values) == {
        "ticketid": "1234",
        "summary": "Printer on floor 3 is jammed",
        "details": "The printer jams on every page.\nIt started this morning.",
        "status": "Open",
        "tickettype": "Incident",
        "priority": "P2",
        "category": "Hardware",
        "username": "Alice M.",
        "useremail": "alice@customer.example",
        "userphone": "+44 7700 900000",
        "customername": "Customer Holdings",
        "sitename": "Head Office",
        "agentname": "Amy Agent",
        "agentemail": "amy@helpdesk.example",
        "teamname": "Service Desk",
        "dateoccurred": "2024-05-01 09:30 UTC",
        "actionnote": "A replacement part is on its way.",
        "actionby": "amy@helpdesk.example",
        "mailboxname": "Support",
        "ticketurl": "https://helpdesk.example/t/1234",
        "tag": "[ID:1234]",
        "servicename": "",
        "servicestatus": "",
        "signature": "Amy\nService Desk",
        "cf_serial_number": "SN-778",
        "cf_site": "HQ",
    }


def test_for_ticket_arguments_win_over_the_ticket_and_extra_wins_over_all() -> None:
    """note, action_by, team, mailbox and agent email override; extra values override those."""
    action = Action(1, 1234, ActionKind.NOTE, "stored body", WHEN, from_address="x@y")
    values = TemplateValues.for_ticket(
        make_ticket(
            created_at=dt.datetime(2024, 5, 1, 11, 30, tzinfo=dt.timezone(dt.timedelta(hours=2)))
        ),
        action=action,
        note="typed note",
        action_by="Bob",
        agent_email="bob@helpdesk.example",
        team_name="Field",
        mailbox_name="Sales",
        extra={"servicename": "Backup", "Status": "Failed"},
    )
    assert values.values["actionnote"] == "typed note"
    assert values.values["actionby"] == "Bob"
    assert values.values["agentemail"] == "bob@helpdesk.example"
    assert values.values["teamname"] == "Field"
    assert values.values["mailboxname"] == "Sales"
    assert values.values["servicename"] == "Backup"
    assert values.values["status"] == "Failed"
    assert values.values["dateoccurred"] == "2024-05-01 09:30 UTC"  # converted to UTC


def test_plain_values_take_aliases_any_case_and_custom_fields() -> None:
    """TemplateValues normalizes keys to canonical names and converts values to text."""
    values = TemplateValues({"FaultID": 7, "Symptom": "x", "CF_Serial Number": "S", "note": None})
    assert dict(values.values) == {
        "ticketid": "7",
        "summary": "x",
        "cf_serial_number": "S",
        "actionnote": "",
    }


def test_an_unknown_value_key_is_refused_with_a_suggestion() -> None:
    """A key that is no variable raises ValueError naming it and the closest variable."""
    with pytest.raises(ValueError, match=r"'ticktid' is not a template variable.*'ticketid'"):
        TemplateValues({"ticktid": "1"})


# -- the language ---------------------------------------------------------------------


def test_custom_fields_render_by_normalized_name_and_missing_ones_are_empty() -> None:
    """``$CF_<field>`` renders a custom field (any case, spaces as _); an unknown one is empty."""
    values = TemplateValues.for_ticket(make_ticket())
    text = render_text("$CF_Serial_Number|$cf_site|$CF_SITE|[$CF_unknown]|{{ cf_site }}", values)
    assert text == "SN-778|HQ|HQ|[]|HQ"


def test_a_dash_after_the_dollar_renders_the_literal_name() -> None:
    """``$-name`` renders ``$name`` for any name, known or not, and is not expanded again."""
    values = TemplateValues({"ticketid": "42"})
    text = render_text("$-ticketid $-anything $-CF_x $ticketid", values)
    assert text == "$ticketid $anything $CF_x 42"


def test_a_dollar_not_followed_by_a_name_renders_as_itself() -> None:
    """A lone ``$``, ``$5``, ``$-5``, ``US$`` and ``$_x`` stay as written."""
    values = TemplateValues({"ticketid": "42"})
    assert render_text("costs $5 or $-5, US$ 3, $ alone, $_x, $$ticketid", values) == (
        "costs $5 or $-5, US$ 3, $ alone, $_x, $42"
    )


def test_a_name_runs_to_the_first_character_that_cannot_be_in_a_name() -> None:
    """``$summary.`` and ``$ticketid-2`` end the name at the punctuation."""
    values = TemplateValues({"ticketid": "42", "summary": "Jam"})
    assert render_text("$summary. ($ticketid-2)'$summary's", values) == "Jam. (42-2)'Jam's"


def test_admin_jinja_can_test_variables_by_canonical_alias_or_any_case_name() -> None:
    """Inside ``{% %}`` and ``{{ }}`` variables are plain names, aliases and case allowed."""
    source = (
        "{% if priority %}P={{ priority }}{% endif %}|{{ faultid }}|{{ TicketID }}"
        "|{{ status|upper }}"
    )
    values = TemplateValues({"priority": "P1", "ticketid": "9", "status": "Open"})
    assert render_text(source, values) == "P=P1|9|9|OPEN"


def test_dollar_names_inside_jinja_markup_and_raw_blocks_are_left_alone() -> None:
    """``$`` in ``{# #}``, in a string inside ``{{ }}`` and in ``{% raw %}`` is not translated."""
    source = "{# $nothing #}{{ '$summary' }}|{% raw %}$summary {{ x }}{% endraw %}|$summary"
    assert (
        render_text(source, TemplateValues({"summary": "Jam"})) == "$summary|$summary {{ x }}|Jam"
    )


def test_block_tags_on_their_own_line_leave_no_blank_line() -> None:
    """trim_blocks and lstrip_blocks: a ``{% if %}`` line vanishes, the trailing newline stays."""
    source = "a\n  {% if priority %}\nP: $priority\n  {% endif %}\nb\n"
    assert render_text(source, TemplateValues({"priority": "P1"})) == "a\nP: P1\nb\n"
    assert render_text(source, TemplateValues({})) == "a\nb\n"


def test_an_unknown_variable_is_refused_at_load_with_the_template_and_line() -> None:
    """An unknown ``$name`` raises TemplateError naming template part, line and a suggestion."""
    with pytest.raises(TemplateError) as caught:
        Template("$tag ok", "Hello\n\nTicket $ticktid", name="Friendly/ticket_closed")
    assert caught.value.template == "Friendly/ticket_closed.text"
    assert caught.value.line == 3
    assert str(caught.value) == (
        "Friendly/ticket_closed.text:3: unknown variable $ticktid (did you mean $ticketid?)"
    )


def test_an_unknown_jinja_name_is_refused_at_load_with_its_line() -> None:
    """An unknown name in admin Jinja2 raises TemplateError at its line."""
    with pytest.raises(TemplateError) as caught:
        Template("s", "ok", "<p>\n{% if prio %}x{% endif %}</p>", name="g/k")
    assert (caught.value.template, caught.value.line) == ("g/k.html", 2)
    assert "unknown variable prio" in str(caught.value)


def test_a_jinja_syntax_error_is_refused_at_load_with_its_line() -> None:
    """A syntax error raises TemplateError with the line Jinja2 reports."""
    with pytest.raises(TemplateError) as caught:
        Template("s", "one\ntwo\n{% if summary %}three", name="g/k")
    assert caught.value.template == "g/k.text"
    assert caught.value.line == 3
    assert "syntax error" in str(caught.value)


def test_a_template_that_fails_on_the_sample_ticket_is_refused_at_load() -> None:
    """A template that cannot render at all (division by zero) is refused when loaded."""
    with pytest.raises(TemplateError) as caught:
        Template("s", "a\n{{ 1 // 0 }}", name="g/k")
    assert caught.value.line == 2
    assert "fails on a sample ticket: ZeroDivisionError" in str(caught.value)


def test_a_failure_at_send_time_raises_template_error_with_the_line() -> None:
    """A value-dependent failure at render raises TemplateError naming part and line."""
    template = Template("s", "a\nb\n{% if summary == 'zero' %}{{ 1 // 0 }}{% endif %}", name="g/k")
    assert template.render(TemplateValues({"summary": "fine"})).text == "a\nb\n"
    with pytest.raises(TemplateError) as caught:
        template.render(TemplateValues({"summary": "zero"}))
    assert (caught.value.template, caught.value.line) == ("g/k.text", 3)
    assert "ZeroDivisionError" in str(caught.value)
    assert isinstance(caught.value.__cause__, ZeroDivisionError)


def test_html_escapes_every_value_and_turns_line_breaks_into_br() -> None:
    """In HTML a value's markup is escaped and its lines joined by <br>; the template's is kept."""
    values = TemplateValues({"details": 'a < b & c\r\nsecond "line"', "summary": "<b>x</b>"})
    rendered = Template(
        "s", "$details", "<table><tr><td>$details</td><td>$summary</td></tr></table>"
    ).render(values)
    assert rendered.html == (
        "<table><tr><td>a &lt; b &amp; c<br>\nsecond &#34;line&#34;</td>"
        "<td>&lt;b&gt;x&lt;/b&gt;</td></tr></table>"
    )
    assert rendered.text == 'a < b & c\r\nsecond "line"'


def test_the_subject_is_one_line_whatever_the_values_and_template() -> None:
    """Control characters in the subject's values or source become one space; ends stripped."""
    values = TemplateValues({"summary": "Help\r\nBcc: x@y.example\x00\u2028now", "tag": ""})
    rendered = Template("$tag  $summary\n", "t").render(values)
    assert rendered.subject == "Help Bcc: x@y.example now"


def test_a_template_without_html_renders_text_only() -> None:
    """html is None when the template has no HTML body."""
    assert Template("s", "t").render(TemplateValues({})) == RenderedMessage("s", "t", None)


# -- message groups ------------------------------------------------------------------------


def test_the_default_group_has_every_kind_and_a_short_sms_without_html() -> None:
    """Default covers every MessageKind; SMS has no HTML and stays under 160 characters."""
    group = default_message_group()
    assert group.name == "Default"
    assert set(group.templates) == set(MessageKind)
    sms = group.templates[MessageKind.SMS]
    assert sms.html is None
    rendered = sms.render(TemplateValues.for_ticket(make_ticket(), note="Engineer on site at 2pm"))
    assert rendered.text == (
        "Ticket 1234: Printer on floor 3 is jammed (Open) - Engineer on site at 2pm"
    )
    assert default_message_group() is group  # compiled once per process


def test_a_new_group_takes_the_kinds_it_lacks_from_default() -> None:
    """A group with one kind renders it, and every other kind exactly as Default does."""
    friendly = MessageGroup(
        "Friendly", {"new_ticket_logged": Template("$tag We got it: $summary", "Hi $username")}
    )
    renderer = TemplateRenderer([friendly])
    values = TemplateValues.for_ticket(make_ticket(), tag="[ID:1234]")
    ack = renderer.render(MessageKind.NEW_TICKET_LOGGED, values, group="friendly")
    assert (ack.subject, ack.text, ack.html) == (
        "[ID:1234] We got it: Printer on floor 3 is jammed",
        "Hi Alice Martin",
        None,
    )
    closed = renderer.render("ticket_closed", values, group="Friendly")
    assert closed == renderer.render("ticket_closed", values)
    assert closed.subject == "[ID:1234] Closed: Printer on floor 3 is jammed"
    assert set(renderer.group("FRIENDLY").templates) == set(MessageKind)


def test_a_configured_default_group_changes_default_and_the_groups_copied_from_it() -> None:
    """A group named Default replaces its kinds everywhere they are not overridden."""
    renderer = TemplateRenderer(
        [
            MessageGroup("Other", {}),
            MessageGroup("default", {"ticket_closed": Template("Done: $summary", "Closed.")}),
        ]
    )
    values = TemplateValues({"summary": "Jam"})
    assert renderer.render("ticket_closed", values).subject == "Done: Jam"
    assert renderer.render("ticket_closed", values, group="Other").subject == "Done: Jam"
    assert renderer.render("ticket_update", values).subject == "Update: Jam"
    assert [g.name for g in renderer.groups] == ["default", "Other"]
    assert renderer.has_group("DEFAULT")
    assert not renderer.has_group("Nope")


def test_an_unknown_group_falls_back_to_default_with_a_warning(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Rendering for an unknown group uses Default and logs a warning naming the group."""
    renderer = TemplateRenderer()
    values = TemplateValues({"summary": "Jam", "tag": "[ID:1]"})
    with caplog.at_level(logging.WARNING, logger="halomail.templates.render"):
        rendered = renderer.render(MessageKind.TICKET_UPDATE, values, group="Missing")
    assert rendered.subject == "[ID:1] Update: Jam"
    assert "no message group 'Missing'" in caplog.text


def test_an_unknown_kind_and_duplicate_groups_are_refused() -> None:
    """An unknown kind raises ValueError; two groups with the same name raise ValueError."""
    renderer = TemplateRenderer()
    with pytest.raises(ValueError, match="not_a_kind"):
        renderer.render("not_a_kind", TemplateValues({}))
    with pytest.raises(ValueError, match="two message groups are named 'a'"):
        TemplateRenderer([MessageGroup("A"), MessageGroup("a")])


# -- configuration ------------------------------------------------------------------------

_TOML = '''
[[message_groups]]
name = "Friendly"
[message_groups.templates.new_ticket_logged]
subject = "$tag We got it: $summary"
text = """Hi $username,
we have ticket $ticketid."""
html = "<p>Hi $username</p>"
[message_groups.templates.sms]
text = "#$ticketid $status"

[[message_groups]]
name = "Terse"
[message_groups.templates.ticket_closed]
subject = "Closed $tag"
text = "Closed."
'''


def test_message_groups_parse_from_toml_and_render() -> None:
    """The TOML of the docs gives groups whose templates render; sms needs no subject."""
    groups = message_groups_from_config(tomllib.loads(_TOML)["message_groups"])
    assert [g.name for g in groups] == ["Friendly", "Terse"]
    assert set(groups[0].templates) == {MessageKind.NEW_TICKET_LOGGED, MessageKind.SMS}
    assert groups[1].templates[MessageKind.TICKET_CLOSED].html is None
    renderer = TemplateRenderer(groups)
    values = TemplateValues.for_ticket(make_ticket(), tag="[ID:1234]")
    assert renderer.render("new_ticket_logged", values, group="Friendly") == RenderedMessage(
        "[ID:1234] We got it: Printer on floor 3 is jammed",
        "Hi Alice Martin,\nwe have ticket 1234.",
        "<p>Hi Alice Martin</p>",
    )
    assert renderer.render("sms", values, group="Friendly").text == "#1234 Open"


def _config_error(groups: object) -> str:
    with pytest.raises(ConfigError) as caught:
        message_groups_from_config(groups)
    return str(caught.value)


def test_a_template_error_in_config_names_the_exact_key_path_and_line() -> None:
    """An unknown variable in the second group's text is reported at its key path and line."""
    groups = [
        {"name": "A", "templates": {}},
        {
            "name": "B",
            "templates": {"ticket_closed": {"subject": "s", "text": "Hello\n\nTicket $ticktid"}},
        },
    ]
    assert _config_error(groups) == (
        "message_groups[1].templates.ticket_closed.text: line 3: unknown variable $ticktid"
        " (did you mean $ticketid?)"
    )


@pytest.mark.parametrize(
    ("groups", "expected"),
    [
        (
            [{"name": "A", "templates": {"ticket_closd": {"subject": "s", "text": "t"}}}],
            "message_groups[0].templates.ticket_closd: unknown message kind 'ticket_closd'"
            " (did you mean 'ticket_closed'?)",
        ),
        (
            [{"name": "A", "templates": {"ticket_closed": {"text": "t"}}}],
            "message_groups[0].templates.ticket_closed.subject: missing (required)",
        ),
        (
            [{"name": "A", "templates": {"sms": {"subject": "s"}}}],
            "message_groups[0].templates.sms.text: missing (required)",
        ),
        (
            [{"name": "A", "templates": {"sms": {"text": "t", "html": 3}}}],
            "message_groups[0].templates.sms.html: expected text, got 3",
        ),
        (
            [{"name": "A", "templates": {"sms": {"text": "t", "body": "x"}}}],
            "message_groups[0].templates.sms.body: unknown key 'body';"
            " known keys: subject, text, html",
        ),
        ([{"nam": "A"}], "message_groups[0].nam: unknown key 'nam' (did you mean 'name'?)"),
        ([{"templates": {}}], "message_groups[0].name: expected a group name, got missing"),
        (
            [{"name": "A"}, {"name": " a "}],
            "message_groups[1].name: another group is already named 'a'",
        ),
        ([{"name": "A\nB"}], "message_groups[0].name: must not contain control characters"),
        (
            [{"name": "A", "templates": []}],
            "message_groups[0].templates: expected a table, got an array",
        ),
        (["x"], "message_groups[0]: expected a table, got 'x'"),
        (
            [{"name": "A", "templates": {"sms": {"text": "a\n{{ ''.__class__ }}"}}}],
            "message_groups[0].templates.sms.text: line 2: sandbox: access to attribute"
            " '__class__' is not allowed",
        ),
    ],
)
def test_invalid_message_groups_are_refused_with_their_key_path(
    groups: object, expected: str
) -> None:
    """Each mistake in [[message_groups]] is a ConfigError at the exact key path."""
    assert _config_error(groups) == expected


# -- golden renders ------------------------------------------------------------------------


def golden_values(kind: MessageKind) -> TemplateValues:
    """The values each built-in template is rendered with for its golden files."""
    ticket = make_ticket()
    common = {
        "user": User(1, "alice@customer.example", "Alice Martin", phone="+44 20 7946 0000"),
        "customer": Customer(2, "Customer Ltd"),
        "agent_name": "Amy Agent",
        "agent_email": "amy@helpdesk.example",
        "mailbox_name": "Support",
        "ticket_url": "https://helpdesk.example/tickets/1234",
        "tag": "[ID:1234]",
    }
    if kind is MessageKind.NEW_TICKET_LOGGED:
        return TemplateValues.for_ticket(
            make_ticket(status=TicketStatus.NEW, agent=None), **{**common, "agent_name": ""}
        )
    if kind is MessageKind.SERVICE_STATUS_CHANGED:
        failure = make_ticket(
            summary="Nightly backup failed",
            details="Job 'Nightly' ended with 2 errors.\nDisk \\\\nas01\\backup is full.",
        )
        return TemplateValues.for_ticket(
            failure,
            **{**common, "agent_name": ""},
            extra={"servicename": "Nightly backup", "servicestatus": "Failed"},
        )
    if kind is MessageKind.TEST_EMAIL:
        return TemplateValues({"mailboxname": "Support"})
    closing = "Replaced the pickup roller; the printer works again."
    note = closing if kind is MessageKind.TICKET_CLOSED else "A replacement part is on its way."
    return TemplateValues.for_ticket(
        ticket,
        note=note,
        action_by="Amy Agent",
        signature="Amy Agent\nService Desk, Example Ltd",
        **common,
    )


def render_golden(kind: MessageKind) -> tuple[str, str | None]:
    """The golden .txt (subject line, blank line, text) and .html of one built-in template."""
    rendered = default_message_group().templates[kind].render(golden_values(kind))
    return f"Subject: {rendered.subject}\n\n{rendered.text}", rendered.html


@pytest.mark.parametrize("kind", list(MessageKind))
def test_each_built_in_template_renders_exactly_its_golden_files(kind: MessageKind) -> None:
    """The built-in text and HTML of every kind match tests/golden_renders byte for byte."""
    text, html = render_golden(kind)
    assert text == (GOLDEN / f"{kind.value}.txt").read_text(encoding="utf-8")
    html_file = GOLDEN / f"{kind.value}.html"
    if html is None:
        assert not html_file.exists()
    else:
        assert html == html_file.read_text(encoding="utf-8")


# -- the documentation ----------------------------------------------------------------------


def test_the_docs_table_lists_every_variable_with_its_aliases() -> None:
    """docs/templates.md has a table row for each catalogue variable, aliases included."""
    rows = {
        m.group(1): m.group(2)
        for m in re.finditer(r"^\| `\$(\w+)` \|([^|]*)\|", DOCS.read_text("utf-8"), re.M)
    }
    for variable in VARIABLES:
        assert variable.name in rows
        assert rows[variable.name].split() == [f"`${alias}`" for alias in variable.aliases]


def test_the_docs_toml_example_loads_and_renders() -> None:
    """The [[message_groups]] example of the docs loads and renders the text it promises."""
    block = re.search(r"```toml\n(.*?)```", DOCS.read_text("utf-8"), re.S)
    assert block is not None
    groups = message_groups_from_config(tomllib.loads(block.group(1))["message_groups"])
    values = TemplateValues.for_ticket(make_ticket(), tag="[ID:1234]", ticket_url="https://h/1")
    rendered = TemplateRenderer(groups).render("new_ticket_logged", values, group="Friendly")
    assert rendered.text == (
        "Hi Alice Martin,\n\nThanks for getting in touch: your ticket number is 1234.\n\n"
        "You can follow it at https://h/1\n\nThe Support team\n"
    )
