"""Classify stage: what kind of mail is this — bounce, loop, auto-reply, list traffic, post?

Inputs: a parsed :class:`~mailgate.parse.InboundMessage`, the SMTP envelope sender
(``""`` for the null sender ``<>``) and :class:`OurAddresses` (our list domain, the
List-Id labels we emit, our X-Loop marker). Output: a :class:`Classification` with a
:class:`MailClass`, a short kebab-case reason for logs and notices, and — for bounces —
the bounced recipients parsed by :mod:`mailgate.dsn`.

Checks run in a fixed order, first match wins (LOOP-02, LOOP-05, BNC-04):

1. bounce — RFC 3464 delivery-status reports, and free-text bounces from a mailer-daemon,
   postmaster or the null sender whose subject says delivery failed;
2. loop — our own List-Id or List-Post, our X-Loop marker, or a From/envelope sender on
   our list domain (list, ``reply+…`` and ``bounces+…`` addresses);
3. auto-reply — RFC 3834 Auto-Submitted, Precedence: auto_reply, X-Autoreply and
   friends, Exchange inbox-rule mail, out-of-office subjects in many languages, robot
   senders (mailer-daemon, postmaster, noreply), other reports, the null sender;
4. mailing list — Precedence bulk/list/junk or someone else's List-* fields;
5. post.

:func:`is_automatic` answers a different question (LOOP-01): may we ever send an
automatic response (notice, confirmation) to this message? It is stricter than
``classify``: an ordinary post carrying ``X-Auto-Response-Suppress: OOF`` is still a post,
but it gets no automatic response.
"""

from __future__ import annotations

import unicodedata
from dataclasses import dataclass, field
from email.utils import getaddresses
from enum import StrEnum

from mailgate.dsn import BouncedRecipient, parse_bounce
from mailgate.parse import InboundMessage

__all__ = [
    "BouncedRecipient",
    "Classification",
    "MailClass",
    "OurAddresses",
    "classify",
    "is_automatic",
]


class MailClass(StrEnum):
    BOUNCE = "bounce"
    AUTO_REPLY = "auto_reply"
    MAILING_LIST = "mailing_list"
    LOOP = "loop"
    POST = "post"


@dataclass(frozen=True)
class Classification:
    kind: MailClass
    reason: str
    bounced: tuple[BouncedRecipient, ...] = field(default=())


@dataclass(frozen=True)
class OurAddresses:
    """What our own outbound mail looks like, so that it is recognised when it returns."""

    domain: str
    list_ids: frozenset[str]
    loop_marker: str


# --- vocabulary ----------------------------------------------------------------------------

# Only these header fields are read, so one pass over the headers collects them all.
_WANTED = frozenset(
    {
        "from",
        "auto-submitted",
        "precedence",
        "x-autoreply",
        "x-autorespond",
        "x-auto-response-suppress",
        "x-ms-exchange-inbox-rules-loop",
        "x-loop",
        "x-failed-recipients",
        "list-id",
        "list-post",
        "list-unsubscribe",
        "list-subscribe",
        "list-help",
        "list-owner",
        "list-archive",
        "x-mailing-list",
        "mailing-list",
    }
)
_LIST_FIELDS = (
    "list-id",
    "list-post",
    "list-unsubscribe",
    "list-subscribe",
    "list-help",
    "list-owner",
    "list-archive",
)

# Local parts that only machines use. MAILER-DAEMON and postmaster send bounces
# (RFC 5321 §4.5.5 / §4.5.1); the rest are "do not answer" senders.
_DAEMON_LOCALS = frozenset({"mailer-daemon", "mailer_daemon", "mailerdaemon", "postmaster"})
_NOREPLY_LOCALS = ("noreply", "no-reply", "no_reply", "donotreply", "do-not-reply", "do_not_reply")

