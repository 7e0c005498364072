"""halomail's pages in the Django admin: tickets, the quarantine, the outbox, services.

What halomail owns (an email's text, the ledger, what was sent) is shown read-only;
what a helpdesk decides (a ticket's status, its agent and team) stays editable. The
admin's actions run halomail's own operations through :class:`DjangoRepository`, so
they behave as the ``halomail`` command does:

- *Release* processes a quarantined email again through the rules, once
  (``halomail quarantine release``); a second release does nothing.
- *Delete* forgets a quarantined email and its bytes (``halomail quarantine delete``).
- *Retry* queues failed outgoing mail again, due now (``halomail outbox retry``).

A quarantined email is often hostile: its headers and text are shown escaped, never
as HTML, and its original bytes are offered as a download, never rendered.

.. versionadded:: 0.1.0
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any, TypeVar, cast

import attrs
from django.contrib import admin, messages
from django.core.exceptions import ImproperlyConfigured, PermissionDenied
from django.db.models import CharField, OuterRef, QuerySet, Subquery, Value
from django.db.models.functions import Cast, Concat, Length
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404
from django.template.response import TemplateResponse
from django.urls import URLPattern, path, reverse
from django.utils import timezone
from django.utils.html import format_html, format_html_join
from django.utils.safestring import SafeString

from halomail import _cli_outbox, _cli_quarantine
from halomail.config.loader import Config
from halomail.contrib.django import models
from halomail.errors import ConfigError
from halomail.inbound.parse import parse_email
from halomail.tickets.models import MAYBE_SENT, TicketStatus
from halomail.tickets.repository import QuarantineAdmin, TicketRepository

__all__ = [
    "ActionInline",
    "OutboxMailAdmin",
    "QuarantineEntryAdmin",
    "Segment",
    "ServiceStatusAdmin",
    "TicketAdmin",
    "timeline",
]

# The original email's page shows enough to recognise it; the download has all of it.
_HEADERS_SHOWN = 60
_HEADER_CHARS = 300
_TEXT_CHARS = 4000
# The ledger's key of a released entry's record, but its id.
_RELEASE_PREFIX = _cli_quarantine.RELEASE_STATE.format(id="")
# A service's timeline draws its latest statuses: enough for weeks of monitor emails.
_TIMELINE_ENTRIES = 500


_Function = TypeVar("_Function", bound=Callable[..., Any])


def _display(**options: Any) -> Callable[[_Function], _Function]:
    """Django's ``admin.display``, typed: the method keeps its signature for mypy."""
    return cast(Callable[[_Function], _Function], admin.display(**options))


def _action(**options: Any) -> Callable[[_Function], _Function]:
    """Django's ``admin.action``, typed as :func:`_display` is."""
    return cast(Callable[[_Function], _Function], admin.action(**options))


@contextmanager
def _halomail_repository() -> Iterator[TicketRepository]:
    """The Django repository on the database ``settings.HALOMAIL`` names, closed after."""
    # Imported here: the repository's modules need Django's apps, ready by now.
    from halomail.contrib.django import DjangoRepository, conf

    repository = DjangoRepository(conf.database_alias())
    try:
        yield cast(TicketRepository, repository)
    finally:
        repository.close()


@contextmanager
def _halomail() -> Iterator[tuple[Config, TicketRepository]]:
    """halomail's configuration (``settings.HALOMAIL``) over Django's database.

    The configuration is the management commands' (``conf.load``): its mailboxes,
    rules and templates, with Django's database in place of its ``[storage]``.
    """
    from halomail.contrib.django import conf

    with _halomail_repository() as repository:
        yield conf.load(), repository


def _read_only(model_admin: admin.ModelAdmin) -> list[str]:
    """Every field of the model admin's model: halomail's record, shown not edited."""
    return [field.name for field in model_admin.model._meta.fields]


# -- tickets -------------------------------------------------------------------------


