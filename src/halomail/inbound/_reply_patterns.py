"""The words mail clients write where quoted history starts, per language.

:mod:`halomail.inbound.reply` decides *where* the history starts; this module only says
*what* the markers look like: the "wrote" words of attribution lines, the labels of
Outlook's header blocks, the "Original Message" separators, the forward markers (kept:
a forward is content) and the mobile footers, in English, German, French, Spanish,
Italian, Portuguese, Dutch, Swedish, Danish, Norwegian, Finnish, Polish, Czech, Russian,
Ukrainian, Vietnamese, Turkish, Japanese, Chinese, Korean and Hungarian.

Every pattern here is applied to one line of bounded length (see ``MAX_MARKER_LINE``)
and is built so that it cannot backtrack catastrophically: no nested repetition, and
every open-ended repetition is bounded.
"""

# The words of twenty languages are the point of this module: Cyrillic letters that look
# Latin, the dotless i and the fullwidth colon are meant.
# ruff: noqa: RUF001, RUF003

from __future__ import annotations

import re
from collections.abc import Iterable

#: Longer lines are never a marker: no client writes one, and the bound keeps the cost
#: of every test below proportional to the text, whatever the text.
MAX_MARKER_LINE = 500


def _words(*words: str) -> str:
    """A non-capturing alternation of ``words`` (regex fragments), longest first."""
    return "(?:" + "|".join(sorted(words, key=len, reverse=True)) + ")"


def _literals(words: tuple[str, ...], space: str = r"\s") -> str:
    """A non-capturing alternation of literal ``words``, longest first.

    A space in a word matches ``space``, any whitespace by default.
    """
    escaped = (re.escape(word).replace("\\ ", space) for word in words)
    return _words(*escaped)


def starts_any(words: Iterable[tuple[str, str]]) -> str:
    """A regex matching text that begins with one of ``words``.

    ``words`` are pairs of a lowercase literal word and the regex that must follow it.
    The words are laid out as a trie, so the engine tests one branch per character
    rather than one per word: the candidate filter runs it at the start of every line.
    """
    ends: set[str] = set()
    by_first: dict[str, list[tuple[str, str]]] = {}
    for word, after in words:
        if word:
            by_first.setdefault(word[0], []).append((word[1:], after))
        else:
            ends.add(after)
    branches = [
        (r"[^\S\n]" if char == " " else re.escape(char)) + starts_any(rest)
        for char, rest in sorted(by_first.items())
    ]
    branches += sorted(ends, key=lambda after: (after == "", after))
    return branches[0] if len(branches) == 1 else "(?:" + "|".join(branches) + ")"


# --- Attribution lines: "On <date>, <name> wrote:" and its translations -------------

#: "Wrote" as it ends an attribution: "… wrote:", "… a écrit :", "… napsal(a):",
#: "…写道：", "…님이 작성:". Thunderbird's undated "<name> wrote:" uses the same words.
WROTE_LAST = _words(
    "wrote",  # English
    "writes",  # English (mailing lists: "Bob writes:")
    "said",  # English (exmh: "On <date>, Bob <b@x> said:")
    "schrieben",  # German ("Am … schrieben Sie:")
    "schrieb",  # German (Thunderbird: "Bob schrieb:")
    r"a\s[ée]crit",  # French
    r"escribi[óo]",  # Spanish
    "ha scritto",  # Italian
    "escreveu",  # Portuguese
    "schreef",  # Dutch
    r"het\svolgende\sgeschreven",  # Dutch (Apple Mail: "Op … heeft Bob het volgende …")
    "skrev",  # Swedish, Danish, Norwegian
    "kirjoitti",  # Finnish
    r"napisa[łl]a?",  # Polish (Gmail: "napisał(a)")
    "pisze",  # Polish (Thunderbird)
    "napsala?",  # Czech (Gmail and Thunderbird: "napsal(a)")
    "написала?",  # Russian
    "пишет",  # Russian (Thunderbird)
    "написав",  # Ukrainian
    "написала",  # Ukrainian
    "пише",  # Ukrainian (Gmail, Thunderbird)
    "đã viết",  # Vietnamese
    "yazdı",  # Turkish ("… tarihinde şunu yazdı:")
    "írta",  # Hungarian (Thunderbird: "Bob írta:")
    "写道",  # Chinese (simplified)
    "寫道",  # Chinese (traditional)
    "書きました",  # Japanese (Thunderbird: "Bob さんは書きました:")
    "작성",  # Korean (Gmail: "… Bob <b@x>님이 작성:")
    "쓴 글",  # Korean (Thunderbird: "… Bob이(가) 쓴 글:")
)
#: "Wrote" followed by the name or the date: "Am … schrieb Bob <b@x>:", "Den … skrev
#: Bob:", "Bob kirjoitti 1.1.2024 klo 10.00:", Lotus Notes' "Bob/Org wrote on 01/01/2024
#: 10:00 AM:", Hungarian Gmail's "Bob <b@x> ezt írta (időpont: …):".
WROTE_BEFORE_NAME = _words(
    "schrieb",
    "schreef",
    "skrev",
    "kirjoitti",
    r"wrote\son",
    r"schrieb\sam",
    r"a\s[ée]crit\sle",
    r"ezt\sírta",
)
# Words written with the script's own characters need no space in front ("Bob写道：").
_CJK_WROTE = "写道|寫道|書きました|작성|쓴 글"

