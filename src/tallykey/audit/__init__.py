"""The audit trail: every management action and denied authentication, append-only."""
