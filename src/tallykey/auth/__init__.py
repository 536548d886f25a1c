"""Request authentication: header parsing, the verifier and its cache, the ASGI middleware."""
