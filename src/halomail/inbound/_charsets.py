"""Charset names as mail really uses them, mapped onto Python codecs.

Mail declares charsets carelessly: ``utf8``, ``"us-ascii;"``, ``ks_c_5601-1987``,
``unknown-8bit``, ``x-user-defined``, ``cp-850``. Python's codec registry knows some of
these and not others, and it also knows codecs that must never decode mail
(``zlib``, ``base64``, ``rot13``, ``idna``, ``unicode-escape``). :func:`resolve`
maps a declared name to a safe text codec, or to ``None`` when the name says
nothing useful; :func:`decode` turns bytes into text and never raises.

The families follow what browsers and mail clients do (WHATWG Encoding Standard):
``iso-8859-1``/``us-ascii`` are read as windows-1252, ``gb2312`` as gb18030,
``ks_c_5601-1987``/``euc-kr`` as cp949, ``shift_jis`` as cp932, ``tis-620`` as cp874.
"""

from __future__ import annotations

import codecs
import functools
import re

__all__ = ["decode", "decode_8bit", "resolve"]

#: What :func:`resolve` returns for a name that promises "some 8-bit text":
#: no declaration, ``unknown-8bit``, ``x-user-defined``, or a name we cannot map.
UNKNOWN = None

#: Declared names that are ASCII or Latin-1 in name only. Senders label UTF-8 and
#: windows-1252 text with them all the time, so these try UTF-8 first (valid UTF-8
#: multi-byte sequences practically never occur in real Latin-1 text), then cp1252.
_WESTERN = "cp1252"
_ASCII = "ascii"
_UTF8 = "utf-8"
_GUESSING = frozenset({_WESTERN, _ASCII, _UTF8, "latin-1", "iso8859-1"})

# Keys are the declared name lower-cased with everything but letters and digits
# removed, so "UTF-8", "utf_8", "utf8" and "U.T.F-8" meet at "utf8".
_ALIASES: dict[str, str | None] = {
    # Placeholders that carry no information: guess.
    "unknown8bit": UNKNOWN,
    "unknown": UNKNOWN,
    "xunknown": UNKNOWN,
    "default": UNKNOWN,
    "xuserdefined": UNKNOWN,
    "charset": UNKNOWN,
    "none": UNKNOWN,
    "null": UNKNOWN,
    "8bit": UNKNOWN,
    "7bit": UNKNOWN,
    "binary": UNKNOWN,
    "xbinary": UNKNOWN,
    "text": UNKNOWN,
    "plain": UNKNOWN,
    "iso": UNKNOWN,
    "ansi": _WESTERN,
    "xansi": _WESTERN,
    # ASCII and the typos seen in the wild.
    "ascii": _ASCII,
    "usascii": _ASCII,
    "us": _ASCII,
    "asci": _ASCII,
    "ascii7": _ASCII,
    "usasci": _ASCII,
    "usacii": _ASCII,
    "usaccii": _ASCII,
    "uascii": _ASCII,
    "ussacii": _ASCII,
    "usasii": _ASCII,
    "ansix341968": _ASCII,
    "iso646us": _ASCII,
    "iso646irv": _ASCII,
    "csascii": _ASCII,
    # Unicode.
    "utf8": _UTF8,
    "utf": _UTF8,
    "utf8mb4": _UTF8,
    "xutf8": _UTF8,
    "unicode11utf8": _UTF8,
    "unicode20utf8": _UTF8,
    "xunicode20utf8": _UTF8,
    "cp65001": _UTF8,
    "utf8sig": "utf-8-sig",
    "unicode": "utf-16",
    "ucs2": "utf-16",
    "iso10646ucs2": "utf-16",
    "utf16": "utf-16",
    "utf16le": "utf-16-le",
    "utf16be": "utf-16-be",
    "utf32": "utf-32",
    "utf32le": "utf-32-le",
    "utf32be": "utf-32-be",
    "utf7": "utf-7",
    "unicode11utf7": "utf-7",
    # Western European: Latin-1 is read as its superset windows-1252.
    "latin1": _WESTERN,
    "latin": _WESTERN,
    "l1": _WESTERN,
    "iso88591": _WESTERN,
    "iso885911987": _WESTERN,
    "isoir100": _WESTERN,
    "csisolatin1": _WESTERN,
    "cp819": _WESTERN,
    "ibm819": _WESTERN,
    "windows1252": _WESTERN,
    "xwindows1252": _WESTERN,
    "cp1252": _WESTERN,
    "win1252": _WESTERN,
    "westerneuropean": _WESTERN,
    "western": _WESTERN,
    "latin9": "iso8859-15",
    "iso885915": "iso8859-15",
    "xmacroman": "mac-roman",
    "macroman": "mac-roman",
    "macintosh": "mac-roman",
    # Hebrew and Arabic "logical"/"explicit" variants decode like the base charset.
    "iso88598i": "iso8859-8",
    "iso88598e": "iso8859-8",
    "visual": "iso8859-8",
    "logical": "iso8859-8",
    "iso88596i": "iso8859-6",
    "iso88596e": "iso8859-6",
    # Thai.
    "windows874": "cp874",
    "tis620": "cp874",
    "iso885911": "cp874",
    "xwindows874": "cp874",
    # Korean.
    "ksc56011987": "cp949",
    "ksc5601": "cp949",
    "ksc56011989": "cp949",
    "euckr": "cp949",
    "xeuckr": "cp949",
    "cseuckr": "cp949",
    "windows949": "cp949",
    "xwindows949": "cp949",
    "uhc": "cp949",
    "korean": "cp949",
    # Chinese.
    "gb2312": "gb18030",
    "gbk": "gb18030",
    "xgbk": "gb18030",
    "cp936": "gb18030",
    "windows936": "gb18030",
    "csgb2312": "gb18030",
    "chinese": "gb18030",
    "gb231280": "gb18030",
    "euccn": "gb18030",
    "xeuccn": "gb18030",
    "hzgb2312": "hz",
    "big5": "big5hkscs",
    "xbig5": "big5hkscs",
    "cnbig5": "big5hkscs",
    "csbig5": "big5hkscs",
    "big5hkscs": "big5hkscs",
    "cp950": "cp950",
    # Japanese.
    "shiftjis": "cp932",
    "sjis": "cp932",
    "xsjis": "cp932",
    "mskanji": "cp932",
    "windows31j": "cp932",
    "csshiftjis": "cp932",
    "cswindows31j": "cp932",
    "xmscp932": "cp932",
    "iso2022jp": "iso2022_jp_2",
    "csiso2022jp": "iso2022_jp_2",
    "eucjp": "euc_jp",
    "xeucjp": "euc_jp",
    # Cyrillic.
    "xmaccyrillic": "mac-cyrillic",
    "maccyrillic": "mac-cyrillic",
    "koi8": "koi8-r",
    "koi8ru": "koi8-u",
    "xcp1251": "cp1251",
    # Windows GDI font charset names, which some bulk mailers write as MIME charsets.
    "defaultcharset": UNKNOWN,
    "symbolcharset": UNKNOWN,
    "ansicharset": _WESTERN,
    "oemcharset": "cp437",
    "maccharset": "mac-roman",
    "gb2312charset": "gb18030",
    "chinesebig5charset": "big5hkscs",
    "shiftjischarset": "cp932",
    "hangeulcharset": "cp949",
    "hangulcharset": "cp949",
    "easteuropecharset": "cp1250",
    "russiancharset": "cp1251",
    "greekcharset": "cp1253",
    "turkishcharset": "cp1254",
    "hebrewcharset": "cp1255",
    "arabiccharset": "cp1256",
    "balticcharset": "cp1257",
    "vietnamesecharset": "cp1258",
    "thaicharset": "cp874",
}

