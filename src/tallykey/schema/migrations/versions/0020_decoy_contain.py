"""decoy tokens and containment (SPEC §17): decoy trips, contain, suspend reasons

Revision ID: 0020_decoy_contain
Revises: 0019_webhooks
Create Date: 2026-12-07 12:40:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import tallykey.db.base

revision = '0020_decoy_contain'
down_revision = '0019_webhooks'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('accounts', schema=None) as batch_op:
        batch_op.add_column(sa.Column('contain', sa.String(length=16), nullable=False,
                                      server_default='off'))
    with op.batch_alter_table('tokens', schema=None) as batch_op:
        batch_op.add_column(sa.Column('suspend_reason', sa.String(length=64),
                                      nullable=True))
    op.create_table(
        'decoy_trips',
        sa.Column('id', sa.Integer(), autoincrement=True, nullable=False),
        sa.Column('token_id', sa.String(length=36), nullable=False),
        sa.Column('account_id', sa.String(length=36), nullable=False),
        sa.Column('first_at', tallykey.db.base.UTCDateTime(timezone=True), nullable=False),
        sa.Column('last_at', tallykey.db.base.UTCDateTime(timezone=True), nullable=False),
        sa.Column('count', sa.Integer(), nullable=False),
        sa.Column('ip', sa.String(length=45), nullable=False),
        sa.Column('user_agent', sa.String(length=300), nullable=True),
        sa.Column('path', sa.String(length=300), nullable=True),
        sa.ForeignKeyConstraint(['token_id'], ['tokens.id'],
                                name=op.f('fk_decoy_trips_token_id_tokens')),
        sa.ForeignKeyConstraint(['account_id'], ['accounts.id'],
                                name=op.f('fk_decoy_trips_account_id_accounts')),
        sa.PrimaryKeyConstraint('id', name=op.f('pk_decoy_trips')),
    )
    with op.batch_alter_table('decoy_trips', schema=None) as batch_op:
        batch_op.create_index('ix_decoy_trips_token_last', ['token_id', 'last_at'],
                              unique=False)
        batch_op.create_index(batch_op.f('ix_decoy_trips_account_id'), ['account_id'],
                              unique=False)


def downgrade() -> None:
    with op.batch_alter_table('decoy_trips', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_decoy_trips_account_id'))
        batch_op.drop_index('ix_decoy_trips_token_last')
    op.drop_table('decoy_trips')
    with op.batch_alter_table('tokens', schema=None) as batch_op:
        batch_op.drop_column('suspend_reason')
    with op.batch_alter_table('accounts', schema=None) as batch_op:
        batch_op.drop_column('contain')
