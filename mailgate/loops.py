"""Loop guard: posts that look like a robot answering our own copies (ingest, pure).

Input: the text of a new post, its discussion (None for a new one), and what the same
author posted in the last hour (:class:`RecentPost`). Output: ``None`` (post it) or the
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

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

REPEAT_WINDOW = timedelta(minutes=30)
RATE_WINDOW = timedelta(hours=1)
MAX_PER_DISCUSSION_HOUR = 10
MIN_REPEAT_CHARS = 40  # shorter texts repeat innocently ("Thanks!", "+1 from me")


@dataclass(frozen=True)
class RecentPost:
    text: str
    discussion_id: int
    created_at: datetime  # aware


def normalised(text: str) -> str:
    return " ".join(text.split()).casefold()


def loop_reason(
    text: str, discussion_id: int | None, recent: Sequence[RecentPost], now: datetime
) -> str | None:
    """Why this post looks like a loop, or None. ``recent``: the author's posts of the
    last ``RATE_WINDOW`` (any order)."""
    mine = normalised(text)
    if len(mine) >= MIN_REPEAT_CHARS and any(
        now - post.created_at <= REPEAT_WINDOW and normalised(post.text) == mine for post in recent
    ):
        return "held-repeated-text"
    if discussion_id is not None:
        in_discussion = sum(
            1
            for post in recent
            if post.discussion_id == discussion_id and now - post.created_at <= RATE_WINDOW
        )
        if in_discussion >= MAX_PER_DISCUSSION_HOUR:
            return "held-post-rate"
    return None
