"""Key controls (SPEC §13): per-token rate limits, usage credits, metadata."""
