"""The ``$`` template language, message groups, and rendering of outgoing mail.

Administrators write templates with ``$name`` variables (``$ticketid``, ``$summary``,
``$CF_<field>`` …, see :data:`VARIABLES`) and, when they need it, simple Jinja2
(``{% if priority %}…{% endif %}``). A template is compiled **once**, when it is
loaded, into Jinja2's :class:`~jinja2.sandbox.ImmutableSandboxedEnvironment`; an
unknown variable, a syntax error or a sandbox violation is a
:class:`~halomail.errors.TemplateError` naming the template and the line.

What customers typed is only ever a *value*: ``{{ 7*7 }}``, ``{% for %}`` or
``$ticketid`` in a summary or a note appears literally and is never expanded. HTML
bodies escape every value; subjects have control characters (CR/LF above all)
removed.

Templates come in message groups, one template per :class:`MessageKind`; the built-in
``Default`` group (:func:`default_message_group`) has a template for every kind, and
any other group starts as a copy of it: the kinds it leaves out come from ``Default``.
In ``halomail.toml``::

    [[message_groups]]
    name = "Friendly"
    [message_groups.templates.new_ticket_logged]
    subject = "$tag We got it: $summary"
    text = "Hi $username, ..."
    html = "<p>Hi $username</p>"

.. versionadded:: 0.1.0
"""

from __future__ import annotations

import datetime as dt
import enum
import functools
import logging
import re
import types
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Final

import attrs
from jinja2.exceptions import SecurityError

from halomail._validate import as_table, check_keys, describe, hint, join_key
from halomail.errors import ConfigError, TemplateError
from halomail.templates.defaults import BUILT_IN, SAMPLE
from halomail.templates.sandbox import Compiled, Names, Problem, Sandbox, compile_part, field_key
from halomail.tickets.models import Action, Customer, Ticket, User

__all__ = [
    "MAX_TEXT_LENGTH",
    "VARIABLES",
    "MessageGroup",
    "MessageKind",
    "RenderedMessage",
    "Template",
    "TemplateRenderer",
    "TemplateValues",
    "Variable",
    "default_message_group",
    "expand_text",
    "message_groups_from_config",
]

log = logging.getLogger(__name__)


class MessageKind(enum.StrEnum):
    """Which mail a template is for; a message group has one template per kind."""

    NEW_TICKET_LOGGED = "new_ticket_logged"  # the acknowledgement of a new ticket
    TICKET_UPDATE = "ticket_update"  # an agent's public update
    TICKET_CLOSED = "ticket_closed"
    TICKET_ASSIGNED = "ticket_assigned"
    NOTE_ADDED = "note_added"
    SERVICE_STATUS_CHANGED = "service_status_changed"
    SMS = "sms"  # a text message (sent by email to an SMS gateway): short, no HTML
    TEST_EMAIL = "test_email"  # ``halomail send-test-email``


@attrs.frozen
class Variable:
    """A ``$`` variable of the catalogue.

    Args:
        name: The canonical name, lower-case, without ``$`` (``ticketid``).
        aliases: Other names for it (``faultid``).
        description: What it holds, for the documentation.
    """

    name: str
    aliases: tuple[str, ...] = ()
    description: str = ""


#: Every ``$`` variable templates may use, besides ``$CF_<field>`` for each custom
#: field. Names are case-insensitive and ignore underscores (``$ticket_id`` is
#: ``$ticketid``); the values are always text (empty when unknown).
VARIABLES: Final[tuple[Variable, ...]] = (
    Variable("ticketid", ("faultid",), "The ticket's number."),
    Variable("summary", ("symptom",), "The ticket's summary (the first email's subject)."),
    Variable("details", (), "The ticket's details (the first email's text)."),
    Variable("status", (), "The ticket's status: New, Open or Closed."),
    Variable("tickettype", (), "The ticket type, e.g. Incident."),
    Variable("priority", (), "The ticket's priority, when it has one."),
    Variable("category", (), "The ticket's category, when it has one."),
    Variable("username", (), "The requester's name."),
    Variable("useremail", (), "The requester's email address."),
    Variable("userphone", (), "The requester's phone number (else their mobile)."),
    Variable("customername", ("clientname",), "The requester's customer (client)."),
    Variable("sitename", (), "The site: the host application's, else the one a rule mapped."),
    Variable("agentname", (), "The agent acting on the ticket, else the one assigned."),
    Variable("agentemail", (), "That agent's email address."),
    Variable("teamname", (), "The ticket's team."),
    Variable("dateoccurred", (), "When the ticket was logged, as 2024-05-01 09:30 UTC."),
    Variable("actionnote", ("note",), "The text of the update, note or closure mailed."),
    Variable("actionby", (), "Who wrote that update, note or closure."),
    Variable("mailboxname", (), "The mailbox the mail is sent from."),
    Variable("ticketurl", (), "The ticket's address in the helpdesk, when configured."),
    Variable("tag", (), "The subject tag that threads replies, e.g. [ID:1234]."),
    Variable("servicename", (), "The monitored service (service status mail and SMS)."),
    Variable("servicestatus", (), "The service's new status: OK, Failed or Unknown."),
    Variable("signature", (), "The signature of the agent or mailbox sending the mail."),
)

