"""Data model: SQLAlchemy 2.0 typed tables.

The database holds all state (Redis only carries work). Every side effect has a row with
a unique key, so re-running a step is harmless: posts are unique per (list, Message-ID
key), outbox rows per key, memberships per (list, person).

Schema changes go through Alembic migrations in ``mailgate/migrations``; the tests check
that the migrations and these models agree.
"""

from __future__ import annotations

import enum
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    Boolean,
    DateTime,
    Enum,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship
from sqlalchemy.types import TypeDecorator

NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


def utcnow() -> datetime:
    return datetime.now(UTC)


class UTCDateTime(TypeDecorator[datetime]):
    """Timezone-aware UTC datetimes on both engines (SQLite drops tzinfo on read)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to a UTC column")
        return value.astimezone(UTC)

    def process_result_value(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)


class Visibility(enum.StrEnum):
    COMPANY = "company"  # anyone in the company may read
    MEMBERS = "members"  # only members may read; the list is listed
    HIDDEN = "hidden"  # only members may read, and only members know it exists


class PostingPolicy(enum.StrEnum):
    MEMBERS = "members"
    COMPANY = "company"  # any active person in the directory
    ANNOUNCE = "announce"  # only owners, moderators and the allow-list; needs authentication


class Role(enum.StrEnum):
    OWNER = "owner"
    MODERATOR = "moderator"
    MEMBER = "member"


class Delivery(enum.StrEnum):
    EVERY = "every"
    DIGEST = "digest"
    NONE = "none"


class SiteRole(enum.StrEnum):
    ADMIN = "admin"
    EXECUTIVE = "executive"  # may ask the company questions (issue: questions)


class RawStatus(enum.StrEnum):
    RECEIVED = "received"  # committed by the gateway, not yet processed
    PROCESSED = "processed"  # became a post or a command
    REJECTED = "rejected"  # the sender's fault; a reason and maybe a notice
    SUPPRESSED = "suppressed"  # automatic mail, bounces, loops: logged, never answered
    HELD = "held"  # waiting for a moderator or a confirmation
    DISCARDED = "discarded"  # an admin threw it away
    FAILED = "failed"  # our fault, after N tries; kept for replay


def _enum(kind: type[enum.StrEnum], name: str) -> Enum:
    # Store values (not names) as VARCHAR + CHECK: portable and readable in psql.
    return Enum(
        kind,
        name=name,
        native_enum=False,
        create_constraint=True,
        length=16,
        values_callable=lambda e: [m.value for m in e],
    )


class Person(Base):
    __tablename__ = "people"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(200), default="")
    timezone: Mapped[str] = mapped_column(String(64), default="UTC")
    department: Mapped[str] = mapped_column(String(200), default="")
    active: Mapped[bool] = mapped_column(Boolean, default=True)
    self_copy: Mapped[bool] = mapped_column(Boolean, default=False)  # get my own posts
    digest_hour: Mapped[int] = mapped_column(Integer, default=8)  # local hour of the digest
    digest_weekdays_only: Mapped[bool] = mapped_column(Boolean, default=False)
    daily_summary: Mapped[bool] = mapped_column(Boolean, default=False)  # opted into a digest
    # On leave (a member setting, or the return date an out-of-office reply named): no
    # questions, prompts or reminders until this local date (YYYY-MM-DD), inclusive.
    away_until: Mapped[str | None] = mapped_column(String(10), nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)

    addresses: Mapped[list[Address]] = relationship(
        back_populates="person", order_by="Address.id", cascade="all, delete-orphan"
    )

    @property
    def primary_address(self) -> str:
        for addr in self.addresses:
            if addr.is_primary:
                return addr.email
        return self.addresses[0].email if self.addresses else ""


class Address(Base):
    __tablename__ = "addresses"

    id: Mapped[int] = mapped_column(primary_key=True)
    person_id: Mapped[int] = mapped_column(ForeignKey("people.id", ondelete="CASCADE"), index=True)
    email: Mapped[str] = mapped_column(String(320), unique=True)  # lowercased addr-spec
    is_primary: Mapped[bool] = mapped_column(Boolean, default=False)

    person: Mapped[Person] = relationship(back_populates="addresses")


class PersonRole(Base):
    """Site-wide roles (admin, executive); list roles live on memberships."""

    __tablename__ = "person_roles"
    __table_args__ = (UniqueConstraint("person_id", "role"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    person_id: Mapped[int] = mapped_column(ForeignKey("people.id", ondelete="CASCADE"))
    role: Mapped[SiteRole] = mapped_column(_enum(SiteRole, "site_role"))


class MailingList(Base):
    __tablename__ = "lists"

    id: Mapped[int] = mapped_column(primary_key=True)
    slug: Mapped[str] = mapped_column(String(64), unique=True)  # local part: eng@DOMAIN
    name: Mapped[str] = mapped_column(String(200))
    description: Mapped[str] = mapped_column(Text, default="")
    visibility: Mapped[Visibility] = mapped_column(
        _enum(Visibility, "visibility"), default=Visibility.COMPANY
    )
    posting: Mapped[PostingPolicy] = mapped_column(
        _enum(PostingPolicy, "posting_policy"), default=PostingPolicy.MEMBERS
    )
    mandatory: Mapped[bool] = mapped_column(Boolean, default=False)
    archived_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class AllowedPoster(Base):
    """The allow-list of an announce-only list (besides its owners and moderators)."""

    __tablename__ = "allowed_posters"
    __table_args__ = (UniqueConstraint("list_id", "person_id"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    list_id: Mapped[int] = mapped_column(ForeignKey("lists.id", ondelete="CASCADE"))
    person_id: Mapped[int] = mapped_column(ForeignKey("people.id", ondelete="CASCADE"))


class Membership(Base):
    __tablename__ = "memberships"
    __table_args__ = (UniqueConstraint("list_id", "person_id"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    list_id: Mapped[int] = mapped_column(ForeignKey("lists.id", ondelete="CASCADE"), index=True)
    person_id: Mapped[int] = mapped_column(ForeignKey("people.id", ondelete="CASCADE"), index=True)
    role: Mapped[Role] = mapped_column(_enum(Role, "role"), default=Role.MEMBER)
    delivery: Mapped[Delivery] = mapped_column(_enum(Delivery, "delivery"), default=Delivery.EVERY)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)

    person: Mapped[Person] = relationship()
    mailing_list: Mapped[MailingList] = relationship()


class Discussion(Base):
    __tablename__ = "discussions"

    id: Mapped[int] = mapped_column(primary_key=True)
    list_id: Mapped[int] = mapped_column(ForeignKey("lists.id"), index=True)
    subject: Mapped[str] = mapped_column(String(998))
    started_by_id: Mapped[int | None] = mapped_column(ForeignKey("people.id"), nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    last_post_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    closed: Mapped[bool] = mapped_column(Boolean, default=False)


class Post(Base):
    __tablename__ = "posts"
    # DUR-02: the same Message-ID to the same list is one post.
    __table_args__ = (
        UniqueConstraint("list_id", "message_key"),
        Index("ix_posts_list_created", "list_id", "created_at"),  # digest windows
        # Threading looks up cited Message-IDs within one list (mailgate.ingest).
        Index("ix_posts_list_message_id", "list_id", "message_id"),
        # The loop guard reads one author's last hour (mailgate.loops).
        Index("ix_posts_author_created", "author_id", "created_at"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    discussion_id: Mapped[int] = mapped_column(ForeignKey("discussions.id"), index=True)
    list_id: Mapped[int] = mapped_column(ForeignKey("lists.id"))
    author_id: Mapped[int | None] = mapped_column(ForeignKey("people.id"), nullable=True)
    parent_id: Mapped[int | None] = mapped_column(ForeignKey("posts.id"), nullable=True)
    raw_id: Mapped[int | None] = mapped_column(ForeignKey("raw_messages.id"), nullable=True)
    message_id: Mapped[str] = mapped_column(String(998))
    message_key: Mapped[str] = mapped_column(String(64))  # sha256 of the normalised id
    subject: Mapped[str] = mapped_column(String(998), default="")
    text: Mapped[str] = mapped_column(Text)
    elided: Mapped[str] = mapped_column(Text, default="")
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class RawMessage(Base):
    """Exact bytes as received plus the SMTP envelope (FMT-01, DUR-01)."""

    __tablename__ = "raw_messages"
    __table_args__ = (Index("ix_raw_messages_status", "status", "received_at"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    raw: Mapped[bytes] = mapped_column(LargeBinary)
    sha256: Mapped[str] = mapped_column(String(64), index=True)
    mail_from: Mapped[str] = mapped_column(String(998), default="")
    rcpt_to: Mapped[list[str]] = mapped_column(JSON, default=list)
    peer: Mapped[str] = mapped_column(String(100), default="")
    helo: Mapped[str] = mapped_column(String(255), default="")
    message_id: Mapped[str] = mapped_column(String(998), default="")
    received_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    status: Mapped[RawStatus] = mapped_column(
        _enum(RawStatus, "raw_status"), default=RawStatus.RECEIVED
    )
    reason: Mapped[str] = mapped_column(String(200), default="")
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    queued_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    explanation: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)


class OutboxEntry(Base):
    """Transactional outbox (DUR-03): work to publish once the transaction commits."""

    __tablename__ = "outbox"
    __table_args__ = (
        Index("ix_outbox_pending", "published_at", "id"),
        # The sweeper's "published but never done" probe (mailgate.outbox).
        Index("ix_outbox_unfinished", "task", "done_at", "published_at"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    key: Mapped[str] = mapped_column(String(200), unique=True)  # e.g. ingest:42
    task: Mapped[str] = mapped_column(String(100))
    args: Mapped[list[Any]] = mapped_column(JSON, default=list)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    published_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    done_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)


class AuditEntry(Base):
    """Append-only: the migrations install triggers that refuse UPDATE and DELETE."""

    __tablename__ = "audit_log"

    id: Mapped[int] = mapped_column(primary_key=True)
    at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, index=True)
    actor: Mapped[str] = mapped_column(String(320))
    action: Mapped[str] = mapped_column(String(100))
    target: Mapped[str] = mapped_column(String(400))
    before: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    after: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)


# ---------------------------------------------------------------- inbound (migration 0002)


class Like(Base):
    """A ``+1`` reply: one per (post, person)."""

    __tablename__ = "likes"
    __table_args__ = (UniqueConstraint("post_id", "person_id"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    post_id: Mapped[int] = mapped_column(ForeignKey("posts.id", ondelete="CASCADE"))
    person_id: Mapped[int] = mapped_column(ForeignKey("people.id", ondelete="CASCADE"))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class Mute(Base):
    """A muted discussion: no more copies of it to this person."""

    __tablename__ = "mutes"
    __table_args__ = (UniqueConstraint("discussion_id", "person_id"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    discussion_id: Mapped[int] = mapped_column(ForeignKey("discussions.id", ondelete="CASCADE"))
    person_id: Mapped[int] = mapped_column(ForeignKey("people.id", ondelete="CASCADE"))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class Notice(Base):
    """An explanatory notice to a sender: at most one per (address, reason, day)."""

    __tablename__ = "notices"
    __table_args__ = (UniqueConstraint("address", "reason", "day"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    address: Mapped[str] = mapped_column(String(320), index=True)
    reason: Mapped[str] = mapped_column(String(64))
    day: Mapped[str] = mapped_column(String(32))  # YYYY-MM-DD in UTC (+ #raw for confirmations)
    raw_id: Mapped[int | None] = mapped_column(ForeignKey("raw_messages.id"), nullable=True)
    context: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    sent_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)


class PendingAction(Base):
    """A change asked for by mail that waits for confirmation from the address of
    record (LIST-07, SPOOF-03): subscribe, unsubscribe, delivery changes, held posts."""

    __tablename__ = "pending_actions"

    id: Mapped[int] = mapped_column(primary_key=True)
    action: Mapped[str] = mapped_column(String(32))  # subscribe, unsubscribe, digest, …, post
    address: Mapped[str] = mapped_column(String(320))  # where the confirmation went
    list_id: Mapped[int] = mapped_column(ForeignKey("lists.id", ondelete="CASCADE"))
    raw_id: Mapped[int | None] = mapped_column(ForeignKey("raw_messages.id"), nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    done_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)


class StoredAttachment(Base):
    """An attachment of a post: its sanitised name and digest; the bytes stay in the raw
    message (FMT-01), so nothing is stored twice."""

    __tablename__ = "attachments"

    id: Mapped[int] = mapped_column(primary_key=True)
    post_id: Mapped[int] = mapped_column(ForeignKey("posts.id", ondelete="CASCADE"), index=True)
    filename: Mapped[str] = mapped_column(String(255))
    content_type: Mapped[str] = mapped_column(String(255))
    size: Mapped[int] = mapped_column(Integer)
    sha256: Mapped[str] = mapped_column(String(64))


# ---------------------------------------------------------------- outbound (migration 0003)


class DeliveryStatus(enum.StrEnum):
    PENDING = "pending"  # waiting for a send task (or for next_attempt_at)
    SENDING = "sending"  # claimed by a worker until lease_until
    SENT = "sent"  # the relay said 250
    FAILED = "failed"  # permanent: 5xx, or retries exhausted


class DeliveryRecord(Base):
    """One member's copy of one post (DUR-04): unique per (post, person)."""

    __tablename__ = "deliveries"
    __table_args__ = (
        UniqueConstraint("post_id", "person_id"),
        Index("ix_deliveries_due", "status", "next_attempt_at"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    post_id: Mapped[int] = mapped_column(ForeignKey("posts.id", ondelete="CASCADE"))
    person_id: Mapped[int] = mapped_column(ForeignKey("people.id", ondelete="CASCADE"), index=True)
    list_id: Mapped[int] = mapped_column(ForeignKey("lists.id", ondelete="CASCADE"))
    address: Mapped[str] = mapped_column(String(320))
    status: Mapped[DeliveryStatus] = mapped_column(
        _enum(DeliveryStatus, "delivery_status"), default=DeliveryStatus.PENDING
    )
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    lease_until: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    next_attempt_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    last_error: Mapped[str] = mapped_column(String(400), default="")
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    sent_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)


class BounceState(Base):
    """A person's decaying bounce score (BNC-03); suspended people get no mail."""

    __tablename__ = "bounce_states"

    id: Mapped[int] = mapped_column(primary_key=True)
    person_id: Mapped[int] = mapped_column(ForeignKey("people.id", ondelete="CASCADE"), unique=True)
    score: Mapped[float] = mapped_column(default=0.0)
    updated_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    suspended_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    last_diagnostic: Mapped[str] = mapped_column(String(400), default="")
    bounces: Mapped[int] = mapped_column(Integer, default=0)


# ---------------------------------------------------------------- digests (migration 0004)


class Digest(Base):
    """One member's digest for one local date (DUR-06): unique, so re-runs send nothing
    twice. ``items`` keeps the numbered discussion ids so replies can name them."""

    __tablename__ = "digests"
    __table_args__ = (UniqueConstraint("person_id", "local_date"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    person_id: Mapped[int] = mapped_column(ForeignKey("people.id", ondelete="CASCADE"))
    local_date: Mapped[str] = mapped_column(String(10))  # YYYY-MM-DD in the member's zone
    status: Mapped[str] = mapped_column(String(16), default="pending")  # pending/sent/empty
    items: Mapped[list[int]] = mapped_column(JSON, default=list)  # discussion ids, 1-based
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    sent_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    lease_until: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)


class Follow(Base):
    """A discussion a digest reader wants every message of ("follow 5")."""

    __tablename__ = "follows"
    __table_args__ = (UniqueConstraint("discussion_id", "person_id"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    discussion_id: Mapped[int] = mapped_column(ForeignKey("discussions.id", ondelete="CASCADE"))
    person_id: Mapped[int] = mapped_column(ForeignKey("people.id", ondelete="CASCADE"))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


# ---------------------------------------------------------------- questions (migration 0006)


class AnswerVisibility(enum.StrEnum):
    OPEN = "open"  # answers are shared with the audience (digests, summary)
    ASKER_ONLY = "asker-only"  # only the asker and the people they name


class QuestionKind(enum.StrEnum):
    QUESTION = "question"  # a leader asked it (ask@ or ``mailgate ask``)
    PROMPT = "prompt"  # one week's run of a recurring prompt


class Question(Base):
    """A question put to an audience. Its text is the first post of ``discussion_id``;
    answers are the replies to it. ``list_id`` is the audience list, or the system list
    that holds company-wide questions (``company_wide``)."""

    __tablename__ = "questions"

    id: Mapped[int] = mapped_column(primary_key=True)
    discussion_id: Mapped[int] = mapped_column(ForeignKey("discussions.id"), unique=True)
    list_id: Mapped[int] = mapped_column(ForeignKey("lists.id"), index=True)
    company_wide: Mapped[bool] = mapped_column(Boolean, default=False)
    kind: Mapped[QuestionKind] = mapped_column(
        _enum(QuestionKind, "question_kind"), default=QuestionKind.QUESTION
    )
    asker_id: Mapped[int | None] = mapped_column(ForeignKey("people.id"), nullable=True)
    visibility: Mapped[AnswerVisibility] = mapped_column(
        _enum(AnswerVisibility, "answer_visibility"), default=AnswerVisibility.OPEN
    )
    anonymous: Mapped[bool] = mapped_column(Boolean, default=False)
    deadline: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    max_reminders: Mapped[int] = mapped_column(Integer, default=2)
    prompt_id: Mapped[int | None] = mapped_column(ForeignKey("prompts.id"), nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    closed_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)


class QuestionViewer(Base):
    """Someone the asker named: sees asker-only answers and may answer for the asker
    ("don't know yet")."""

    __tablename__ = "question_viewers"
    __table_args__ = (UniqueConstraint("question_id", "person_id"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    question_id: Mapped[int] = mapped_column(ForeignKey("questions.id", ondelete="CASCADE"))
    person_id: Mapped[int] = mapped_column(ForeignKey("people.id", ondelete="CASCADE"))


class Ask(Base):
    """One audience member's copy of a question: when it is due in their local time,
    whether it went out, whether they answered, how often we reminded them."""

    __tablename__ = "asks"
    __table_args__ = (
        UniqueConstraint("question_id", "person_id"),
        Index("ix_asks_due", "sent_at", "due_at"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    question_id: Mapped[int] = mapped_column(ForeignKey("questions.id", ondelete="CASCADE"))
    person_id: Mapped[int] = mapped_column(ForeignKey("people.id", ondelete="CASCADE"), index=True)
    due_at: Mapped[datetime] = mapped_column(UTCDateTime)
    sent_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    answered_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    reminders: Mapped[int] = mapped_column(Integer, default=0)
    last_reminded_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    skipped: Mapped[str] = mapped_column(String(32), default="")  # e.g. away-until


class Followup(Base):
    """A "don't know yet, by <date>" promise: the asker (or a delegate) owes an answer
    to ``post_id`` by ``due_date``; reminded on the date; the people who asked are told
    when ``resolved_post_id`` answers it."""

    __tablename__ = "followups"

    id: Mapped[int] = mapped_column(primary_key=True)
    question_id: Mapped[int] = mapped_column(ForeignKey("questions.id", ondelete="CASCADE"))
    post_id: Mapped[int] = mapped_column(ForeignKey("posts.id", ondelete="CASCADE"))
    promise_post_id: Mapped[int] = mapped_column(
        ForeignKey("posts.id", ondelete="CASCADE"), unique=True
    )
    promised_by_id: Mapped[int | None] = mapped_column(ForeignKey("people.id"), nullable=True)
    due_date: Mapped[str] = mapped_column(String(10))  # YYYY-MM-DD, the promiser's zone
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    resolved_post_id: Mapped[int | None] = mapped_column(
        ForeignKey("posts.id", ondelete="SET NULL"), nullable=True
    )
    resolved_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)


class QuestionMail(Base):
    """One email of the questions feature (the ask, a reminder, a summary, a follow-up
    reminder, an "it is answered" note): unique ``key`` so every tick is re-runnable."""

    __tablename__ = "question_mails"
    __table_args__ = (Index("ix_question_mails_status", "status", "id"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    key: Mapped[str] = mapped_column(String(200), unique=True)  # ask:Q:P, remind:Q:P:N, …
    kind: Mapped[str] = mapped_column(String(32))  # a templates/questions/<kind> directory
    question_id: Mapped[int] = mapped_column(ForeignKey("questions.id", ondelete="CASCADE"))
    person_id: Mapped[int] = mapped_column(ForeignKey("people.id", ondelete="CASCADE"), index=True)
    followup_id: Mapped[int | None] = mapped_column(
        ForeignKey("followups.id", ondelete="CASCADE"), nullable=True
    )
    status: Mapped[str] = mapped_column(String(16), default="pending")  # pending/sent/failed
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    lease_until: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    last_error: Mapped[str] = mapped_column(String(400), default="")
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    sent_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)


class Prompt(Base):
    """A recurring prompt: every week on ``weekday`` at ``minute_of_day`` in each
    member's local time, one question from ``bank`` (rotating) to the audience."""

    __tablename__ = "prompts"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(100), unique=True)
    list_id: Mapped[int | None] = mapped_column(ForeignKey("lists.id"), nullable=True)  # None: all
    weekday: Mapped[int] = mapped_column(Integer)  # 0 = Monday
    minute_of_day: Mapped[int] = mapped_column(Integer)  # 570 = 09:30
    bank: Mapped[list[str]] = mapped_column(JSON, default=list)
    paused: Mapped[bool] = mapped_column(Boolean, default=False)
    deleted_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    created_by: Mapped[str] = mapped_column(String(320), default="")
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class PromptRun(Base):
    """One week of a prompt: which bank entry it asked (rotation) and its question."""

    __tablename__ = "prompt_runs"
    __table_args__ = (UniqueConstraint("prompt_id", "week"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    prompt_id: Mapped[int] = mapped_column(ForeignKey("prompts.id", ondelete="CASCADE"))
    week: Mapped[str] = mapped_column(String(10))  # ISO week, e.g. 2026-W48
    bank_index: Mapped[int] = mapped_column(Integer)
    question_id: Mapped[int | None] = mapped_column(ForeignKey("questions.id"), nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
