"""Accounts (tenants), their workspaces, users and policies."""