_NAMES: Final = Names(
    canonical=frozenset(v.name for v in VARIABLES),
    aliases=types.MappingProxyType({a: v.name for v in VARIABLES for a in v.aliases}),
)
_TEXT: Final = Sandbox(html=False, names=_NAMES)
_HTML: Final = Sandbox(html=True, names=_NAMES)
# Both environments have the same globals (range, dict, cycler, joiner, namespace).
_GLOBALS: Final[Mapping[str, Any]] = types.MappingProxyType(dict(_TEXT.globals))

# Control characters (C0, DEL, C1, line and paragraph separators) in a subject: a CR/LF
# would start a new header (CVE-2024-6923 on Python 3.11), the rest garble the line.
_HEADER_CONTROL: Final = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]+")
_SPACES: Final = re.compile(r" {2,}")


def _header_value(value: str) -> str:
    """``value`` on one line: control characters become a space, runs of spaces one."""
    return _SPACES.sub(" ", _HEADER_CONTROL.sub(" ", value)).strip()


# -- values ----------------------------------------------------------------------------


def _normalized(values: Mapping[str, object]) -> Mapping[str, str]:
    out: dict[str, str] = {}
    canonical_names = _NAMES.canonical
    for key, value in values.items():
        # for_ticket gives canonical names and strings: those skip the resolving.
        canonical = key if key in canonical_names else _NAMES.resolve(key)
        if canonical is None:
            raise ValueError(f"{key!r} is not a template variable{hint(key, _NAMES.canonical)}")
        out[canonical] = value if type(value) is str else "" if value is None else str(value)
    return types.MappingProxyType(out)


def _when(moment: dt.datetime) -> str:
    """``moment`` as ``2026-12-06 14:05 UTC`` (``strftime`` costs more than the rest of
    an acknowledgement's values together)."""
    if moment.tzinfo is not None:
        moment = moment.astimezone(dt.UTC)
    day = f"{moment.year:04d}-{moment.month:02d}-{moment.day:02d}"
    return f"{day} {moment.hour:02d}:{moment.minute:02d} UTC"


