"""Monitoring: per-token client addresses and networks, usage reports, alerts raised from
aggregated usage, retention, Prometheus metrics and structured request logs."""
