"""Deliveries can be held by an operator (`gateway queue hold`).

Revision ID: 0005
Revises: 0003
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0005"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        with op.get_context().autocommit_block():
            op.execute("ALTER TYPE deliverystate ADD VALUE IF NOT EXISTS 'held' AFTER 'deferred'")


def downgrade() -> None:
    op.execute("UPDATE deliveries SET state = 'queued' WHERE state = 'held'")
