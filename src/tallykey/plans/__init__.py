"""Plans (SPEC §16): named bundles of rate limits, a credit refill and a scopes ceiling
that tokens and identities reference."""
