"""Retrievable secrets: envelope encryption (AES-256-GCM) with rotatable key-encryption keys."""
