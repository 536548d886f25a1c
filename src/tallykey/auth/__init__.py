"""Request authentication: header parsing, the verifier and its cache, the ASGI middleware."""

from tallykey.extras import EMBEDDED_EXTRA, require_extra

require_extra("tallykey.auth", ("starlette", "sqlalchemy", "pydantic_settings"), EMBEDDED_EXTRA)
