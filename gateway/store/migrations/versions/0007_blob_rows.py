"""Small blobs live in the database for good (`blobs`), keyed by sha256; `held_raw` goes.

Raw messages the database held until the rules stage filed them move into `blobs` under their
message's `raw_sha256`, so a message not yet processed is read from there.

Revision ID: 0007
Revises: 0006
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# One held row per distinct raw message: the same bytes may have come for two dossiers' keys.
_MOVE_HELD = """
INSERT INTO blobs (sha256, data)
SELECT m.raw_sha256, h.data FROM held_raw h JOIN messages m ON m.id = h.message_id
WHERE h.message_id IN (
    SELECT MIN(h2.message_id) FROM held_raw h2 JOIN messages m2 ON m2.id = h2.message_id
    GROUP BY m2.raw_sha256
)
"""
_HOLD_UNPROCESSED = """
INSERT INTO held_raw (message_id, data)
SELECT m.id, b.data FROM messages m JOIN blobs b ON b.sha256 = m.raw_sha256
WHERE m.processed_at IS NULL
"""


def upgrade() -> None:
    op.create_table(
        "blobs",
        sa.Column("sha256", sa.String(64), primary_key=True),
        sa.Column("data", sa.LargeBinary(), nullable=False),
    )
    op.execute(_MOVE_HELD)
    op.drop_table("held_raw")


def downgrade() -> None:
    """Only as far as revision 0006 can read: the raw bytes of messages not processed yet go
    back to `held_raw`; any other blob row would be lost (0006 reads blobs from files only),
    so the downgrade refuses while one exists."""
    bind = op.get_bind()
    others = bind.execute(
        sa.text(
            "SELECT COUNT(*) FROM blobs WHERE sha256 NOT IN "
            "(SELECT raw_sha256 FROM messages WHERE processed_at IS NULL)"
        )
    ).scalar_one()
    if others:
        raise RuntimeError(
            f"{others} blobs live only in the database table `blobs`; revision 0006 reads "
            "blobs from files: restore a backup taken before the upgrade instead"
        )
    op.create_table(
        "held_raw",
        sa.Column(
            "message_id",
            sa.Integer(),
            sa.ForeignKey("messages.id", ondelete="CASCADE"),
            primary_key=True,
        ),
        sa.Column("data", sa.LargeBinary(), nullable=False),
    )
    op.execute(_HOLD_UNPROCESSED)
    op.drop_table("blobs")