# Both match *lowercased* text: the words are literals then, which the engine dismisses
# after one character (see HEADER_LINE).
#: The wrote word ending the line, as in "… wrote:" (an optional Slavic "(a)" between).
WROTE_AT_END = re.compile(
    r"(?:(?<!\w)" + WROTE_LAST + r"|" + _CJK_WROTE + r")\s*(?:\([aа]\))?\s*[:：]?\s*$"
)
#: How far from the end of a line :data:`WROTE_AT_END` can begin: the longest word,
#: "(a)" and the colon.
WROTE_AT_END_REACH = 40
#: The wrote word followed by a name or date, somewhere in the end of the line.
WROTE_THEN_NAME = re.compile(r"(?<!\w)" + WROTE_BEFORE_NAME + r"\s")

#: Webmail attributions that name the quoted person first (Horde, SquirrelMail):
#: "Quoting Bob <bob@example.com>:", "Zitat von Bob:", "Citando a Bob:". They count
#: only above quoted lines.
QUOTING = re.compile(
    r"\s*" + _words("quoting", r"zitat\svon", r"citando(?:\sa)?", "citation", "cytuję") + r"\s",
    re.IGNORECASE,
)
#: The word an attribution opens with: "On", "Am", "Le", "El", "Il (giorno)", "Em",
#: "Op", "Den", "På", "Dne", "W dniu", "Dnia", "Vào".
LEAD = re.compile(
    r"[\s-]*"
    + _words("on", "am", "le", "el", "il", "em", "op", "den", "på", "dne", "w dniu")
    + r"(?:\s|$)|\s*(?:dnia|vào)\s",
    re.IGNORECASE,
)
#: A line opening with a date, as Gmail's date-first forms do ("2016-03-03 17:21
#: GMT+01:00 Name <a@b>:", "2024年1月1日(月) 10:00 …", Yandex's "01.01.2024, 10:00, …") or
#: with a weekday and then a date ("пн, 1 янв. 2024 г. в 10:00, …", "Понедельник, 1
#: января 2024, …", "man. 1. jan. 2024 kl. 10:00 skrev …").
DATE_FIRST = re.compile(r"\s*(?:\d|[^\W\d_]{1,12}\.?,?\s{1,3}\d)")
#: A time of day: "10:00", "10.00" (Finnish, Danish), "10h00".
TIME = re.compile(r"(?<!\d)\d{1,2}[:.h]\d{2}(?!\d)")
#: An address anywhere in the line: "<bob@example.com>", "bob@example.com",
#: Lotus Notes' "Bob Smith/ACME@ACME".
ADDRESS = re.compile(r"[^\s<>()\[\]@]@[^\s<>()\[\]@]")
#: The address ending the line, as Gmail's attributions without a wrote word end:
#: "… Bob <bob@example.com>:", "…, "Bob" <b@x>:".
ADDRESS_AT_END = re.compile(r"@[^\s<>@]{1,255}>[^<>]{0,12}[:：]\s*$")
#: An address in angle brackets closing the line, without a colon after it: old Gmail's
#: "2011/4/7 Bob <bob@example.com>" above the quote.
ADDRESS_CLOSES_LINE = re.compile(r"@[^\s<>@]{1,255}>\s*$")

