"""Several Phoenix replicas on one PostgreSQL schema (issue 18): takeover when a service's
owner dies or is paused, and what 10,000 services cost spread over 1, 2 and 3 replicas.

* **takeover** (kill -9) and **sigstop** (paused, not dead): 3 real ``phoenix serve``
  replicas (``PHOENIX_CLUSTER=1``) watch 30 ``external`` services of the fake HTTP server
  of ``tests/cluster/replicas.py``, whose playbooks call its revive endpoint. Each trial
  makes one service (rotating over the 30) fail and stay down, waits for its owner's first
  revive call, kills (or SIGSTOPs) that owner, lets the service come back, and measures
  until the first revive call after the kill: the new owner's first action. Then the
  killed replica is started again (or SIGCONTed) and every lease is held again before the
  next trial. In each trial one operator trigger for another service goes through a
  replica that does not own it (forwarded), sometimes through the replica about to be
  killed, sometimes to it; every one answered 202 must be in the store afterwards
  (otherwise *lost*); a 503 is a refusal. From the store: double recoveries (two
  recoveries of one service whose [created_at, ended_at] overlap; unfinished = open).
  Targets: median takeover < 2x the lease, 0 double recoveries, 0 lost triggers.
* **scale**: a raw asyncio server counts HTTP probes where they land; 10,000 external
  services probed every 10 s (1,000 probes/s offered) by 1 Phoenix without
  ``PHOENIX_CLUSTER`` (today's baseline), then 1, 2 and 3 replicas with it, each on a fresh
  schema, and a control: 2 Phoenixes without ``PHOENIX_CLUSTER`` given half the services
  each (the same work over two processes with no ownership at all: what remains of the
  2-replica cost beyond it is ownership's). Over a window: probes landed per second, CPU
  seconds per 1,000 probes (all replicas, psutil user+system), database writes per second
  (pg_stat_user_tables rows of the schema, and commits of the whole database), probe
  lateness (``/metrics``), and the time from a service failing to its incident in ``GET
  /api/incidents``. Targets: 2 replicas hold 10,000 services with every probe on time, at
  ≤ 1.2x the single replica's
  CPU per probe.

``python -m bench.replicas [--only takeover|sigstop|scale] [--trials 100] [--lease 2]
[--services 10000] [--seconds 30]``. Nothing here asserts.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, ClassVar, cast

import httpx
import psutil
import psycopg
from tests.cluster.replicas import FakeServices, Replicas, playbook, service_file
from tests.store.conftest import postgres_schema
from tests.support import PhoenixServer, wait_until

from bench.probes import Children, cpu_seconds, get, print_machine, serve_counter
from phoenix_server.store.database import Store

ROOT = Path(__file__).resolve().parent.parent
TAKEOVER_SERVICES = 30
REPLICAS = 3
INFLIGHT = 0.1
"""Seconds after a kill in which a revive call is still the old owner's (sent before the
signal, handled just after): never counted as the new owner's (a takeover takes a lease)."""
SCALE_INTERVAL = 10.0
SCALE_TIMEOUT = 2.0
SCALE_THRESHOLD = 2
COST_TARGET = 1.2
TAKEOVER_TARGET = 2.0
K8S_LEASE = 15.0


# -- replicas with the lease, cluster mode and log level of a run ------------------------------


