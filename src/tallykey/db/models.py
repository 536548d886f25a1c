"""Imports every table so the metadata is complete (for Alembic and for tests)."""

from tallykey.accounts.models import Account, User, Workspace, WorkspaceGrant
from tallykey.audit.models import AuditEvent
from tallykey.db.base import Base
from tallykey.demo.models import Employee
from tallykey.notify.models import OutboxMessage, WebhookEndpoint
from tallykey.tokens.models import Token, TokenSecret

metadata = Base.metadata

__all__ = ["Account", "AuditEvent", "Employee", "OutboxMessage", "Token", "TokenSecret", "User",
           "WebhookEndpoint", "Workspace", "WorkspaceGrant", "metadata"]
