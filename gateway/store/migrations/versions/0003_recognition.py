"""Recognition: dossier IBANs, document visual/dedupe key/matched rules, the rules table.

Revision ID: 0003
Revises: 0001
Create Date: 2026-11-21 11:15:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("dossiers", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("ibans", sa.JSON(), nullable=False, server_default=sa.text("'[]'"))
        )
    with op.batch_alter_table("documents", schema=None) as batch_op:
        batch_op.add_column(sa.Column("visual_sha256", sa.String(length=64), nullable=True))
        batch_op.add_column(
            sa.Column("visual_filename", sa.Text(), nullable=False, server_default="")
        )
        batch_op.add_column(
            sa.Column("dedupe_key", sa.String(length=300), nullable=False, server_default="")
        )
        batch_op.add_column(
            sa.Column("matched_rules", sa.JSON(), nullable=False, server_default=sa.text("'[]'"))
        )
        batch_op.create_index("ix_documents_dossier_blob", ["dossier_id", "blob_sha256"])
        batch_op.create_index("ix_documents_dossier_dedupe", ["dossier_id", "dedupe_key"])
    op.create_table(
        "rules",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("dossier_id", sa.Integer(), nullable=True),
        sa.Column("position", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=100), nullable=False),
        sa.Column("match", sa.JSON(), nullable=False),
        sa.Column("actions", sa.JSON(), nullable=False),
        sa.Column("continue_matching", sa.Boolean(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["dossier_id"], ["dossiers.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_rules_dossier_position", "rules", ["dossier_id", "position"])


def downgrade() -> None:
    op.drop_index("ix_rules_dossier_position", table_name="rules")
    op.drop_table("rules")
    with op.batch_alter_table("documents", schema=None) as batch_op:
        batch_op.drop_index("ix_documents_dossier_dedupe")
        batch_op.drop_index("ix_documents_dossier_blob")
        batch_op.drop_column("matched_rules")
        batch_op.drop_column("dedupe_key")
        batch_op.drop_column("visual_filename")
        batch_op.drop_column("visual_sha256")
    with op.batch_alter_table("dossiers", schema=None) as batch_op:
        batch_op.drop_column("ibans")
