"""self-serve webhooks: description, event filter, secret rotation overlap, deletion
(SPEC §17)

Revision ID: 0019_webhooks
Revises: 0018_governance
Create Date: 2026-12-07 12:30:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import tallykey.db.base

revision = '0019_webhooks'
down_revision = '0018_governance'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('webhook_endpoints', schema=None) as batch_op:
        # room for a secret sealed under the key-encryption key (`kek:<id>:<base64>`)
        batch_op.alter_column('secret', existing_type=sa.String(length=100),
                              type_=sa.String(length=255), existing_nullable=False)
        batch_op.add_column(sa.Column('description', sa.String(length=500), nullable=False,
                                      server_default=''))
        batch_op.add_column(sa.Column('events', sa.JSON(), nullable=False,
                                      server_default='[]'))
        batch_op.add_column(sa.Column('previous_secret', sa.String(length=255),
                                      nullable=True))
        batch_op.add_column(sa.Column('secret_rotated_at',
                                      tallykey.db.base.UTCDateTime(timezone=True),
                                      nullable=True))
        batch_op.add_column(sa.Column('updated_at',
                                      tallykey.db.base.UTCDateTime(timezone=True),
                                      nullable=True))
        batch_op.add_column(sa.Column('deleted_at',
                                      tallykey.db.base.UTCDateTime(timezone=True),
                                      nullable=True))
    with op.batch_alter_table('outbox_messages', schema=None) as batch_op:
        batch_op.create_index('ix_outbox_messages_endpoint', ['endpoint_id', 'created_at'],
                              unique=False)


def downgrade() -> None:
    with op.batch_alter_table('outbox_messages', schema=None) as batch_op:
        batch_op.drop_index('ix_outbox_messages_endpoint')
    with op.batch_alter_table('webhook_endpoints', schema=None) as batch_op:
        batch_op.drop_column('deleted_at')
        batch_op.drop_column('updated_at')
        batch_op.drop_column('secret_rotated_at')
        batch_op.drop_column('previous_secret')
        batch_op.drop_column('events')
        batch_op.drop_column('description')
        batch_op.alter_column('secret', existing_type=sa.String(length=255),
                              type_=sa.String(length=100), existing_nullable=False)
