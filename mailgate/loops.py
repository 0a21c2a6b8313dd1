"""Loop guard: posts that look like a robot answering our own copies (ingest, pure).

Input: the text of a new post and two counts of what the same author posted lately (the
same text, and posts in the same discussion). Output: ``None`` (post it) or the
reason to hold it for the list owner: ``held-repeated-text`` or ``held-post-rate``.

Why: an autoresponder that answers every copy through its Reply-To without
``Auto-Submitted`` or ``Precedence`` (issue 12, item 9: two of them were posted 8 rounds
out of 8) passes every header-based check (LOOP-01/02). Two defences that do not depend
on headers, as Mailman's and Discourse's rate limits do:

- the same text from the same author again within ``REPEAT_WINDOW`` (robots repeat
  themselves; people rarely post the same paragraph twice in ten minutes), and
- more than ``MAX_PER_DISCUSSION_HOUR`` posts by one author in one discussion in an hour.

A held post is never lost: it waits for ``mailgate inbound release`` and its owner is
told. Short texts ("Thanks!", "Agreed") are exempt from the repeat rule.
"""

from __future__ import annotations

from datetime import timedelta

REPEAT_WINDOW = timedelta(minutes=30)
RATE_WINDOW = timedelta(hours=1)
MAX_PER_DISCUSSION_HOUR = 10
MIN_REPEAT_CHARS = 40  # shorter texts repeat innocently ("Thanks!", "+1 from me")


def normalised(text: str) -> str:
    return " ".join(text.split()).casefold()


def loop_reason(text: str, repeats: int, in_discussion: int) -> str | None:
    """Why this post looks like a loop, or None.

    ``repeats``: the author's posts of the last ``REPEAT_WINDOW`` with exactly this text;
    ``in_discussion``: their posts in this discussion in the last ``RATE_WINDOW`` (0 for a
    new discussion). The database counts both (``ingest._hold_loop``), so no text travels.
    """
    if repeats > 0 and len(normalised(text)) >= MIN_REPEAT_CHARS:
        return "held-repeated-text"
    if in_discussion >= MAX_PER_DISCUSSION_HOUR:
        return "held-post-rate"
    return None
