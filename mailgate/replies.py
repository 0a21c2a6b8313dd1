"""Replies: every SMTP answer the gateway gives, named (STYLE §4, CHECKLIST SMTP-03).

Pure data. Each constant is the full reply line: basic code, enhanced status code
(RFC 3463) and a text that tells a human what happened. No other module writes a bare
reply string.
"""

from __future__ import annotations

ACCEPTED = "250 2.0.0 OK: queued as {ref}"
RCPT_OK = "250 2.1.5 OK"
DUPLICATE_RCPT = "250 2.1.5 OK (duplicate recipient ignored)"

STORAGE_UNAVAILABLE = "451 4.3.0 Temporary storage failure, please try again later"
RATE_LIMITED = "451 4.7.1 Too many messages from you right now, please try again later"
TOO_MANY_RECIPIENTS = "452 4.5.3 Too many recipients in one message"
SESSION_LIMIT = "421 4.7.0 Too many messages in one connection, closing"

UNKNOWN_RECIPIENT = "550 5.1.1 No such list or address here: {address}"
LIST_ARCHIVED = "550 5.1.1 The list {address} is archived and takes no mail"
BAD_REPLY_ADDRESS = "550 5.1.1 This reply address is not valid (it may be mistyped)"
NOT_ALLOWED_PEER = "554 5.7.1 This server only accepts mail from the company's mail relays"
TOO_BIG = "552 5.3.4 Message too big (limit {limit} bytes)"
TOO_MANY_HOPS = "554 5.4.6 Too many Received headers: mail loop suspected"
HEADERS_TOO_BIG = "552 5.3.4 Message header too large (limit {limit} bytes)"
MIME_TOO_COMPLEX = "554 5.6.0 Message structure too complex ({detail})"
NO_VALID_RECIPIENTS = "554 5.5.1 No valid recipients"
