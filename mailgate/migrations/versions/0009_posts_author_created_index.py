"""posts: index each author's recent posts

The loop guard (``mailgate.loops``) asks, for every post, what the same author posted in
the last hour: the same text again, and how many posts in one discussion. Without an
index on ``(author_id, created_at)`` that is a scan of the posts table per post.

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-07 20:50:00
"""

from __future__ import annotations

from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("posts", schema=None) as batch_op:
        batch_op.create_index("ix_posts_author_created", ["author_id", "created_at"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("posts", schema=None) as batch_op:
        batch_op.drop_index("ix_posts_author_created")
