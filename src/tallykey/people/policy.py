"""Who must sign in with a second factor: the account's policy and the user's enrolment."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from tallykey.accounts.models import Account, User
from tallykey.accounts.permissions import ADMIN
from tallykey.people.models import SecondFactor

POLICY_OFF = "off"
POLICY_ADMINS = "admins"
POLICY_EVERYONE = "everyone"
TWO_FACTOR_POLICIES = (POLICY_OFF, POLICY_ADMINS, POLICY_EVERYONE)

#: What a signed-in session still waits for before any page is usable.
AWAITING_CODE = "code"
AWAITING_ENROLMENT = "enrol"


def requires_second_factor(policy: str, role: str) -> bool:
    return policy == POLICY_EVERYONE or (policy == POLICY_ADMINS and role == ADMIN)


def has_second_factor(session: Session, user_id: str) -> bool:
    return session.scalar(select(SecondFactor.confirmed_at).where(
        SecondFactor.user_id == user_id)) is not None


def second_factor_stage(session: Session, user: User) -> str | None:
    """After the password: `AWAITING_CODE` when the user has an authenticator,
    `AWAITING_ENROLMENT` when the account requires one they have not set up, else None."""
    if has_second_factor(session, user.id):
        return AWAITING_CODE
    policy = session.scalar(select(Account.two_factor_policy).where(
        Account.id == user.account_id))
    if requires_second_factor(policy or POLICY_OFF, user.role):
        return AWAITING_ENROLMENT
    return None
