"""Attachments: safe display names, generated storage names, and content warnings.

A sender chooses an attachment's name, so the name is never used to store it.
:func:`make_attachment` keeps the decoded name as sent (``original_filename``,
metadata only), derives a display name with control and bidi characters and any
directory removed (``filename``), and generates ``storage_name`` as
``att-<n>-<hash8>.<ext>``: ASCII, no path separators, no ``..``, safe on every
filesystem, whatever the sender wrote (``../../x``, ``C:\\x``, ``CON``, ``.htaccess``,
``evil\\u202egpj.exe``). The extension is the real last extension of the cleaned
name, or one guessed from the content type. Payloads are kept as bytes and never
decompressed or interpreted (adversarial A1); only SVG and HTML files are scanned,
for scripts, to flag them (X6).

.. versionadded:: 0.1.0
"""

from __future__ import annotations

import hashlib
import re

from halomail.inbound.models import Attachment

__all__ = [
    "ACTIVE_CONTENT",
    "MAX_FILENAME_CHARS",
    "active_content_flags",
    "clean_filename",
    "extension_for",
    "make_attachment",
    "storage_name",
]

#: The flag set on files that can run script when opened (SVG or HTML with script).
ACTIVE_CONTENT = "active-content"
#: Longest display name kept (most filesystems' limit); the extension survives a cut.
MAX_FILENAME_CHARS = 255
#: Longest ``original_filename`` kept, so one header cannot bloat stored metadata.
MAX_ORIGINAL_FILENAME_CHARS = 1024

# Characters that hide or reorder what a name shows: C0/C1 controls, DEL, line
# separators, the byte-order mark, and every bidi control (U+202A-U+202E embeddings
# and overrides, U+2066-U+2069 isolates, U+200E/U+200F marks, U+061C Arabic mark),
# so "evil\u202egpj.exe" can no longer pose as "evilexe.jpg".
_HIDDEN = str.maketrans(
    dict.fromkeys(
        (
            *range(0x20),
            0x7F,
            *range(0x80, 0xA0),
            *range(0x202A, 0x202F),
            *range(0x2066, 0x206A),
            0x200E,
            0x200F,
            0x061C,
            0x2028,
            0x2029,
            0xFEFF,
        )
    )
)
_EXTENSION = re.compile(r"[a-z0-9]{1,10}")
_ACTIVE = re.compile(rb"<script|[\s/\"']on[a-z]+\s*=|javascript:", re.IGNORECASE)

_EXTENSIONS = {
    "application/gzip": "gz",
    "application/json": "json",
    "application/ms-tnef": "dat",
    "application/msword": "doc",
    "application/octet-stream": "bin",
    "application/pdf": "pdf",
    "application/pgp-encrypted": "pgp",
    "application/pgp-keys": "asc",
    "application/pgp-signature": "asc",
    "application/pkcs7-mime": "p7m",
    "application/pkcs7-signature": "p7s",
    "application/rtf": "rtf",
    "application/vnd.ms-excel": "xls",
    "application/vnd.ms-outlook": "msg",
    "application/vnd.ms-powerpoint": "ppt",
    "application/vnd.ms-tnef": "dat",
    "application/vnd.oasis.opendocument.text": "odt",
    "application/vnd.openxmlformats-officedocument.presentationml.presentation": "pptx",
    "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet": "xlsx",
    "application/vnd.openxmlformats-officedocument.wordprocessingml.document": "docx",
    "application/vnd.rar": "rar",
    "application/x-7z-compressed": "7z",
    "application/x-gzip": "gz",
    "application/x-pkcs7-signature": "p7s",
    "application/x-rar-compressed": "rar",
    "application/x-tar": "tar",
    "application/x-zip-compressed": "zip",
    "application/xml": "xml",
    "application/zip": "zip",
    "audio/mpeg": "mp3",
    "image/jpeg": "jpg",
    "image/jpg": "jpg",
    "image/pjpeg": "jpg",
    "image/svg+xml": "svg",
    "image/tiff": "tif",
    "image/x-icon": "ico",
    "message/delivery-status": "txt",
    "message/disposition-notification": "txt",
    "message/global": "eml",
    "message/news": "eml",
    "message/rfc822": "eml",
    "text/calendar": "ics",
    "text/csv": "csv",
    "text/html": "html",
    "text/plain": "txt",
    "text/rfc822-headers": "txt",
    "text/rtf": "rtf",
    "text/vcard": "vcf",
    "text/x-vcard": "vcf",
    "text/xml": "xml",
    "video/mp4": "mp4",
    "video/quicktime": "mov",
}
_SUBTYPE_IS_EXTENSION = ("image/", "audio/", "video/")
_ACTIVE_TYPES = frozenset({"image/svg+xml", "text/html", "application/xhtml+xml"})
_ACTIVE_EXTENSIONS = frozenset({"svg", "svgz", "html", "htm", "xhtml", "shtml"})


