"""A deterministic, seeded corpus of raw helpdesk email for the benchmarks.

``generate(n, seed)`` returns ``n`` raw messages (``bytes``, CRLF line endings, as an
IMAP server hands them over) in the mix of issue 7:

- 60% **plain replies** with quoted history: Gmail/Apple ``On … wrote:`` with ``>``
  quoted lines (nested up to three levels), Outlook ``From:/Sent:/To:/Subject:``
  blocks and ``-----Original Message-----``; utf-8 or us-ascii, 7bit, 8bit or
  quoted-printable; some with a signature and a mobile footer;
- 25% **HTML** of 5-50 KB: ``multipart/related`` around ``multipart/alternative``
  (text and HTML) or HTML alone, with a ``<style>`` block, layout and data tables,
  inline styles, inline images referenced by ``cid:`` and a quoted part (Gmail's
  ``gmail_quote`` blockquote or Outlook's ``divRplyFwdMsg``);
- 10% with **attachments** of 10 KB-2 MB in all (one to three files, sizes drawn
  log-uniformly; PDF-, PNG-, ZIP- and XLSX-like bytes, base64 in 76-column lines);
- 5% in **legacy charsets** (iso-8859-1, windows-1252, iso-2022-jp, koi8-r,
  gb2312), with RFC 2047 encoded words in Subject and From.

Every message has realistic headers: a Received chain of two to four hops,
Authentication-Results, a DKIM-Signature, Message-ID, Date, X-Mailer or User-Agent,
and In-Reply-To/References on most replies. Senders are a few hundred people at a
few dozen customer domains (plus some free-mail users).

About one plain reply in six is a **follow-up**: its subject carries ``[ID:n]`` for
a ticket that an earlier email of the same sender opened, and its In-Reply-To names
that earlier email's Message-ID. ``n`` assumes each earlier email that was not a
follow-up opened one ticket, in order, as halomail does without rules; so on a
fresh repository these update tickets instead of opening new ones.

The exact proportions are kept (the kinds are counted, then shuffled), and the same
``(n, seed)`` always gives the same bytes.

Command line (writes a Maildir for manual runs)::

    python benchmarks/corpus.py --messages 2000 --seed 7 --maildir /tmp/bench-maildir
"""

# Legacy-charset samples are written in their own scripts and punctuation on purpose.
# ruff: noqa: RUF001

from __future__ import annotations

import argparse
import base64
import datetime as dt
import quopri
import random
import sys
from collections import Counter
from email.utils import format_datetime
from pathlib import Path

__all__ = [
    "DEFAULT_SEED",
    "HELPDESK",
    "KINDS",
    "Person",
    "generate",
    "generate_labelled",
    "plain_reply",
    "write_maildir",
]

DEFAULT_SEED = 20240601
HELPDESK = "support@msp.example"
#: The kinds and their share of the corpus, in the order of issue 7.
KINDS: dict[str, float] = {"plain": 0.60, "html": 0.25, "attachment": 0.10, "legacy": 0.05}

_START = dt.datetime(2024, 5, 6, 7, 30, tzinfo=dt.UTC)
_CRLF = "\r\n"

