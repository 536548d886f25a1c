"""The HTTP/1.1 protocol `tallykey serve` gives uvicorn: its fast parser (httptools) with
the limit it lacks. uvicorn bounds a request's header section only with its pure-Python
h11 parser (less than half the throughput); with httptools a client could make a node
buffer headers without end. Here the bytes of reads that leave a request's header
section incomplete are counted, and past `MAX_HEADER_BYTES` the connection is answered
431 and closed (a read that completes the headers is never held against them, however
much body it carries).
The ASGI layer, `web.bounds.RequestBounds`, also refuses too many header lines.
"""

from __future__ import annotations

from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from tallykey.web.bounds import MAX_HEADER_BYTES

_REFUSAL = (b"HTTP/1.1 431 Request Header Fields Too Large\r\n"
            b"content-type: text/plain; charset=utf-8\r\nconnection: close\r\n"
            b"content-length: 36\r\n\r\nThe request's headers are too large.")


class BoundedHttpToolsProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol, refusing header sections over `MAX_HEADER_BYTES`."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._in_headers = True
        self._header_bytes = 0
        self._tail = b""

    def data_received(self, data: bytes) -> None:
        if self._in_headers:
            budget = MAX_HEADER_BYTES - self._header_bytes
            # one read can be far larger than the limit: the headers must end within it
            if len(data) > budget and b"\r\n\r\n" not in self._tail + data[:budget + 4]:
                self._refuse()
                return
            self._header_bytes += len(data)
            self._tail = data[-3:]
        super().data_received(data)
        # still inside a header section after this read: all of it was headers
        if self._in_headers and self._header_bytes > MAX_HEADER_BYTES:
            self._refuse()

    def _refuse(self) -> None:
        if not self.transport.is_closing():
            self.transport.write(_REFUSAL)
            self.transport.close()

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._in_headers = True
        self._header_bytes = 0
        self._tail = b""

    def on_headers_complete(self) -> None:
        self._in_headers = False
        super().on_headers_complete()
