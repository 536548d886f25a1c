"""Account governance run by the worker (SPEC §17): revoking tokens left unused past the
account's `revoke_inactive_days` (with a warning first), and the weekly digest to the
administrators. Token approval lives with the other token verbs (`tokens.service`)."""
