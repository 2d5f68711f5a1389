"""Intake: where a message came from, which dossiers it is for, sender evidence, IMAP UIDs taken.

Revision ID: 0002
Revises: 0005
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("messages") as batch:
        batch.add_column(sa.Column("source_ref", sa.Text(), nullable=False, server_default=""))
        batch.add_column(sa.Column("routes", sa.JSON(), nullable=False, server_default="[]"))
        batch.add_column(sa.Column("auth", sa.JSON(), nullable=False, server_default="{}"))
    op.create_table(
        "imap_seen",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("account", sa.String(length=100), nullable=False),
        sa.Column("folder", sa.String(length=200), nullable=False),
        sa.Column("uidvalidity", sa.BigInteger(), nullable=False),
        sa.Column("uid", sa.BigInteger(), nullable=False),
        sa.Column("message_id", sa.Integer(), nullable=False),
        sa.Column("done_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(["message_id"], ["messages.id"]),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("account", "folder", "uidvalidity", "uid"),
    )


def downgrade() -> None:
    op.drop_table("imap_seen")
    with op.batch_alter_table("messages") as batch:
        batch.drop_column("auth")
        batch.drop_column("routes")
        batch.drop_column("source_ref")