# Codecs Python will run that must never decode mail: they are not charsets, are
# quadratic on hostile input (punycode, idna), or interpret escapes (unicode-escape).
_REFUSED = frozenset(
    {
        "undefined",
        "idna",
        "punycode",
        "unicode-escape",
        "raw-unicode-escape",
        "charmap",
        "mbcs",
        "oem",
        "utf-8-sig",  # handled by the BOM check, never as a declared name
    }
)

# Codecs in which a byte string of pure ASCII is not simply ASCII text, so the
# ASCII fast path must not be taken for them.
_NOT_ASCII_TRANSPARENT = ("utf-16", "utf-32", "utf-7", "iso2022", "hz")

_CUT = re.compile(r"[;,\s*]")
_NON_ALNUM = re.compile(r"[^a-z0-9]")
_ISO8859 = re.compile(r"iso8859(\d{1,2})")
_CODEPAGE = re.compile(r"(?:windows|win|xwindows|cp|ibm|ms|xcp)(\d{3,5})")
_UTF8_MULTIBYTE = re.compile(
    rb"[\xc2-\xdf][\x80-\xbf]|[\xe0-\xef][\x80-\xbf]{2}|[\xf0-\xf4][\x80-\xbf]{3}"
)


# Codec names Python resolves on its own that belong to the guessing families.
_GUESS_ALIASES = {"iso8859-1": _WESTERN, "latin-1": _WESTERN, "ascii": _ASCII, "utf-8": _UTF8}


def resolve(name: str | None) -> str | None:
    """Map a declared charset name to a Python text codec name.

    Args:
        name: The charset as declared in a header or parameter, or ``None``.

    Returns:
        A codec name that :meth:`bytes.decode` accepts, or ``None`` when the name
        is missing, a placeholder (``unknown-8bit``, ``default``) or unknown; the
        caller then guesses (UTF-8, then windows-1252).
    """
    return _lookup(name)[0]


