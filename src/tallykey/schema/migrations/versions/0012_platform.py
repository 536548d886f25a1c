"""platform: archived workspaces, suspended accounts, operator tokens

Revision ID: platform
Revises: newcomer
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import tallykey.db.base

revision = 'platform'
down_revision = 'newcomer'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('operator_tokens',
    sa.Column('id', sa.String(length=36), nullable=False),
    sa.Column('name', sa.String(length=100), nullable=False),
    sa.Column('public_id', sa.String(length=16), nullable=False),
    sa.Column('secret_hash', sa.String(length=64), nullable=False),
    sa.Column('created_at', tallykey.db.base.UTCDateTime(timezone=True), nullable=False),
    sa.Column('expires_at', tallykey.db.base.UTCDateTime(timezone=True), nullable=False),
    sa.Column('revoked_at', tallykey.db.base.UTCDateTime(timezone=True), nullable=True),
    sa.Column('last_used_at', tallykey.db.base.UTCDateTime(timezone=True), nullable=True),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_operator_tokens')),
    sa.UniqueConstraint('public_id', name=op.f('uq_operator_tokens_public_id')),
    sa.UniqueConstraint('secret_hash', name=op.f('uq_operator_tokens_secret_hash'))
    )
    with op.batch_alter_table('accounts', schema=None) as batch_op:
        batch_op.add_column(sa.Column('active', sa.Boolean(), server_default=sa.true(),
                                      nullable=False))
    with op.batch_alter_table('workspaces', schema=None) as batch_op:
        batch_op.add_column(sa.Column('archived_at',
                                      tallykey.db.base.UTCDateTime(timezone=True),
                                      nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('workspaces', schema=None) as batch_op:
        batch_op.drop_column('archived_at')
    with op.batch_alter_table('accounts', schema=None) as batch_op:
        batch_op.drop_column('active')
    op.drop_table('operator_tokens')
