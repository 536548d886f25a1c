"""plans (SPEC §16): plans table, plan_id on tokens and identities

Also the plan credit balance on tokens (plan_credits_remaining, plan_credits_period).

Revision ID: 0023_plans
Revises: 0022_identities
Create Date: 2026-12-07 15:45:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import tallykey.db.base

revision = '0023_plans'
down_revision = '0022_identities'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        'plans',
        sa.Column('id', sa.String(length=36), nullable=False),
        sa.Column('account_id', sa.String(length=36), nullable=False),
        sa.Column('name', sa.String(length=100), nullable=False),
        sa.Column('description', sa.String(length=1000), nullable=False),
        sa.Column('rate_limits', sa.JSON(), nullable=True),
        sa.Column('refill_amount', sa.BigInteger(), nullable=True),
        sa.Column('refill_interval', sa.String(length=8), nullable=True),
        sa.Column('scopes', sa.JSON(), nullable=True),
        sa.Column('created_at', tallykey.db.base.UTCDateTime(timezone=True), nullable=False),
        sa.Column('updated_at', tallykey.db.base.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(['account_id'], ['accounts.id'],
                                name=op.f('fk_plans_account_id_accounts')),
        sa.PrimaryKeyConstraint('id', name=op.f('pk_plans')),
        sa.UniqueConstraint('account_id', 'name', name='uq_plans_account_name'),
    )
    with op.batch_alter_table('plans', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_plans_account_id'), ['account_id'], unique=False)
    with op.batch_alter_table('tokens', schema=None) as batch_op:
        batch_op.add_column(sa.Column('plan_id', sa.String(length=36), nullable=True))
        batch_op.add_column(sa.Column('plan_credits_remaining', sa.BigInteger(),
                                      nullable=True))
        batch_op.add_column(sa.Column('plan_credits_period', sa.Integer(), nullable=True))
        batch_op.create_index(batch_op.f('ix_tokens_plan_id'), ['plan_id'], unique=False)
        batch_op.create_foreign_key(batch_op.f('fk_tokens_plan_id_plans'),
                                    'plans', ['plan_id'], ['id'])
    with op.batch_alter_table('identities', schema=None) as batch_op:
        batch_op.add_column(sa.Column('plan_id', sa.String(length=36), nullable=True))
        batch_op.create_index(batch_op.f('ix_identities_plan_id'), ['plan_id'], unique=False)
        batch_op.create_foreign_key(batch_op.f('fk_identities_plan_id_plans'),
                                    'plans', ['plan_id'], ['id'])


def downgrade() -> None:
    with op.batch_alter_table('identities', schema=None) as batch_op:
        batch_op.drop_constraint(batch_op.f('fk_identities_plan_id_plans'), type_='foreignkey')
        batch_op.drop_index(batch_op.f('ix_identities_plan_id'))
        batch_op.drop_column('plan_id')
    with op.batch_alter_table('tokens', schema=None) as batch_op:
        batch_op.drop_constraint(batch_op.f('fk_tokens_plan_id_plans'), type_='foreignkey')
        batch_op.drop_index(batch_op.f('ix_tokens_plan_id'))
        batch_op.drop_column('plan_credits_period')
        batch_op.drop_column('plan_credits_remaining')
        batch_op.drop_column('plan_id')
    with op.batch_alter_table('plans', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_plans_account_id'))
    op.drop_table('plans')
