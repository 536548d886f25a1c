"""people: password resets, second factors, recovery codes, single sign-on, richer console sessions

Revision ID: people
Revises: platform
Create Date: 2026-11-29 19:45:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import tallykey.db.base

revision = 'people'
down_revision = 'platform'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('password_resets',
    sa.Column('id', sa.String(length=36), nullable=False),
    sa.Column('user_id', sa.String(length=36), nullable=False),
    sa.Column('token_hash', sa.String(length=64), nullable=False),
    sa.Column('created_at', tallykey.db.base.UTCDateTime(timezone=True), nullable=False),
    sa.Column('expires_at', tallykey.db.base.UTCDateTime(timezone=True), nullable=False),
    sa.Column('used_at', tallykey.db.base.UTCDateTime(timezone=True), nullable=True),
    sa.ForeignKeyConstraint(['user_id'], ['users.id'], name=op.f('fk_password_resets_user_id_users')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_password_resets')),
    sa.UniqueConstraint('token_hash', name=op.f('uq_password_resets_token_hash'))
    )
    with op.batch_alter_table('password_resets', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_password_resets_user_id'), ['user_id'], unique=False)

    op.create_table('second_factors',
    sa.Column('user_id', sa.String(length=36), nullable=False),
    sa.Column('secret', sa.String(length=64), nullable=False),
    sa.Column('created_at', tallykey.db.base.UTCDateTime(timezone=True), nullable=False),
    sa.Column('confirmed_at', tallykey.db.base.UTCDateTime(timezone=True), nullable=True),
    sa.Column('last_step', sa.Integer(), nullable=False),
    sa.ForeignKeyConstraint(['user_id'], ['users.id'], name=op.f('fk_second_factors_user_id_users')),
    sa.PrimaryKeyConstraint('user_id', name=op.f('pk_second_factors'))
    )
    op.create_table('recovery_codes',
    sa.Column('code_hash', sa.String(length=64), nullable=False),
    sa.Column('user_id', sa.String(length=36), nullable=False),
    sa.Column('created_at', tallykey.db.base.UTCDateTime(timezone=True), nullable=False),
    sa.Column('used_at', tallykey.db.base.UTCDateTime(timezone=True), nullable=True),
    sa.ForeignKeyConstraint(['user_id'], ['users.id'], name=op.f('fk_recovery_codes_user_id_users')),
    sa.PrimaryKeyConstraint('code_hash', name=op.f('pk_recovery_codes'))
    )
    with op.batch_alter_table('recovery_codes', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_recovery_codes_user_id'), ['user_id'], unique=False)

    op.create_table('oidc_sign_ins',
    sa.Column('state_hash', sa.String(length=64), nullable=False),
    sa.Column('nonce', sa.String(length=100), nullable=False),
    sa.Column('code_verifier', sa.String(length=128), nullable=False),
    sa.Column('next_path', sa.String(length=500), nullable=False),
    sa.Column('created_at', tallykey.db.base.UTCDateTime(timezone=True), nullable=False),
    sa.Column('expires_at', tallykey.db.base.UTCDateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('state_hash', name=op.f('pk_oidc_sign_ins'))
    )
    with op.batch_alter_table('oidc_sign_ins', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_oidc_sign_ins_expires_at'), ['expires_at'], unique=False)

    with op.batch_alter_table('accounts', schema=None) as batch_op:
        batch_op.add_column(sa.Column('two_factor_policy', sa.String(length=16), server_default='off', nullable=False))

    # Sessions gain a public id (for "your sessions"): existing sessions end, users sign in again.
    op.execute("DELETE FROM console_sessions")
    with op.batch_alter_table('console_sessions', schema=None) as batch_op:
        batch_op.add_column(sa.Column('public_id', sa.String(length=36), nullable=False))
        batch_op.add_column(sa.Column('user_agent', sa.String(length=300), nullable=True))
        batch_op.add_column(sa.Column('awaiting', sa.String(length=16), nullable=True))
        batch_op.add_column(sa.Column('code_failures', sa.Integer(), server_default='0', nullable=False))
        batch_op.create_unique_constraint(batch_op.f('uq_console_sessions_public_id'), ['public_id'])


def downgrade() -> None:
    with op.batch_alter_table('console_sessions', schema=None) as batch_op:
        batch_op.drop_constraint(batch_op.f('uq_console_sessions_public_id'), type_='unique')
        batch_op.drop_column('code_failures')
        batch_op.drop_column('awaiting')
        batch_op.drop_column('user_agent')
        batch_op.drop_column('public_id')
    with op.batch_alter_table('accounts', schema=None) as batch_op:
        batch_op.drop_column('two_factor_policy')
    with op.batch_alter_table('oidc_sign_ins', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_oidc_sign_ins_expires_at'))
    op.drop_table('oidc_sign_ins')
    with op.batch_alter_table('recovery_codes', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_recovery_codes_user_id'))
    op.drop_table('recovery_codes')
    op.drop_table('second_factors')
    with op.batch_alter_table('password_resets', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_password_resets_user_id'))
    op.drop_table('password_resets')