@attrs.frozen
class TemplateValues:
    """The values one render reads, by variable name.

    Keys are catalogue names or aliases (any case) or ``CF_<field>``; a variable
    without a value renders as an empty string. The dict a render needs is built
    here, once, so that rendering the subject, text and HTML copies nothing.

    Args:
        values: The values; non-string values are converted with :func:`str`.

    Raises:
        ValueError: A key is not a template variable.

    .. versionadded:: 0.1.0
    """

    values: Mapping[str, str] = attrs.field(converter=_normalized, hash=False)
    _variables: dict[str, Any] = attrs.field(init=False, repr=False, eq=False)

    def __attrs_post_init__(self) -> None:
        object.__setattr__(self, "_variables", {**_GLOBALS, **self.values})

    @classmethod
    def for_ticket(
        cls,
        ticket: Ticket,
        *,
        action: Action | None = None,
        note: str | None = None,
        action_by: str | None = None,
        user: User | None = None,
        customer: Customer | None = None,
        agent_name: str = "",
        agent_email: str = "",
        team_name: str = "",
        site_name: str = "",
        mailbox_name: str = "",
        ticket_url: str = "",
        tag: str = "",
        signature: str = "",
        extra: Mapping[str, str] | None = None,
    ) -> TemplateValues:
        """The values of mail about ``ticket``.

        Args:
            ticket: The ticket; its custom fields become ``$CF_<field>``.
            action: The action the mail is about (``$actionnote``, ``$actionby``).
            note: The text of ``$actionnote`` when there is no stored action (wins
                over the action's body).
            action_by: ``$actionby`` when there is no stored action (wins over the
                action's sender).
            user: The requester as the host knows them (name, phone).
            customer: The requester's customer.
            agent_name: The acting or assigned agent's name.
            agent_email: Their address (defaults to the ticket's agent).
            team_name: The team (defaults to the ticket's team).
            site_name: The customer's site (defaults to the site a rule set on the ticket).
            mailbox_name: The sending mailbox (defaults to the ticket's mailbox).
            ticket_url: The ticket's address in the helpdesk.
            tag: The subject tag, e.g. ``[ID:1234]``.
            signature: The sending agent's or mailbox's signature.
            extra: More values by variable name (``servicename`` …); they win.

        Returns:
            The values, every catalogue variable set (empty when unknown).
        """
        values: dict[str, str] = {
            "ticketid": str(ticket.id),
            "summary": ticket.summary,
            "details": ticket.details,
            "status": ticket.status.value.capitalize(),
            "tickettype": ticket.ticket_type,
            "priority": ticket.priority or "",
            "category": ticket.category or "",
            "username": ticket.user_name or (user.name if user else ""),
            "useremail": ticket.user_email,
            "userphone": (user.phone or user.mobile or "") if user else "",
            "customername": customer.name if customer else (ticket.customer or ""),
            "sitename": site_name or ticket.site or "",
            "agentname": agent_name,
            "agentemail": agent_email or ticket.agent or "",
            "teamname": team_name or ticket.team or "",
            "dateoccurred": _when(ticket.created_at),
            "actionnote": note if note is not None else (action.body if action else ""),
            "actionby": (
                action_by if action_by is not None else (action.from_address if action else "")
            ),
            "mailboxname": mailbox_name or ticket.mailbox,
            "ticketurl": ticket_url,
            "tag": tag,
            "servicename": "",
            "servicestatus": "",
            "signature": signature,
        }
        for field, value in ticket.custom_fields.items():
            key = field_key(field)
            if len(key) > len("cf_"):  # a name of only punctuation cannot be written
                # Under the name a template reads it by, as the converter would put it.
                values[_NAMES.resolve(key) or key] = (
                    value if type(value) is str else "" if value is None else str(value)
                )
        if extra:
            return cls({**values, **extra})
        return cls._of_canonical(values)

    @classmethod
    def _of_canonical(cls, values: dict[str, str]) -> TemplateValues:
        """Values already strings under their canonical names: built without the
        converter's second pass over them (the values of every acknowledgement)."""
        made = cls.__new__(cls)
        object.__setattr__(made, "values", types.MappingProxyType(values))
        made.__attrs_post_init__()
        return made


# -- templates ---------------------------------------------------------------------------


@attrs.frozen
class RenderedMessage:
    """A rendered mail: the subject is one clean line; ``html`` is ``None`` for text only.

    .. versionadded:: 0.1.0
    """

    subject: str
    text: str
    html: str | None = None


_PARTS: Final = ("subject", "text", "html")


