"""What every HTTP surface stands on, the API and the console alike: the request's
runtime, client address and session (`web.deps`), and the bounds and security headers
of every request and response (`web.bounds`)."""

from tallykey.extras import SERVER_EXTRA, require_extra

require_extra("tallykey.web", ("fastapi",), SERVER_EXTRA)