class ActionInline(admin.TabularInline):
    """A ticket's actions (emails in and out, notes) as halomail recorded them."""

    model = models.Action
    extra = 0
    can_delete = False
    fields = ("created_at", "kind", "from_address", "public", "body")
    readonly_fields = fields
    ordering = ("id",)

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        """Actions come from mail: none is added by hand here."""
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        """A ticket's history is kept whole."""
        return False


class TicketAdmin(admin.ModelAdmin):
    """Tickets: filtered by status, mailbox and customer; searched by summary and sender."""

    list_display = ("id", "summary", "status", "mailbox", "customer", "user_email", "created_at")
    list_display_links = ("id", "summary")
    list_filter = ("status", "mailbox", "customer")
    search_fields = ("summary", "details", "user_email", "user_name")
    date_hierarchy = "created_at"
    inlines = (ActionInline,)
    # The helpdesk decides these; the rest is what the email said.
    editable = ("status", "priority", "category", "team", "agent", "impact", "urgency", "site")
    fieldsets = (
        (
            "From the email",
            {
                "fields": (
                    "summary",
                    "details",
                    ("user_name", "user_email"),
                    "cc",
                    ("mailbox", "customer"),
                    ("ticket_type", "record"),
                    ("created_at", "updated_at", "closed_at"),
                )
            },
        ),
        (
            "The helpdesk's",
            {
                "fields": (
                    ("status", "priority", "category"),
                    ("team", "agent"),
                    ("impact", "urgency", "site"),
                )
            },
        ),
        (
            "Links",
            {"fields": ("outgoing", "asset_id", "asset_ids", "custom_fields", "alert_key")},
        ),
    )

    def get_readonly_fields(self, request: HttpRequest, obj: Any = None) -> list[str]:
        """Everything but the helpdesk's own decisions."""
        return [name for name in [*_read_only(self), "outgoing"] if name not in self.editable]

    def has_add_permission(self, request: HttpRequest) -> bool:
        """Tickets are opened by email, through halomail's rules."""
        return False

    def save_model(self, request: HttpRequest, obj: models.Ticket, form: Any, change: bool) -> None:
        """Save the helpdesk's fields; a new status goes through halomail's ``set_status``.

        The repository's ``set_status`` is what a run uses: it stamps ``updated_at``
        and sets ``closed_at`` on closing (clears it on reopening), which a plain save of
        the field would not.
        """
        status = obj.status
        moved = change and "status" in form.changed_data
        if moved:
            obj.status = form.initial["status"]
        super().save_model(request, obj, form, change)
        if moved:
            with _halomail_repository() as repository:
                repository.set_status(obj.pk, TicketStatus(status))
            obj.refresh_from_db()

    @_display(description="outgoing mail")
    def outgoing(self, ticket: models.Ticket) -> SafeString | str:
        """The ticket's mail in the outbox, each with its state, linked to its page."""
        mails = models.OutboxMail.objects.filter(ticket_id=ticket.pk).order_by("id")
        if not mails:
            return "-"
        return format_html(
            "<ul>{}</ul>",
            format_html_join(
                "",
                '<li><a href="{}">#{} {}</a>: {}</li>',
                (
                    (
                        reverse("admin:halomail_outboxmail_change", args=[mail.pk]),
                        mail.pk,
                        mail.subject,
                        _outbox_state(mail),
                    )
                    for mail in mails
                ),
            ),
        )


# -- the quarantine --------------------------------------------------------------------


