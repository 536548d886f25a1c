"""Tokens: the string format, the stored records and the lifecycle service."""