# Subjects of bounces that are not RFC 3464 reports, or whose report part is damaged.
# Only trusted together with a daemon From, the null sender or X-Failed-Recipients.
_BOUNCE_SUBJECTS = tuple(
    s.casefold()
    for s in (
        "Undelivered Mail Returned to Sender",  # Postfix
        "Undelivered Mail",
        "Mail delivery failed",  # Exim
        "Delivery Status Notification (Failure)",  # Gmail
        "Delivery Status Notification (Delay)",
        "Delivery Status Notification",
        "Undeliverable:",  # Exchange / Microsoft 365, by language below
        "Undeliverable mail",
        "Unzustellbar:",
        "Non remis :",
        "Non remis:",
        "No se puede entregar:",
        "Onbestelbaar:",
        "Non recapitabile:",
        "Não é possível entregar:",
        "Olevererbart:",
        "Kan ikke leveres:",
        "Nie można dostarczyć:",
        "Nedoručitelné:",
        "Kézbesíthetetlen:",
        "Teslim edilemedi:",
        "Toimittamaton:",
        "配信不能:",
        "无法传递:",
        "failure notice",  # qmail
        "Returned mail:",  # Sendmail
        "Warning: could not send message",  # Sendmail delay warning
        "Mail System Error - Returned Mail",
        "Delivery Failure",
        "Delivery failed",
        "Delivery has failed",
        "Message delivery failed",
        "Mail could not be delivered",
        "Message not delivered",
        "Nondeliverable mail",
        "Delayed Mail",  # Postfix delay warning
    )
)

# Out-of-office subjects: the prefix the responder puts before the original subject.
# A prefix only counts when a colon follows it or it is the whole subject, so that
# "Out of office tomorrow, ping me on chat" or "Auto-reply rules broken in Outlook?"
# (people writing about absence or auto-replies) stay posts.
_OOO_PREFIXES = tuple(
    unicodedata.normalize("NFC", s).casefold()
    for s in (
        # English (Outlook, Exchange, Gmail, iCloud, Zimbra, helpdesks)
        "Automatic reply",
        "Auto reply",
        "Auto-Reply",
        "Autoreply",
        "Auto response",
        "Auto-Response",
        "Autoresponse",
        "Out of Office AutoReply",
        "Out of Office Reply",
        "Out of Office",
        "Out of the Office",
        "Away from the office",
        # German
        "Automatische Antwort",
        "Abwesenheitsnotiz",
        "Abwesend",
        # French
        "Réponse automatique",
        "Réponse automatique d'absence du bureau",
        "Absence du bureau",
        "Absent du bureau",
        # Spanish
        "Respuesta automática",
        "Fuera de la oficina",
        # Italian
        "Risposta automatica",
        "Fuori sede",
        "Fuori ufficio",
        # Portuguese
        "Resposta automática",
        "Ausente",
        "Fora do escritório",
        # Dutch
        "Automatisch antwoord",
        "Afwezig",
        # Scandinavian
        "Autosvar",
        "Automatiskt svar",
        "Automatisk svar",
        "Automatisk besked",
        "Frånvaro",
        "Fravær",
        "Fraværende",
        # Polish
        "Automatyczna odpowiedź",
        "Odpowiedź automatyczna",
        "Poza biurem",
        # Czech, Hungarian, Greek
        "Automatická odpověď",
        "Automatikus válasz",
        "Αυτόματη απάντηση",
        # Russian, Ukrainian
        "Автоответ",
        "Автоматический ответ",
        "Автоматична відповідь",
        # Turkish, Finnish
        "Otomatik yanıt",
        "Otomatik cevap",
        "Automaattinen vastaus",
        "Poissa toimistolta",
        # Japanese, Chinese, Korean
        "自動応答",
        "自動返信",
        "不在通知",
        "不在",
        "自动回复",
        "自動回覆",
        "自动答复",
        "자동 회신",
        "자동 응답",
        "부재중",
    )
)
_OOO_FIRST_CHARS = frozenset(p[0] for p in _OOO_PREFIXES)
# Lotus Notes puts the absence in a sentence of its own: "Jane Doe is out of the office."
_OOO_SUFFIXES = (" is out of the office.",)
_COLONS = (":", "：")
_SPACES = " \t\u00a0\u202f\u3000"

# Report types that are not delivery failures: read receipts (RFC 8098), abuse feedback
# (RFC 5965), TLS reports (RFC 8460). Machines send them; nobody reads a notice about them.
_DSN_REPORT_TYPES = frozenset({"delivery-status", "global-delivery-status"})


# --- public API ----------------------------------------------------------------------------


