"""The HTTP service: management API, verification endpoints, and the app that serves them."""

from tallykey.extras import SERVER_EXTRA, require_extra

require_extra("tallykey.api", ("fastapi",), SERVER_EXTRA)
