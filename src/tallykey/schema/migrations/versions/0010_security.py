"""security review: admin limits on tokens, sign-in failures per e-mail, server keys

Revision ID: security
Revises: 0009
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import tallykey.db.base

revision = "security"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("tokens", schema=None) as batch_op:
        batch_op.add_column(sa.Column("admin_limits", sa.JSON(), nullable=True))
    op.create_table(
        "sign_in_failures",
        sa.Column("email", sa.String(length=254), nullable=False),
        sa.Column("failures", sa.Integer(), nullable=False),
        sa.Column("last_failed_at", tallykey.db.base.UTCDateTime(timezone=True),
                  nullable=False),
        sa.Column("blocked_until", tallykey.db.base.UTCDateTime(timezone=True),
                  nullable=True),
        sa.PrimaryKeyConstraint("email", name=op.f("pk_sign_in_failures")),
    )
    op.create_table(
        "server_keys",
        sa.Column("name", sa.String(length=50), nullable=False),
        sa.Column("secret", sa.Text(), nullable=False),
        sa.Column("created_at", tallykey.db.base.UTCDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("name", name=op.f("pk_server_keys")),
    )


def downgrade() -> None:
    op.drop_table("server_keys")
    op.drop_table("sign_in_failures")
    with op.batch_alter_table("tokens", schema=None) as batch_op:
        batch_op.drop_column("admin_limits")