class BenchReplicas(Replicas):
    """The harness's replicas, with this run's lease (not the harness's 2 s constant),
    optionally without ``PHOENIX_CLUSTER`` (one Phoenix, today), and a log level."""

    def __init__(
        self,
        tmp_path: Path,
        config: Path,
        database_url: str,
        count: int,
        *,
        lease: float,
        cluster: bool = True,
        log_level: str = "info",
        ready_timeout: float = 60.0,
        configs: Sequence[Path] = (),
    ) -> None:
        super().__init__(tmp_path, config, database_url, count)
        self.configs = list(configs)
        """One service file per replica, in order (none: ``config`` for all)."""
        self.lease = lease
        self.clustered = cluster
        self.log_level = log_level
        self.ready_timeout = ready_timeout

    def start(
        self, name: str, *, wait: bool = True, database_url: str | None = None
    ) -> PhoenixServer:
        old = self.servers.get(name)
        if old is not None:
            old.client.close()
        env = {
            "DATABASE_URL": database_url or self.database_url,
            "PHOENIX_LEASE_SECONDS": f"{self.lease:g}",
            "PHOENIX_INSTALLATION_ID": name,
            "PHOENIX_LOG_LEVEL": self.log_level,
        }
        if self.clustered:
            env["PHOENIX_CLUSTER"] = "1"
        config = self.configs[self.names.index(name)] if self.configs else self.config
        server = PhoenixServer(config, self.tmp_path / name, env=env)
        self.servers[name] = server
        server.start(wait=False)
        if wait:
            wait_until(server._ready, timeout=self.ready_timeout, message=f"{name} ready")
        return server

    def start_all(self) -> None:
        for name in self.names:
            self.start(name, wait=False)
        for name in self.names:
            wait_until(
                self.servers[name]._ready, timeout=self.ready_timeout, message=f"{name} ready"
            )

    def settled(
        self, services: list[str], *, besides: str | None = None, balanced: bool = False
    ) -> bool:
        """Every replica a live member and every service's lease held by a live one (and,
        if ``balanced``, none holding more than its fair share: rebalancing over)."""
        try:
            body = self.cluster(besides=besides)
        except (httpx.HTTPError, StopIteration):
            return False
        live = {m["id"] for m in body["members"] if m["live"]}
        owners = {lease["service"]: lease["owner"] for lease in body["leases"]}
        if live != set(self.names) or any(owners.get(s) not in live for s in services):
            return False
        share = -(-len(services) // len(live))
        return not balanced or all(m["owns"] <= share for m in body["members"] if m["live"])


@contextlib.contextmanager
def workdir(args: argparse.Namespace, prefix: str) -> Iterator[str]:
    """A temporary directory for the replicas' data and logs; kept with ``--keep``."""
    if args.keep:
        path = tempfile.mkdtemp(prefix=prefix)
        print(f"logs and data kept in {path}", flush=True)
        yield path
        return
    with tempfile.TemporaryDirectory(prefix=prefix) as path:
        yield path


def plain(url: str) -> str:
    return url.replace("+psycopg", "")


def recoveries(url: str) -> list[dict[str, Any]]:
    with psycopg.connect(plain(url)) as connection:
        rows = connection.execute(
            "SELECT id, service, owner, status, trigger, created_at, ended_at FROM recoveries "
            "ORDER BY service, created_at"
        ).fetchall()
    keys = ("id", "service", "owner", "status", "trigger", "created_at", "ended_at")
    return [dict(zip(keys, row, strict=True)) for row in rows]


def double_recoveries(rows: list[dict[str, Any]]) -> list[tuple[dict[str, Any], dict[str, Any]]]:
    """Pairs of recoveries of one service whose [created_at, ended_at] overlap (an
    unfinished one is open-ended)."""
    by_service: dict[str, list[dict[str, Any]]] = {}
    for row in rows:
        by_service.setdefault(row["service"], []).append(row)
    pairs = []
    for history in by_service.values():
        history.sort(key=lambda r: r["created_at"])
        for i, first in enumerate(history):
            for second in history[i + 1 :]:
                if first["ended_at"] is None or second["created_at"] < first["ended_at"]:
                    pairs.append((first, second))
    return pairs


def quantiles(values: list[float]) -> tuple[float, float, float]:
    """Median, p90 (nearest rank) and max."""
    ordered = sorted(values)
    p90 = ordered[max(0, -(-9 * len(ordered) // 10) - 1)]
    return statistics.median(ordered), p90, ordered[-1]


# -- takeover ------------------------------------------------------------------------------


@dataclass
class Trigger:
    mode: str
    service: str
    via: str
    status: int | None = None
    """HTTP status; None: no answer (the connection died with the replica, or timed out)."""
    recovery_id: str | None = None
    detail: str = ""


@dataclass
class Trial:
    service: str
    victim: str
    takeover: float | None = None
    inflight: int = 0
    triggers: list[Trigger] = field(default_factory=list)
    note: str = ""


TRIGGER_MODES = ("via-victim", "to-victim", "via-victim-racing-kill", "after-kill")
"""An operator trigger in each trial, in turn: through the replica about to be killed
(answered, then the kill); through another replica to a service the victim owns
(forwarded to it, answered, then the kill); through the victim, killed ~20 ms after the
request went out without waiting for the answer; through a survivor just after the kill, to
a service the victim owned (no owner for a moment: a 503 is expected)."""


def send_trigger(server: PhoenixServer, playbook_id: str, trigger: Trigger) -> None:
    try:
        answer = server.client.post(
            f"/api/playbooks/{playbook_id}/execute",
            json={"reason": f"bench {trigger.mode}"},
            timeout=60,
        )
    except httpx.HTTPError as exc:
        trigger.detail = type(exc).__name__
        return
    trigger.status = answer.status_code
    if answer.status_code == 202:
        trigger.recovery_id = answer.json().get("recoveryId")
    else:
        trigger.detail = answer.text[:200]


def in_background(server: PhoenixServer, playbook_id: str, trigger: Trigger) -> threading.Thread:
    thread = threading.Thread(target=send_trigger, args=(server, playbook_id, trigger), daemon=True)
    thread.start()
    return thread


@contextlib.contextmanager
def takeover_cluster(
    tmp: Path, fake: FakeServices, names: list[str], lease: float
) -> Iterator[tuple[BenchReplicas, dict[str, str]]]:
    """3 replicas on a fresh schema, each service's playbook made, every lease held; and
    the playbook id of each service."""
    with postgres_schema() as (url, _schema):
        group = BenchReplicas(
            tmp, service_file(tmp, fake, names), url, REPLICAS, lease=lease, log_level="debug"
        )
        try:
            group.start_all()
            first = group.any()
            for name in names:
                answer = first.post("/api/playbooks", json=playbook(fake, name))
                if answer.status_code != 201:
                    raise RuntimeError(f"playbook of {name}: {answer.text}")
            for server in group.servers.values():  # each reloads playbooks every 5 s
                wait_until(
                    lambda server=server: (
                        server.get("/health").json()["playbooksActive"] == len(names)
                    ),
                    timeout=30,
                    message="every replica knowing the playbooks",
                )
            wait_until(lambda: group.settled(names), timeout=60, message="every lease held")
            listed = first.get("/api/playbooks").json()["playbooks"]
            ids = {p["service"]: p["id"] for p in listed}
            yield group, ids
        finally:
            group.close()


def owners(group: BenchReplicas, *, besides: str | None = None) -> dict[str, str]:
    return {
        lease["service"]: lease["owner"]
        for lease in group.cluster(besides=besides)["leases"]
        if lease["owner"]
    }


def pick(candidates: list[str], turn: int) -> str | None:
    return candidates[turn % len(candidates)] if candidates else None


def one_trial(
    group: BenchReplicas,
    fake: FakeServices,
    names: list[str],
    ids: dict[str, str],
    turn: int,
    sig: int,
    last_used: dict[str, int],
    recent_triggers: list[str],
) -> Trial:
    lease = group.lease
    # The service: one of the replica whose turn it is to be the victim (rotating over the
    # three), the one used longest ago (budgets and backoff of one never accumulate), and
    # none an operator trigger touched lately.
    before = owners(group)
    wanted = group.names[turn % len(group.names)]
    candidates = [n for n in names if n not in recent_triggers] or names
    mine = [n for n in candidates if before.get(n) == wanted] or candidates
    service = min(mine, key=lambda n: (last_used.get(n, -1), n))
    last_used[service] = turn
    failed_at = time.monotonic()
    fake.fail(service, stuck=True)
    try:
        wait_until(
            lambda: fake.revivals(service, after=failed_at),
            timeout=30,
            interval=0.02,
            message="the owner acting",
        )
    except AssertionError:
        fake.unstick(service)
        return Trial(service, "?", note="the owner never acted")
    # The owner now (a lease may have moved since the last look): it is busy with the
    # recovery, so it keeps the lease until it is killed.
    owned = owners(group)
    victim = owned[service]
    trial = Trial(service, victim)
    others = [name for name in group.names if name != victim]
    # The trigger's service: none of the last trials' (its revive calls must not be taken
    # for an owner's), owned by the victim or not as the mode wants.
    lately = {n for n, t in last_used.items() if t >= turn - 3}
    spare = [n for n in names if n not in lately]
    mode = TRIGGER_MODES[turn % len(TRIGGER_MODES)]
    victims = [n for n in spare if owned.get(n) == victim]
    survivors = [n for n in spare if owned.get(n) not in (None, victim)]
    target = pick(victims if mode in ("to-victim", "after-kill") else survivors, turn // 4)
    trigger: Trigger | None = None
    if target is not None:
        if mode.startswith("via-victim"):
            via = victim
        else:
            via = next((o for o in others if o != owned[target]), others[0])
        trigger = Trigger(mode, target, via)
        trial.triggers.append(trigger)
        recent_triggers.append(target)
        del recent_triggers[:-2]

    pending: list[threading.Thread] = []
    if trigger is not None and mode in ("via-victim", "to-victim"):
        send_trigger(group.servers[trigger.via], ids[trigger.service], trigger)
    elif trigger is not None and mode == "via-victim-racing-kill":
        pending.append(in_background(group.servers[trigger.via], ids[trigger.service], trigger))
        time.sleep(0.02)

    killed_at = time.monotonic()
    group.kill(victim, sig)
    fake.unstick(service)
    if trigger is not None and mode == "after-kill":
        pending.append(in_background(group.servers[trigger.via], ids[trigger.service], trigger))

    def first_act() -> float | None:
        calls = fake.revivals(service, after=killed_at)
        late = [at for at in calls if at > killed_at + INFLIGHT]
        return late[0] if late else None

    try:
        acted = wait_until(first_act, timeout=30 * lease, interval=0.005, message="a takeover")
        trial.takeover = acted - killed_at
        trial.inflight = len(
            [at for at in fake.revivals(service, after=killed_at) if at <= killed_at + INFLIGHT]
        )
    except AssertionError:
        trial.note = "no new owner acted"
    try:
        wait_until(lambda: service not in fake.down, timeout=30, message="the service healthy")
    except AssertionError:
        trial.note += " (service still down)"
        with fake.lock:
            fake.down.discard(service)

    if sig == signal.SIGKILL:
        group.start(victim, wait=True)
    else:
        group.kill(victim, signal.SIGCONT)
    for thread in pending:
        thread.join(90)
    try:
        wait_until(
            lambda: group.settled(names, balanced=True), timeout=60, interval=0.1, message="settled"
        )
    except AssertionError:
        trial.note += " (not settled after 60 s)"
    return trial


def run_takeover(args: argparse.Namespace, sig: int) -> dict[str, Any]:
    kind = "kill -9" if sig == signal.SIGKILL else "SIGSTOP"
    names = [f"svc-{n:02d}" for n in range(TAKEOVER_SERVICES)]
    fake = FakeServices()
    trials: list[Trial] = []
    started = time.monotonic()
    with (
        workdir(args, "phoenix-bench-replicas-") as tmp,
        fake.serving(),
        takeover_cluster(Path(tmp), fake, names, args.lease) as (group, ids),
    ):
        print(
            f"\n{kind}: {REPLICAS} replicas, {len(names)} external services, lease "
            f"{args.lease:g} s, {args.trials} trials",
            flush=True,
        )
        last_used: dict[str, int] = {}
        recent: list[str] = []
        try:
            for turn in range(args.trials):
                trial = one_trial(group, fake, names, ids, turn, sig, last_used, recent)
                trials.append(trial)
                took = "-" if trial.takeover is None else f"{trial.takeover:.2f} s"
                answers = ", ".join(f"{t.mode}:{t.status or t.detail}" for t in trial.triggers)
                if args.verbose or trial.note or (turn + 1) % 10 == 0:
                    print(
                        f"  trial {turn + 1:3}: {trial.service} owner {trial.victim} → "
                        f"takeover {took}; trigger {answers} {trial.note}",
                        flush=True,
                    )
        except KeyboardInterrupt:
            print(f"interrupted after {len(trials)} trials: summarising those", flush=True)
        finally:
            time.sleep(2 * args.lease)  # the last recoveries end
            rows = recoveries(group.database_url)
            logs = {name: server.log() for name, server in group.servers.items()}
    return summarise_takeover(kind, args, trials, rows, logs, time.monotonic() - started)


def summarise_takeover(
    kind: str,
    args: argparse.Namespace,
    trials: list[Trial],
    rows: list[dict[str, Any]],
    logs: dict[str, str],
    elapsed: float,
) -> dict[str, Any]:
    lease = args.lease
    times = [t.takeover for t in trials if t.takeover is not None]
    stored = {row["id"] for row in rows}
    triggers = [trigger for t in trials for trigger in t.triggers]
    accepted = [t for t in triggers if t.status == 202]
    lost = [t for t in accepted if t.recovery_id not in stored]
    refused = [t for t in triggers if t.status == 503]
    moved = [t for t in triggers if t.status == 409 and "not_owner" in t.detail]
    unanswered = [t for t in triggers if t.status is None]
    other = [t for t in triggers if t.status not in (None, 202, 503) and t not in moved]
    doubles = double_recoveries(rows)
    open_rows = [row for row in rows if row["ended_at"] is None]
    print(f"\n{kind}: {len(trials)} trials in {elapsed:.0f} s, lease {lease:g} s")
    if times:
        median, p90, top = quantiles(times)
        print(
            f"  takeover (owner {kind} → new owner's first revive call), {len(times)} measured: "
            f"median {median:.2f} s ({median / lease:.2f}x lease), p90 {p90:.2f} s "
            f"({p90 / lease:.2f}x), max {top:.2f} s ({top / lease:.2f}x), min {min(times):.2f} s"
        )
        print(
            f"  at Kubernetes' 15 s lease the same multiple would be a median of "
            f"{median / lease * K8S_LEASE:.1f} s"
        )
    else:
        median = float("nan")
    missing = [t for t in trials if t.takeover is None]
    inflight = sum(t.inflight for t in trials)
    print(
        f"  trials without a takeover: {len(missing)}; old owner's revive calls landing "
        f"< {INFLIGHT:g} s after the signal (not counted): {inflight}"
    )
    print(
        f"  recoveries in the store: {len(rows)}; double recoveries (overlapping pairs): "
        f"{len(doubles)}; never ended: {len(open_rows)}"
    )
    for first, second in doubles[:10]:
        print(
            f"    {first['service']}: {first['id']} {first['owner']} {first['status']} "
            f"{first['created_at']}..{first['ended_at']}  overlaps  {second['id']} "
            f"{second['owner']} {second['status']} {second['created_at']}..{second['ended_at']}"
        )
    by_mode: dict[str, list[Trigger]] = {}
    for trigger in triggers:
        by_mode.setdefault(trigger.mode, []).append(trigger)
    print(
        f"  operator triggers: {len(triggers)} sent, {len(accepted)} accepted (202), "
        f"{len(lost)} LOST (202 but not in the store), {len(refused)} refused (503), "
        f"{len(moved)} refused as moved (409 not_owner), {len(unanswered)} unanswered "
        f"(connection cut by the kill: nothing acknowledged), {len(other)} other"
    )
    for mode, sent in by_mode.items():
        statuses: dict[str, int] = {}
        for t in sent:
            key = str(t.status) if t.status is not None else f"none ({t.detail})"
            statuses[key] = statuses.get(key, 0) + 1
        print(f"    {mode:24} {dict(sorted(statuses.items()))}")
    for t in other[:5]:
        print(f"    other answer {t.status} ({t.mode}, {t.service} via {t.via}): {t.detail}")
    for t in lost[:5]:
        print(f"    lost: {t.recovery_id} ({t.mode}, {t.service} via {t.via})")
    for t in [t for t in trials if t.note][:10]:
        print(f"    note: {t.service} / {t.victim}: {t.note}")
    met = {True: "met", False: "NOT met"}
    print(
        f"  targets: median < {TAKEOVER_TARGET:g}x lease {met[median < TAKEOVER_TARGET * lease]}; "
        f"0 double recoveries {met[not doubles]}; 0 lost triggers {met[not lost]}"
    )
    errors = [
        line
        for log in logs.values()
        for line in log.splitlines()
        if re.search(r"\b(ERROR|CRITICAL|Traceback)\b", line)
    ]
    if errors:
        print(f"  errors in the replicas' logs: {len(errors)}; first ones:")
        for line in errors[:5]:
            print(f"    {line[:240]}")
    return {"times": times, "doubles": len(doubles), "lost": len(lost), "refused": len(refused)}


# -- scale: the counting server ----------------------------------------------------------------

OK = b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 2\r\n\r\nok"
DOWN = b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 4\r\n\r\ndown"
NOT_FOUND = b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n"


class CountingProtocol(asyncio.Protocol):
    """bench/probes.py's keep-alive counting server, plus ``GET /fail/<n>`` (``/health/<n>``
    answers 503 from then on) and ``GET /heal/<n>``."""

    received = 0
    down: ClassVar[set[bytes]] = set()

    def __init__(self) -> None:
        self._transport: asyncio.Transport | None = None
        self._pending = b""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        *requests, self._pending = (self._pending + data).split(b"\r\n\r\n")
        replies = []
        for request in requests:
            path = request.split(b" ", 2)[1] if request.count(b" ") >= 2 else b""
            if path.startswith(b"/health/"):
                CountingProtocol.received += 1
                replies.append(DOWN if path[8:] in CountingProtocol.down else OK)
            elif path == b"/count":
                body = str(CountingProtocol.received).encode()
                replies.append(
                    b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body)
                )
            elif path.startswith(b"/fail/"):
                CountingProtocol.down.add(path[6:])
                replies.append(OK)
            elif path.startswith(b"/heal/"):
                CountingProtocol.down.discard(path[6:])
                replies.append(OK)
            else:
                replies.append(NOT_FOUND)
        if replies and self._transport is not None:
            self._transport.write(b"".join(replies))


def scale_file(path: Path, server_url: str, indices: range) -> Path:
    """As tests/cluster/replicas.py's service_file, probed every 10 s: svc-i for each of
    ``indices``."""
    entries = "".join(
        f"""
  - name: svc-{i}
    platform: external
    health:
      http: "{server_url}/health/{i}"
      interval: {SCALE_INTERVAL:g}s
      timeout: {SCALE_TIMEOUT:g}s
      failure_threshold: {SCALE_THRESHOLD}
"""
        for i in indices
    )
    path.write_text("services:" + entries, encoding="utf-8")
    return path


PLACEHOLDER = "bench-placeholder-"
CONTROL = "2 Phoenixes, no PHOENIX_CLUSTER, half each"


def seed_members(url: str, count: int, seconds: float) -> None:
    """Migrate the schema and list ``count`` placeholder members, live for ``seconds``,
    until every replica has started (``drop_placeholders``): so no replica's first
    heartbeat sees itself alone and takes every service (rebalancing then moves 2 leases
    per heartbeat: hours for 10,000). Each replica takes a part at its first heartbeat and
    the rest of its fair share once the placeholders are gone."""
    store = Store(url)
    try:
        store.migrate()
    finally:
        store.close()
    with psycopg.connect(plain(url), autocommit=True) as connection:
        for n in range(count):
            connection.execute(
                "INSERT INTO cluster_members (id, address, version, started_at, heartbeat_at, "
                "expires_at) VALUES (%s, '', '', now(), now(), now() + make_interval(secs => %s))",
                (f"{PLACEHOLDER}{n}", seconds),
            )


def drop_placeholders(url: str) -> None:
    with psycopg.connect(plain(url), autocommit=True) as connection:
        connection.execute("DELETE FROM cluster_members WHERE id LIKE %s", (f"{PLACEHOLDER}%",))


@dataclass
class ScaleResult:
    label: str
    replicas: int
    probes: int = 0
    seconds: float = 0.0
    cpu: float = 0.0
    server_cpu: float = 0.0
    rows: int = 0
    commits: int = 0
    lateness: list[float] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    owns: dict[str, int] = field(default_factory=dict)
    incident_times: list[float] = field(default_factory=list)
    ready_after: float = 0.0
    settled_after: float = 0.0
    note: str = ""

    @property
    def rate(self) -> float:
        return self.probes / self.seconds if self.seconds else 0.0

    @property
    def cpu_per_1000(self) -> float:
        return 1000 * self.cpu / self.probes if self.probes else float("inf")


def db_counters(url: str, schema: str) -> tuple[int, int]:
    """(rows inserted+updated+deleted in the schema's tables, commits in the database)."""
    with psycopg.connect(plain(url), autocommit=True) as connection:
        connection.execute("SELECT pg_stat_clear_snapshot()")
        row = connection.execute(
            "SELECT coalesce(sum(n_tup_ins + n_tup_upd + n_tup_del), 0) FROM pg_stat_user_tables "
            "WHERE schemaname = %s",
            (schema,),
        ).fetchone()
        commits = connection.execute(
            "SELECT xact_commit FROM pg_stat_database WHERE datname = current_database()"
        ).fetchone()
    return int(row[0] if row else 0), int(commits[0] if commits else 0)


def lateness_of(server: PhoenixServer) -> float:
    text = server.get("/metrics", timeout=30).text
    found = re.search(r"^phoenix_probe_lateness_seconds\s+(\S+)", text, re.M)
    return float(found.group(1)) if found else float("nan")


def incident_time(group: BenchReplicas, server_url: str, indices: list[int]) -> list[float]:
    """Make each of ``indices`` fail at once; seconds until its incident is listed by a
    replica (a different one for each, in turn)."""
    servers = list(group.servers.values())
    failed_at = time.monotonic()
    for i in indices:
        get(f"{server_url}/fail/{i}")
    found: dict[int, float] = {}
    deadline = failed_at + 6 * SCALE_INTERVAL
    while len(found) < len(indices) and time.monotonic() < deadline:
        for k, i in enumerate(indices):
            if i in found:
                continue
            server = servers[k % len(servers)]
            try:
                body = server.get("/api/incidents", params={"service": f"svc-{i}"}, timeout=30)
                if body.status_code == 200 and body.json()["incidents"]:
                    found[i] = time.monotonic() - failed_at
            except httpx.HTTPError:
                pass
        time.sleep(0.2)
    for i in indices:
        get(f"{server_url}/heal/{i}")
    return [found.get(i, float("inf")) for i in indices]


def one_scale(
    args: argparse.Namespace,
    label: str,
    count: int,
    clustered: bool,
    configs: list[Path],
    server: subprocess.Popen[bytes],
    server_url: str,
    tmp: Path,
) -> ScaleResult:
    result = ScaleResult(label, count)
    print(f"\nscale: {label}", flush=True)
    with postgres_schema() as (url, schema):
        group = BenchReplicas(
            tmp / re.sub(r"[^A-Za-z0-9]+", "-", label),
            configs[0],
            url,
            count,
            lease=args.scale_lease,
            cluster=clustered,
            ready_timeout=args.ready_timeout,
            configs=configs if len(configs) > 1 else (),
        )
        try:
            seeded = clustered and count > 1 and not args.no_seed
            if seeded:
                seed_members(url, count, args.ready_timeout)
            started = time.monotonic()
            group.start_all()
            result.ready_after = time.monotonic() - started
            names = [f"svc-{i}" for i in range(args.services)]
            if seeded:
                wait_until(
                    lambda: {m["id"] for m in group.cluster()["members"] if m["live"]}.issuperset(
                        group.names
                    ),
                    timeout=args.ready_timeout,
                    interval=0.5,
                    message="every replica a member",
                )
                drop_placeholders(url)
            if clustered:
                try:
                    wait_until(
                        lambda: group.settled(names),
                        timeout=args.ready_timeout,
                        interval=1.0,
                        message="every lease held",
                    )
                except AssertionError:
                    result.note = "not every lease held before the window"
            result.settled_after = time.monotonic() - started
            print(
                f"  ready after {result.ready_after:.1f} s, leases settled after "
                f"{result.settled_after:.1f} s; warm-up {args.warmup:g} s",
                flush=True,
            )
            time.sleep(args.warmup)
            procs = [psutil.Process(s.process.pid) for s in group.servers.values() if s.process]
            counter = psutil.Process(server.pid)
            count_before = int(get(f"{server_url}/count"))
            cpu_before = sum(cpu_seconds(p) for p in procs)
            server_before = cpu_seconds(counter)
            rows_before, commits_before = db_counters(url, schema)
            began = time.perf_counter()
            time.sleep(args.seconds)
            count_after = int(get(f"{server_url}/count"))
            cpu_after = sum(cpu_seconds(p) for p in procs)
            server_after = cpu_seconds(counter)
            rows_after, commits_after = db_counters(url, schema)
            result.seconds = time.perf_counter() - began
            result.probes = count_after - count_before
            result.cpu = cpu_after - cpu_before
            result.server_cpu = server_after - server_before
            result.rows = rows_after - rows_before
            result.commits = commits_after - commits_before
            for each in group.servers.values():
                result.lateness.append(lateness_of(each))
                health = each.get("/health", timeout=30).json()
                result.warnings += health.get("warnings", [])
            if clustered:
                result.owns = {m["id"]: m["owns"] for m in group.cluster()["members"] if m["live"]}
            step = max(1, args.services // 3)
            samples = [(17 + k * step) % args.services for k in range(3)]
            result.incident_times = incident_time(group, server_url, samples)
            report_scale_line(result, args)
        finally:
            group.close()
    return result


def report_scale_line(result: ScaleResult, args: argparse.Namespace) -> None:
    offered = args.services / SCALE_INTERVAL
    lateness = ", ".join(f"{x:.2f}" for x in result.lateness)
    times = ", ".join(f"{x:.1f}" for x in result.incident_times)
    print(
        f"  {result.rate:,.0f} probes/s landed ({result.rate / offered:.1%} of {offered:,.0f}), "
        f"CPU {result.cpu / result.seconds:.2f} cores = {result.cpu_per_1000:.3f} CPU-s per "
        f"1,000 probes; DB {result.rows / result.seconds:,.0f} rows/s written in the schema, "
        f"{result.commits / result.seconds:,.1f} commits/s in the database; lateness "
        f"[{lateness}] s; failure → incident [{times}] s; owns {result.owns}",
        flush=True,
    )
    for warning in sorted(set(result.warnings)):
        print(f"  warning: {warning}")


def run_scale(args: argparse.Namespace) -> list[ScaleResult]:
    children = Children()
    results: list[ScaleResult] = []
    plans = [("1 replica, no PHOENIX_CLUSTER (today)", 1, False)] if not args.no_baseline else []
    plans += [(f"{n} replica{'s' if n > 1 else ''}", n, True) for n in args.counts]
    if not args.no_baseline and 2 in args.counts:
        # The control: the same work split over two processes with no ownership at all.
        plans.insert(2 if len(plans) > 2 else len(plans), (CONTROL, 2, False))
    with workdir(args, "phoenix-bench-scale-") as tmp_name:
        tmp = Path(tmp_name)
        try:
            me = [sys.executable, "-m", "bench.replicas", "--serve"]
            server = children.start(me, cwd=ROOT, stdout=subprocess.PIPE)
            port = int(cast(IO[bytes], server.stdout).readline() or b"0")
            if not port:
                raise RuntimeError("the counting server did not start")
            server_url = f"http://127.0.0.1:{port}"
            config = scale_file(tmp / "phoenix.yaml", server_url, range(args.services))
            half = args.services // 2
            halves = [
                scale_file(tmp / "first-half.yaml", server_url, range(half)),
                scale_file(tmp / "second-half.yaml", server_url, range(half, args.services)),
            ]
            print(
                f"\nscale: {args.services:,} external services, HTTP every {SCALE_INTERVAL:g} s "
                f"(offered {args.services / SCALE_INTERVAL:,.0f} probes/s), lease "
                f"{args.scale_lease:g} s, warm-up {args.warmup:g} s, window {args.seconds:g} s",
                flush=True,
            )
            for label, count, clustered in plans:
                configs = halves if label == CONTROL else [config]
                results.append(
                    one_scale(args, label, count, clustered, configs, server, server_url, tmp)
                )
        finally:
            children.stop_all()
    summarise_scale(args, results)
    return results


def summarise_scale(args: argparse.Namespace, results: list[ScaleResult]) -> None:
    offered = args.services / SCALE_INTERVAL
    print(f"\nscale summary: {args.services:,} services every {SCALE_INTERVAL:g} s")
    print(
        f"{'':38} {'probes/s':>9} {'of offered':>10} {'CPU-s/1000':>11} {'cores':>6} "
        f"{'rows/s':>8} {'commits/s':>10} {'late max':>9} {'fail→incident med':>18}"
    )
    for r in results:
        finite = [x for x in r.incident_times if x != float("inf")]
        incident = f"{statistics.median(finite):.1f} s" if finite else "none"
        late = max(r.lateness) if r.lateness else float("nan")
        print(
            f"{r.label:38} {r.rate:9,.0f} {r.rate / offered:10.1%} {r.cpu_per_1000:11.3f} "
            f"{r.cpu / r.seconds:6.2f} {r.rows / r.seconds:8,.0f} "
            f"{r.commits / r.seconds:10,.1f} {late:9.2f} {incident:>18}"
        )
    one = next((r for r in results if r.label == "1 replica"), None)
    today = next((r for r in results if "today" in r.label), None)
    two = next((r for r in results if r.label == "2 replicas"), None)
    control = next((r for r in results if r.label == CONTROL), None)
    met = {True: "met", False: "NOT met"}
    for r in results:
        if one is not None and r is not one and r.probes:
            print(f"per-probe cost {r.label} / 1 replica: {r.cpu_per_1000 / one.cpu_per_1000:.2f}x")
        if today is not None and r is not today and r.probes:
            print(
                f"per-probe cost {r.label} / 1 replica without cluster: "
                f"{r.cpu_per_1000 / today.cpu_per_1000:.2f}x"
            )
    if two is not None:
        on_time = two.rate >= 0.99 * offered and all(x < 1.0 for x in two.lateness)
        print(
            f"target: {args.services:,} services held with every probe on time by 2 replicas: "
            f"{met[on_time]} ({two.rate / offered:.1%} landed, lateness max "
            f"{max(two.lateness, default=float('nan')):.2f} s)"
        )
        if one is not None:
            ratio = two.cpu_per_1000 / one.cpu_per_1000
            print(
                f"target: per-probe cost of 2 replicas ≤ {COST_TARGET}x one replica's: "
                f"{met[ratio <= COST_TARGET]} ({ratio:.2f}x)"
            )
        if control is not None and control.probes and two.probes:
            print(
                "what ownership itself costs: 2 replicas / 2 separate Phoenixes splitting the "
                f"services (control): {two.cpu_per_1000 / control.cpu_per_1000:.2f}x"
            )


# -- main ------------------------------------------------------------------------------------


def _on_sigterm(signum: int, frame: object) -> None:
    raise SystemExit(128 + signum)


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.replicas", description=__doc__)
    parser.add_argument("--only", choices=("takeover", "sigstop", "scale"), action="append")
    parser.add_argument("--trials", type=int, default=100, help="per kind of takeover")
    parser.add_argument("--lease", type=float, default=2.0, help="seconds, takeover runs")
    parser.add_argument("--services", type=int, default=10_000, help="scale: services")
    parser.add_argument("--seconds", type=float, default=30.0, help="scale: measured window")
    parser.add_argument("--warmup", type=float, default=20.0, help="scale: before the window")
    parser.add_argument(
        "--counts", type=int, nargs="+", default=[1, 2, 3], help="scale: replica counts"
    )
    parser.add_argument(
        "--scale-lease", type=float, default=10.0, help="scale: lease seconds (the default)"
    )
    parser.add_argument("--ready-timeout", type=float, default=240.0, help="scale: start-up")
    parser.add_argument("--no-baseline", action="store_true", help="scale: skip no-cluster")
    parser.add_argument("--no-seed", action="store_true", help="scale: no pre-listed members")
    parser.add_argument("--keep", action="store_true", help="keep the replicas' logs")
    parser.add_argument("--verbose", action="store_true", help="a line per trial")
    parser.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.serve:
        serve_counter(CountingProtocol)
        return
    signal.signal(signal.SIGTERM, _on_sigterm)
    chosen = args.only or ["takeover", "sigstop", "scale"]
    print_machine()
    if "takeover" in chosen:
        run_takeover(args, signal.SIGKILL)
    if "sigstop" in chosen:
        run_takeover(args, signal.SIGSTOP)
    if "scale" in chosen:
        run_scale(args)


if __name__ == "__main__":
    main(sys.argv[1:])
