"""imported keys (SPEC §16): an index on tokens.kind

Revision ID: 0021_imported_keys
Revises: 0020_decoy_contain
Create Date: 2026-12-07 13:30:00

Imported keys are rows of kind `imported` in `tokens`, their SHA-256 in `token_secrets`:
no new column. The verifier asks whether any imported key exists before it looks up a
credential in a foreign format, so that probe (and the list's kind filter) is indexed.
"""

from __future__ import annotations

from alembic import op

revision = '0021_imported_keys'
down_revision = '0020_decoy_contain'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('tokens', schema=None) as batch_op:
        batch_op.create_index('ix_tokens_kind', ['kind'], unique=False)


def downgrade() -> None:
    with op.batch_alter_table('tokens', schema=None) as batch_op:
        batch_op.drop_index('ix_tokens_kind')
