"""The router as a real process, with real upstream servers and real HTTP on loopback.

Upstreams are aiohttp servers started in this process (they record what reached them and
over which connection) or raw asyncio servers where a response needs odd framing. Clients
speak raw HTTP/1.1 over sockets, so every byte the router sends back can be checked.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
from aiohttp import web

from phoenix_server.domain.errors import PlatformError
from phoenix_server.platforms.router.client import RouterClient
from phoenix_server.platforms.router.config import (
    Backend,
    BackendState,
    CircuitMode,
    Fallback,
    RouterConfig,
    RouterStats,
)
from tests.support import REPO, eventually, free_port

pytestmark = pytest.mark.e2e  # starts real processes

SERVICE = "web"
IO_TIMEOUT = 5.0
DOUBLE_CHOICE = (
    "BUG: Client._next() chooses a backend, then, having no idle connection to it, drops the "
    "choice and _find_backend() chooses again: the rotation skips backends with nothing pooled"
)

# -- the router process ----------------------------------------------------------------------


class RouterProcess:
    """``python -m phoenix_server.platforms.router`` with its control socket and state."""

    def __init__(self, tmp_path: Path) -> None:
        self.port = free_port()
        self.control = tmp_path / "c.sock"
        assert len(str(self.control)) < 100, self.control
        self.state = tmp_path / "state.json"
        self.log = tmp_path / "router.log"
        self.process: subprocess.Popen[bytes] | None = None
        self.client: RouterClient | None = None
        self.version = 0

    async def start(self) -> None:
        command = [sys.executable, "-m", "phoenix_server.platforms.router"]
        command += ["--service", SERVICE, "--listen", f"127.0.0.1:{self.port}"]
        command += ["--control", str(self.control), "--state", str(self.state)]
        with self.log.open("ab") as log:
            self.process = subprocess.Popen(command, cwd=REPO, stdout=log, stderr=subprocess.STDOUT)
        self.client = RouterClient(str(self.control))
        await eventually(self._answers, timeout=15, message="the router's control socket")

    async def _answers(self) -> bool:
        assert self.process is not None and self.client is not None
        if self.process.poll() is not None:
            raise AssertionError(f"router exited {self.process.returncode}: {self.log_text()}")
        try:
            await self.client.config()
        except PlatformError:
            return False
        return True

    def log_text(self) -> str:
        return self.log.read_text(errors="replace")

    async def push(self, *backends: Backend, **settings: object) -> RouterConfig:
        """Push the next version of the configuration."""
        assert self.client is not None
        self.version += 1
        config = RouterConfig(SERVICE, tuple(backends), version=self.version, **settings)  # type: ignore[arg-type]
        await self.client.push(config)
        return config

    async def stats(self) -> RouterStats:
        assert self.client is not None
        return await self.client.stats()

    async def exited(self, timeout: float) -> int:
        """Wait (without blocking the loop) for the process to end; its exit code."""
        assert self.process is not None
        process = self.process
        await eventually(lambda: process.poll() is not None, timeout=timeout, message="exit")
        return process.returncode

    async def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            await self.exited(10)
        if self.client is not None:
            await self.client.close()
            self.client = None

    async def restart(self) -> None:
        await self.kill()
        await self.start()


@pytest.fixture
async def router(tmp_path: Path) -> AsyncIterator[RouterProcess]:
    handle = RouterProcess(tmp_path)
    await handle.start()
    try:
        yield handle
    finally:
        await handle.kill()


def backend(server: WebUpstream | RawUpstream | int, name: str = "", **kw: object) -> Backend:
    port = server if isinstance(server, int) else server.port
    identifier = name or (server.name if not isinstance(server, int) else f"port{port}")
    return Backend(identifier, port, **kw)  # type: ignore[arg-type]


# -- upstreams ---------------------------------------------------------------------------------


@dataclass
class Seen:
    """One request as an upstream received it."""

    method: str
    target: str
    """Path and query, exactly as sent."""
    headers: list[tuple[str, str]]
    body: bytes
    peer: tuple[str, int]

    def header(self, name: str) -> list[str]:
        return [v for k, v in self.headers if k.lower() == name.lower()]


def pattern(size: int) -> bytes:
    return (bytes(range(256)) * (size // 256 + 1))[:size]


class WebUpstream:
    """An aiohttp server: ``/slow`` sleeps 0.5 s, ``/big?size=N`` sends N bytes, ``/chunked``
    streams chunks, ``/status/N`` answers N; anything else echoes the request in its body."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.seen: list[Seen] = []
        self.arrived = asyncio.Event()
        self.runner: web.AppRunner | None = None
        self.port = 0

    async def start(self) -> None:
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_route("*", "/{tail:.*}", self.handle)
        self.runner = web.AppRunner(
            app, handle_signals=False, shutdown_timeout=0.1, handler_cancellation=True
        )
        await self.runner.setup()
        await web.TCPSite(self.runner, "127.0.0.1", 0).start()
        self.port = self.runner.addresses[0][1]

    @property
    def connections(self) -> set[tuple[str, int]]:
        return {s.peer for s in self.seen}

    async def handle(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        assert request.transport is not None
        self.seen.append(
            Seen(
                request.method,
                request.raw_path,
                [(k.decode(), v.decode()) for k, v in request.raw_headers],
                body,
                request.transport.get_extra_info("peername"),
            )
        )
        headers = {"X-Upstream": self.name}
        if request.path == "/slow":
            self.arrived.set()
            await asyncio.sleep(0.5)
        if request.path == "/big":
            data = pattern(int(request.query["size"]))
            return web.Response(body=data, headers=headers, content_type="application/x-test")
        if request.path == "/chunked":
            response = web.StreamResponse(headers=headers)
            response.enable_chunked_encoding()
            await response.prepare(request)
            for i in range(5):
                await response.write(f"part {i}\n".encode())
            await response.write_eof()
            return response
        if request.path.startswith("/status/"):
            status = int(request.path.rsplit("/", 1)[1])
            response = web.Response(status=status, text=f"{self.name} answers {status}")
            response.headers.update(headers)
            response.headers.add("Set-Cookie", "a=1")
            response.headers.add("Set-Cookie", "b=2")
            return response
        shown = body.decode() if len(body) < 1000 else f"<{len(body)} bytes>"
        text = f"{self.name} {request.method} {request.raw_path} {shown}"
        return web.Response(text=text, headers=headers)

    async def close(self) -> None:
        if self.runner is not None:
            await self.runner.cleanup()


Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


class RawUpstream:
    """A plain asyncio server running ``handler`` per connection, for odd framing."""

    def __init__(self, name: str, handler: Handler) -> None:
        self.name = name
        self.handler = handler
        self.connections = 0
        self.heads: list[bytes] = []
        self.writers: dict[asyncio.Task[None], asyncio.StreamWriter] = {}
        self.server: asyncio.Server | None = None
        self.port = 0

    async def start(self) -> None:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self.server.sockets[0].getsockname()[1]

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self.writers[task] = writer
        self.connections += 1
        try:
            self.heads.append(await reader.readuntil(b"\r\n\r\n"))
            await self.handler(reader, writer)
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()
            del self.writers[task]

    async def close(self) -> None:
        if self.server is not None:
            self.server.close()
            await self.server.wait_closed()
        for writer in list(self.writers.values()):
            writer.close()  # the handler reads EOF and ends
        await eventually(lambda: not self.writers, timeout=5, message="raw handlers to end")


class Upstreams:
    def __init__(self) -> None:
        self.all: list[WebUpstream | RawUpstream] = []

    async def web(self, name: str) -> WebUpstream:
        server = WebUpstream(name)
        self.all.append(server)
        await server.start()
        return server

    async def raw(self, name: str, handler: Handler) -> RawUpstream:
        server = RawUpstream(name, handler)
        self.all.append(server)
        await server.start()
        return server


@pytest.fixture
async def upstreams() -> AsyncIterator[Upstreams]:
    made = Upstreams()
    try:
        yield made
    finally:
        for server in made.all:
            await server.close()


async def hang_up(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Read the request, answer nothing, close."""


# -- a raw HTTP/1.1 client ---------------------------------------------------------------------


@dataclass
class Answer:
    status: int
    reason: str
    headers: list[tuple[str, str]]
    body: bytes
    chunked: bool = False
    raw: bytes = b""

    def header(self, name: str) -> str | None:
        values = self.all(name)
        return values[0] if values else None

    def all(self, name: str) -> list[str]:
        return [v for k, v in self.headers if k.lower() == name.lower()]


@dataclass
class Conn:
    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter

    @classmethod
    async def open(cls, port: int) -> Conn:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        return cls(reader, writer)

    def send(self, data: bytes) -> None:
        self.writer.write(data)

    async def answer(self, *, head_only: bool = False, timeout: float = IO_TIMEOUT) -> Answer:
        async with asyncio.timeout(timeout):
            head = await self.reader.readuntil(b"\r\n\r\n")
            status_line, *lines = head.decode("latin-1").split("\r\n")[:-2]
            _, status, reason = status_line.split(" ", 2)
            headers = [(k, v.strip()) for k, v in (line.split(":", 1) for line in lines)]
            answer = Answer(int(status), reason, headers, b"", raw=head)
            length = answer.header("Content-Length")
            if head_only or answer.status < 200 or answer.status in (204, 304):
                pass
            elif answer.header("Transfer-Encoding") == "chunked":
                answer.chunked = True
                answer.body = await self._chunks(answer)
            elif length is not None:
                answer.body = await self.reader.readexactly(int(length))
                answer.raw += answer.body
            else:
                answer.body = await self.reader.read()  # close-delimited
                answer.raw += answer.body
        return answer

    async def _chunks(self, answer: Answer) -> bytes:
        body = b""
        while True:
            line = await self.reader.readuntil(b"\r\n")
            size = int(line.split(b";")[0], 16)
            data = await self.reader.readexactly(size + 2)
            answer.raw += line + data
            if size == 0:
                return body
            body += data[:-2]

    async def request(
        self,
        method: str,
        path: str,
        body: bytes | None = None,
        headers: str = "",
    ) -> Answer:
        length = f"Content-Length: {len(body)}\r\n" if body is not None else ""
        self.send(f"{method} {path} HTTP/1.1\r\nHost: t\r\n{headers}{length}\r\n".encode())
        self.send(body or b"")
        return await self.answer(head_only=method == "HEAD")

    async def at_eof(self) -> bool:
        """Whether the router closed the connection (and sent nothing more)."""
        async with asyncio.timeout(IO_TIMEOUT):
            return await self.reader.read() == b""

    async def close(self) -> None:
        self.writer.close()
        with contextlib.suppress(ConnectionError):
            await self.writer.wait_closed()


@contextlib.asynccontextmanager
async def connection(port: int) -> AsyncIterator[Conn]:
    conn = await Conn.open(port)
    try:
        yield conn
    finally:
        await conn.close()


async def get(port: int, path: str, method: str = "GET", body: bytes | None = None) -> Answer:
    async with connection(port) as conn:
        return await conn.request(method, path, body, "Connection: close\r\n")


# -- 1. requests are forwarded ------------------------------------------------------------------


async def test_get_and_post_reach_the_upstream_intact(
    router: RouterProcess, upstreams: Upstreams
) -> None:
    a = await upstreams.web("a")
    await router.push(backend(a))
    async with connection(router.port) as conn:
        got = await conn.request("GET", "/items/7?x=1&y=%20z", headers="X-Mine: yes\r\n")
        assert (got.status, got.body) == (200, b"a GET /items/7?x=1&y=%20z ")
        posted = await conn.request("POST", "/form?k=v", b"hello=world")
        assert (posted.status, posted.body) == (200, b"a POST /form?k=v hello=world")
        conn.send(
            b"POST /chunky HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n"
            b"Connection: keep-alive\r\nKeep-Alive: timeout=30\r\n\r\n"
            b"5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n"
        )
        chunky = await conn.answer()
        assert (chunky.status, chunky.body) == (200, b"a POST /chunky hello world")
    first, second, third = a.seen
    assert (first.method, first.target, first.body) == ("GET", "/items/7?x=1&y=%20z", b"")
    assert first.header("X-Mine") == ["yes"]
    assert (second.method, second.target) == ("POST", "/form?k=v")
    assert second.body == b"hello=world" and second.header("Content-Length") == ["11"]
    assert third.body == b"hello world" and third.header("Content-Length") == ["11"]
    for seen in a.seen:
        assert seen.header("X-Forwarded-For") == ["127.0.0.1"]
    assert third.header("Transfer-Encoding") == []
    assert third.header("Connection") == []
    assert third.header("Keep-Alive") == []
    stats = await router.stats()
    assert stats.received == 3 and stats.backends["a"].requests == 3


async def test_keep_alive_on_both_sides_and_pipelining(
    router: RouterProcess, upstreams: Upstreams
) -> None:
    a = await upstreams.web("a")
    await router.push(backend(a))
    async with connection(router.port) as conn:
        for i in range(5):
            answer = await conn.request("GET", f"/n/{i}")
            assert (answer.status, answer.body) == (200, f"a GET /n/{i} ".encode())
        # Three requests in one write: three answers, in order, on the same connection.
        conn.send(b"".join(f"GET /p/{i} HTTP/1.1\r\nHost: t\r\n\r\n".encode() for i in range(3)))
        bodies = [(await conn.answer()).body for _ in range(3)]
        assert bodies == [b"a GET /p/0 ", b"a GET /p/1 ", b"a GET /p/2 "]
        last = await conn.request("GET", "/last")
        assert last.status == 200 and not conn.reader.at_eof()
    assert len(a.seen) == 9
    assert len(a.connections) == 1  # the router reused one upstream connection throughout


async def test_headers_named_in_connection_are_hop_by_hop_too(
    router: RouterProcess, upstreams: Upstreams
) -> None:
    a = await upstreams.web("a")
    await router.push(backend(a))
    async with connection(router.port) as conn:
        hop = "Connection: keep-alive, X-Hop\r\nX-Hop: secret\r\n"
        assert (await conn.request("GET", "/", headers=hop)).status == 200
    assert a.seen[0].header("X-Hop") == []


# -- 2. responses pass through unchanged --------------------------------------------------------


async def test_status_headers_and_chunked_answers_pass_through(
    router: RouterProcess, upstreams: Upstreams
) -> None:
    a = await upstreams.web("a")
    await router.push(backend(a))
    async with connection(router.port) as conn:
        created = await conn.request("GET", "/status/201")
        assert (created.status, created.reason, created.body) == (201, "Created", b"a answers 201")
        assert created.header("X-Upstream") == "a"
        assert created.all("Set-Cookie") == ["a=1", "b=2"]
        chunked = await conn.request("GET", "/chunked")
        assert chunked.status == 200 and chunked.chunked
        assert chunked.body == b"".join(f"part {i}\n".encode() for i in range(5))
        assert chunked.header("Content-Length") is None


async def test_a_response_is_relayed_byte_for_byte(
    router: RouterProcess, upstreams: Upstreams
) -> None:
    exact = (
        b"HTTP/1.1 299 Quite Unusual\r\nX-A: 1\r\nx-lower-case: two\r\nSet-Cookie: a=1\r\n"
        b"Set-Cookie: b=2\r\nContent-Length: 5\r\n\r\nhello"
    )

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(exact)
        await writer.drain()
        await reader.read()  # until the router hangs up (on our answer's Connection: close)

    odd = await upstreams.raw("odd", answer)
    await router.push(backend(odd))
    got = await get(router.port, "/")
    assert got.raw == exact


async def test_a_large_body_and_a_head_answer(router: RouterProcess, upstreams: Upstreams) -> None:
    a = await upstreams.web("a")
    await router.push(backend(a))
    size = 5 * 1024 * 1024 + 7
    async with connection(router.port) as conn:
        big = await conn.request("GET", f"/big?size={size}")
        assert big.status == 200 and big.header("Content-Length") == str(size)
        assert len(big.body) == size
        assert hashlib.sha256(big.body).digest() == hashlib.sha256(pattern(size)).digest()
        head = await conn.request("HEAD", "/big?size=1000")
        assert (head.status, head.header("Content-Length"), head.body) == (200, "1000", b"")
        after = await conn.request("GET", "/after")  # nothing stray left on the connection
        assert (after.status, after.body) == (200, b"a GET /after ")
    upload = pattern(3 * 1024 * 1024)
    posted = await get(router.port, "/upload", "POST", upload)
    assert (posted.status, posted.body) == (200, f"a POST /upload <{len(upload)} bytes>".encode())
    assert hashlib.sha256(a.seen[-1].body).digest() == hashlib.sha256(upload).digest()


async def test_a_close_delimited_answer_arrives_whole_then_the_client_is_closed(
    router: RouterProcess, upstreams: Upstreams
) -> None:
    head = b"HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\n\r\n"
    parts = [b"first part, ", b"second part, ", b"x" * 100_000, b" the end"]

    async def until_close(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(head)
        for part in parts:
            writer.write(part)
            await writer.drain()

    legacy = await upstreams.raw("legacy", until_close)
    await router.push(backend(legacy))
    async with connection(router.port) as conn:
        answer = await conn.request("GET", "/", headers="Connection: keep-alive\r\n")
        assert answer.raw == head + b"".join(parts)
        assert answer.header("Content-Length") is None
        assert conn.reader.at_eof()  # the body ended when the router closed the connection


async def test_an_informational_answer_is_followed_by_the_final_one(
    router: RouterProcess, upstreams: Upstreams
) -> None:
    async def hints(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"HTTP/1.1 103 Early Hints\r\nLink: </a.css>; rel=preload\r\n\r\n")
        await writer.drain()
        await asyncio.sleep(0.05)  # a server that sends its hints before it has the answer
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
        await writer.drain()
        await reader.read()

    hinting = await upstreams.raw("hinting", hints)
    await router.push(backend(hinting))
    async with connection(router.port) as conn:
        early = await conn.request("GET", "/")
        assert early.status == 103
        final = await conn.answer(timeout=1.0)  # sent 0.05 s after the hints
        assert (final.status, final.body) == (200, b"ok")


async def test_a_client_leaving_a_slowly_read_answer_ends_the_exchange(
    router: RouterProcess, upstreams: Upstreams
) -> None:
    a = await upstreams.web("a")
    await router.push(backend(a))
    conn = await Conn.open(router.port)
    conn.send(b"GET /big?size=33554432 HTTP/1.1\r\nHost: t\r\n\r\n")
    await conn.reader.readexactly(65536)  # the answer is flowing; the rest is not read
    stats = await router.stats()
    assert stats.backends["a"].in_flight == 1
    conn.writer.transport.abort()

    async def settled() -> bool:
        return (await router.stats()).backends["a"].in_flight == 0

    await eventually(settled, timeout=3, message="the abandoned exchange to end")


# -- 3. weighted choice -------------------------------------------------------------------------


async def many(port: int, count: int, path: str = "/", connections: int = 4) -> list[Answer]:
    """``count`` GETs over ``connections`` keep-alive connections at once."""

    async def worker(share: int) -> list[Answer]:
        async with connection(port) as conn:
            return [await conn.request("GET", path) for _ in range(share)]

    shares = [count // connections + (i < count % connections) for i in range(connections)]
    results = await asyncio.gather(*(worker(share) for share in shares))
    return [answer for result in results for answer in result]


async def test_weights_100_and_300_share_400_requests_1_to_3(
    router: RouterProcess, upstreams: Upstreams
) -> None:
    a, b = await upstreams.web("a"), await upstreams.web("b")
    await router.push(backend(a, weight=100), backend(b, weight=300))
    async with connection(router.port) as conn:  # one at a time: the order is deterministic
        answers = [await conn.request("GET", f"/{i}") for i in range(400)]
    assert [x.status for x in answers] == [200] * 400
    served = [x.header("X-Upstream") for x in answers]
    assert (served.count("a"), served.count("b")) == (100, 300)
    assert (len(a.seen), len(b.seen)) == (100, 300)
    stats = await router.stats()
    assert (stats.backends["a"].requests, stats.backends["b"].requests) == (100, 300)
    assert stats.received == 400 and stats.lost == 0


async def test_a_backend_added_next_to_one_in_use_gets_its_share(
    router: RouterProcess, upstreams: Upstreams
) -> None:
    a, b = await upstreams.web("a"), await upstreams.web("b")
    await router.push(backend(a))
    async with connection(router.port) as conn:
        assert (await conn.request("GET", "/warm")).status == 200  # a has a pooled connection
        await router.push(backend(a), backend(b))  # b: a new instance, nothing pooled yet
        answers = [await conn.request("GET", f"/{i}") for i in range(20)]
    served = [x.header("X-Upstream") for x in answers]
    assert (served.count("a"), served.count("b")) == (10, 10)


async def test_draining_and_zero_weight_backends_get_nothing_new(
    router: RouterProcess, upstreams: Upstreams
) -> None:
    a, b, c = await upstreams.web("a"), await upstreams.web("b"), await upstreams.web("c")
    await router.push(backend(b))
    async with connection(router.port) as slow_conn:
        slow = asyncio.create_task(slow_conn.request("GET", "/slow"))
        async with asyncio.timeout(IO_TIMEOUT):
            await b.arrived.wait()
        await router.push(backend(a), backend(b, state=BackendState.DRAINING), backend(c, weight=0))
        answers = await many(router.port, 30)
        finished = await slow
    assert [x.header("X-Upstream") for x in answers] == ["a"] * 30
    assert (finished.status, finished.header("X-Upstream")) == (200, "b")  # it finished there
    assert (len(a.seen), len(b.seen), len(c.seen)) == (30, 1, 0)


# -- 4. no backend: wait, then the fallback -----------------------------------------------------


async def test_with_no_backend_a_request_waits_then_gets_the_fallback(
    router: RouterProcess,
) -> None:
    await router.push(queue_timeout=0.3)
    began = time.monotonic()
    answer = await get(router.port, "/")
    waited = time.monotonic() - began
    assert 0.28 <= waited < 1.5
    assert (answer.status, answer.body) == (503, b"")
    assert answer.header("Retry-After") == "5"
    assert answer.header("X-Phoenix-Router") == "fallback"

    page = Fallback(status=200, body="<p>back soon</p>", content_type="text/html")
    await router.push(queue_timeout=0.3, fallback=page)
    answer = await get(router.port, "/")
    assert (answer.status, answer.body) == (200, b"<p>back soon</p>")
    assert answer.header("Content-Type") == "text/html"
    assert answer.header("X-Phoenix-Router") == "fallback"
    assert answer.header("Retry-After") is None
    stats = await router.stats()
    assert (stats.received, stats.rejected, stats.lost) == (2, 2, 2)


async def test_a_fallback_upstream_answers_when_no_instance_can_and_is_not_a_loss(
    router: RouterProcess, upstreams: Upstreams
) -> None:
    spare = await upstreams.web("spare")
    a = await upstreams.web("a")
    fallback = Fallback(status=503, body="static", upstream=f"127.0.0.1:{spare.port}")
    await router.push(backend(a), circuit=CircuitMode.OPEN, queue_timeout=0.2, fallback=fallback)
    answer = await get(router.port, "/catalog")
    assert answer.status == 200 and answer.header("X-Upstream") == "spare"
    assert [s.target for s in spare.seen] == ["/catalog"] and a.seen == []
    stats = await router.stats()
    assert (stats.fallback_served, stats.rejected, stats.lost) == (1, 0, 0)

    # The fallback service is down too: the static answer, counted as rejected.
    await spare.close()
    answer = await get(router.port, "/catalog")
    assert (answer.status, answer.body) == (503, b"static")
    assert answer.header("X-Phoenix-Router") == "fallback"
    stats = await router.stats()
    assert (stats.fallback_served, stats.rejected) == (1, 1)

    # Closed again: the service answers, the fallback is not involved.
    await router.push(backend(a), queue_timeout=0.2, fallback=fallback)
    answer = await get(router.port, "/catalog")
    assert answer.status == 200 and answer.header("X-Upstream") == "a"


async def test_a_backend_added_while_a_request_waits_serves_it(
    router: RouterProcess, upstreams: Upstreams
) -> None:
    a = await upstreams.web("a")
    await router.push(queue_timeout=3.0)
    began = time.monotonic()
    waiting = asyncio.create_task(get(router.port, "/late"))

    async def queued() -> bool:
        return (await router.stats()).queued == 1

    await eventually(queued, timeout=2, message="the request to wait for a backend")
    await router.push(backend(a), queue_timeout=3.0)
    answer = await waiting
    assert time.monotonic() - began < 2.5  # served by the new backend, not by the timeout
    assert (answer.status, answer.body) == (200, b"a GET /late ")
    assert answer.header("X-Phoenix-Router") is None
    stats = await router.stats()
    assert (stats.rejected, stats.queued, stats.backends["a"].requests) == (0, 0, 1)


# -- 5. and 6. broken backends -----------------------------------------------------------------


async def until_one_reaches(server: RawUpstream, port: int, method: str) -> list[Answer]:
    """Requests ``/r/0``, ``/r/1``... (POSTs carry ``body i``) one at a time until one has
    reached ``server`` (which has nearly all the weight: the first, normally); their answers."""
    answers: list[Answer] = []
    while server.connections == 0:
        assert len(answers) < 4, f"no request reached {server.name}"
        i = len(answers)
        answers.append(
            await get(port, f"/r/{i}", method, f"body {i}".encode() if method == "POST" else None)
        )
    return answers


async def test_a_backend_refusing_connections_is_passed_over(
    router: RouterProcess, upstreams: Upstreams
) -> None:
    a = await upstreams.web("a")
    dead = free_port()
    await router.push(backend(dead, "dead"), backend(a))
    answers = [await get(router.port, f"/{i}") for i in range(50)]
    assert [x.status for x in answers] == [200] * 50
    assert len(a.seen) == 50
    stats = await router.stats()
    assert stats.backends["a"].requests == 50
    assert stats.backends["dead"].broken <= 3
    assert stats.lost == 0


async def test_an_answer_broken_off_midway_is_never_half_delivered(
    router: RouterProcess, upstreams: Upstreams
) -> None:
    async def half(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nonly half of it")
        await writer.drain()

    halfway, a = await upstreams.raw("halfway", half), await upstreams.web("a")
    await router.push(backend(halfway), backend(a, weight=1))
    answers = await until_one_reaches(halfway, router.port, "GET")
    last = len(answers) - 1  # a GET: answered again, elsewhere
    assert [(x.status, x.body) for x in answers] == [
        (200, f"a GET /r/{i} ".encode()) for i in range(last + 1)
    ]
    await router.push(backend(halfway))  # a POST is never sent again: it meets the break
    async with connection(router.port) as conn:
        refused = await conn.request("POST", "/pay", b"once")
        assert (refused.status, refused.header("Content-Type")) == (502, "text/plain")
        assert await conn.at_eof()
    assert halfway.connections == 2 and len(a.seen) == last + 1
    stats = await router.stats()
    assert (stats.failed, stats.backends["halfway"].broken) == (1, 2)


async def test_a_refused_connection_is_counted_as_broken(
    router: RouterProcess, upstreams: Upstreams
) -> None:
    a = await upstreams.web("a")
    await router.push(backend(free_port(), "dead"), backend(a, weight=1))
    answers = [await get(router.port, "/") for _ in range(10)]  # the dead one is tried first
    assert [x.status for x in answers] == [200] * 10
    assert (await router.stats()).backends["dead"].broken >= 1


async def test_a_get_whose_connection_breaks_is_sent_again_elsewhere(
    router: RouterProcess, upstreams: Upstreams
) -> None:
    closer, a = await upstreams.raw("closer", hang_up), await upstreams.web("a")
    await router.push(backend(closer), backend(a, weight=1))
    answers = await until_one_reaches(closer, router.port, "GET")
    last = len(answers) - 1
    assert closer.heads[0].startswith(f"GET /r/{last} HTTP/1.1\r\n".encode())
    assert [(x.status, x.body) for x in answers] == [
        (200, f"a GET /r/{i} ".encode()) for i in range(last + 1)
    ]
    stats = await router.stats()
    assert (stats.backends["closer"].broken, stats.backends["a"].requests) == (1, last + 1)
    assert (stats.failed, stats.lost) == (0, 0)


async def test_a_post_whose_connection_breaks_is_not_sent_again(
    router: RouterProcess, upstreams: Upstreams
) -> None:
    closer, a = await upstreams.raw("closer", hang_up), await upstreams.web("a")
    await router.push(backend(closer), backend(a, weight=1))
    answers = await until_one_reaches(closer, router.port, "POST")
    last = len(answers) - 1
    assert closer.heads[0].startswith(f"POST /r/{last} HTTP/1.1\r\n".encode())
    assert [x.status for x in answers] == [200] * last + [502]
    assert answers[-1].body == b"the backend broke off the request"
    assert [s.body for s in a.seen] == [f"body {i}".encode() for i in range(last)]  # not resent
    stats = await router.stats()
    assert (stats.failed, stats.backends["closer"].broken, stats.lost) == (1, 1, 1)


# -- 7. errors and what is lost -----------------------------------------------------------------


async def test_5xx_answers_pass_through_and_every_loss_is_counted(
    router: RouterProcess, upstreams: Upstreams
) -> None:
    a, closer = await upstreams.web("a"), await upstreams.raw("closer", hang_up)
    await router.push(backend(a))
    assert (await get(router.port, "/ok")).status == 200
    for status in (500, 503):
        answer = await get(router.port, f"/status/{status}")
        assert (answer.status, answer.body) == (status, f"a answers {status}".encode())
        assert answer.header("X-Phoenix-Router") is None
    drained = backend(a, state=BackendState.DRAINING)  # kept in the configuration, unused
    await router.push(drained, backend(closer))
    assert (await get(router.port, "/pay", "POST", b"x")).status == 502
    await router.push(drained, queue_timeout=0.1)
    assert (await get(router.port, "/")).header("X-Phoenix-Router") == "fallback"
    stats = await router.stats()
    assert stats.backends["a"].errors == 2 and stats.errors == 2
    assert (stats.received, stats.rejected, stats.failed) == (5, 1, 1)
    assert stats.lost == 4


async def test_losses_stay_counted_when_their_backend_is_replaced(
    router: RouterProcess, upstreams: Upstreams
) -> None:
    old, new = await upstreams.web("old"), await upstreams.web("new")
    await router.push(backend(old))
    assert (await get(router.port, "/status/500")).status == 500
    assert (await router.stats()).lost == 1
    await router.push(backend(new))  # the instance was replaced, as in a rolling restart
    assert (await get(router.port, "/")).status == 200
    stats = await router.stats()
    assert (stats.received, stats.errors, stats.lost) == (2, 1, 1)


# -- 8. the circuit -----------------------------------------------------------------------------


async def test_an_open_circuit_holds_requests_then_answers_with_the_fallback(
    router: RouterProcess, upstreams: Upstreams
) -> None:
    a = await upstreams.web("a")
    await router.push(backend(a), circuit=CircuitMode.OPEN, queue_timeout=0.3)
    began = time.monotonic()
    answer = await get(router.port, "/")
    assert 0.28 <= time.monotonic() - began < 1.5
    assert (answer.status, answer.header("X-Phoenix-Router")) == (503, "fallback")
    assert a.seen == []
    stats = await router.stats()
    assert (stats.circuit, stats.rejected) == ("open", 1)


async def test_half_open_admits_its_share(router: RouterProcess, upstreams: Upstreams) -> None:
    a = await upstreams.web("a")
    await router.push(backend(a), circuit=CircuitMode.HALF_OPEN, admit=0.0, queue_timeout=2.0)
    began = time.monotonic()
    answers = [await get(router.port, "/") for _ in range(5)]
    assert time.monotonic() - began < 1.0  # answered at once, not after the queue timeout
    assert [x.header("X-Phoenix-Router") for x in answers] == ["fallback"] * 5
    assert a.seen == []

    await router.push(backend(a), circuit=CircuitMode.HALF_OPEN, admit=1.0, queue_timeout=0.3)
    answers = [await get(router.port, "/") for _ in range(5)]
    assert [x.status for x in answers] == [200] * 5 and len(a.seen) == 5
    assert (await router.stats()).circuit == "half_open"
    assert (await get(router.port, "/status/500")).status == 500
    stats = await router.stats()
    assert (stats.circuit, stats.reopened) == ("open", 1)
    assert router.client is not None
    assert (await router.client.config()).circuit is CircuitMode.OPEN
    answer = await get(router.port, "/")
    assert answer.header("X-Phoenix-Router") == "fallback" and len(a.seen) == 6


# -- 9. the control socket ----------------------------------------------------------------------


async def test_stale_and_foreign_configurations_are_refused(
    router: RouterProcess, upstreams: Upstreams
) -> None:
    a = await upstreams.web("a")
    assert router.client is not None
    await router.push(backend(a))
    current = await router.push(backend(a, weight=50))
    with pytest.raises(PlatformError, match="409"):
        await router.client.push(RouterConfig(SERVICE, (), version=current.version - 1))
    with pytest.raises(PlatformError, match="400"):
        await router.client.push(RouterConfig("other", (), version=current.version + 1))
    assert await router.client.config() == current
    assert RouterConfig.from_json(router.state.read_text()) == current
    assert (await get(router.port, "/")).status == 200


async def test_a_killed_router_comes_back_with_its_backends(
    router: RouterProcess, upstreams: Upstreams
) -> None:
    a = await upstreams.web("a")
    pushed = await router.push(backend(a, weight=7), queue_timeout=0.5)
    assert (await get(router.port, "/before")).status == 200
    await router.restart()  # SIGKILL, then the same command line
    assert router.client is not None
    assert await router.client.config() == pushed
    answer = await get(router.port, "/after")
    assert (answer.status, answer.body) == (200, b"a GET /after ")
    stats = await router.stats()
    assert (stats.config_version, stats.received) == (pushed.version, 1)


# -- 10. shutdown -------------------------------------------------------------------------------


async def test_sigterm_lets_the_request_in_flight_finish(
    router: RouterProcess, upstreams: Upstreams
) -> None:
    a = await upstreams.web("a")
    await router.push(backend(a))
    assert router.process is not None
    async with connection(router.port) as conn:
        slow = asyncio.create_task(conn.request("GET", "/slow"))
        async with asyncio.timeout(IO_TIMEOUT):
            await a.arrived.wait()
        signalled = time.monotonic()
        router.process.send_signal(signal.SIGTERM)

        async def refused() -> bool:
            try:
                probe = await Conn.open(router.port)
            except ConnectionRefusedError:
                return True
            except ConnectionResetError:
                return False  # caught in the listening socket's closing: look again
            await probe.close()
            return False

        await eventually(refused, timeout=2, message="new connections to be refused")
        assert not slow.done()  # refused while the slow request was still in flight
        answer = await slow
    assert (answer.status, answer.body) == (200, b"a GET /slow ")
    assert await router.exited(timeout=3) == 0
    assert time.monotonic() - signalled < 2.0


# -- 11. upgrades -------------------------------------------------------------------------------


async def test_an_upgraded_connection_carries_bytes_both_ways(
    router: RouterProcess, upstreams: Upstreams
) -> None:
    async def echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(
            b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: echo\r\nConnection: Upgrade\r\n\r\n"
        )
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()

    echoer = await upstreams.raw("echoer", echo)
    await router.push(backend(echoer))
    async with connection(router.port) as conn:
        switched = await conn.request(
            "GET", "/ws", headers="Upgrade: echo\r\nConnection: Upgrade\r\n"
        )
        assert (switched.status, switched.header("Upgrade")) == (101, "echo")
        for message in (b"ping", b"x" * 200_000, b"\x00\xff binary"):
            conn.send(message)
            async with asyncio.timeout(IO_TIMEOUT):
                assert await conn.reader.readexactly(len(message)) == message
    head = echoer.heads[0].decode()
    assert "\r\nUpgrade: echo\r\n" in head and "\r\nConnection: Upgrade\r\n" in head
    assert "\r\nX-Forwarded-For: 127.0.0.1\r\n" in head
