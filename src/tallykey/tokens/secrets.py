"""Forgetting an account's retrievable secrets, when it turns retrieval off: every stored
ciphertext is cleared and the data keys that sealed them are deleted, in the caller's
transaction."""

from __future__ import annotations

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from tallykey.keys.vault import forget_data_keys
from tallykey.tokens.models import Token, TokenSecret


def destroy_ciphertexts(session: Session, account_id: str) -> None:
    """Forget every stored secret of an account and its data keys (switch turned off)."""
    token_ids = select(Token.id).where(Token.account_id == account_id)
    session.execute(update(TokenSecret).where(TokenSecret.token_id.in_(token_ids))
                    .values(ciphertext=None, data_key_id=None))
    forget_data_keys(session, account_id)