class QuarantineEntryAdmin(admin.ModelAdmin):
    """Emails kept aside: why, the original (escaped), its bytes, release and delete."""

    list_display = ("id", "created_at", "mailbox", "reason", "message_id", "size", "released")
    list_filter = ("reason", "mailbox")
    search_fields = ("message_id", "detail")
    actions = ("release",)
    fields = (
        "reason",
        "detail",
        "mailbox",
        "created_at",
        "message_id",
        "size",
        "released",
        "download",
        "original",
    )
    readonly_fields = fields

    def get_queryset(self, request: HttpRequest) -> QuerySet[models.QuarantineEntry]:
        """The entries, their size and release counted by the database, not their bytes.

        The bytes (``raw``) load only when an entry's page reads them: a list of a
        hundred entries never holds a hundred emails in memory.
        """
        released = models.State.objects.filter(
            key=Concat(Value(_RELEASE_PREFIX), Cast(OuterRef("pk"), CharField()))
        )
        queryset: QuerySet[models.QuarantineEntry] = super().get_queryset(request)
        return queryset.defer("raw").annotate(
            raw_size=Length("raw"), release_state=Subquery(released.values("value")[:1])
        )

    def has_add_permission(self, request: HttpRequest) -> bool:
        """Only halomail quarantines an email."""
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        """A quarantined email is evidence: it is viewed, released or deleted, never edited."""
        return False

    @_display(description="size (bytes)", ordering="raw_size")
    def size(self, entry: models.QuarantineEntry) -> int:
        """How many bytes of the original were kept."""
        return int(entry.raw_size or 0)

    @_display(description="released")
    def released(self, entry: models.QuarantineEntry) -> str:
        """What came of its release, if it was released."""
        return _released_text(entry.release_state)

    @_display(description="original bytes")
    def download(self, entry: models.QuarantineEntry) -> SafeString | str:
        """A link to the original email, byte for byte (an ``.eml`` file)."""
        if not entry.raw_size:
            return "not kept"
        url = reverse("admin:halomail_quarantineentry_download", args=[entry.pk])
        return format_html(
            '<a href="{}" download>download the .eml ({} bytes)</a>', url, entry.raw_size
        )

    @_display(description="original email")
    def original(self, entry: models.QuarantineEntry) -> SafeString | str:
        """The email's first headers and its text, escaped: nothing in it runs or loads."""
        raw = bytes(entry.raw or b"")
        if not raw:
            return "The original was not kept."
        email = parse_email(raw)
        headers = format_html_join(
            "",
            "<tr><th>{}</th><td>{}</td></tr>",
            ((name, value[:_HEADER_CHARS]) for name, value in email.headers[:_HEADERS_SHOWN]),
        )
        text = email.text.strip()
        cut = len(text) - _TEXT_CHARS
        more = f"\n[… {cut} more characters: download the original]" if cut > 0 else ""
        return format_html(
            '<table class="halomail-headers">{}</table>'
            '<pre class="halomail-text" style="white-space: pre-wrap">{}{}</pre>',
            headers,
            text[:_TEXT_CHARS],
            more,
        )

    def get_urls(self) -> list[URLPattern]:
        """The model's pages, and the download of an entry's original bytes."""
        download = path(
            "<int:entry_id>/original/",
            self.admin_site.admin_view(self.download_view),
            name="halomail_quarantineentry_download",
        )
        return [download, *super().get_urls()]

    def download_view(self, request: HttpRequest, entry_id: int) -> HttpResponse:
        """The original email's bytes as an attachment (never shown inline by the browser)."""
        if not self.has_view_permission(request):
            raise PermissionDenied
        entry = get_object_or_404(models.QuarantineEntry, pk=entry_id)
        if not entry.raw:
            raise Http404("the original was not kept")
        response = HttpResponse(bytes(entry.raw), content_type="message/rfc822")
        response["Content-Disposition"] = f'attachment; filename="quarantine-{entry.pk}.eml"'
        response["X-Content-Type-Options"] = "nosniff"
        return response

    @_action(description="Release: process again through the rules", permissions=["delete"])
    def release(self, request: HttpRequest, queryset: QuerySet[models.QuarantineEntry]) -> None:
        """Process each selected email again, once, as ``halomail quarantine release`` does.

        A configuration the release cannot use (a file that does not load, a mailbox
        no longer configured) is said on the page, and that email stays quarantined.
        """
        try:
            with _halomail() as (config, repository):
                for entry_id in queryset.order_by("id").values_list("id", flat=True):
                    self._release_one(request, config, repository, entry_id)
        except (ConfigError, ImproperlyConfigured) as exc:
            self.message_user(request, f"nothing released: {exc}", messages.ERROR)

    def _release_one(
        self, request: HttpRequest, config: Config, repository: TicketRepository, entry_id: int
    ) -> None:
        entry = cast(QuarantineAdmin, repository).get_quarantine(entry_id)
        if entry is None:
            return
        if not entry.raw and _cli_quarantine.release_record(repository, entry_id) is None:
            self.message_user(
                request,
                f"#{entry_id}: the original was not kept, nothing to release",
                messages.ERROR,
            )
            return
        try:
            record, again = _cli_quarantine.release(config, repository, entry)
        except ConfigError as exc:  # its mailbox is no longer configured, say
            self.message_user(request, f"#{entry_id} not released: {exc}", messages.ERROR)
            return
        level = messages.WARNING if again else messages.SUCCESS
        already = "was released already, nothing done: " if again else ""
        self.message_user(request, f"#{entry_id} {already}{_released_text_of(record)}", level)


