"""Finding the new text of a reply: quoted history and signature removed.

Mail clients mark where the quoted history starts in a handful of shapes, none of them
standard. :func:`strip_reply` looks for the earliest of them, line by line:

- an attribution line: Gmail's and Apple Mail's ``On <date>, <name> wrote:`` (also wrapped
  over two lines) and its German, French, Spanish, Dutch, Italian, Portuguese and
  Scandinavian forms; Thunderbird's ``<name> wrote:`` before quoted lines;
- Outlook's ``-----Original Message-----`` (and localized forms), its
  ``________________________________`` rule followed by ``From:``, and its header block
  ``From: … Sent: … To: … Subject: …`` (``Von:/Gesendet:``, ``De :/Envoyé :`` …);
- the ``-- `` signature separator and mobile footers (``Sent from my iPhone``,
  ``Get Outlook for iOS``);

and drops every ``>`` quoted line. Forwarded messages are not history: the forwarded
text is what the helpdesk needs, so forward markers are left alone.

.. versionadded:: 0.1.0
"""

from __future__ import annotations

import re

__all__ = ["strip_reply"]

_WROTE = (
    r"(?:wrote|schrieb|a [ée]crit|escribi[óo]|schreef|ha scritto|escreveu|skrev|napsal"
    r"|napisa[łl]|kirjoitti)"
)
# "On <date>, <name> wrote:" and its translations ("Am ... schrieb ...:", "Le ... a
# écrit :", "El ... escribió:", "Op ... schreef ...:"), on one line or two joined.
_DATED_ATTRIBUTION = re.compile(
    r"^\s*(?:on|am|le|el|op|il|em|den|på|dne|w dniu)\s.{4,300}?" + _WROTE + r"\s*.{0,200}?:\s*$",
    re.IGNORECASE,
)
# "Alice Martin wrote:" (older Thunderbird, mailing lists): counts only before quotes.
_NAME_ATTRIBUTION = re.compile(r"^\s*.{1,200}?\s" + _WROTE + r"\s?:\s*$", re.I)
# A dated attribution always includes a digit; requiring one keeps a sentence that
# merely starts with "On" and ends with "wrote:" from counting.
_HAS_DIGIT = re.compile(r"\d")

# What Outlook and others write between the dashes of "-----Original Message-----".
_ORIGINAL_WORDS = r"""(?:original\ message|ursprüngliche\ nachricht|originalnachricht
      |message\ d'origine|message\ original|mensaje\ original|oorspronkelijk\ bericht
      |messaggio\ originale|mensagem\ original|ursprungligt\ meddelande|opprinnelig\ melding
      |original\ meddelelse|alkuperäinen\ viesti|původní\ zpráva|wiadomość\ oryginalna
      |reply\ message|original-nachricht)"""
_ORIGINAL_MESSAGE = re.compile(
    r"^\s*-{2,}\s*" + _ORIGINAL_WORDS + r"\s*-{2,}\s*$", re.IGNORECASE | re.VERBOSE
)
_RULE = re.compile(r"^\s*_{20,}\s*$")
_FORWARD = re.compile(
    r"^\s*-{2,}\s*(?:forwarded message|forwarded message follows|weitergeleitete nachricht"
    r"|message transféré|mensaje reenviado|doorgestuurd bericht|messaggio inoltrato"
    r"|begin forwarded message|original message follows)\s*-{0,}\s*$"
    r"|^\s*begin forwarded message:\s*$",
    re.IGNORECASE,
)
# One line of an Outlook header block, as plain text or as Outlook renders it from
# HTML ("*From:* Name").
_HEADER = r"^\s*\*?(?:{names})\s?:\*?(?:\s|$)"
_FROM = re.compile(_HEADER.format(names="from|von|de|van|da|från|fra|od|lähettäjä"), re.I)
_DATE = re.compile(
    _HEADER.format(
        names="sent|date|gesendet|datum|envoyé|date d'envoi|enviado|fecha|verzonden"
        "|verstuurd|inviato|data|skickat|sendt|odesláno|lähetetty"
    ),
    re.IGNORECASE,
)
_TO_SUBJECT = re.compile(
    _HEADER.format(
        names="to|an|à|a|para|aan|till|til|komu|vastaanottaja|subject|betreff|objet"
        "|asunto|onderwerp|oggetto|assunto|ämne|emne|předmět|aihe|cc"
    ),
    re.IGNORECASE,
)
_SIGNATURE = re.compile(r"^-- ?$")
_FOOTER = re.compile(
    r"""^\s*(?:
        sent\ from\ my\ (?:iphone|ipad|ipod|android|mobile|blackberry|samsung|galaxy|phone|huawei)
      | sent\ from\ (?:mail|outlook)\ for\ (?:windows|ios|android|mac)
      | sent\ from\ (?:yahoo\ mail|outlook|my\ \w+\ device|samsung\ mobile|proton\ mail)
      | get\ outlook\ for\ (?:ios|android|mac|windows)
      | von\ meinem\ (?:iphone|ipad|android|smartphone|samsung)\ gesendet
      | gesendet\ von\ (?:meinem\ )?(?:iphone|ipad|android|mail\ für\ windows|outlook)
      | envoyé\ (?:de|depuis)\ (?:mon|l'application)\ .{1,40}
      | enviado\ desde\ mi\ .{1,40}
      | verzonden\ (?:vanaf|met)\ (?:mijn\ )?.{1,40}
      | inviato\ da\ .{1,40}
    )\s*(?:<[^<>\s]{1,300}>|\([^()\s]{1,300}\))?\s*$""",
    re.IGNORECASE | re.VERBOSE,
)
_QUOTED = re.compile(r"^\s*>")