def clean_filename(name: str) -> str:
    """The display form of an attachment name.

    Control, bidi and other invisible formatting characters are removed, any
    directory part (``/`` or ``\\``) is dropped, and surrounding whitespace and
    trailing dots go (Windows ignores those, so ``x.exe.`` is an ``.exe``). Names
    longer than :data:`MAX_FILENAME_CHARS` are cut, keeping the extension.

    Args:
        name: The decoded name as the sender gave it.

    Returns:
        The name to show, or ``""``.
    """
    if not name:
        return ""
    name = name.translate(_HIDDEN)
    name = re.split(r"[/\\]", name)[-1]
    name = name.strip().rstrip(". ").strip()
    if len(name) > MAX_FILENAME_CHARS:
        stem, dot, extension = name.rpartition(".")
        if dot and stem and len(extension) <= 10:
            name = f"{stem[: MAX_FILENAME_CHARS - len(extension) - 1]}.{extension}"
        else:
            name = name[:MAX_FILENAME_CHARS]
    return name


def extension_for(filename: str, content_type: str) -> str:
    """The extension to store a file under: lower-case ``[a-z0-9]{1,10}``.

    Args:
        filename: The cleaned display name (see :func:`clean_filename`).
        content_type: The lower-cased MIME type.

    Returns:
        The real last extension of ``filename`` if it has a plausible one, else one
        that matches ``content_type``, else ``"bin"``.
    """
    stem, dot, extension = filename.rpartition(".")
    if dot and (stem or filename.startswith(".")):
        extension = extension.lower()
        if _EXTENSION.fullmatch(extension):
            return extension
    guessed = _EXTENSIONS.get(content_type)
    if guessed is not None:
        return guessed
    if content_type.startswith(_SUBTYPE_IS_EXTENSION):
        subtype = content_type.partition("/")[2]
        if _EXTENSION.fullmatch(subtype):
            return subtype
    return "bin"


def storage_name(index: int, filename: str, content_type: str, payload: bytes) -> str:
    """A generated, filesystem-safe name: ``att-<index>-<hash8>.<ext>``.

    Args:
        index: The attachment's 1-based position in the email.
        filename: The cleaned display name, used only for its extension.
        content_type: The lower-cased MIME type, for the extension when the name has none.
        payload: The decoded bytes; their SHA-256 prefix makes the name stable.

    Returns:
        A name matching ``^att-[0-9]+-[0-9a-f]{8}\\.[a-z0-9]{1,10}$``.
    """
    digest = hashlib.sha256(payload).hexdigest()[:8]
    return f"att-{max(index, 0)}-{digest}.{extension_for(filename, content_type)}"


def active_content_flags(content_type: str, extension: str, payload: bytes) -> tuple[str, ...]:
    """Warnings for files that can run script when opened.

    SVG and HTML files holding ``<script``, an ``on...=`` event handler or a
    ``javascript:`` URL are flagged :data:`ACTIVE_CONTENT` (adversarial X6).

    Args:
        content_type: The lower-cased MIME type.
        extension: The storage extension.
        payload: The decoded bytes.

    Returns:
        ``("active-content",)`` or ``()``.
    """
    if content_type not in _ACTIVE_TYPES and extension not in _ACTIVE_EXTENSIONS:
        return ()
    return (ACTIVE_CONTENT,) if _ACTIVE.search(payload) else ()


def make_attachment(
    *,
    index: int,
    original_filename: str,
    content_type: str,
    payload: bytes,
    content_id: str | None = None,
    inline: bool = False,
) -> Attachment:
    """Build an :class:`~halomail.inbound.models.Attachment` with safe names and flags.

    Args:
        index: The attachment's 1-based position in the email.
        original_filename: The decoded name exactly as sent (``""`` for none).
        content_type: The lower-cased MIME type.
        payload: The decoded bytes, kept as they are.
        content_id: The Content-ID without angle brackets, or ``None``.
        inline: Whether the part is meant to be shown inside the body.

    Returns:
        The attachment.
    """
    original = original_filename.replace("\x00", "")[:MAX_ORIGINAL_FILENAME_CHARS]
    filename = clean_filename(original)
    stored = storage_name(index, filename, content_type, payload)
    extension = stored.rpartition(".")[2]
    return Attachment(
        filename=filename,
        original_filename=original,
        storage_name=stored,
        content_type=content_type,
        size=len(payload),
        content_id=content_id,
        inline=inline,
        payload=payload,
        flags=active_content_flags(content_type, extension, payload),
    )