def classify(msg: InboundMessage, *, mail_from: str, ours: OurAddresses) -> Classification:
    """Decide what ``msg`` is; see the module docstring for the order of the checks."""
    fields = _collect(msg)
    from_addr = _first_address(fields.get("from"))
    from_local, _, from_domain = from_addr.rpartition("@")
    envelope = mail_from.strip().strip("<>").strip().lower()
    null_sender = envelope == ""
    subject = _subject_key(msg.subject)

    # 1. Bounces (BNC-02, BNC-04).
    report_type = _report_type(msg)
    if report_type in _DSN_REPORT_TYPES:
        return Classification(MailClass.BOUNCE, "dsn", parse_bounce(msg))
    daemon_from = from_local in _DAEMON_LOCALS or from_local.startswith("microsoftexchange")
    if daemon_from or null_sender or "x-failed-recipients" in fields:
        if "x-failed-recipients" in fields or subject.startswith(_BOUNCE_SUBJECTS):
            reason = "mailer-daemon" if daemon_from else "null-sender"
            return Classification(MailClass.BOUNCE, reason, parse_bounce(msg))

    # 2. Our own mail coming back (LOOP-05).
    loop = _loop_reason(fields, from_domain, envelope, ours)
    if loop:
        return Classification(MailClass.LOOP, loop)

    # 3. Automatic replies (LOOP-02).
    auto = _auto_reply_reason(fields, subject)
    if auto:
        return Classification(MailClass.AUTO_REPLY, auto)
    if from_local in _DAEMON_LOCALS:
        return Classification(MailClass.AUTO_REPLY, "mailer-daemon")
    if _is_noreply(from_local) or _is_noreply(envelope.rpartition("@")[0]):
        return Classification(MailClass.AUTO_REPLY, "noreply-sender")
    if report_type:
        return Classification(
            MailClass.AUTO_REPLY, "mdn" if report_type == "disposition-notification" else "report"
        )
    if null_sender:
        # People never post with MAIL FROM:<>; RFC 5321 §4.5.5 reserves it for
        # notifications (Zimbra's vacation replies, for one, use it).
        return Classification(MailClass.AUTO_REPLY, "null-sender")

    # 4. Someone else's list traffic.
    precedence = _token(fields.get("precedence"))
    if precedence in ("bulk", "list", "junk"):
        return Classification(MailClass.MAILING_LIST, f"precedence-{precedence}")
    if any(name in fields for name in _LIST_FIELDS) or (
        "x-mailing-list" in fields or "mailing-list" in fields
    ):
        return Classification(MailClass.MAILING_LIST, "list-headers")

    return Classification(MailClass.POST, "post")


def is_automatic(msg: InboundMessage, *, mail_from: str) -> str | None:
    """Why we must never send an automatic response to ``msg`` (LOOP-01), or None.

    Covers the LOOP-01 inputs — Auto-Submitted other than ``no``, the null return path,
    ``multipart/report``, X-Auto-Response-Suppress All/AutoReply/OOF, Precedence
    bulk/list/junk/auto_reply, any List-* field — and, erring on the side of silence,
    every auto-reply sign :func:`classify` knows (X-Autoreply, X-Autorespond, Exchange
    inbox rules, out-of-office subjects) and daemon or noreply senders.
    """
    fields = _collect(msg)
    if mail_from.strip().strip("<>").strip() == "":
        return "null-sender"
    if _auto_submitted(fields):
        return "auto-submitted"
    if msg.content_type == "multipart/report":
        return "report"
    suppress = fields.get("x-auto-response-suppress", "").lower()
    if suppress:
        tokens = {t.strip() for t in suppress.replace(";", ",").split(",")}
        if tokens & {"all", "autoreply", "oof"}:
            return "x-auto-response-suppress"
    precedence = _token(fields.get("precedence"))
    if precedence in ("bulk", "list", "junk", "auto_reply"):
        return f"precedence-{precedence.replace('_', '-')}"
    if any(name in fields for name in _LIST_FIELDS) or (
        "x-mailing-list" in fields or "mailing-list" in fields
    ):
        return "list-headers"
    # Anything classify() calls an auto-reply gets no response either: answering an
    # autoresponder is how two robots start a mail storm.
    auto = _auto_reply_reason(fields, _subject_key(msg.subject))
    if auto:
        return auto
    from_local = _first_address(fields.get("from")).rpartition("@")[0]
    if from_local in _DAEMON_LOCALS:
        return "mailer-daemon"
    if _is_noreply(from_local):
        return "noreply-sender"
    return None


# --- helpers -------------------------------------------------------------------------------


def _collect(msg: InboundMessage) -> dict[str, str]:
    """The fields we care about, first occurrence each (one pass, cheap on any message)."""
    fields: dict[str, str] = {}
    for name, value in msg.headers:
        key = name.lower()
        if key in _WANTED:
            if key == "x-loop" and key in fields:
                # Several X-Loop fields are normal (each hop adds one): keep them all.
                fields[key] += "\n" + value
            else:
                fields.setdefault(key, value)
    return fields