def _attribution(lines: list[str], i: int) -> int:
    """How many lines (1 or 2) an attribution at ``lines[i]`` spans; 0 if none."""
    line = lines[i]
    candidates = [(line, 1)]
    if i + 1 < len(lines) and len(line) < 300:
        candidates.append((line.rstrip() + " " + lines[i + 1].strip(), 2))
    for candidate, span in candidates:
        # Every attribution ends with a colon: a cheap test before the regexes.
        if not candidate.rstrip().endswith(":"):
            continue
        if _DATED_ATTRIBUTION.match(candidate) and _HAS_DIGIT.search(candidate):
            return span
        if _NAME_ATTRIBUTION.match(candidate):
            following = [x for x in lines[i + span : i + span + 3] if x.strip()]
            if following and _QUOTED.match(following[0]):
                return span
    return 0


def _header_block(lines: list[str], i: int) -> bool:
    """True when ``lines[i]`` starts an Outlook ``From:/Sent:/To:/Subject:`` block."""
    if not _FROM.match(lines[i]):
        return False
    window = [x for x in lines[i + 1 : i + 7] if x.strip()][:5]
    has_date = any(_DATE.match(x) for x in window)
    has_other = any(_TO_SUBJECT.match(x) for x in window)
    if not (has_date and has_other):
        return False
    # A forwarded message's header block is content, not history.
    before = [x for x in lines[max(0, i - 3) : i] if x.strip()]
    return not (before and _FORWARD.match(before[-1]))


# Every marker above (quoted lines aside, which _cut skips) begins its line with one of
# these, or ends it (or the next line, for a two-line attribution) with a colon. Both
# patterns open with a literal, so the regex engine skips ahead in C to the few lines
# worth the full tests: on a 4 KB body without markers that is several times faster
# than testing every line. Dashes count only as a signature separator or before the
# words of an original-message line, so a body of dashed lines (ASCII art, MIME-like
# junk) is not half a million candidates; the possessive quantifiers keep a long run of
# dashes from being backtracked through.
_STARTS_MARKER = re.compile(
    r"\n[^\S\n]*(?:--\ ?(?=\n|\Z)|-{2,}+[^\S\n]*+" + _ORIGINAL_WORDS + r"|_|\*"
    r"|(?:from|von|de|van|da|från|fra|od|lähettäjä)\s?:"
    r"|sent\s|get\s|von\s|gesendet\s|envoy|enviado\s|verzonden\s|inviato\s)",
    re.IGNORECASE | re.VERBOSE,
)
_ENDS_WITH_COLON = re.compile(r":[^\S\n]*(?=\n|\Z)")


def _candidates(text: str) -> list[int]:
    """The indexes of the lines of ``text`` where :func:`_cut` may find something."""
    found: set[int] = set()
    line, position = 0, 0
    # A newline in front makes the first line start like every other.
    for match in _STARTS_MARKER.finditer("\n" + text):
        line += text.count("\n", position, match.start())
        position = match.start()
        found.add(line)
    line, position = 0, 0
    for match in _ENDS_WITH_COLON.finditer(text):
        line += text.count("\n", position, match.start())
        position = match.start()
        found.add(line)
        if line:
            found.add(line - 1)  # the first half of a two-line attribution
    return sorted(found)


def _cut(lines: list[str], candidates: list[int] | None = None) -> tuple[int, int]:
    """Where quoted history or the signature starts, and the attribution's span.

    Only the lines in ``candidates`` (all lines when ``None``) are tested. Returns
    ``(len(lines), 0)`` when there is nothing to cut; the span is 0 unless the cut is
    an attribution line.
    """
    for i in range(len(lines)) if candidates is None else candidates:
        line = lines[i]
        stripped = line.strip()
        if not stripped or _QUOTED.match(line):
            continue
        if _SIGNATURE.match(line) or _FOOTER.match(stripped):
            return i, 0
        if _ORIGINAL_MESSAGE.match(stripped):
            return i, 0
        if _RULE.match(stripped):
            following = [x for x in lines[i + 1 : i + 4] if x.strip()]
            if following and _FROM.match(following[0]):
                return i, 0
            continue
        if _header_block(lines, i):
            return i, 0
        span = _attribution(lines, i)
        if span:
            return i, span
    return len(lines), 0


_BLANK_RUNS = re.compile(r"\n{3,}")


def _new_text(lines: list[str]) -> str:
    """The lines without quoted ones, each right-trimmed, as one trimmed text."""
    # The quote test runs only when some line may be quoted, and the blank-run
    # substitution only when there is a run: both are rare outside replies.
    if ">" in "\n".join(lines):
        lines = [line for line in lines if not _QUOTED.match(line)]
    text = "\n".join([line.rstrip() for line in lines]).strip()
    # Interleaved quotes leave runs of blank lines behind; keep at most one.
    return _BLANK_RUNS.sub("\n\n", text) if "\n\n\n" in text else text


def strip_reply(text: str) -> str:
    """Return the part of ``text`` the sender wrote, without quoted history or signature.

    Args:
        text: The plain-text body of an email.

    Returns:
        The new text, trimmed. A bottom-posted reply (attribution and quotes first, the
        answer below) gives the answer. When stripping would leave nothing (a reply
        that is only a quote, or a mail that starts with a signature), the whole text
        trimmed.

    .. versionadded:: 0.1.0
    """
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    lines = text.split("\n")
    cut, span = _cut(lines, _candidates(text))
    result = _new_text(lines[:cut])
    if not result and span:
        # Bottom-posting: what follows the quoted block is the answer.
        rest = lines[cut + span :]
        result = _new_text(rest[: _cut(rest)[0]])
    return result or text.strip()
