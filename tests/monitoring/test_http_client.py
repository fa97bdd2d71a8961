"""The probe HTTP client against raw loopback servers: bodies, keep-alive, TLS and hostility.

Each server here writes exactly the bytes a test gives it, so that what the client copes
with is known byte for byte; nothing of the client is mocked.
"""

from __future__ import annotations

import asyncio
import shutil
import ssl
import subprocess
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from phoenix_server.domain.services import HttpCheck
from phoenix_server.monitoring.http_client import (
    MAX_HEAD,
    BadResponse,
    ConnectError,
    Endpoint,
    HttpClient,
    ServerDisconnected,
)
from phoenix_server.monitoring.probing import Prober, ProbeTarget
from tests.monitoring.helpers import free_port

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


@dataclass
class RawServer:
    """A loopback server whose every connection runs ``handler``; it keeps what it saw."""

    handler: Handler
    port: int = 0
    connections: int = 0
    requests: list[bytes] = field(default_factory=list)
    _server: asyncio.Server | None = None
    _handlers: set[asyncio.Task[None]] = field(default_factory=set)

    async def start(self, context: ssl.SSLContext | None = None) -> RawServer:
        async def on_connection(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            self.connections += 1
            task = asyncio.current_task()
            assert task is not None
            self._handlers.add(task)
            try:
                await self.handler(reader, writer)
            except (ConnectionError, asyncio.IncompleteReadError, ssl.SSLError):
                pass
            finally:
                self._handlers.discard(task)
                writer.close()

        self._server = await asyncio.start_server(
            on_connection, "127.0.0.1", self.port, ssl=context
        )
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def read_request(self, reader: asyncio.StreamReader) -> bytes:
        head = await reader.readuntil(b"\r\n\r\n")
        self.requests.append(head)
        return head

    def url(self, path: str = "/health") -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            for task in list(self._handlers):
                task.cancel()
            await asyncio.gather(*self._handlers, return_exceptions=True)
            await self._server.wait_closed()


def answering(*responses: bytes, then: str = "keep") -> Callable[[RawServer], Handler]:
    """A handler that answers each request with the next of ``responses`` (the last one
    repeated), then keeps the connection open, closes it, or hangs without reading."""

    def make(server: RawServer) -> Handler:
        async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            index = 0
            while True:
                await server.read_request(reader)
                writer.write(responses[min(index, len(responses) - 1)])
                await writer.drain()
                index += 1
                if then == "close":
                    return
                if then == "hang":
                    await asyncio.Event().wait()

        return handle

    return make


Serve = Callable[..., Awaitable[RawServer]]


@pytest.fixture
async def serve() -> AsyncIterator[Serve]:
    """Starts a :class:`RawServer` running ``make(server)`` (over TLS given a context)."""
    servers: list[RawServer] = []

    async def start(
        make: Callable[[RawServer], Handler], context: ssl.SSLContext | None = None
    ) -> RawServer:
        server = RawServer(handler=_unset)
        server.handler = make(server)
        servers.append(await server.start(context))
        return server

    yield start
    for server in servers:
        await server.close()


@pytest.fixture
async def client() -> AsyncIterator[HttpClient]:
    client = HttpClient()
    yield client
    await client.close()


async def _unset(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    raise AssertionError("no handler")


OK = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"
CHUNKED = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n3\r\n!!!\r\n0\r\n\r\n"


async def test_content_length_body_and_the_connection_is_reused(
    serve: Serve, client: HttpClient
) -> None:
    server = await serve(answering(OK))
    endpoint = Endpoint.parse(server.url())
    for _ in range(3):
        assert await client.request(endpoint, 1.0) == 200
    assert server.connections == 1 and len(server.requests) == 3


async def test_chunked_body_and_the_connection_is_reused(serve: Serve, client: HttpClient) -> None:
    server = await serve(answering(CHUNKED))
    endpoint = Endpoint.parse(server.url())
    assert await client.request(endpoint, 1.0) == 200
    assert await client.request(endpoint, 1.0) == 200
    assert server.connections == 1


async def test_a_body_that_arrives_after_the_status_is_drained_before_reuse(
    serve: Serve, client: HttpClient
) -> None:
    release = asyncio.Event()

    def make(server: RawServer) -> Handler:
        async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            await server.read_request(reader)
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nab")
            await release.wait()
            writer.write(b"cd")
            await server.read_request(reader)
            writer.write(b"HTTP/1.1 204 No Content\r\n\r\n")
            await reader.read()

        return handle

    server = await serve(make)
    endpoint = Endpoint.parse(server.url())
    assert await client.request(endpoint, 1.0) == 200
    assert client.idle_connections() == 0  # still reading the body
    release.set()
    deadline = time.monotonic() + 2
    while client.idle_connections() == 0 and time.monotonic() < deadline:
        await asyncio.sleep(0.01)
    # Back in the pool, and the rest of the first body was not taken for the next response.
    assert await client.request(endpoint, 1.0) == 204
    assert server.connections == 1


async def test_connection_close_and_http_1_0_are_not_reused(
    serve: Serve, client: HttpClient
) -> None:
    closing = await serve(
        answering(b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 0\r\n\r\n")
    )
    old = await serve(answering(b"HTTP/1.0 200 OK\r\nContent-Length: 0\r\n\r\n"))
    for server in (closing, old):
        endpoint = Endpoint.parse(server.url())
        assert await client.request(endpoint, 1.0) == 200
        assert await client.request(endpoint, 1.0) == 200
        assert server.connections == 2


async def test_a_body_read_until_close(serve: Serve, client: HttpClient) -> None:
    server = await serve(answering(b"HTTP/1.1 200 OK\r\n\r\nbody until close", then="close"))
    endpoint = Endpoint.parse(server.url())
    assert await client.request(endpoint, 1.0) == 200
    assert await client.request(endpoint, 1.0) == 200


async def test_what_is_sent_method_path_host_and_user_agent(
    serve: Serve, client: HttpClient
) -> None:
    server = await serve(answering(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n"))
    await client.request(Endpoint.parse(server.url("/h?a=1&b=%20"), "HEAD"), 1.0)
    # A HEAD answer announces a body it never sends: the connection is still good.
    await client.request(Endpoint.parse(server.url("/p"), "POST"), 1.0)
    head, post = server.requests
    assert head.startswith(b"HEAD /h?a=1&b=%20 HTTP/1.1\r\n")
    assert f"Host: 127.0.0.1:{server.port}\r\n".encode() in head
    assert b"User-Agent: phoenix-probe\r\n" in head
    assert post.startswith(b"POST /p HTTP/1.1\r\n") and b"Content-Length: 0\r\n" in post
    assert server.connections == 1


async def test_interim_answers_are_skipped(serve: Serve, client: HttpClient) -> None:
    server = await serve(answering(b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early\r\n\r\n" + OK))
    endpoint = Endpoint.parse(server.url())
    assert await client.request(endpoint, 1.0) == 200
    assert await client.request(endpoint, 1.0) == 200
    assert server.connections == 1


async def test_a_server_that_closes_without_answering(serve: Serve, client: HttpClient) -> None:
    def make(server: RawServer) -> Handler:
        async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            await server.read_request(reader)
            writer.write(b"HTTP/1.1 200")  # half a status line, then gone

        return handle

    server = await serve(make)
    with pytest.raises(ServerDisconnected):
        await client.request(Endpoint.parse(server.url()), 1.0)


async def test_garbage_is_a_bad_response(serve: Serve, client: HttpClient) -> None:
    server = await serve(answering(b"SSH-2.0-OpenSSH_9.2\r\n\r\n"))
    with pytest.raises(BadResponse):
        await client.request(Endpoint.parse(server.url()), 1.0)


async def test_endless_headers_stop_at_the_cap(serve: Serve, client: HttpClient) -> None:
    def make(server: RawServer) -> Handler:
        async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            await server.read_request(reader)
            writer.write(b"HTTP/1.1 200 OK\r\n")
            while True:
                writer.write(b"X-Filler: " + b"x" * 1000 + b"\r\n")
                await writer.drain()

        return handle

    server = await serve(make)
    started = time.monotonic()
    with pytest.raises(BadResponse, match=str(MAX_HEAD)):
        await client.request(Endpoint.parse(server.url()), 5.0)
    assert time.monotonic() - started < 2.0


async def test_an_endless_body_gives_the_status_and_drops_the_connection(
    serve: Serve, client: HttpClient
) -> None:
    def make(server: RawServer) -> Handler:
        async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            await server.read_request(reader)
            writer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
            while True:
                writer.write(b"400\r\n" + b"y" * 1024 + b"\r\n")
                await writer.drain()

        return handle

    server = await serve(make)
    endpoint = Endpoint.parse(server.url())
    assert await client.request(endpoint, 1.0) == 200
    assert await client.request(endpoint, 1.0) == 200
    assert server.connections == 2


async def test_no_answer_times_out_at_the_deadline(serve: Serve, client: HttpClient) -> None:
    server = await serve(answering(b"", then="hang"))
    started = time.monotonic()
    with pytest.raises(TimeoutError):
        await client.request(Endpoint.parse(server.url()), 0.2)
    assert 0.15 < time.monotonic() - started < 1.0


async def test_refused_is_a_connect_error(client: HttpClient) -> None:
    with pytest.raises(ConnectError) as caught:
        await client.request(Endpoint.parse(f"http://127.0.0.1:{free_port()}/"), 1.0)
    assert isinstance(caught.value.os_error, ConnectionRefusedError)


async def test_a_cancelled_request_leaves_no_half_read_connection(
    serve: Serve, client: HttpClient
) -> None:
    server = await serve(answering(b"", then="hang"))
    endpoint = Endpoint.parse(server.url())
    task = asyncio.create_task(client.request(endpoint, 5.0))
    deadline = time.monotonic() + 2
    while not server.requests and time.monotonic() < deadline:
        await asyncio.sleep(0.01)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    with pytest.raises(TimeoutError):
        await client.request(endpoint, 0.1)
    assert server.connections == 2


async def test_idle_connections_are_bounded_per_host(serve: Serve) -> None:
    gate = asyncio.Event()

    def make(server: RawServer) -> Handler:
        async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            while True:
                await server.read_request(reader)
                await gate.wait()
                writer.write(OK)

        return handle

    server = await serve(make)
    client = HttpClient(max_idle_per_host=2)
    try:
        endpoint = Endpoint.parse(server.url())
        tasks = [asyncio.create_task(client.request(endpoint, 2.0)) for _ in range(5)]
        deadline = time.monotonic() + 2
        while len(server.requests) < 5 and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        gate.set()
        assert await asyncio.gather(*tasks) == [200] * 5
        await asyncio.gather(*(client.request(endpoint, 2.0) for _ in range(5)))
        assert server.connections == 5 + 3  # two kept, three more opened
    finally:
        await client.close()


def test_urls_are_taken_apart_once() -> None:
    endpoint = Endpoint.parse("https://[::1]/x y?q=é")
    assert (endpoint.host, endpoint.port, endpoint.tls) == ("::1", 443, True)
    assert endpoint.request.startswith(b"GET /x%20y?q=%C3%A9 HTTP/1.1\r\nHost: [::1]\r\n")
    with pytest.raises(ValueError):
        Endpoint.parse("ftp://example.com/")


# -- TLS --------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    if shutil.which("openssl") is None:
        pytest.skip("TLS tests make their certificate with openssl, which is missing")
    folder = tmp_path_factory.mktemp("tls")
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "key.pem",
         "-out", "cert.pem", "-days", "2", "-subj", "/CN=127.0.0.1",
         "-addext", "subjectAltName=IP:127.0.0.1"],
        cwd=folder, check=True, capture_output=True,
    )  # fmt: skip
    return folder / "cert.pem", folder / "key.pem"


async def test_https_checks_the_certificate(serve: Serve, certificate: tuple[Path, Path]) -> None:
    cert, key = certificate
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    server = await serve(answering(OK), context)
    url = f"https://127.0.0.1:{server.port}/health"
    trusting = HttpClient(ssl_context=ssl.create_default_context(cafile=str(cert)))
    prober = Prober()
    try:
        assert await trusting.request(Endpoint.parse(url), 2.0) == 200
        assert await trusting.request(Endpoint.parse(url), 2.0) == 200
        assert server.connections == 1
        # The system's trust store does not know this certificate.
        result = await prober.probe(ProbeTarget("svc", "svc", HttpCheck(url), 2.0, 1.0))
        assert not result.ok
        assert result.detail.startswith("cannot connect: certificate not trusted: "), result
    finally:
        await trusting.close()
        await prober.close()


# -- through the prober -----------------------------------------------------------------------


def probe_target(url: str, expect: tuple[int, int] = (200, 399)) -> ProbeTarget:
    return ProbeTarget("svc", "svc", HttpCheck(url, expect_status=expect), 1.0, 1.0)


@pytest.fixture
async def prober() -> AsyncIterator[Prober]:
    prober = Prober()
    yield prober
    await prober.close()


async def test_a_redirect_is_not_followed(serve: Serve, prober: Prober) -> None:
    server = await serve(
        answering(b"HTTP/1.1 302 Found\r\nLocation: /elsewhere\r\nContent-Length: 0\r\n\r\n")
    )
    strict = await prober.probe(probe_target(server.url(), (200, 299)))
    assert not strict.ok and strict.detail == "HTTP 302 (expected 200-299)"
    loose = await prober.probe(probe_target(server.url()))
    assert loose.ok and loose.detail == "HTTP 302" and loose.status_code == 302
    assert [r.split(b" ")[1] for r in server.requests] == [b"/health", b"/health"]


async def test_a_stale_keep_alive_connection_is_retried_once(serve: Serve, prober: Prober) -> None:
    def make(server: RawServer) -> Handler:
        async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            first = server.connections == 1
            await server.read_request(reader)
            writer.write(OK)
            if first:  # the process "restarts" just as the next probe reuses the connection
                await server.read_request(reader)
                return
            while True:
                await server.read_request(reader)
                writer.write(OK)

        return handle

    server = await serve(make)
    assert (await prober.probe(probe_target(server.url()))).ok
    second = await prober.probe(probe_target(server.url()))
    assert second.ok and second.detail == "HTTP 200", second
    assert server.connections == 2


async def test_a_server_that_never_answers_is_retried_once_then_failed(
    serve: Serve, prober: Prober
) -> None:
    def make(server: RawServer) -> Handler:
        async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            await server.read_request(reader)

        return handle

    server = await serve(make)
    result = await prober.probe(probe_target(server.url()))
    assert not result.ok
    assert result.detail == "server closed the connection without answering"
    assert server.connections == 2


async def test_garbage_and_unknown_hosts_are_named(serve: Serve, prober: Prober) -> None:
    server = await serve(answering(b"\x00\x01garbage\r\n\r\n"))
    garbage = await prober.probe(probe_target(server.url()))
    assert not garbage.ok and garbage.detail.startswith("request failed: BadResponse: ")
    # .invalid never resolves (RFC 6761).
    unknown = await prober.probe(probe_target("http://no-such-host.invalid/health"))
    assert not unknown.ok and unknown.detail.startswith("cannot connect: unknown host ("), unknown