# --- Outlook's header block: "From: … Sent: … To: … Subject: …" ---------------------

#: The labels of each kind of line in a header block, as Outlook (desktop and web),
#: Apple Mail, Thunderbird, Lotus Notes and the mobile clients write them.
HEADER_LABELS = {
    "from": (
        "from",
        "von",
        "de",
        "van",
        "da",
        "från",
        "fra",
        "lähettäjä",
        "od",
        "от",
        "від",
        "từ",
        "kimden",
        "差出人",
        "发件人",
        "發件人",
        "寄件者",
        "보낸 사람",
        "보낸사람",
        "feladó",
    ),
    "date": (
        "sent",
        "date",
        "gesendet",
        "datum",
        "envoyé",
        "envoyé le",  # Outlook.com and Yahoo in French
        "date d'envoi",
        "message du",  # French webmail ("Message du : 12/12/2016 13:20")
        "enviado",
        "enviado el",
        "enviada em",
        "fecha",
        "inviato",
        "data",
        "verzonden",
        "verstuurd",
        "skickat",
        "sendt",
        "dato",
        "lähetetty",
        "päivämäärä",
        "wysłano",
        "wysłane",
        "odesláno",
        "отправлено",
        "дата",
        "надіслано",
        "đã gửi",
        "ngày",
        "gönderildi",
        "tarih",
        "送信日時",
        "日付",
        "发送时间",
        "發送時間",
        "日期",
        "寄件日期",
        "보낸 날짜",
        "보낸날짜",
        "날짜",
        "elküldve",
        "dátum",
        "időpont",
    ),
    "to": (
        "to",
        "an",
        "à",
        "a",
        "para",
        "aan",
        "till",
        "til",
        "vastaanottaja",
        "do",
        "komu",
        "кому",
        "tới",
        "đến",
        "kime",
        "宛先",
        "收件人",
        "收件者",
        "받는 사람",
        "받는사람",
        "címzett",
        "cc",
        "kopie",
        "kopia",
        "kopi",
        "kopio",
        "dw",
        "копия",
        "копія",
        "bilgi",
        "抄送",
        "副本",
        "참조",
        "másolat",
    ),
    "subject": (
        "subject",
        "betreff",
        "objet",
        "sujet",
        "asunto",
        "oggetto",
        "assunto",
        "onderwerp",
        "ämne",
        "emne",
        "aihe",
        "temat",
        "předmět",
        "тема",
        "chủ đề",
        "konu",
        "件名",
        "主题",
        "主旨",
        "主題",
        "제목",
        "tárgy",
    ),
}
#: Which kind of header line a *lowercased* line is, by the group that matched; Outlook
#: renders its HTML block as "*From:* Name" when read as text, French puts a space (or
#: a no-break space) before the colon (and Outlook.com then none after it: "Objet
#: :Facture"), and Chinese and Japanese may use "：". Matching
#: lowercased text with literal words lets the engine skip a word after one character.
HEADER_LINE = re.compile(
    r"\s*\*?(?:"
    + "|".join(f"(?P<{kind}>{_literals(labels)})" for kind, labels in HEADER_LABELS.items())
    + r")(?:\s:\*?|:\*?(?:\s|$)|\s?：)"
)

#: Lines of a raw RFC 5322 header that no client's header block has: a header block
#: among them is a pasted or forwarded message, content rather than history.
RAW_HEADER = re.compile(
    r"\s*(?:received|return-path|delivered-to|message-id|mime-version|content-type"
    r"|content-transfer-encoding|reply-to|in-reply-to|references|user-agent|precedence"
    r"|x-[\w-]{1,60}|list-[\w-]{1,60})\s?:",
    re.IGNORECASE,
)

# --- Separators ----------------------------------------------------------------------

