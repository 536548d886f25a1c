"""node lease: until when each node may answer from its cache (SPEC §10)

Revision ID: node_lease
Revises: key_lifecycle
Create Date: 2026-12-07 09:40:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import tallykey.db.base

revision = 'node_lease'
down_revision = 'key_lifecycle'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('nodes', schema=None) as batch_op:
        batch_op.add_column(sa.Column('lease_until',
                                      tallykey.db.base.UTCDateTime(timezone=True),
                                      nullable=True))
        batch_op.create_index(batch_op.f('ix_nodes_lease_until'), ['lease_until'],
                              unique=False)


def downgrade() -> None:
    with op.batch_alter_table('nodes', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_nodes_lease_until'))
        batch_op.drop_column('lease_until')
