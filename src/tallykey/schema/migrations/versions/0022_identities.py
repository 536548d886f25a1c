"""identities (SPEC §16): identities table, tokens.identity_id

Revision ID: 0022_identities
Revises: 0021_imported_keys
Create Date: 2026-12-07 13:30:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import tallykey.db.base

revision = '0022_identities'
down_revision = '0021_imported_keys'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        'identities',
        sa.Column('id', sa.String(length=36), nullable=False),
        sa.Column('account_id', sa.String(length=36), nullable=False),
        sa.Column('external_id', sa.String(length=255), nullable=False),
        sa.Column('name', sa.String(length=100), nullable=False),
        sa.Column('metadata', sa.JSON(), nullable=True),
        sa.Column('rate_limits', sa.JSON(), nullable=True),
        sa.Column('credits_remaining', sa.BigInteger(), nullable=True),
        sa.Column('credits_refill_amount', sa.BigInteger(), nullable=True),
        sa.Column('credits_refill_interval', sa.String(length=8), nullable=True),
        sa.Column('credits_period', sa.Integer(), nullable=True),
        sa.Column('created_at', tallykey.db.base.UTCDateTime(timezone=True), nullable=False),
        sa.Column('updated_at', tallykey.db.base.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(['account_id'], ['accounts.id'],
                                name=op.f('fk_identities_account_id_accounts')),
        sa.PrimaryKeyConstraint('id', name=op.f('pk_identities')),
        sa.UniqueConstraint('account_id', 'external_id',
                            name='uq_identities_account_external_id'),
    )
    with op.batch_alter_table('identities', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_identities_account_id'), ['account_id'],
                              unique=False)
    with op.batch_alter_table('tokens', schema=None) as batch_op:
        batch_op.add_column(sa.Column('identity_id', sa.String(length=36), nullable=True))
        batch_op.create_index(batch_op.f('ix_tokens_identity_id'), ['identity_id'],
                              unique=False)
        batch_op.create_foreign_key(batch_op.f('fk_tokens_identity_id_identities'),
                                    'identities', ['identity_id'], ['id'])


def downgrade() -> None:
    with op.batch_alter_table('tokens', schema=None) as batch_op:
        batch_op.drop_constraint(batch_op.f('fk_tokens_identity_id_identities'),
                                 type_='foreignkey')
        batch_op.drop_index(batch_op.f('ix_tokens_identity_id'))
        batch_op.drop_column('identity_id')
    with op.batch_alter_table('identities', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_identities_account_id'))
    op.drop_table('identities')
