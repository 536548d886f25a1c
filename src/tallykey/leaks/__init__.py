"""Leaked-token reports from secret scanners (GitHub's secret-scanning partner program):
check the report's signature (`signatures`), then revoke every live token it names and
label each one for the reporter (`reports`). The HTTP adapter is `tallykey.api.leaks`."""
