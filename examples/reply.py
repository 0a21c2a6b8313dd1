"""Reply to a list copy as its recipient's mail client would (README walk-through).

    python3 examples/reply.py carol@corp.example "Count me in."

Waits (up to 30 s) for the newest copy delivered to that address in the Maildir
``var/outbox/new/`` (``MAILGATE_VAR_DIR``/outbox/new when set), then sends a reply from
that address to the copy's Reply-To with In-Reply-To and References, through the gateway
on 127.0.0.1 (``MAILGATE_SMTP_PORT``, default 2525). Standard library only.
"""

from __future__ import annotations

import email
import email.policy
import email.utils
import os
import smtplib
import sys
import time
from email.message import EmailMessage
from pathlib import Path


def newest_copy(maildir: Path, address: str, timeout: float = 30.0) -> EmailMessage:
    deadline = time.monotonic() + timeout
    while True:
        copies = []
        for path in sorted(maildir.glob("*")) if maildir.is_dir() else []:
            msg = email.message_from_bytes(path.read_bytes(), policy=email.policy.default)
            if str(msg.get("Delivered-To", "")).lower() == address and msg.get("List-Id"):
                copies.append((path.stat().st_mtime_ns, path.name, msg))
        if copies:
            return max(copies, key=lambda c: (c[0], c[1]))[2]  # type: ignore[return-value]
        if time.monotonic() > deadline:
            sys.exit(f"no list copy for {address} in {maildir} after {timeout:.0f} s")
        time.sleep(0.2)


def main() -> None:
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    address, text = sys.argv[1].strip().lower(), sys.argv[2]
    var = Path(os.environ.get("MAILGATE_VAR_DIR", "var"))
    copy = newest_copy(var / "outbox" / "new", address)
    reply = EmailMessage()
    reply["From"] = address
    reply["To"] = copy["Reply-To"]
    subject = str(copy["Subject"])
    reply["Subject"] = subject if subject.lower().startswith("re:") else f"Re: {subject}"
    reply["Date"] = email.utils.formatdate()
    reply["Message-ID"] = email.utils.make_msgid(domain=address.split("@")[1])
    reply["In-Reply-To"] = copy["Message-ID"]
    reply["References"] = f"{copy.get('References', '')} {copy['Message-ID']}".strip()
    reply.set_content(text)
    port = int(os.environ.get("MAILGATE_SMTP_PORT", "2525"))
    with smtplib.SMTP("127.0.0.1", port, timeout=30) as smtp:
        smtp.send_message(reply, from_addr=address, to_addrs=[str(copy["Reply-To"])])
    print(f"{address} replied to {copy['Message-ID']} via {copy['Reply-To']}")


if __name__ == "__main__":
    main()
