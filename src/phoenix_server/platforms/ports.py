"""Ports: those for instances behind a router (asked of the kernel, never handed out twice),
and whether a declared port can be listened on — and, when it cannot, who holds it."""

from __future__ import annotations

import contextlib
import errno
import ipaddress
import socket

import psutil

COMMAND_SHOWN = 120
"""Characters of the holder's command line put in a message (one line, readable)."""
WILDCARDS = frozenset({"0.0.0.0", "::", ""})


class PortAllocator:
    def __init__(self, host: str = "127.0.0.1") -> None:
        self._host = host
        self._held: set[int] = set()

    def allocate(self) -> int:
        """A port free right now and not given to another instance of this Phoenix."""
        for _ in range(100):
            with socket.socket() as probe:
                probe.bind((self._host, 0))
                port: int = probe.getsockname()[1]
            if port not in self._held:
                self._held.add(port)
                return port
        raise OSError("no free port found after 100 tries")

    def hold(self, port: int) -> None:
        """An adopted instance's port: not to be handed out again while it lives."""
        self._held.add(port)

    def release(self, port: int | None) -> None:
        if port is not None:
            self._held.discard(port)


def listen_problem(host: str, port: int) -> str | None:
    """Why nothing can listen on ``host:port`` now (naming the holder where the OS tells),
    or None if it can. Binds as the router does (SO_REUSEADDR, every address of ``host``),
    so a port left in TIME_WAIT counts as free."""
    try:
        addresses = socket.getaddrinfo(
            host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )
    except socket.gaierror as exc:
        return f"cannot listen on {host}:{port}: {exc.strerror or exc}"
    for family, kind, proto, _, address in addresses:
        with socket.socket(family, kind, proto) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if family == socket.AF_INET6:
                # As asyncio does: an IPv6 socket must not also claim the IPv4 port.
                with contextlib.suppress(OSError):
                    probe.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            try:
                probe.bind(address)
            except OSError as exc:
                if exc.errno == errno.EADDRINUSE:
                    return f"port {port} on {host} is {holder_of(host, port)}"
                return f"cannot listen on {host}:{port}: {exc.strerror or exc}"
    return None


def holder_of(host: str, port: int) -> str:
    """``held by pid 123 (python3 -m http.server 8194)``, or as much as the OS tells."""
    try:
        connections = psutil.net_connections(kind="inet")
    except (psutil.Error, OSError):
        connections = []
    pids = sorted(
        {
            c.pid
            for c in connections
            if c.status == psutil.CONN_LISTEN
            and c.laddr
            and c.laddr.port == port
            and _overlaps(c.laddr.ip, host)
        },
        key=lambda pid: -1 if pid is None else pid,
    )
    known = [pid for pid in pids if pid is not None]
    if not known:
        return "already in use (by a process the OS does not name to Phoenix)"
    return "held by " + ", ".join(f"pid {pid} ({_command_of(pid)})" for pid in known)


def _overlaps(listening: str, wanted: str) -> bool:
    """Whether a socket listening on ``listening`` blocks a bind to ``wanted`` (same port)."""
    if listening in WILDCARDS or wanted in WILDCARDS or listening == wanted:
        return True
    try:
        return ipaddress.ip_address(listening) == ipaddress.ip_address(wanted)
    except ValueError:
        return True  # a host name: be inclusive rather than name nobody


def _command_of(pid: int) -> str:
    try:
        process = psutil.Process(pid)
        words = process.cmdline() or [process.name()]
    except psutil.Error:
        return "command unknown"
    command = " ".join(words)
    # Another process's command line goes into Phoenix's log: no control character may
    # forge or split a line there.
    cleaned = "".join(c if c.isprintable() else "?" for c in command)
    if len(cleaned) > COMMAND_SHOWN:
        cleaned = cleaned[: COMMAND_SHOWN - 1] + "…"
    return cleaned
