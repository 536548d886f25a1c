"""Every table, imported so the metadata is complete (for Alembic and for tests)."""

from tallykey.accounts.console_sessions import ConsoleSession
from tallykey.accounts.models import Account, SignInFailure, User, Workspace, WorkspaceGrant
from tallykey.audit.models import AuditChainHead, AuditEvent
from tallykey.auth.models import AuthFailure, ServerKey
from tallykey.db.base import Base
from tallykey.demo.models import Employee
from tallykey.feed.models import Node, VerdictChange
from tallykey.identities.models import Identity
from tallykey.keys.models import AccountKey
from tallykey.monitor.models import DecoyTrip, TokenClientIp, TokenNetwork, TokenUsage
from tallykey.notify.models import OutboxMessage, WebhookEndpoint
from tallykey.operators.models import OperatorToken
from tallykey.people.models import OidcSignIn, PasswordReset, RecoveryCode, SecondFactor
from tallykey.plans.models import Plan
from tallykey.tokens.idempotency import IdempotentRequest
from tallykey.tokens.models import Token, TokenSecret

metadata = Base.metadata

__all__ = [
    "Account",
    "AccountKey",
    "AuditChainHead",
    "AuditEvent",
    "AuthFailure",
    "ConsoleSession",
    "DecoyTrip",
    "Employee",
    "IdempotentRequest",
    "Identity",
    "Node",
    "OidcSignIn",
    "OperatorToken",
    "OutboxMessage",
    "PasswordReset",
    "Plan",
    "RecoveryCode",
    "SecondFactor",
    "ServerKey",
    "SignInFailure",
    "Token",
    "TokenClientIp",
    "TokenNetwork",
    "TokenSecret",
    "TokenUsage",
    "User",
    "VerdictChange",
    "WebhookEndpoint",
    "Workspace",
    "WorkspaceGrant",
    "metadata",
]
