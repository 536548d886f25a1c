"""Identities (SPEC §16): the platform's customers or integrations, each owning tokens that
share one credit pool and shared rate limits."""