@attrs.frozen
class Template:
    """An administrator's template: a subject, a text body and an optional HTML body.

    It is compiled and tried on a sample ticket when it is made, so a template that
    exists renders (except where a value makes it fail: a division by a custom field
    that is zero).

    Args:
        subject: The subject (rendered, then made one line).
        text: The text body (values are not escaped).
        html: The HTML body (every value escaped, line breaks as ``<br>``), or ``None``.
        name: Names the template in errors, e.g. ``Default/new_ticket_logged``.

    Raises:
        TemplateError: An unknown variable, a syntax error, a sandbox violation, or a
            failure on the sample ticket; its ``template`` is ``<name>.<part>`` and its
            ``line`` the line in that part.

    .. versionadded:: 0.1.0
    """

    subject: str
    text: str
    html: str | None = None
    name: str = attrs.field(default="template", kw_only=True)
    _parts: tuple[Compiled, Compiled, Compiled | None] = attrs.field(
        init=False, repr=False, eq=False
    )
    _variables: frozenset[str] = attrs.field(init=False, repr=False, eq=False)

    def __attrs_post_init__(self) -> None:
        subject = self._compile("subject", self.subject, _TEXT)
        text = self._compile("text", self.text, _TEXT)
        html = None if self.html is None else self._compile("html", self.html, _HTML)
        object.__setattr__(self, "_parts", (subject, text, html))
        read = frozenset().union(*(part.variables for part in self._parts if part is not None))
        object.__setattr__(self, "_variables", read)
        sample = TemplateValues(SAMPLE)._variables
        for part, compiled in zip(_PARTS, self._parts, strict=True):
            if compiled is None:
                continue
            try:
                compiled.render(sample)
            except Exception as exc:  # noqa: BLE001 - any failure is the template's
                problem = Problem(
                    f"fails on a sample ticket: {_describe(exc)}", compiled.line_of(exc)
                )
                problem.__cause__ = exc
                raise self._error(part, problem) from problem

    @property
    def variables(self) -> frozenset[str]:
        """The canonical names of the variables its parts read (``cf_…`` for custom fields).

        A value no part reads need not be looked up before rendering.

        .. versionadded:: 0.1.0
        """
        return self._variables

    def _compile(self, part: str, source: str, env: Sandbox) -> Compiled:
        try:
            return compile_part(source, env)
        except Problem as problem:
            raise self._error(part, problem) from problem

    def _error(self, part: str, problem: Problem) -> TemplateError:
        return TemplateError(problem.message, template=f"{self.name}.{part}", line=problem.line)

    def render(self, values: TemplateValues) -> RenderedMessage:
        """Render the subject, the text and the HTML with ``values``.

        Args:
            values: The values of this mail.

        Returns:
            The rendered mail.

        Raises:
            TemplateError: The template failed with these values (a sandbox violation,
                an error in an expression, output over the limit); the caller sends
                nothing and logs it.
        """
        variables = values._variables
        subject, text, html = self._parts
        return RenderedMessage(
            subject=_header_value(self._run("subject", subject, variables)),
            text=self._run("text", text, variables),
            html=None if html is None else self._run("html", html, variables),
        )

    def _run(self, part: str, compiled: Compiled, variables: dict[str, Any]) -> str:
        try:
            return compiled.render(variables)
        except Exception as exc:
            raise TemplateError(
                _describe(exc), template=f"{self.name}.{part}", line=compiled.line_of(exc)
            ) from exc


def _describe(exc: BaseException) -> str:
    if isinstance(exc, SecurityError):
        return f"sandbox: {exc}"
    return f"{type(exc).__name__}: {exc}"


# -- what agents write ---------------------------------------------------------------------

#: The longest text :func:`expand_text` takes, in characters: a note, not a book. Its
#: output is bounded by the template budgets (:mod:`halomail.templates.budget`).
MAX_TEXT_LENGTH: Final = 100_000
# Canned texts are expanded again and again: the compiled forms of the recent ones are kept.
_CACHED_TEXTS: Final = 256


def expand_text(
    text: str,
    values: TemplateValues | Mapping[str, object],
    *,
    html: bool = False,
    name: str = "text",
) -> str:
    """``text`` with its ``$variables`` expanded, as a template would expand them.

    For what agents write: a note, an action's text, a canned reply. The language,
    sandbox and budgets are those of :class:`Template`: ``$-name`` is the literal
    ``$name``, HTML output escapes every value, and a value (the customer's subject,
    a custom field) is inserted as written, never expanded again. Build ``values``
    with :meth:`TemplateValues.for_ticket`, or pass a mapping of variable names.

    Args:
        text: What the agent wrote.
        values: The values of the variables.
        html: ``text`` is HTML: every value is escaped, its line breaks become ``<br>``.
        name: Names the text in errors (``canned/Printer reset``).

    Returns:
        The expanded text.

    Raises:
        TemplateError: The text is longer than :data:`MAX_TEXT_LENGTH`, uses an
            unknown variable or an unsafe construct, or failed to render (a budget
            exceeded); the error names the line.
        ValueError: A key of a ``values`` mapping is not a template variable.

    Example:
        >>> expand_text("Ticket $ticketid ($-ticketid stays)", {"ticketid": 42})
        'Ticket 42 ($ticketid stays)'

    .. versionadded:: 0.1.0
    """
    if len(text) > MAX_TEXT_LENGTH:
        raise TemplateError(
            f"the text has {len(text):,} characters; at most {MAX_TEXT_LENGTH:,} are expanded",
            template=name,
        )
    if not isinstance(values, TemplateValues):
        values = TemplateValues(values)
    try:
        compiled = _compiled_text(text, html)
    except Problem as problem:
        raise TemplateError(problem.message, template=name, line=problem.line) from problem
    try:
        return compiled.render(values._variables)
    except Exception as exc:
        raise TemplateError(_describe(exc), template=name, line=compiled.line_of(exc)) from exc


