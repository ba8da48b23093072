"""How the explorer answers: security headers on everything, images off the event loop.

Image endpoints never block the event loop: a cached answer is sent from the loop, any other
is read, windowed and encoded in a small thread pool (OpenCV, Pillow and numpy release the
GIL), at most one job per CPU at a time. Images carry an ETag and may be kept by the browser
(``Cache-Control: private, max-age``); every other answer is ``no-store``.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Hashable
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from deeplesion.explorer.images import Encoded, ResponseCache

SECURITY_HEADERS = [
    (b"content-security-policy", b"default-src 'self'; img-src 'self' data: blob:"),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"no-referrer"),
]
#: How long the browser may keep an image answer without asking again (seconds).
IMAGE_MAX_AGE_S = 3600
#: Image jobs (read + window + encode) running at once: more only queue for the CPUs.
IMAGE_THREADS = max(2, os.cpu_count() or 2)


class SecurityHeaders:
    """ASGI middleware adding the security headers (and ``no-store`` unless the
    endpoint set its own Cache-Control) to every response."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                extra = list(SECURITY_HEADERS)
                if not any(k.lower() == b"cache-control" for k, _ in headers):
                    extra.append((b"cache-control", b"no-store"))
                message["headers"] = headers + extra
            await send(message)

        await self.app(scope, receive, send_with_headers)


class ImagePool:
    """PNG answers: from ``cache`` on the event loop, else made in the thread pool."""

    def __init__(self, cache: ResponseCache, threads: int = IMAGE_THREADS) -> None:
        self.cache = cache
        self.threads = threads
        self._limiter: Any = None  # an anyio.CapacityLimiter, made inside the event loop

    async def run(self, job: Callable[[], bytes]) -> bytes:
        import anyio

        if self._limiter is None:
            self._limiter = anyio.CapacityLimiter(self.threads)
        return await anyio.to_thread.run_sync(job, limiter=self._limiter)

    async def answer(self, request: Request, key: Hashable, job: Callable[[], bytes]) -> Response:
        """The PNG for ``key`` with its ETag; 304 when the browser already holds it."""
        found = self.cache.get(key)
        if found is None:
            found = Encoded.of(await self.run(job))
            self.cache.put(key, found)
        headers = {"etag": found.etag, "cache-control": f"private, max-age={IMAGE_MAX_AGE_S}"}
        if found.etag in request.headers.get("if-none-match", ""):
            return Response(status_code=304, headers=headers)
        return Response(found.data, media_type="image/png", headers=headers)
