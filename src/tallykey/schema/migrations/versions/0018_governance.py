"""governance: token approval, inactivity revocation, the weekly digest (SPEC §17)

Revision ID: 0018_governance
Revises: node_lease
Create Date: 2026-12-07 12:30:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import tallykey.db.base

revision = '0018_governance'
down_revision = 'node_lease'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('accounts', schema=None) as batch_op:
        batch_op.add_column(sa.Column('token_approval', sa.String(length=16),
                                      server_default='off', nullable=False))
        batch_op.add_column(sa.Column('revoke_inactive_days', sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column('digest_sent_at',
                                      tallykey.db.base.UTCDateTime(timezone=True),
                                      nullable=True))
    with op.batch_alter_table('tokens', schema=None) as batch_op:
        batch_op.add_column(sa.Column('pending_at',
                                      tallykey.db.base.UTCDateTime(timezone=True),
                                      nullable=True))
    with op.batch_alter_table('users', schema=None) as batch_op:
        batch_op.add_column(sa.Column('weekly_digest', sa.Boolean(),
                                      server_default=sa.true(), nullable=False))


def downgrade() -> None:
    with op.batch_alter_table('users', schema=None) as batch_op:
        batch_op.drop_column('weekly_digest')
    with op.batch_alter_table('tokens', schema=None) as batch_op:
        batch_op.drop_column('pending_at')
    with op.batch_alter_table('accounts', schema=None) as batch_op:
        batch_op.drop_column('digest_sent_at')
        batch_op.drop_column('revoke_inactive_days')
        batch_op.drop_column('token_approval')