@functools.lru_cache(maxsize=_CACHED_TEXTS)
def _compiled_text(text: str, html: bool) -> Compiled:
    """``text`` translated, checked and compiled (raises :class:`Problem`)."""
    return compile_part(text, _HTML if html else _TEXT)


# -- message groups ------------------------------------------------------------------------


def _by_kind(
    templates: Mapping[MessageKind, Template] | Mapping[str, Template],
) -> Mapping[MessageKind, Template]:
    return types.MappingProxyType({MessageKind(kind): t for kind, t in templates.items()})


@attrs.frozen
class MessageGroup:
    """A named set of templates, at most one per :class:`MessageKind`.

    A group need not have every kind: :class:`TemplateRenderer` fills the missing ones
    from ``Default``, so a new group starts as a copy of the default.

    Args:
        name: The group's name (mailboxes and teams refer to it, case-insensitively).
        templates: The group's templates by kind.

    Raises:
        ValueError: A key is not a message kind.

    .. versionadded:: 0.1.0
    """

    name: str
    templates: Mapping[MessageKind, Template] = attrs.field(
        factory=dict, converter=_by_kind, hash=False
    )


@functools.cache
def default_message_group() -> MessageGroup:
    """The built-in ``Default`` group: a template for every kind.

    Returns:
        The group (compiled once per process, then shared).
    """
    return MessageGroup(
        "Default",
        {
            MessageKind(kind): Template(subject, text, html, name=f"Default/{kind}")
            for kind, (subject, text, html) in BUILT_IN.items()
        },
    )


class TemplateRenderer:
    """Renders outgoing mail from message groups.

    The built-in ``Default`` group is always there. A given group named ``Default``
    replaces the built-in templates of the kinds it has; every other group takes the
    kinds it lacks from that (possibly customised) ``Default``.

    Args:
        groups: The administrator's groups.

    Raises:
        ValueError: Two groups have the same name (case-insensitively).

    .. versionadded:: 0.1.0
    """

    def __init__(self, groups: Iterable[MessageGroup] = ()) -> None:
        given: dict[str, MessageGroup] = {}
        for group in groups:
            key = group.name.casefold()
            if key in given:
                raise ValueError(f"two message groups are named {group.name!r}")
            given[key] = group
        base = given.pop("default", None)
        templates = dict(default_message_group().templates)
        templates.update(base.templates if base else {})
        default = MessageGroup(base.name if base else "Default", templates)
        self._groups: dict[str, MessageGroup] = {"default": default}
        for key, group in given.items():
            own = dict(default.templates)
            own.update(group.templates)
            self._groups[key] = MessageGroup(group.name, own)
        # One lookup per render: (group, kind) → template, every kind of every group.
        self._table: dict[tuple[str, str], Template] = {
            (key, kind): template
            for key, group in self._groups.items()
            for kind, template in group.templates.items()
        }

    @property
    def groups(self) -> tuple[MessageGroup, ...]:
        """Every group, ``Default`` first, each with all its kinds filled in."""
        return tuple(self._groups.values())

    def has_group(self, name: str) -> bool:
        """True when a group is called ``name`` (case-insensitively)."""
        return name.casefold() in self._groups

    def group(self, name: str) -> MessageGroup:
        """The group called ``name``, with all its kinds filled in.

        Raises:
            KeyError: No group has that name.
        """
        return self._groups[name.casefold()]

    def render(
        self, kind: MessageKind | str, values: TemplateValues, *, group: str = "Default"
    ) -> RenderedMessage:
        """Render the ``kind`` template of ``group`` with ``values``.

        An unknown group falls back to ``Default`` with a warning: mail is better sent
        in the default words than not at all.

        Args:
            kind: Which template.
            values: The values of this mail.
            group: The message group (of the ticket's team, else of the mailbox).

        Returns:
            The rendered subject, text and HTML.

        Raises:
            TemplateError: The template failed with these values; send nothing.
            ValueError: ``kind`` is not a message kind.
        """
        return self.template(kind, group=group).render(values)

    def template(self, kind: MessageKind | str, *, group: str = "Default") -> Template:
        """The ``kind`` template of ``group`` (of ``Default`` for an unknown group).

        Its :attr:`Template.variables` tell which values a render will read.

        Raises:
            ValueError: ``kind`` is not a message kind.

        .. versionadded:: 0.1.0
        """
        template = self._table.get((group.casefold(), kind))
        if template is None:
            kind = MessageKind(kind)
            if group.casefold() not in self._groups:
                log.warning("no message group %r: using %r", group, self._groups["default"].name)
            template = self._table[("default", kind)]
        return template