_FIRST = (
    "Anna", "Ben", "Carla", "David", "Elena", "Frank", "Grace", "Hugo", "Ines", "Jonas",
    "Karin", "Lars", "Maria", "Nils", "Olga", "Paul", "Quentin", "Rita", "Stefan", "Tanja",
    "Uwe", "Vera", "Walter", "Xenia", "Yusuf", "Zoe", "Amy", "Bob", "Chloe", "Dmitri",
)  # fmt: skip
_LAST = (
    "Schmidt", "Martin", "Rossi", "Nowak", "Jansen", "Dubois", "Garcia", "Smith", "Berg",
    "Novak", "Keller", "Moreau", "Fischer", "Larsen", "Brown", "Weber", "Costa", "Horvat",
)  # fmt: skip
_COMPANY = (
    "acme", "globex", "initech", "umbrella", "stark", "wayne", "hooli", "vandelay", "soylent",
    "tyrell", "cyberdyne", "wonka", "gringotts", "oceanic", "monarch", "nakatomi", "dunder",
    "prestige", "massive", "virtucon", "bluth", "pied-piper", "aperture", "black-mesa",
    "sirius", "octan", "zorg", "genco", "kramerica", "bigkahuna", "ajax", "duff", "krusty",
    "sterling", "pearson", "waystar", "lacroix", "ollivander", "gekko", "rekall",
)  # fmt: skip
_FREEMAIL = ("gmail.example", "outlook.example", "yahoo.example", "gmx.example")
_TOPICS = (
    ("VPN drops every hour", "the VPN client disconnects", "VPN"),
    ("Printer on 2nd floor offline", "the printer shows offline", "printer"),
    ("Outlook keeps asking for password", "Outlook prompts for the password", "Outlook"),
    ("New starter next Monday", "we need an account and a laptop", "onboarding"),
    ("Shared drive is full", "the S: drive reports no space left", "file share"),
    ("Teams calls dropping", "Teams calls freeze after ten minutes", "Teams"),
    ("Invoice portal login", "the invoice portal rejects the login", "portal"),
    ("Laptop very slow", "the laptop takes ten minutes to start", "laptop"),
    ("MFA phone replaced", "I have a new phone and cannot sign in", "MFA"),
    ("Backup failed on FS01", "last night's backup job reported an error", "backup"),
    ("Wi-Fi in meeting room", "the meeting room Wi-Fi is very slow", "Wi-Fi"),
    ("Licence renewal", "the Office licences expire at the end of the month", "licences"),
)  # fmt: skip
_SENTENCES = (
    "It started this morning around nine and happens every few minutes.",
    "I already restarted the computer twice, it did not help.",
    "Could you please have a look as soon as possible?",
    "The error message says that the connection was reset by the server.",
    "Three colleagues in accounting see the same thing.",
    "We have a deadline on Friday so this is quite urgent for us.",
    "I attached a screenshot of the error in case it helps.",
    "Yesterday everything worked fine, nothing was installed since then.",
    "Please call me on my mobile if you need access to the machine.",
    "Thanks for the quick help last time, it worked for a week.",
    "The same problem also happens from home over the hotspot.",
    "Let me know if you need the log files or anything else.",
    "We tried with another user account and it behaves the same.",
    "The screen goes black for a second and then the session is gone.",
    "I am in the office until five today, after that via email.",
)  # fmt: skip
_AGENT_LINES = (
    "Thank you for your email. We have logged your request and will look into it.",
    "Could you please send us a screenshot of the error message?",
    "We restarted the service on our side, please try again and let us know.",
    "Please run the update from the software centre and reboot afterwards.",
    "We have scheduled a technician for tomorrow morning.",
    "Can you confirm the asset tag on the sticker under the laptop?",
)  # fmt: skip
_MAILERS = (
    ("X-Mailer", "Microsoft Outlook 16.0"),
    ("User-Agent", "Mozilla/5.0 (Windows NT 10.0; Win64; x64; rv:115.0) Thunderbird/115.11.0"),
    ("X-Mailer", "Apple Mail (2.3774.600.62)"),
    ("X-Mailer", "iPhone Mail (21F90)"),
    ("User-Agent", "Roundcube Webmail/1.6.6"),
)

# Legacy charsets: the language, sample text, subject and display name written in it,
# and the transfer encoding such mail usually arrives in.
_LEGACY = (
    (
        "iso-8859-1",
        "8bit",
        "Bonjour, l'imprimante du deuxième étage ne répond plus depuis ce matin. "
        "Pourriez-vous vérifier la file d'attente ? Merci beaucoup, à bientôt.",
        "Problème d'impression - étage 2",
        "Hélène Müller",
    ),
    (
        "windows-1252",
        "quoted-printable",
        "Hello, the “shared” drive shows €0 budget left — I can’t save the quarterly "
        "report… Could you increase the quota? Kind regards.",
        "Quota “S:” drive – urgent…",
        "Zoë O’Brien",
    ),
    (
        "iso-2022-jp",
        "7bit",
        "お世話になっております。今朝からメールが送信できません。"
        "エラーメッセージのスクリーンショットを添付します。よろしくお願いいたします。",
        "メール送信エラーについて",
        "山田 太郎",
    ),
    (
        "koi8-r",
        "8bit",
        "Здравствуйте! С утра не работает VPN, при подключении появляется ошибка 809. "
        "Пожалуйста, помогите как можно скорее. Спасибо.",
        "Не работает VPN",
        "Иван Петров",
    ),
    (
        "gb2312",
        "base64",
        "您好，今天早上开始打印机无法使用，显示脱机状态。请尽快帮忙处理，谢谢。",
        "打印机脱机问题",
        "王小明",
    ),
)


class Person:
    """One sender: a display name, an address and the customer domain it belongs to.

    Args:
        name: The display name.
        address: The addr-spec.
        domain: The mail domain (the customer's, or a free-mail provider's).
    """

    __slots__ = ("address", "domain", "name")

    def __init__(self, name: str, address: str, domain: str) -> None:
        self.name = name
        self.address = address
        self.domain = domain

    def __repr__(self) -> str:
        return f"Person({self.name!r}, {self.address!r})"


