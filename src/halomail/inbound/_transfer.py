"""Undoing a MIME part's Content-Transfer-Encoding (split from :mod:`._mime`, its caller).

base64 skips junk and repairs padding, quoted-printable keeps malformed ``=`` sequences,
uuencode is decoded line by line; the identity encodings cost no copy when the caller
decodes the body to text at once (:func:`decode_transfer_view`).
"""

from __future__ import annotations

import binascii
import re

from halomail.inbound import _headers

__all__ = ["decode_transfer", "decode_transfer_view"]

_TRANSFER_ENCODING = re.compile(r"[\s;\"']+")
_IDENTITY_ENCODINGS = frozenset({"", "7bit", "8bit", "binary"})
_UUENCODINGS = frozenset({"x-uuencode", "uuencode", "x-uue", "uue"})
_QP_LINE_END = rb"[ \t]*(?:\r?\n|\r|$)"
# A malformed "=": neither two hex digits nor a soft line break follow it.
_BAD_QP = re.compile(rb"=(?![0-9A-Fa-f]{2}|" + _QP_LINE_END + rb")")
# Every "=" that stands for itself: a malformed one, or the last of a run ending a line
# (an underline written "==========" by an encoder that forgot to escape it). The second
# kind only follows the first, so a search for _BAD_QP finds whether there is any. Both
# patterns open with the literal "=", which the regex engine scans for at C speed; a
# branch opening with a lookbehind made it try every byte (12x slower on QP bodies).
_LITERAL_QP = re.compile(
    rb"=(?:(?![0-9A-Fa-f]{2}|" + _QP_LINE_END + rb")|(?<===)(?=" + _QP_LINE_END + rb"))"
)


def decode_transfer(
    data: bytes | memoryview, raw_encoding: str | None, defects: list[str]
) -> bytes:
    """Undo a part's Content-Transfer-Encoding, as well as the data allows.

    ``base64`` skips junk and repairs padding, ``quoted-printable`` keeps malformed
    ``=`` sequences, uuencode is decoded line by line; an invalid input records a
    defect (M15). Unknown encodings (``7-bit``, ``plain``, ``text-html``, ...) are
    treated as 8bit (M14).

    Args:
        data: The raw body (a view of the message is decoded without being copied).
        raw_encoding: The stored raw Content-Transfer-Encoding value, or ``None``.
        defects: Where to record what was wrong.

    Returns:
        The decoded bytes.
    """
    encoding = _encoding_name(raw_encoding)
    if encoding in _IDENTITY_ENCODINGS:
        return bytes(data)
    return _undo(data, encoding, defects)


def decode_transfer_view(
    data: bytes | memoryview, raw_encoding: str | None, defects: list[str]
) -> bytes | memoryview:
    """As :func:`decode_transfer`, but ``data`` itself, uncopied, when there is nothing
    to undo: for a caller that decodes it to text at once (a large body is then never
    held both as bytes and as text)."""
    encoding = _encoding_name(raw_encoding)
    if encoding in _IDENTITY_ENCODINGS:
        return data
    return _undo(data, encoding, defects)


def _encoding_name(raw_encoding: str | None) -> str:
    """The lower-cased transfer encoding named by a raw header value (``""`` for none)."""
    if not raw_encoding:
        return ""
    value = _headers.prepare(raw_encoding).lower()
    if "(" in value:  # "(comment) base64"
        value = _headers.without_comments(value)
    return next((t for t in _TRANSFER_ENCODING.split(value) if t), "")


def _undo(data: bytes | memoryview, encoding: str, defects: list[str]) -> bytes:
    """Undo a transfer encoding other than the identity ones."""
    if encoding == "base64":
        decoded, damaged = _headers.decode_base64(data)
        if damaged:
            defects.append("invalid-base64")
        return decoded
    if encoding == "quoted-printable":
        if _BAD_QP.search(data):
            defects.append("invalid-quoted-printable")
            # binascii reads "==" as one "=": escape every "=" that stands for itself.
            data = _LITERAL_QP.sub(b"=3D", data)
        return binascii.a2b_qp(data)
    if encoding in _UUENCODINGS:
        return _decode_uu(bytes(data), defects)
    defects.append("unknown-transfer-encoding")
    return bytes(data)


def _decode_uu(data: bytes, defects: list[str]) -> bytes:
    """Decode uuencoded data between ``begin`` and ``end``; undecodable lines are skipped."""
    out = bytearray()
    started = False
    for line in data.splitlines():
        if not started:
            started = line.startswith(b"begin")
            continue
        if line.strip() == b"end":
            break
        if not line.strip():
            continue
        try:
            out += binascii.a2b_uu(line)
        except binascii.Error:
            # Some encoders pad lines wrongly; decode just the bytes the length promises.
            try:
                count = (((line[0] - 32) & 63) * 4 + 5) // 3
                out += binascii.a2b_uu(line[:count])
            except (binascii.Error, IndexError):
                defects.append("invalid-uuencode")
    if not started:
        defects.append("invalid-uuencode")
        return data
    return bytes(out)
