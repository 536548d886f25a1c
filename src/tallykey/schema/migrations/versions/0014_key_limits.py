"""key limits: per-token rate limits, usage credits with refill, metadata, external id

Revision ID: key_limits
Revises: people
Create Date: 2026-11-29 23:30:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = 'key_limits'
down_revision = 'people'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('tokens', schema=None) as batch_op:
        batch_op.add_column(sa.Column('rate_limits', sa.JSON(), nullable=True))
        batch_op.add_column(sa.Column('credits_remaining', sa.BigInteger(), nullable=True))
        batch_op.add_column(sa.Column('credits_refill_amount', sa.BigInteger(), nullable=True))
        batch_op.add_column(sa.Column('credits_refill_interval', sa.String(length=8), nullable=True))
        batch_op.add_column(sa.Column('credits_period', sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column('metadata', sa.JSON(), nullable=True))
        batch_op.add_column(sa.Column('external_id', sa.String(length=255), nullable=True))
        batch_op.create_index('ix_tokens_account_external_id', ['account_id', 'external_id'], unique=False)


def downgrade() -> None:
    with op.batch_alter_table('tokens', schema=None) as batch_op:
        batch_op.drop_index('ix_tokens_account_external_id')
        batch_op.drop_column('external_id')
        batch_op.drop_column('metadata')
        batch_op.drop_column('credits_period')
        batch_op.drop_column('credits_refill_interval')
        batch_op.drop_column('credits_refill_amount')
        batch_op.drop_column('credits_remaining')
        batch_op.drop_column('rate_limits')
