"""tokens.approved_at: when a pending token was approved

The inactivity policy (SPEC §17) counts a never-used approved token's disuse from it.

Revision ID: 0025_token_approved_at
Revises: 0023_plans
Create Date: 2026-12-07 16:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import tallykey.db.base

revision = '0025_token_approved_at'
down_revision = '0023_plans'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('tokens') as batch:
        batch.add_column(sa.Column('approved_at', tallykey.db.base.UTCDateTime(timezone=True),
                                   nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('tokens') as batch:
        batch.drop_column('approved_at')