#: What Outlook, Yahoo, Samsung mail and others write between the dashes of
#: "-----Original Message-----".
ORIGINAL_PHRASES = (
    "original message",
    "reply message",
    "ursprüngliche nachricht",
    "original-nachricht",
    "antwort nachricht",
    "originalnachricht",
    "message d'origine",
    "message original",
    "mensaje original",
    "messaggio originale",
    "mensagem original",
    "oorspronkelijk bericht",
    "origineel bericht",
    "ursprungligt meddelande",
    "oprindelig meddelelse",
    "oprindelig besked",
    "opprinnelig melding",
    "alkuperäinen viesti",
    "wiadomość oryginalna",
    "oryginalna wiadomość",
    "původní zpráva",
    "исходное сообщение",
    "оригинальное сообщение",
    "вихідне повідомлення",
    "оригінальне повідомлення",
    "thư gốc",
    "tin nhắn gốc",
    "orijinal ileti",
    "orijinal mesaj",
    "özgün ileti",
    "元のメッセージ",
    "原始邮件",
    "原始郵件",
    "원본 메시지",
    "eredeti üzenet",
)
ORIGINAL_WORDS = _literals(ORIGINAL_PHRASES)
ORIGINAL_MESSAGE = re.compile(
    r"\s*-{2,}+\s*" + ORIGINAL_WORDS + r"\s*(?:-{2,}\s*)?$", re.IGNORECASE
)
#: Outlook's rule above its header block.
RULE = re.compile(r"\s*_{20,}+\s*$")
#: A rule of dashes or underscores, which clients (and people) put above a header block
#: or an attribution: it belongs to the history below it.
RULE_ABOVE = re.compile(r"\s*(?:_{10,}+|-{10,}+)\s*$")
#: The line under the rule of a mailing list's footer: "riak-users mailing list"
#: (Mailman 2), "users mailing list -- users@lists.example.org" (Mailman 3).
LIST_FOOTER = re.compile(r"[^\n]{1,100}?\smailing\slist(?:\s+--\s+\S{1,200})?\s*$", re.I)
#: "---------- Forwarded message ---------" and its translations, and Apple Mail's
#: "Begin forwarded message:" (mutt adds "from <address>", a PGP signature escapes the
#: first dash as "- "). What follows is content the helpdesk needs.
FORWARD = re.compile(
    r"\s*(?:(?:-\s)?-{2,}+\s*"
    + _literals(
        (
            "forwarded message follows",
            "forwarded message",
            "begin forwarded message",
            "begin forwarded text",
            "original message follows",
            "weitergeleitete nachricht",
            "message transféré",
            "mensaje reenviado",
            "messaggio inoltrato",
            "mensagem encaminhada",
            "doorgestuurd bericht",
            "vidarebefordrat meddelande",
            "videresendt meddelelse",
            "videresendt melding",
            "välitetty viesti",
            "wiadomość przekazana dalej",
            "přeposlaná zpráva",
            "пересылаемое сообщение",
            "переслане повідомлення",
            "thư đã chuyển tiếp",
            "yönlendirilmiş ileti",
            "転送されたメッセージ",
            "转发的邮件",
            "轉寄的郵件",
            "전달된 메일",
            "továbbított üzenet",
        )
    )
    + r"|begin\sforwarded\smessage:\s*$)",
    re.IGNORECASE,
)
#: The "-- " line above a signature (and the "--" it becomes when trailing spaces go).
SIGNATURE = re.compile(r"-- ?$")

# --- Mobile footers: "Sent from my iPhone" and its translations ----------------------
# FOOTER matches a *lowercased* line (see HEADER_LINE for why).