def _released_text(raw: str | None) -> str:
    if raw is None:
        return "-"
    try:
        record = json.loads(raw)
    except ValueError:
        return "-"
    return _released_text_of(record) if isinstance(record, dict) else "-"


def _released_text_of(record: dict[str, Any]) -> str:
    ticket = f" ticket #{record['ticket_id']}" if record.get("ticket_id") else ""
    return f"released {str(record.get('at', ''))[:16]}: {record.get('outcome')}{ticket}"


# -- the outbox ------------------------------------------------------------------------


class OutboxMailAdmin(admin.ModelAdmin):
    """Outgoing mail: pending, maybe sent, sent or failed, and why; retry the failed."""

    list_display = (
        "id",
        "created_at",
        "state",
        "to",
        "subject",
        "kind",
        "ticket_id",
        "attempts",
        "next_attempt_at",
        "last_error",
    )
    list_filter = ("status", "kind", "mailbox")
    search_fields = ("subject", "message_id")
    actions = ("retry",)
    exclude = ("html",)

    def get_readonly_fields(self, request: HttpRequest, obj: Any = None) -> list[str]:
        """All of it: what was queued and what the transport answered."""
        return [*_read_only(self), "state"]

    def has_add_permission(self, request: HttpRequest) -> bool:
        """Mail is queued by halomail's notifier, in its ticket's transaction."""
        return False

    @_display(description="state", ordering="status")
    def state(self, mail: models.OutboxMail) -> str:
        """``pending``, ``maybe sent``, ``sent`` or ``failed``, as ``halomail outbox`` says."""
        return _outbox_state(mail)

    @_display(description="to")
    def to(self, mail: models.OutboxMail) -> str:
        """The recipients."""
        return ", ".join(mail.recipients)

    @_action(description="Retry: send again now", permissions=["change"])
    def retry(self, request: HttpRequest, queryset: QuerySet[models.OutboxMail]) -> None:
        """Queue the selected failed or pending mail again, due now (``halomail outbox retry``)."""
        ids = list(queryset.values_list("id", flat=True))
        with _halomail_repository() as repository:
            retried = _cli_outbox.retry(repository, ids)
        self.message_user(
            request, f"{len(retried)} emails queued again, due now: the next run sends them"
        )
        skipped = len(ids) - len(retried)
        if skipped:
            self.message_user(
                request, f"{skipped} not retried: sent already, or not failed", messages.WARNING
            )


def _outbox_state(mail: models.OutboxMail) -> str:
    """``maybe sent`` when the last attempt may have delivered it, else its status."""
    maybe = mail.status != "sent" and (mail.last_error or "").startswith(MAYBE_SENT)
    return "maybe sent" if maybe else str(mail.status)


# -- monitored services ------------------------------------------------------------------


@attrs.frozen
class Segment:
    """One period of a service's timeline: a status from ``start`` until ``end``.

    Attributes:
        status: ``ok``, ``failed`` or ``unknown``.
        start: When the status was reported.
        end: When the next status was (now for the current one).
        share: Its part of the timeline's width, in percent.
        detail: What the report said.
    """

    status: str
    start: dt.datetime
    end: dt.datetime
    share: float
    detail: str = ""


