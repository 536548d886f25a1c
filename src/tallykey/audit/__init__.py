"""The audit trail: every management action and denied authentication, append-only and
hash-chained (`chain` registers the hook that links each new entry to its chain)."""

from tallykey.audit import chain as chain

__all__ = ["chain"]