def _people(rng: random.Random, count: int = 360) -> list[Person]:
    people: list[Person] = []
    seen: set[str] = set()
    while len(people) < count:
        first, last = rng.choice(_FIRST), rng.choice(_LAST)
        if rng.random() < 0.1:
            domain = rng.choice(_FREEMAIL)
            local = f"{first}.{last}{rng.randint(1, 99)}".lower()
        else:
            domain = f"{rng.choice(_COMPANY)}.example"
            local = (
                f"{first[0]}.{last}".lower() if rng.random() < 0.5 else f"{first}.{last}".lower()
            )
        address = f"{local}@{domain}"
        if address in seen:
            continue
        seen.add(address)
        people.append(Person(f"{first} {last}", address, domain))
    return people


def _fold(name: str, value: str, width: int = 76) -> str:
    """A header line folded at spaces to about ``width`` columns."""
    words = value.split(" ")
    lines, current = [], f"{name}:"
    for word in words:
        if len(current) + 1 + len(word) > width and current != f"{name}:":
            lines.append(current)
            current = "\t" + word
        else:
            current += " " + word
    lines.append(current)
    return _CRLF.join(lines)


def _b64_lines(data: bytes) -> str:
    encoded = base64.b64encode(data).decode("ascii")
    return _CRLF.join(encoded[i : i + 76] for i in range(0, len(encoded), 76))


def _qp(text: str, charset: str = "utf-8") -> str:
    data = text.replace("\n", "\r\n").encode(charset)
    return quopri.encodestring(data).decode("ascii").replace("\r\n", "\n").replace("\n", _CRLF)


def _encoded_word(text: str, charset: str) -> str:
    """``text`` as RFC 2047 B encoded words of at most ~20 characters each."""
    words = []
    for i in range(0, len(text), 20):
        chunk = base64.b64encode(text[i : i + 20].encode(charset)).decode("ascii")
        words.append(f"=?{charset}?B?{chunk}?=")
    return " ".join(words)


