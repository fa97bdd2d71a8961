"""Alerts through a durable outbox: written when the event happens, delivered in the
background, retried with exponential backoff, never lost across a Phoenix restart, never in
a recovery's way, and once per event however often delivery is retried.

Each alert is POSTed to ``ALERT_WEBHOOK`` as JSON with ``X-Phoenix-Alert`` (its id: a
receiver drops a repeat it already has) and, with ``ALERT_WEBHOOK_SECRET``,
``X-Phoenix-Signature: sha256=<HMAC-SHA256 of the body>``. A 2xx answer is delivery.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import logging
from datetime import timedelta

import aiohttp

from phoenix_server.domain import ids
from phoenix_server.domain.alerts import Alert, AlertKind
from phoenix_server.domain.clock import Clock
from phoenix_server.domain.errors import StaleOwnerError, UnavailableError
from phoenix_server.domain.incidents import Incident
from phoenix_server.domain.recoveries import Recovery
from phoenix_server.recovery.ports import AlertQueue
from phoenix_server.support.tasks import SupervisedTasks

log = logging.getLogger("phoenix.alerts")

FIRST_RETRY = 1.0
MAX_RETRY = 300.0
SEND_TIMEOUT = 5.0
LOOK_EVERY = 1.0


def signature(secret: str, body: bytes) -> str:
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


class Alerter:
    def __init__(
        self,
        queue: AlertQueue,
        clock: Clock,
        *,
        webhook: str | None,
        secret: str | None,
        on_success: bool = False,
    ) -> None:
        self._queue = queue
        self._clock = clock
        self._webhook = webhook
        self._secret = secret
        self._on_success = on_success
        self._wake = asyncio.Event()
        self._tasks = SupervisedTasks("alerts")
        self._failing: dict[str, str] = {}
        """Alerts whose last delivery attempt failed, with why."""

    @property
    def tasks(self) -> SupervisedTasks:
        """Its background tasks (their deaths are reported by /health)."""
        return self._tasks

    @property
    def problem(self) -> str | None:
        """Why alerts are not reaching the webhook, if they are not (for ``/health``)."""
        if not self._failing:
            return None
        last = next(reversed(self._failing.values()))
        return (
            f"{len(self._failing)} alert(s) not delivered to ALERT_WEBHOOK yet (last: {last}); "
            "Phoenix keeps retrying them"
        )

    # -- raising ------------------------------------------------------------------------------

    def raise_alert(
        self,
        kind: AlertKind,
        *,
        service: str,
        text: str,
        recovery: Recovery | None = None,
        incident: Incident | None = None,
        tried: tuple[str, ...] = (),
        event: str | None = None,
    ) -> None:
        """Queue an alert for this event (returns at once; the write happens beside).
        ``event`` names the event when no recovery or incident does (one alert per event)."""
        if self._webhook is None:
            log.warning("%s: %s (no ALERT_WEBHOOK: not sent)", service, text)
            return
        if kind is AlertKind.RECOVERY_SUCCEEDED and not self._on_success:
            return
        if event is None:
            event = recovery.id if recovery is not None else (incident.id if incident else service)
        once_per_incident = (
            AlertKind.ATTEMPTS_EXHAUSTED,
            AlertKind.CASCADING,
            AlertKind.BUDGET_SPENT,
            AlertKind.CANNOT_RECOVER,
        )
        if kind in once_per_incident and incident is not None:
            event = incident.id
        alert = Alert(
            id=ids.new_id(ids.ALERT),
            dedup_key=f"{kind.value}:{event}",
            kind=kind,
            service=service,
            created_at=self._clock.now(),
            text=f"[phoenix] {service}: {text}",
            recovery_id=recovery.id if recovery else None,
            incident_id=incident.id if incident else (recovery.incident_id if recovery else None),
            tried=tried,
        )
        self._tasks.spawn(self._enqueue(alert), name=f"enqueue-{alert.id}")

    async def _enqueue(self, alert: Alert) -> None:
        delay = 0.5
        while True:
            try:
                if await self._queue.enqueue(alert):
                    log.info("%s: alert %s queued: %s", alert.service, alert.id, alert.text)
                self._wake.set()
                return
            except StaleOwnerError as exc:
                # Raised by a replica that has since lost the service: its new owner
                # judges the service itself and alerts if it must.
                log.warning("alert %s not queued: %s", alert.id, exc.message)
                return
            except UnavailableError as exc:
                log.warning("alert %s not queued yet (%s); retrying", alert.id, exc.message)
                await self._clock.sleep(delay)
                delay = min(delay * 2, 30.0)

    # -- delivering ---------------------------------------------------------------------------

    def start(self) -> None:
        if self._webhook is not None:
            self._tasks.keep_running(self._deliver_forever, name="deliver")

    async def close(self) -> None:
        await self._tasks.close(timeout=5.0)

    async def _deliver_forever(self) -> None:
        timeout = aiohttp.ClientTimeout(total=SEND_TIMEOUT)
        async with aiohttp.ClientSession(timeout=timeout) as session:
            while True:
                try:
                    await self.deliver_due(session)
                except UnavailableError as exc:
                    log.warning("alerts wait for the database: %s", exc.message)
                except Exception:
                    # Sending must outlive any one bad turn: the outbox keeps the alerts.
                    log.exception("alert delivery failed; trying again")
                self._wake.clear()
                try:
                    async with asyncio.timeout(LOOK_EVERY):
                        await self._wake.wait()
                except TimeoutError:
                    pass

    async def deliver_due(self, session: aiohttp.ClientSession) -> None:
        assert self._webhook is not None
        for alert_id, body, tries in await self._queue.due(self._clock.now()):
            headers = {"Content-Type": "application/json", "X-Phoenix-Alert": alert_id}
            if self._secret:
                headers["X-Phoenix-Signature"] = signature(self._secret, body)
            error = ""
            try:
                async with session.post(self._webhook, data=body, headers=headers) as answer:
                    await answer.read()
                    if 200 <= answer.status < 300:
                        await self._queue.delivered(alert_id, self._clock.now())
                        self._failing.pop(alert_id, None)
                        continue
                    error = f"the webhook answered {answer.status}"
            except (aiohttp.ClientError, TimeoutError, OSError) as exc:
                error = f"{exc.__class__.__name__}: {exc}"
            wait = min(MAX_RETRY, FIRST_RETRY * 2**tries)
            log.warning("alert %s not delivered (%s); again in %gs", alert_id, error, wait)
            retry_at = self._clock.now() + timedelta(seconds=wait)
            self._failing.pop(alert_id, None)
            self._failing[alert_id] = error  # newest last
            await self._queue.failed(alert_id, retry_at, error)