# What may follow a footer's phrase: a device or app name, never a sentence (no comma,
# colon or question mark), then maybe a full stop and a link.
_REST = r"[^\n,;:!?<>()]{0,40}?\.?"
FOOTER = re.compile(
    r"""(?:
        sent\ (?:from|via|with)\ (?:my|yahoo|aol|outlook|mail\ for|proton|samsung|the
              |blackberry|windows|typeapp|bluemail|spark|airmail|newton|edison|mailspring
              |aquamail|fairemail|k-9\ mail|superhuman|hey)\b
      | get\ outlook\ for | download\ outlook\ for
      | von\ meinem\ [^\n]{1,40}?\ gesendet
      | gesendet\ (?:von|mit|vom)\ | outlook\ für\ \S+\ (?:beziehen|herunterladen)
      | envoyé\ (?:de|depuis|à\ partir\ de)\ | (?:obtenir|télécharger)\ outlook\ pour
      | enviado\ (?:desde|do|de|a\ partir\ do)\ | enviada\ do\ | obtener\ outlook\ para
      | (?:obter\ o|baixe\ o|baixar\ o)\ outlook\ para
      | inviato\ (?:da|dal|dalla)\ | (?:scarica|ottieni)\ outlook\ per
      | (?:verzonden|verstuurd)\ (?:vanaf|met|van|via)\ | outlook\ voor\ \S+\ downloaden
      | download\ outlook\ voor
      | skickat\ från\ | skickades\ från\ | hämta\ outlook\ för
      | sendt\ fra\ | hent\ outlook\ til | få\ outlook\ for
      | lähetetty\ \S{1,30}(?:sta|stä|lla|llä)\b | hanki\ outlook
      | wysłane\ z\ | wysłano\ z\ | pobierz\ (?:aplikację\ )?outlook
      | odesláno\ z\ | odeslano\ z\ | získ(?:at|ejte)\ outlook
      | отправлено\ (?:с|из|через)\ | (?:получить|скачать|скачайте)\ outlook
      | (?:надіслано|відправлено)\ (?:з|із)\ | (?:отримати|завантажте)\ outlook
      | (?:được\ )?gửi\ từ\ | tải\ outlook
      | \S{1,30}(?:'|’)[^\s]{1,12}\ gönderildi | \S{1,30}\ için\ outlook'u\ edinin
      | (?:私の)?\S{1,30}\s?から送信 | \S{1,20}\s?版\s?outlook\s?を入手
      | (?:发自|發自|寄自|来自|來自)我的 | (?:从|從)我的\S{1,30}\s?(?:发送|傳送|發送)
      | 获取\s?\S{1,20}\s?版\s?outlook
      | (?:내\ )?\S{1,30}에서\ 보냄 | \S{1,20}용\ outlook\ 받기
      | (?:az\ )?\S{1,30}-?(?:ról|ről)\ küldve | (?:el)?küldve\ (?:az?\ )?\S{1,30}(?:ról|ről)
    )"""
    + _REST
    + r"\s*(?:<[^<>\s]{1,300}>|\([^()\s]{1,300}\))?\s*$",
    re.VERBOSE,
)
#: The words a footer line may begin with, lowercased: what the candidate filter of
#: :mod:`halomail.inbound.reply` looks for (a footer can only match a line opening so).
FOOTER_STARTS = (
    "sent ",
    "get outlook",
    "download outlook",
    "von meinem",
    "gesendet ",
    "outlook",
    "envoy",
    "obtenir",
    "télécharger",
    "enviad",
    "obtener",
    "obter",
    "baixe",
    "baixar",
    "inviato",
    "scarica",
    "ottieni",
    "verzonden",
    "verstuurd",
    "skickat",
    "skickades",
    "hämta",
    "sendt ",
    "hent ",
    "få ",
    "lähetetty",
    "hanki",
    "wysłan",
    "pobierz",
    "odesl",
    "získ",
    "отправлено",
    "получить",
    "скача",
    "надіслано",
    "відправлено",
    "отримати",
    "завантажте",
    "được",
    "gửi",
    "tải",
    "私の",
    "发自",
    "發自",
    "寄自",
    "来自",
    "來自",
    "从我的",
    "從我的",
    "获取",
    "내 ",
    "az ",
    "elküldve",
    "küldve",
    # Footers that open with the device or the system: "iPhone'umdan gönderildi",
    # "iPhoneから送信", "iPhone에서 보냄", "iPhone-ról küldve", "iOS 版 Outlook を入手".
    "iphone",
    "ipad",
    "ipod",
    "android",
    "samsung",
    "galaxy",
    "huawei",
    "xiaomi",
    "blackberry",
    "yahoo",
    "ios",
    "mac",
    "windows",
    "mobil",
    "cihaz",
    "smartphone",
)
#: A lowercased line can only be a footer if it opens with one of FOOTER_STARTS: this
#: trie dismisses the others after a character or two, before FOOTER's longer test.
FOOTER_GATE = re.compile(starts_any((start, "") for start in FOOTER_STARTS))
