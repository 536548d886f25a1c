"""key lifecycle: suspend/resume and renewal lineage on tokens

Revision ID: key_lifecycle
Revises: key_limits
Create Date: 2026-11-29 23:20:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import tallykey.db.base

revision = 'key_lifecycle'
down_revision = 'key_limits'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('tokens', schema=None) as batch_op:
        batch_op.add_column(sa.Column('suspended_at',
                                      tallykey.db.base.UTCDateTime(timezone=True),
                                      nullable=True))
        batch_op.add_column(sa.Column('suspended_by_id', sa.String(length=36), nullable=True))
        batch_op.add_column(sa.Column('renewed_from_id', sa.String(length=36), nullable=True))
        batch_op.add_column(sa.Column('successor_id', sa.String(length=36), nullable=True))
        batch_op.create_foreign_key(batch_op.f('fk_tokens_suspended_by_id_users'), 'users',
                                    ['suspended_by_id'], ['id'])
        batch_op.create_foreign_key(batch_op.f('fk_tokens_renewed_from_id_tokens'), 'tokens',
                                    ['renewed_from_id'], ['id'])
        batch_op.create_foreign_key(batch_op.f('fk_tokens_successor_id_tokens'), 'tokens',
                                    ['successor_id'], ['id'])


def downgrade() -> None:
    with op.batch_alter_table('tokens', schema=None) as batch_op:
        batch_op.drop_constraint(batch_op.f('fk_tokens_successor_id_tokens'),
                                 type_='foreignkey')
        batch_op.drop_constraint(batch_op.f('fk_tokens_renewed_from_id_tokens'),
                                 type_='foreignkey')
        batch_op.drop_constraint(batch_op.f('fk_tokens_suspended_by_id_users'),
                                 type_='foreignkey')
        batch_op.drop_column('successor_id')
        batch_op.drop_column('renewed_from_id')
        batch_op.drop_column('suspended_by_id')
        batch_op.drop_column('suspended_at')
