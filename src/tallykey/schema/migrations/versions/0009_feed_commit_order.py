"""feed in commit order, nodes on the database clock

Revision ID: 0009
Revises: 0008
Create Date: 2026-11-29 19:50:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import tallykey.db.base

revision = '0009'
down_revision = '0008'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('verdict_changes', schema=None) as batch_op:
        batch_op.add_column(sa.Column('tx', sa.BigInteger(), nullable=True))
        batch_op.create_index(batch_op.f('ix_verdict_changes_tx'), ['tx'], unique=False)
    with op.batch_alter_table('nodes', schema=None) as batch_op:
        batch_op.alter_column('applied_change', existing_type=sa.Integer(),
                              type_=sa.BigInteger(), existing_nullable=False)
        batch_op.add_column(sa.Column('feed_snapshot', sa.String(length=2000), nullable=True))
        batch_op.add_column(sa.Column('synced_at', tallykey.db.base.UTCDateTime(timezone=True),
                                      nullable=True))
        batch_op.add_column(sa.Column('clock_offset_ms', sa.Integer(), nullable=False,
                                      server_default='0'))


def downgrade() -> None:
    with op.batch_alter_table('nodes', schema=None) as batch_op:
        batch_op.drop_column('clock_offset_ms')
        batch_op.drop_column('synced_at')
        batch_op.drop_column('feed_snapshot')
        batch_op.alter_column('applied_change', existing_type=sa.BigInteger(),
                              type_=sa.Integer(), existing_nullable=False)
    with op.batch_alter_table('verdict_changes', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_verdict_changes_tx'))
        batch_op.drop_column('tx')