def _first_address(value: str | None) -> str:
    if not value:
        return ""
    value = value[:2000]
    if not any(ch in value for ch in ',"(\\'):
        # Fast path for the usual "Name <addr>" or bare "addr" (getaddresses is ~10x slower).
        start, end = value.rfind("<"), value.rfind(">")
        addr = (value[start + 1 : end] if 0 <= start < end else value).strip().lower()
        return addr if "@" in addr and " " not in addr else ""
    try:
        pairs = getaddresses([value])
    except Exception:  # noqa: BLE001 - a hostile From must not break classification
        return ""
    for _, addr in pairs:
        if "@" in addr:
            return addr.strip().lower()
    return ""


def _token(value: str | None) -> str:
    """First word of a structured field, lowercased: ``"Bulk (x)"`` → ``"bulk"``."""
    if not value:
        return ""
    head = value.strip().split(None, 1)
    if not head:
        return ""
    return head[0].split(";", 1)[0].split("(", 1)[0].strip().lower()


def _auto_submitted(fields: dict[str, str]) -> bool:
    token = _token(fields.get("auto-submitted"))
    return token not in ("", "no")


def _flag_set(value: str | None) -> bool:
    return value is not None and _token(value) not in ("no", "false", "0", "off")


def _is_noreply(local: str) -> bool:
    # "noreply", "no-reply+jira", "donotreply-billing": the sender says nobody reads it.
    return local.split("+", 1)[0].startswith(_NOREPLY_LOCALS)


def _report_type(msg: InboundMessage) -> str:
    if msg.content_type != "multipart/report":
        return ""
    try:
        value = msg.message.get_param("report-type")
    except Exception:  # noqa: BLE001 - broken Content-Type parameters
        return "unknown"
    if isinstance(value, tuple):  # RFC 2231 encoded parameter
        value = value[2]
    return str(value or "unknown").strip().lower()


def _subject_key(subject: str) -> str:
    text = subject[:300].strip(_SPACES + "\r\n")
    if not text.isascii():
        text = unicodedata.normalize("NFC", text)
    return text.casefold()


def _loop_reason(
    fields: dict[str, str], from_domain: str, envelope: str, ours: OurAddresses
) -> str | None:
    domain = ours.domain.lower()
    list_id = fields.get("list-id")
    if list_id:
        label = _list_id_label(list_id)
        # Every label under our domain is ours: nobody else may mint one there.
        if label and (
            label in {x.lower() for x in ours.list_ids} or (domain and label.endswith("." + domain))
        ):
            return "our-list-id"
    list_post = fields.get("list-post")
    if list_post and domain and f"@{domain}>" in list_post.lower().replace(" ", ""):
        return "our-list-post"
    marker = ours.loop_marker.strip().lower()
    if marker and "x-loop" in fields:
        if any(v.strip().lower() == marker for v in fields["x-loop"].split("\n")):
            return "x-loop"
    if domain and (from_domain == domain or envelope.rpartition("@")[2] == domain):
        return "robot-sender"
    return None


def _list_id_label(value: str) -> str:
    """``"Engineering <eng.lists.corp.example>"`` → ``"eng.lists.corp.example"``."""
    start = value.rfind("<")
    end = value.rfind(">")
    label = value[start + 1 : end] if 0 <= start < end else value
    return label.strip().lower()


def _auto_reply_reason(fields: dict[str, str], subject: str) -> str | None:
    if _auto_submitted(fields):
        return "auto-submitted"
    if _token(fields.get("precedence")) == "auto_reply":
        return "precedence-auto-reply"
    if _flag_set(fields.get("x-autoreply")):
        return "x-autoreply"
    if _flag_set(fields.get("x-autorespond")):
        return "x-autorespond"
    # Exchange stamps mail produced by a mailbox rule (auto-reply, forward, redirect)
    # with this field; a person's own message never carries it.
    if "x-ms-exchange-inbox-rules-loop" in fields:
        return "inbox-rule"
    if _is_ooo_subject(subject):
        return "ooo-subject"
    return None


def _is_ooo_subject(subject: str) -> bool:
    """Subject (already casefolded) starts with an out-of-office prefix + colon, or is one."""
    if not subject:
        return False
    if subject[0] == "[":  # "[Auto-Reply] …", "[Out of Office] …"
        close = subject.find("]", 1, 60)
        if close > 0 and subject[1:close].strip(_SPACES) in _OOO_PREFIXES:
            return True
    if subject[0] in _OOO_FIRST_CHARS:
        for prefix in _OOO_PREFIXES:
            if subject.startswith(prefix):
                rest = subject[len(prefix) :].lstrip(_SPACES)
                if not rest or rest.startswith(_COLONS):
                    return True
    return subject.endswith(_OOO_SUFFIXES)