def timeline(entries: Sequence[models.ServiceStatus], now: dt.datetime) -> list[Segment]:
    """A service's history as consecutive periods, oldest first, a repeated status merged.

    Args:
        entries: Its statuses, in any order.
        now: Where the current status ends.

    Returns:
        The periods; their shares add up to 100 (an empty list for no history).
    """
    ordered = sorted(entries, key=lambda e: (e.at, e.pk or 0))
    periods: list[tuple[str, dt.datetime, str]] = []
    for entry in ordered:
        if not periods or periods[-1][0] != entry.status:
            periods.append((entry.status, entry.at, entry.detail))
    if not periods:
        return []
    end = max(now, periods[-1][1])
    total = (end - periods[0][1]).total_seconds()
    segments = []
    for (status, start, detail), following in zip(periods, [*periods[1:], None], strict=True):
        stop = following[1] if following is not None else end
        seconds = (stop - start).total_seconds()
        share = 100 * seconds / total if total > 0 else 100 / len(periods)
        segments.append(Segment(status, start, stop, round(share, 3), detail))
    return segments


def _latest_per_service() -> list[models.ServiceStatus]:
    """Each service's latest report, by name: one query, however many services."""
    latest = models.ServiceStatus.objects.filter(service=OuterRef("service")).order_by("-at", "-id")
    rows = models.ServiceStatus.objects.filter(pk=Subquery(latest.values("pk")[:1]))
    return list(rows.order_by("service"))


class ServiceStatusAdmin(admin.ModelAdmin):
    """The statuses of monitored services; each service opens on its timeline."""

    list_display = ("service_link", "status", "at", "detail", "ticket_id")
    list_filter = ("service", "status")
    date_hierarchy = "at"

    def get_readonly_fields(self, request: HttpRequest, obj: Any = None) -> list[str]:
        """All of it: reported by monitor emails."""
        return _read_only(self)

    def has_add_permission(self, request: HttpRequest) -> bool:
        """Statuses come from monitor emails."""
        return False

    def changelist_view(
        self, request: HttpRequest, extra_context: dict[str, Any] | None = None
    ) -> HttpResponse:
        """The reports, under a table of the services: each one's status now, linked."""
        services = [
            (entry, reverse("admin:halomail_servicestatus_timeline", args=[entry.service]))
            for entry in _latest_per_service()
        ]
        context = {**(extra_context or {}), "halomail_services": services}
        response: HttpResponse = super().changelist_view(request, extra_context=context)
        return response

    @_display(description="service", ordering="service")
    def service_link(self, entry: models.ServiceStatus) -> SafeString:
        """The service's name, opening its timeline."""
        url = reverse("admin:halomail_servicestatus_timeline", args=[entry.service])
        return format_html('<a href="{}">{}</a>', url, entry.service)

    def get_urls(self) -> list[URLPattern]:
        """The model's pages, and one service's timeline."""
        timeline_page = path(
            "timeline/<path:service>/",
            self.admin_site.admin_view(self.timeline_view),
            name="halomail_servicestatus_timeline",
        )
        return [timeline_page, *super().get_urls()]

    def timeline_view(self, request: HttpRequest, service: str) -> TemplateResponse:
        """A service's status history drawn as a bar of periods, with their times."""
        if not self.has_view_permission(request):
            raise PermissionDenied
        latest = models.ServiceStatus.objects.filter(service=service).order_by("-at", "-id")
        entries = list(latest[:_TIMELINE_ENTRIES])
        if not entries:
            raise Http404(f"no status of service {service!r}")
        segments = timeline(entries, timezone.now())
        context = {
            **self.admin_site.each_context(request),
            "opts": self.model._meta,
            "title": f"Service {service}",
            "service": service,
            "current": entries[0],
            "segments": segments,
            "history": entries,
        }
        return TemplateResponse(request, "admin/halomail/servicestatus/timeline.html", context)


# Registered on the default admin site, as django.contrib.admin's autodiscovery expects.
admin.site.register(models.Ticket, TicketAdmin)
admin.site.register(models.QuarantineEntry, QuarantineEntryAdmin)
admin.site.register(models.OutboxMail, OutboxMailAdmin)
admin.site.register(models.ServiceStatus, ServiceStatusAdmin)
