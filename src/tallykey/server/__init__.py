"""The service as it runs: the ASGI app that serves the API, the console and the
verification endpoints (`server.app`), and what the HTTP servers that run it need
(`server.uvicorn_protocol`, `server.granian`)."""

from tallykey.extras import SERVER_EXTRA, require_extra

require_extra("tallykey.server", ("fastapi",), SERVER_EXTRA)