# -- configuration ------------------------------------------------------------------------

_GROUP_KEYS: Final = ("name", "templates")
_TEMPLATE_KEYS: Final = ("subject", "text", "html")


def message_groups_from_config(
    tables: Sequence[Mapping[str, Any]], key_path: str = "message_groups"
) -> tuple[MessageGroup, ...]:
    """Validate ``[[message_groups]]`` and compile every template in it.

    Each ``[message_groups.templates.<kind>]`` table has ``subject`` and ``text``
    (both required, except the subject of ``sms``) and ``html`` (optional: without
    it the mail is text only).

    Args:
        tables: The array of tables, as parsed from TOML.
        key_path: Where the array is, for error messages.

    Returns:
        The groups, in file order.

    Raises:
        ConfigError: A key is missing, unknown or of the wrong type, two groups share a
            name, or a template is invalid; the key path names the template part
            (``message_groups[1].templates.ticket_closed.text``) and the message its
            line (``line 3: unknown variable $ticktid``).
    """
    groups: list[MessageGroup] = []
    seen: set[str] = set()
    for index, raw in enumerate(tables):
        kp = f"{key_path}[{index}]"
        table = as_table(raw, kp)
        check_keys(table, kp, _GROUP_KEYS)
        name = table.get("name")
        if not isinstance(name, str) or not name.strip():
            shown = "missing" if name is None else describe(name)
            raise ConfigError(join_key(kp, "name"), f"expected a group name, got {shown}")
        if _HEADER_CONTROL.search(name):
            raise ConfigError(join_key(kp, "name"), "must not contain control characters")
        name = name.strip()
        if name.casefold() in seen:
            raise ConfigError(join_key(kp, "name"), f"another group is already named {name!r}")
        seen.add(name.casefold())
        templates_kp = join_key(kp, "templates")
        templates = as_table(table.get("templates", {}), templates_kp)
        compiled: dict[MessageKind, Template] = {}
        for kind_name, source in templates.items():
            kind = _kind(kind_name, templates_kp)
            compiled[kind] = _template_from_config(
                source, join_key(templates_kp, kind_name), kind, f"{name}/{kind_name}"
            )
        groups.append(MessageGroup(name, compiled))
    return tuple(groups)


def _kind(name: str, key_path: str) -> MessageKind:
    try:
        return MessageKind(name)
    except ValueError:
        known = [kind.value for kind in MessageKind]
        suggestion = hint(name, known) or f"; known kinds: {', '.join(known)}"
        raise ConfigError(
            join_key(key_path, name), f"unknown message kind {name!r}{suggestion}"
        ) from None


def _template_from_config(raw: Any, key_path: str, kind: MessageKind, name: str) -> Template:
    table = as_table(raw, key_path)
    check_keys(table, key_path, _TEMPLATE_KEYS)
    parts: dict[str, str | None] = {}
    for part in _PARTS:
        value = table.get(part)
        if value is None and part == "subject" and kind is MessageKind.SMS:
            value = ""  # a text message has no subject unless the gateway shows one
        if value is None and part != "html":
            raise ConfigError(join_key(key_path, part), "missing (required)")
        if value is not None and not isinstance(value, str):
            raise ConfigError(join_key(key_path, part), f"expected text, got {describe(value)}")
        parts[part] = value
    try:
        return Template(str(parts["subject"]), str(parts["text"]), parts["html"], name=name)
    except TemplateError as exc:
        part = (exc.template or "").rpartition(".")[2]
        problem = exc.__cause__
        if not isinstance(problem, Problem):  # every TemplateError of Template has one
            problem = Problem(str(exc), exc.line)
        where = f"line {problem.line}: " if problem.line is not None else ""
        raise ConfigError(join_key(key_path, part), where + problem.message) from exc
