"""posts: index cited Message-IDs per list

Threading looks a reply's In-Reply-To/References up among one list's posts. With only
``ix_posts_message_id`` and ``ix_posts_list_created``, SQLite's planner (no statistics)
chose the list index and scanned every post of the list, so ingest slowed as a list grew.
``(list_id, message_id)`` serves the lookup directly and replaces the single-column index.

Revision ID: 0008
Revises: 0007
Create Date: 2026-11-26 02:40:00
"""

from __future__ import annotations

from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("posts", schema=None) as batch_op:
        batch_op.drop_index("ix_posts_message_id")
        batch_op.create_index("ix_posts_list_message_id", ["list_id", "message_id"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("posts", schema=None) as batch_op:
        batch_op.drop_index("ix_posts_list_message_id")
        batch_op.create_index("ix_posts_message_id", ["message_id"], unique=False)