class _Writer:
    """Writes the corpus: holds the seeded generator, the senders and the thread state."""

    def __init__(self, seed: int) -> None:
        self.rng = random.Random(seed)
        self.people = _people(self.rng)
        self.clock = _START
        self.serial = 0
        # Per sender: (ticket id expected, subject, Message-ID) of an email that opened one.
        self.threads: dict[str, list[tuple[int, str, str]]] = {}
        self.tickets = 0

    # -- shared pieces ------------------------------------------------------------

    def _tick(self) -> dt.datetime:
        self.clock += dt.timedelta(seconds=self.rng.randint(5, 90))
        return self.clock

    def _message_id(self, domain: str) -> str:
        self.serial += 1
        token = self.rng.getrandbits(64)
        return f"<{token:016x}.{self.serial}@{domain}>"

    def _sentences(self, low: int, high: int) -> str:
        return " ".join(self.rng.choice(_SENTENCES) for _ in range(self.rng.randint(low, high)))

    def _paragraphs(self, count: int) -> list[str]:
        return [self._sentences(2, 5) for _ in range(count)]

    def _received(self, sender: Person, when: dt.datetime) -> list[str]:
        rng = self.rng
        hops = []
        stamp = when
        host = f"mail{rng.randint(1, 9)}.{sender.domain}"
        chain = [
            (
                f"{host} ({host} [203.0.113.{rng.randint(1, 254)}])",
                f"mx{rng.randint(1, 3)}.msp.example",
            ),
            ("mx1.msp.example (mx1.msp.example [198.51.100.10])", "imap1.msp.example"),
            ("imap1.msp.example ([192.0.2.25])", "store2.msp.example"),
            ("localhost (localhost [127.0.0.1])", f"{host}"),
        ]
        for source, by in chain[: rng.randint(2, 4)]:
            queue = "".join(rng.choice("0123456789ABCDEF") for _ in range(10))
            hops.append(
                _fold(
                    "Received",
                    f"from {source} by {by} (Postfix) with ESMTPS id {queue} "
                    f"for <{HELPDESK}>; {format_datetime(stamp)}",
                )
            )
            stamp -= dt.timedelta(seconds=rng.randint(0, 3))
        return hops

    def _dkim(self, sender: Person) -> str:
        rng = self.rng
        bh = base64.b64encode(rng.randbytes(32)).decode("ascii")
        signature = base64.b64encode(rng.randbytes(256)).decode("ascii")
        value = (
            f"v=1; a=rsa-sha256; c=relaxed/relaxed; d={sender.domain}; "
            f"s=selector{rng.randint(1, 2)}; "
            "h=From:To:Subject:Date:Message-ID:In-Reply-To:References:MIME-Version:"
            f"Content-Type; bh={bh}; b="
        )
        folded = [value + signature[:40]]
        folded += [signature[i : i + 72] for i in range(40, len(signature), 72)]
        return "DKIM-Signature: " + (_CRLF + "\t").join(folded)

    def _head(
        self,
        sender: Person,
        subject: str,
        content_type: str,
        *,
        message_id: str,
        when: dt.datetime,
        in_reply_to: str | None = None,
        references: tuple[str, ...] = (),
        encoding: str | None = None,
        from_header: str | None = None,
        subject_header: str | None = None,
    ) -> list[str]:
        rng = self.rng
        lines = [f"Return-Path: <{sender.address}>", *self._received(sender, when)]
        lines.append(
            "Authentication-Results: mx1.msp.example; dkim=pass header.d="
            f"{sender.domain}; spf=pass smtp.mailfrom={sender.address}; dmarc=pass"
        )
        lines.append(self._dkim(sender))
        lines.append(from_header or f'From: "{sender.name}" <{sender.address}>')
        lines.append(f"To: Support <{HELPDESK}>")
        if rng.random() < 0.3:
            colleague = rng.choice(self.people)
            lines.append(f'Cc: "{colleague.name}" <{colleague.address}>')
        lines.append(subject_header or _fold("Subject", subject))
        lines.append(f"Date: {format_datetime(when)}")
        lines.append(f"Message-ID: {message_id}")
        if in_reply_to:
            lines.append(f"In-Reply-To: {in_reply_to}")
            lines.append(_fold("References", " ".join((*references, in_reply_to))))
        name, value = rng.choice(_MAILERS)
        lines.append(f"{name}: {value}")
        if name == "X-Mailer" and "Outlook" in value:
            lines.append(f"Thread-Topic: {subject.removeprefix('RE: ')[:60]}")
            index = base64.b64encode(rng.randbytes(22)).decode("ascii")
            lines.append(f"Thread-Index: {index}")
            lines.append("X-MS-Has-Attach: ")
            lines.append("X-MS-TNEF-Correlator: ")
        lines.append("MIME-Version: 1.0")
        lines.append(f"Content-Type: {content_type}")
        if encoding:
            lines.append(f"Content-Transfer-Encoding: {encoding}")
        return lines

    def _history(self, sender: Person, subject: str, when: dt.datetime, depth: int) -> str:
        """Quoted history below the new text, in one of the common client shapes."""
        rng = self.rng
        shape = rng.choice(("gmail", "gmail", "outlook", "original"))
        parts = []
        earlier = when
        for level in range(depth):
            earlier -= dt.timedelta(hours=rng.randint(1, 30))
            writer = HELPDESK if level % 2 == 0 else sender.address
            name = "Support" if level % 2 == 0 else sender.name
            body_lines = [
                rng.choice(_AGENT_LINES) if level % 2 == 0 else self._sentences(1, 3)
                for _ in range(rng.randint(2, 6))
            ]
            body_lines += ["", "Kind regards,", name]
            if shape == "gmail":
                prefix = "> " * (level + 1)
                stamp = earlier.strftime("%a, %d %b %Y at %H:%M")
                parts.append(f"{'> ' * level}On {stamp}, {name} <{writer}> wrote:")
                parts += [(prefix + line).rstrip() for line in body_lines]
            else:
                if shape == "original":
                    parts.append("-----Original Message-----")
                else:
                    parts.append("________________________________")
                parts.append(f"From: {name} <{writer}>")
                parts.append(f"Sent: {earlier.strftime('%A, %B %d, %Y %I:%M %p')}")
                parts.append(f"To: {sender.name if level % 2 == 0 else 'Support'}")
                parts.append(f"Subject: {subject}")
                parts.append("")
                parts += body_lines
            parts.append("")
        return "\n".join(parts)

    def _signature(self, sender: Person) -> str:
        rng = self.rng
        company = sender.domain.split(".")[0].replace("-", " ").title()
        lines = [
            f"{sender.name}",
            f"{company} Ltd.",
            f"Phone +44 20 7946 {rng.randint(0, 9999):04d}",
        ]
        if rng.random() < 0.3:
            lines = ["-- ", *lines]
        if rng.random() < 0.15:
            lines.append("Sent from my iPhone")
        return "\n".join(lines)

    def _to_wire(self, head: list[str], body: str) -> bytes:
        text = _CRLF.join(head) + _CRLF + _CRLF + body
        return text.encode("utf-8")

    # -- the kinds ----------------------------------------------------------------

    def _thread(self, sender: Person) -> tuple[str, str, str | None, tuple[str, ...], bool]:
        """Subject, new-text opening, In-Reply-To, References, and whether a follow-up."""
        rng = self.rng
        threads = self.threads.get(sender.address)
        if threads and rng.random() < 0.3:
            ticket, subject, first_id = rng.choice(threads)
            return f"RE: [ID:{ticket}] {subject}", "Any news on this?", first_id, (), True
        topic, opening, _word = rng.choice(_TOPICS)
        in_reply_to = None
        references: tuple[str, ...] = ()
        if rng.random() < 0.7:
            # A reply to mail the helpdesk does not know (another mailbox, a colleague).
            in_reply_to = self._message_id(sender.domain)
            if rng.random() < 0.5:
                references = (self._message_id("msp.example"),)
        prefix = rng.choice(("Re: ", "RE: ", "AW: ", "Re: "))
        return prefix + topic, f"Hi, {opening}.", in_reply_to, references, False

    def _opened(self, sender: Person, subject: str, message_id: str, follow_up: bool) -> None:
        """Remember the ticket an email will open, for later follow-ups."""
        if follow_up:
            return
        self.tickets += 1
        bare = subject.split(": ", 1)[-1] if subject[:4].rstrip().endswith(":") else subject
        self.threads.setdefault(sender.address, []).append((self.tickets, bare, message_id))

    def plain(self) -> bytes:
        """A plain-text reply with quoted history, 1-20 KB."""
        rng = self.rng
        sender = rng.choice(self.people)
        when = self._tick()
        subject, opening, in_reply_to, references, follow_up = self._thread(sender)
        new_text = "\n\n".join([opening, *self._paragraphs(rng.randint(1, 3))])
        body = f"{new_text}\n\n{self._signature(sender)}\n\n"
        body += self._history(sender, subject, when, rng.randint(1, 5 if not follow_up else 2))
        message_id = self._message_id(sender.domain)
        encoding = rng.choice(("7bit", "8bit", "quoted-printable"))
        if encoding == "quoted-printable":
            wire = _qp(body)
        else:
            wire = body.replace("\n", _CRLF)
        flowed = "; format=flowed" if rng.random() < 0.2 else ""
        head = self._head(
            sender,
            subject,
            f"text/plain; charset=utf-8{flowed}",
            message_id=message_id,
            when=when,
            in_reply_to=in_reply_to,
            references=references,
            encoding=encoding,
        )
        self._opened(sender, subject, message_id, follow_up)
        return self._to_wire(head, wire)

    def _html_document(self, sender: Person, subject: str, target: int, images: list[str]) -> str:
        rng = self.rng
        style = (
            "<style>\n@font-face { font-family: 'Cambria Math'; }\n"
            "p.MsoNormal, li.MsoNormal, div.MsoNormal { margin: 0cm; font-size: 11.0pt; "
            "font-family: 'Calibri', sans-serif; }\n"
            "a:link, span.MsoHyperlink { color: #0563C1; text-decoration: underline; }\n"
            "table.data td { border: 1px solid #ccc; padding: 4px 8px; }\n"
            ".signature { color: #7f7f7f; font-size: 9pt; }\n</style>"
        )
        parts = [
            '<html xmlns:o="urn:schemas-microsoft-com:office:office"><head>'
            '<meta http-equiv="Content-Type" content="text/html; charset=utf-8">'
            f"<title>{subject}</title>{style}</head>",
            '<body lang="EN-GB" link="#0563C1" vlink="#954F72" style="word-wrap:break-word">',
            '<div class="WordSection1">',
        ]
        for paragraph in self._paragraphs(rng.randint(2, 4)):
            parts.append(
                f'<p class="MsoNormal"><span style="font-size:11pt">{paragraph}</span></p>'
            )
        if images:
            parts.append(
                f'<p class="MsoNormal"><img width="640" height="360" style="width:6.6in" '
                f'src="cid:{images[0]}" alt="screenshot"></p>'
            )
        # A signature laid out with a table, logo from the other inline image.
        logo = f'<img src="cid:{images[-1]}" width="120" height="40">' if len(images) > 1 else ""
        parts.append(
            '<table class="signature" cellpadding="0" cellspacing="0" border="0"><tr>'
            f'<td style="padding-right:12px">{logo}</td><td><b>{sender.name}</b><br>'
            f'IT coordinator<br><a href="mailto:{sender.address}">{sender.address}</a><br>'
            f'<a href="https://www.{sender.domain}/">www.{sender.domain}</a></td></tr></table>'
        )
        # The quoted part: Gmail's blockquote or Outlook's divider, with a data table
        # (an export, an inventory list) making up the size.
        quote_open = (
            '<div class="gmail_quote"><div dir="ltr" class="gmail_attr">On '
            f"{self.clock.strftime('%a, %d %b %Y at %H:%M')}, Support &lt;{HELPDESK}&gt; wrote:"
            '<br></div><blockquote class="gmail_quote" style="margin:0px 0px 0px 0.8ex;'
            'border-left:1px solid rgb(204,204,204);padding-left:1ex">'
            if rng.random() < 0.5
            else '<div style="border:none;border-top:solid #E1E1E1 1.0pt;padding:3.0pt 0cm">'
            '<div id="divRplyFwdMsg" dir="ltr"><font face="Calibri" color="#000000">'
            f"<b>From:</b> Support &lt;{HELPDESK}&gt;<br><b>Sent:</b> "
            f"{self.clock.strftime('%A, %B %d, %Y %I:%M %p')}<br><b>To:</b> {sender.name}<br>"
            f"<b>Subject:</b> {subject}</font></div></div><div>"
        )
        parts.append(quote_open)
        parts.append(f'<p class="MsoNormal">{rng.choice(_AGENT_LINES)}</p>')
        parts.append('<table class="data" style="border-collapse:collapse;width:100%">')
        parts.append(
            "<tr><th>Host</th><th>User</th><th>Status</th><th>Last seen</th><th>Note</th></tr>"
        )
        closing = "</table></blockquote></div></div></body></html>"
        size = sum(map(len, parts)) + len(closing)
        row = 0
        while size < target:
            row += 1
            cells = (
                f"PC-{rng.randint(1000, 9999)}",
                f"{rng.choice(_FIRST).lower()}.{rng.choice(_LAST).lower()}",
                rng.choice(("online", "offline", "<b style='color:#c00'>error</b>", "pending")),
                f"2024-05-{rng.randint(1, 28):02d} {rng.randint(0, 23):02d}:"
                f"{rng.randint(0, 59):02d}",
                rng.choice(_SENTENCES),
            )
            html_row = (
                "<tr>"
                + "".join(
                    f'<td style="padding:2px 6px;font-family:Calibri">{cell}</td>' for cell in cells
                )
                + "</tr>"
            )
            parts.append(html_row)
            size += len(html_row)
        parts.append(closing)
        return "\n".join(parts)

    def _image(self, size: int) -> bytes:
        return b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + self.rng.randbytes(size)

    def html(self) -> bytes:
        """An HTML email of 5-50 KB with inline images and a quoted part."""
        rng = self.rng
        sender = rng.choice(self.people)
        when = self._tick()
        subject, _opening, in_reply_to, references, follow_up = self._thread(sender)
        target = rng.randint(5_000, 50_000)
        images = [
            f"image{index:03d}.png@01DAB{rng.getrandbits(28):07X}"
            for index in range(1, rng.randint(1, 2) + 1)
        ]
        # The images count toward the size too.
        image_sizes = [rng.randint(1_000, max(1_200, target // 6)) for _ in images]
        html_target = max(3_000, target - sum(image_sizes) * 4 // 3)
        document = self._html_document(sender, subject, html_target, images)
        boundary_rel = f"----=_rel_{rng.getrandbits(48):012x}"
        boundary_alt = f"----=_alt_{rng.getrandbits(48):012x}"
        html_encoding = rng.choice(("quoted-printable", "base64"))
        html_body = (
            _qp(document) if html_encoding == "quoted-printable" else _b64_lines(document.encode())
        )
        html_part = (
            f"Content-Type: text/html; charset=utf-8{_CRLF}"
            f"Content-Transfer-Encoding: {html_encoding}{_CRLF}{_CRLF}{html_body}"
        )
        html_only = rng.random() < 0.4
        if html_only:
            body_part = html_part
        else:
            text = "\n\n".join(self._paragraphs(rng.randint(2, 4))) + f"\n\n{sender.name}\n"
            text += "\n" + self._history(sender, subject, when, rng.randint(1, 2))
            body_part = (
                f'Content-Type: multipart/alternative; boundary="{boundary_alt}"{_CRLF}{_CRLF}'
                f"--{boundary_alt}{_CRLF}Content-Type: text/plain; charset=utf-8{_CRLF}"
                f"Content-Transfer-Encoding: quoted-printable{_CRLF}{_CRLF}{_qp(text)}{_CRLF}"
                f"--{boundary_alt}{_CRLF}{html_part}{_CRLF}--{boundary_alt}--"
            )
        pieces = [f"--{boundary_rel}{_CRLF}{body_part}{_CRLF}"]
        for cid, size in zip(images, image_sizes, strict=True):
            name = cid.split("@", 1)[0]
            pieces.append(
                f'--{boundary_rel}{_CRLF}Content-Type: image/png; name="{name}"{_CRLF}'
                f"Content-Description: {name}{_CRLF}"
                f'Content-Disposition: inline; filename="{name}"; size={size}{_CRLF}'
                f"Content-ID: <{cid}>{_CRLF}Content-Transfer-Encoding: base64{_CRLF}{_CRLF}"
                f"{_b64_lines(self._image(size))}{_CRLF}"
            )
        pieces.append(f"--{boundary_rel}--{_CRLF}")
        message_id = self._message_id(sender.domain)
        head = self._head(
            sender,
            subject,
            f'multipart/related; boundary="{boundary_rel}"; type="multipart/alternative"',
            message_id=message_id,
            when=when,
            in_reply_to=in_reply_to,
            references=references,
        )
        self._opened(sender, subject, message_id, follow_up)
        return self._to_wire(head, "".join(pieces))

    def attachment(self) -> bytes:
        """A short text email with one to three attachments, 10 KB-2 MB in all."""
        rng = self.rng
        sender = rng.choice(self.people)
        when = self._tick()
        topic, opening, _word = rng.choice(_TOPICS)
        subject = rng.choice(("", "FW: ", "RE: ")) + topic
        total = int(10_000 * (200 ** rng.random()))  # log-uniform, 10 KB to 2 MB
        count = rng.randint(1, 3)
        weights = [rng.random() + 0.2 for _ in range(count)]
        sizes = [max(512, int(total * w / sum(weights))) for w in weights]
        boundary = f"----=_mixed_{rng.getrandbits(48):012x}"
        text = f"Hi, {opening}. Please find the files attached.\n\n" + self._sentences(1, 3)
        text += f"\n\n{self._signature(sender)}\n"
        pieces = [
            f"--{boundary}{_CRLF}Content-Type: text/plain; charset=utf-8{_CRLF}"
            f"Content-Transfer-Encoding: 8bit{_CRLF}{_CRLF}{text.replace(chr(10), _CRLF)}{_CRLF}"
        ]
        for size in sizes:
            kind = rng.choice(("pdf", "png", "zip", "xlsx"))
            stem = rng.choice(("report", "screenshot", "logs", "export", "invoice", "scan"))
            name = f"{stem}_{rng.randint(1, 999):03d}.{kind}"
            content_type, magic = {
                "pdf": ("application/pdf", b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n"),
                "png": ("image/png", b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR"),
                "zip": ("application/zip", b"PK\x03\x04\x14\x00\x00\x00\x08\x00"),
                "xlsx": (
                    "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
                    b"PK\x03\x04\x14\x00\x06\x00\x08\x00",
                ),
            }[kind]
            payload = magic + rng.randbytes(size)
            if kind == "pdf":
                payload += b"\n%%EOF\n"
            pieces.append(
                f'--{boundary}{_CRLF}Content-Type: {content_type}; name="{name}"{_CRLF}'
                f'Content-Disposition: attachment; filename="{name}"; size={len(payload)}{_CRLF}'
                f"Content-Transfer-Encoding: base64{_CRLF}{_CRLF}{_b64_lines(payload)}{_CRLF}"
            )
        pieces.append(f"--{boundary}--{_CRLF}")
        message_id = self._message_id(sender.domain)
        head = self._head(
            sender,
            subject,
            f'multipart/mixed; boundary="{boundary}"',
            message_id=message_id,
            when=when,
        )
        self._opened(sender, subject, message_id, False)
        return self._to_wire(head, "".join(pieces))

    def legacy(self) -> bytes:
        """A plain email in a legacy charset, with encoded words in Subject and From."""
        rng = self.rng
        sender = rng.choice(self.people)
        when = self._tick()
        charset, encoding, sample, subject, name = rng.choice(_LEGACY)
        body = f"{sample}\n\n{sample}\n\n{name}\n"
        if rng.random() < 0.5:
            body += "\n" + "\n".join(f"> {line}" for line in (sample, "", name))
        data = body.replace("\n", "\r\n").encode(charset)
        if encoding == "quoted-printable":
            wire = quopri.encodestring(data).decode("ascii")
        elif encoding == "base64":
            wire = _b64_lines(data)
        else:
            # 7bit/8bit: the bytes as they are (iso-2022-jp is 7-bit by design).
            wire = data.decode("latin-1")
        message_id = self._message_id(sender.domain)
        head = self._head(
            sender,
            subject,
            f"text/plain; charset={charset}",
            message_id=message_id,
            when=when,
            encoding=encoding,
            from_header=f"From: {_encoded_word(name, charset)} <{sender.address}>",
            subject_header=f"Subject: {_encoded_word(subject, charset)}",
        )
        self._opened(sender, subject, message_id, False)
        text = _CRLF.join(head) + _CRLF + _CRLF
        # latin-1 round-trips the 8-bit body bytes unchanged.
        return text.encode("utf-8") + wire.encode("latin-1")


def _schedule(n: int, rng: random.Random) -> list[str]:
    """The kinds of ``n`` emails in the exact proportions of :data:`KINDS`, shuffled."""
    counts = {kind: int(n * share) for kind, share in KINDS.items()}
    # Rounding leftovers go to the largest shares first.
    for kind in sorted(KINDS, key=KINDS.__getitem__, reverse=True):
        if sum(counts.values()) >= n:
            break
        counts[kind] += 1
    kinds = [kind for kind, count in counts.items() for _ in range(count)]
    rng.shuffle(kinds)
    return kinds


def generate_labelled(n: int, seed: int = DEFAULT_SEED) -> list[tuple[str, bytes]]:
    """``n`` raw emails with their kind (``plain``, ``html``, ``attachment``, ``legacy``).

    Args:
        n: How many emails.
        seed: The seed; the same ``(n, seed)`` always gives the same bytes.

    Returns:
        ``(kind, raw)`` pairs in delivery order.
    """
    writer = _Writer(seed)
    makers = {
        "plain": writer.plain,
        "html": writer.html,
        "attachment": writer.attachment,
        "legacy": writer.legacy,
    }
    return [(kind, makers[kind]()) for kind in _schedule(n, random.Random(seed ^ 0x5EED))]


def generate(n: int, seed: int = DEFAULT_SEED) -> list[bytes]:
    """``n`` raw emails in the mix of issue 7, deterministic for ``(n, seed)``.

    Args:
        n: How many emails.
        seed: The seed.

    Returns:
        The raw emails (CRLF line endings), in delivery order.
    """
    return [raw for _kind, raw in generate_labelled(n, seed)]


def plain_reply(
    sender: Person,
    subject: str,
    *,
    message_id: str,
    when: dt.datetime,
    in_reply_to: str | None = None,
    seed: int = DEFAULT_SEED,
) -> bytes:
    """One plain reply with quoted history from ``sender`` (for batches built by hand).

    Args:
        sender: Who writes it.
        subject: The subject, as it should appear (e.g. with an ``[ID:n]`` tag).
        message_id: Its Message-ID, with angle brackets.
        when: Its date.
        in_reply_to: The Message-ID it answers, with angle brackets.
        seed: Seeds the text and headers.

    Returns:
        The raw email.
    """
    writer = _Writer(seed)
    body = "\n\n".join(["Hi, any news on this?", *writer._paragraphs(writer.rng.randint(1, 2))])
    body += f"\n\n{writer._signature(sender)}\n\n" + writer._history(sender, subject, when, 2)
    head = writer._head(
        sender,
        subject,
        "text/plain; charset=utf-8",
        message_id=message_id,
        when=when,
        in_reply_to=in_reply_to,
        encoding="8bit",
    )
    return writer._to_wire(head, body.replace("\n", _CRLF))


def people(seed: int = DEFAULT_SEED) -> list[Person]:
    """The senders of the corpus made with ``seed`` (a few hundred, fixed per seed)."""
    return _Writer(seed).people


def write_maildir(directory: Path, messages: list[bytes]) -> None:
    """Write ``messages`` into ``directory`` as a Maildir (``new/``, ``cur/``, ``tmp/``).

    Args:
        directory: The Maildir; created when missing.
        messages: The raw emails, written to ``new/`` in order.
    """
    for sub in ("new", "cur", "tmp"):
        (directory / sub).mkdir(parents=True, exist_ok=True)
    for index, raw in enumerate(messages, start=1):
        (directory / "new" / f"{1714980600 + index}.M{index:06d}P1.bench").write_bytes(raw)


def main(argv: list[str] | None = None) -> int:
    """Write a Maildir of the corpus and print its make-up."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0])
    parser.add_argument("--messages", type=int, default=1000, help="how many (default 1000)")
    parser.add_argument("--seed", type=int, default=DEFAULT_SEED, help="the seed")
    parser.add_argument("--maildir", type=Path, required=True, help="where to write it")
    args = parser.parse_args(argv)
    labelled = generate_labelled(args.messages, args.seed)
    write_maildir(args.maildir, [raw for _kind, raw in labelled])
    counts = Counter(kind for kind, _raw in labelled)
    sizes = Counter[str]()
    for kind, raw in labelled:
        sizes[kind] += len(raw)
    print(f"{'kind':<11} {'emails':>7} {'MB':>8} {'mean KB':>8}")
    for kind in KINDS:
        print(
            f"{kind:<11} {counts[kind]:>7} {sizes[kind] / 1e6:>8.2f} "
            f"{sizes[kind] / max(1, counts[kind]) / 1e3:>8.1f}"
        )
    total = sum(sizes.values())
    print(f"{'all':<11} {len(labelled):>7} {total / 1e6:>8.2f} {total / len(labelled) / 1e3:>8.1f}")
    print(f"written to {args.maildir}/new")
    return 0


if __name__ == "__main__":
    sys.exit(main())
