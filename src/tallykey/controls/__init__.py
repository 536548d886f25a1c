"""Key controls (SPEC §13): the rules of per-token rate limits, usage credits and metadata
(`rules`), which the token service validates and the verifier reads. Counting and
spending happen on the verification path: `tallykey.auth.controls`."""