@functools.lru_cache(maxsize=512)
def _lookup(name: str | None) -> tuple[str | None, bool]:
    """The codec for ``name`` and whether the name was recognised at all."""
    if not name:
        return UNKNOWN, True
    cleaned = _CUT.split(name.strip().strip("\"'").strip(), maxsplit=1)[0].lower()
    key = _NON_ALNUM.sub("", cleaned)
    if not key:
        return UNKNOWN, True
    if key in _ALIASES:
        return _ALIASES[key], True
    candidates = [cleaned]
    if match := _ISO8859.fullmatch(key):
        candidates.append(f"iso8859-{match.group(1)}")
    if match := _CODEPAGE.fullmatch(key):
        candidates.append(f"cp{match.group(1)}")
    candidates.append(key)
    for candidate in candidates:
        codec = _text_codec(candidate)
        if codec is not None:
            return _GUESS_ALIASES.get(codec, codec), True
    return UNKNOWN, False


def _text_codec(name: str) -> str | None:
    """The canonical name of a safe text codec called ``name``, or ``None``."""
    try:
        info = codecs.lookup(name)
        if info.name in _REFUSED:
            return None
        # Bytes-to-bytes codecs (zlib, base64, hex, bz2, uu) are refused by
        # bytes.decode with LookupError; a probe finds them without a private API.
        b"x".decode(info.name, "replace")
    except (LookupError, ValueError, TypeError):
        return None
    return info.name


def _sniff_bom(data: bytes | memoryview) -> tuple[str, int] | None:
    """The codec announced by a byte-order mark at the start of ``data``, and its length."""
    head = bytes(data[:4])
    if head.startswith(codecs.BOM_UTF8):
        return "utf-8", 3
    if head.startswith((codecs.BOM_UTF32_LE, codecs.BOM_UTF32_BE)):
        return "utf-32", 0
    if head.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        return "utf-16", 0
    return None


def decode(data: bytes | memoryview, charset: str | None) -> tuple[str, bool]:
    """Decode a body or a word of a header, whatever the declared charset says.

    A byte-order mark wins over the declaration (UTF-16 mail is often mislabelled).
    Names in the ASCII/Latin-1/UTF-8 family and unknown names try UTF-8 strictly,
    then windows-1252 (then Latin-1 for the five bytes cp1252 leaves undefined);
    declared UTF-8 with some damage keeps its valid characters. Other charsets decode
    with replacement characters for bad bytes.

    Args:
        data: The bytes to decode; a view of the raw message is decoded without a copy.
        charset: The declared charset name, or ``None``.

    Returns:
        The text, and whether the declared name was unknown (worth a defect).
    """
    bom = _sniff_bom(data)
    if bom is not None:
        return str(data[bom[1] :], bom[0], "replace"), False
    codec, known = _lookup(charset)
    unknown = not known
    if codec is None or codec in _GUESSING:
        text = _ascii(data)
        if text is not None:
            return text, unknown
        return _guess(data, prefer_utf8=codec == _UTF8), unknown
    if not codec.startswith(_NOT_ASCII_TRANSPARENT):
        text = _ascii(data)
        if text is not None:
            return text, False
    try:
        return str(data, codec, "replace"), False
    except (LookupError, ValueError, TypeError):  # pragma: no cover - resolve() vetted it
        return _guess(data, prefer_utf8=False), True


def _ascii(data: bytes | memoryview) -> str | None:
    """``data`` as text when it is all ASCII (the usual case), else ``None``."""
    if isinstance(data, bytes):
        return data.decode("ascii") if data.isascii() else None
    try:  # a view has no isascii(): decoding it is the test, and copies nothing first
        return str(data, "ascii")
    except UnicodeDecodeError:
        return None


def decode_8bit(data: bytes) -> str:
    """Decode raw 8-bit header bytes: UTF-8 if valid, else windows-1252, else Latin-1.

    Args:
        data: Header bytes that carry no charset declaration.

    Returns:
        The text; never raises.
    """
    if data.isascii():
        return data.decode("ascii")
    return _guess(data, prefer_utf8=False)


def _guess(data: bytes | memoryview, *, prefer_utf8: bool) -> str:
    # str(data, codec) rather than data.decode(codec): a view decodes without a copy.
    try:
        return str(data, "utf-8")
    except UnicodeDecodeError:
        pass
    if prefer_utf8 and _UTF8_MULTIBYTE.search(data):
        # Declared UTF-8 with a few broken bytes (a truncated part, a bad splice):
        # keep the valid characters rather than turning all of them into mojibake.
        return str(data, "utf-8", "replace")
    try:
        return str(data, _WESTERN)
    except UnicodeDecodeError:
        # 0x81, 0x8D, 0x8F, 0x90 and 0x9D are undefined in cp1252; Latin-1 maps every byte.
        return str(data, "latin-1")
