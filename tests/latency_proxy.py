"""A loopback TCP proxy that delays every HTTP request, to run S3 clients against moto with
the latency of real object storage (B2: ~100-150 ms per request), and counts the requests.

    with run_latency_proxy(moto.endpoint_url, delay_s=0.15) as proxy:
        store = S3Store(moto.access(endpoint_url=proxy.endpoint_url))
        ...
        proxy.requests  # [ProxiedRequest(method="PUT", path="/bucket/key"), ...]

It parses only the request side of each connection (the head, then a Content-Length or
chunked body), so keep-alive connections and `Expect: 100-continue` pass through as they
are; responses are piped back untouched. Loopback only, the delay is bounded, and it stops by
itself after `lifetime_s` even if nobody stops it.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from urllib.parse import urlparse

MAX_DELAY_S = 0.15
LOOPBACK = {"127.0.0.1", "localhost"}


@dataclass(frozen=True)
class ProxiedRequest:
    method: str
    path: str


@dataclass
class LatencyProxy:
    upstream_host: str
    upstream_port: int
    delay_s: float
    endpoint_url: str = ""
    requests: list[ProxiedRequest] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def count(self, method: str | None = None) -> int:
        with self._lock:
            return sum(1 for r in self.requests if method is None or r.method == method)

    def reset(self) -> None:
        with self._lock:
            self.requests.clear()

    def snapshot(self) -> list[ProxiedRequest]:
        with self._lock:
            return list(self.requests)

    async def handle(self, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        try:
            upstream_r, upstream_w = await asyncio.open_connection(
                self.upstream_host, self.upstream_port
            )
        except OSError:
            client_w.close()
            return
        back = asyncio.create_task(_pipe(upstream_r, client_w))
        try:
            await self._requests(client_r, upstream_w)
        except (OSError, asyncio.IncompleteReadError, ValueError):
            pass
        finally:
            with contextlib.suppress(OSError):
                upstream_w.write_eof()
            with contextlib.suppress(OSError, asyncio.IncompleteReadError):
                await back
            for writer in (upstream_w, client_w):
                writer.close()

    async def _requests(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            try:
                head = await reader.readuntil(b"\r\n\r\n")
            except asyncio.IncompleteReadError:
                return  # the client closed the connection between requests
            lines = head.decode("latin-1").split("\r\n")
            method, path, *_ = lines[0].split(" ")
            headers = {
                name.strip().lower(): value.strip()
                for name, _, value in (line.partition(":") for line in lines[1:] if line)
            }
            with self._lock:
                self.requests.append(ProxiedRequest(method=method, path=path))
            await asyncio.sleep(self.delay_s)  # the request's trip to a distant server
            writer.write(head)
            await writer.drain()
            if headers.get("transfer-encoding", "").lower() == "chunked":
                await _copy_chunked(reader, writer)
            else:
                await _copy_exactly(reader, writer, int(headers.get("content-length", "0")))


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    while data := await reader.read(65536):
        writer.write(data)
        await writer.drain()
    with contextlib.suppress(OSError):
        writer.write_eof()


async def _copy_exactly(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, size: int
) -> None:
    while size > 0:
        data = await reader.read(min(size, 65536))
        if not data:
            raise asyncio.IncompleteReadError(b"", size)
        writer.write(data)
        await writer.drain()
        size -= len(data)


async def _copy_chunked(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    while True:
        line = await reader.readuntil(b"\r\n")
        writer.write(line)
        size = int(line.split(b";")[0].strip(), 16)
        if size == 0:  # the last chunk; then trailers up to an empty line
            while (trailer := await reader.readuntil(b"\r\n")) != b"\r\n":
                writer.write(trailer)
            writer.write(b"\r\n")
            await writer.drain()
            return
        await _copy_exactly(reader, writer, size + 2)  # the chunk and its CRLF


@contextlib.contextmanager
def run_latency_proxy(
    upstream_url: str, delay_s: float = MAX_DELAY_S, lifetime_s: float = 900.0
) -> Iterator[LatencyProxy]:
    """A proxy on 127.0.0.1 in front of `upstream_url` (loopback too), in its own thread."""
    upstream = urlparse(upstream_url)
    if upstream.hostname not in LOOPBACK or upstream.port is None:
        raise ValueError(f"{upstream_url}: the latency proxy only fronts a loopback host:port")
    if not 0 <= delay_s <= MAX_DELAY_S:
        raise ValueError(f"delay {delay_s} s is outside 0..{MAX_DELAY_S} s")
    proxy = LatencyProxy(upstream.hostname, upstream.port, delay_s)
    loop = asyncio.new_event_loop()
    ready = threading.Event()
    stop: asyncio.Event | None = None

    async def serve() -> None:
        nonlocal stop
        stop = asyncio.Event()
        server = await asyncio.start_server(proxy.handle, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        proxy.endpoint_url = f"http://127.0.0.1:{port}"
        ready.set()
        async with server:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), lifetime_s)  # stops by itself
        connections = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
        for task in connections:
            task.cancel()
        await asyncio.gather(*connections, return_exceptions=True)

    thread = threading.Thread(
        target=loop.run_until_complete, args=(serve(),), name="latency-proxy", daemon=True
    )
    thread.start()
    if not ready.wait(30):
        raise RuntimeError("the latency proxy did not start")
    try:
        yield proxy
    finally:
        if stop is not None and thread.is_alive():
            loop.call_soon_threadsafe(stop.set)
        thread.join(timeout=10)
