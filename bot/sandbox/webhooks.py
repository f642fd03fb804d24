"""Signed webhook deliveries with GitHub's header set, sent in order by one background task.

GitHub never retries a failed delivery by itself; it keeps a delivery log and offers
"Redeliver", which sends the same body with the same ``X-GitHub-Delivery``. So does this sender.

Every delivery queued is validated against GitHub's webhook schemas
(:mod:`.webhook_schemas`); each problem becomes a ``webhook`` violation through the
``record_violation`` callback, like the REST checks' violations.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import aiohttp

from .faults import FaultInjector
from .state import Delivery, Violation
from .webhook_schemas import WebhookSchemas, default_schemas

USER_AGENT = "GitHub-Hookshot/5e3f0c1"
RESPONSE_BODY_LIMIT = 4096


@dataclass(frozen=True)
class WebhookTarget:
    """Where one App's deliveries go."""

    app_id: int
    hook_id: int
    url: str | None
    secret: str | None
    installation_id: int | None


def signature_headers(secret: str | None, body: bytes) -> dict[str, str]:
    """``X-Hub-Signature`` (SHA-1) and ``X-Hub-Signature-256`` as GitHub sends them."""
    if not secret:
        return {}
    key = secret.encode()
    return {
        "X-Hub-Signature": "sha1=" + hmac.new(key, body, hashlib.sha1).hexdigest(),
        "X-Hub-Signature-256": "sha256=" + hmac.new(key, body, hashlib.sha256).hexdigest(),
    }


def encode_payload(payload: dict[str, Any]) -> bytes:
    return json.dumps(payload, separators=(",", ":"), ensure_ascii=False).encode()


class WebhookSender:
    """Queues deliveries and posts them one at a time, recording each outcome."""

    def __init__(
        self,
        *,
        clock: Callable[[], float],
        faults: FaultInjector,
        timeout: float = 10.0,
        record_violation: Callable[[Violation], None] | None = None,
        schemas: WebhookSchemas | None = None,
    ) -> None:
        """``record_violation`` receives one violation per schema problem of a queued payload
        (None: payloads are not validated); ``schemas`` defaults to the shipped ones, loaded on
        the first delivery."""
        self._clock = clock
        self._faults = faults
        self._timeout = timeout
        self._record_violation = record_violation
        self._schemas = schemas
        self._queue: asyncio.Queue[Delivery] | None = None
        self._task: asyncio.Task[None] | None = None
        self._session: aiohttp.ClientSession | None = None
        self._log: list[Delivery] = []
        self._next_id = 1
        self._by_id: dict[int, Delivery] = {}

    # -- lifecycle -------------------------------------------------------------------------
    async def start(self) -> None:
        if self._task is not None:
            return
        self._queue = asyncio.Queue()
        self._session = aiohttp.ClientSession(
            timeout=aiohttp.ClientTimeout(total=self._timeout),
            headers={"User-Agent": USER_AGENT},
        )
        for delivery in self._log:  # queued before start
            if delivery.status == "pending":
                self._queue.put_nowait(delivery)
        self._task = asyncio.create_task(self._run(), name="emulator-webhook-sender")

    async def drain(self) -> None:
        """Wait until every queued delivery has been attempted."""
        if self._queue is not None:
            await self._queue.join()

    async def stop(self) -> None:
        if self._task is None:
            return
        await self.drain()
        self._task.cancel()
        try:
            await self._task
        except asyncio.CancelledError:
            pass
        self._task = None
        if self._session is not None:
            await self._session.close()
            self._session = None
        self._queue = None

    # -- queueing --------------------------------------------------------------------------
    def enqueue(
        self,
        target: WebhookTarget,
        event: str,
        payload: dict[str, Any],
        *,
        repository: str | None = None,
    ) -> Delivery:
        body = encode_payload(payload)
        guid = str(uuid.uuid4())
        headers = {
            "Accept": "*/*",
            "Content-Type": "application/json",
            "User-Agent": USER_AGENT,
            "X-GitHub-Delivery": guid,
            "X-GitHub-Event": event,
            "X-GitHub-Hook-ID": str(target.hook_id),
            "X-GitHub-Hook-Installation-Target-ID": str(target.app_id),
            "X-GitHub-Hook-Installation-Target-Type": "integration",
            **signature_headers(target.secret, body),
        }
        delivery = self._record(
            guid=guid,
            target=target,
            event=event,
            action=payload.get("action") if isinstance(payload.get("action"), str) else None,
            repository=repository,
            headers=headers,
            body=body,
            redelivery=False,
        )
        self._validate(delivery)
        if target.url is None:
            delivery.status = "failed"
            delivery.error = "the app has no webhook URL"
        elif self._faults.drop_delivery():
            delivery.status = "dropped"
        elif self._queue is not None:
            self._queue.put_nowait(delivery)
        return delivery

    def _validate(self, delivery: Delivery) -> None:
        """Record a violation for each way the delivered body breaks GitHub's webhook schemas."""
        if self._record_violation is None:
            return
        if self._schemas is None:
            self._schemas = default_schemas()
        for problem in self._schemas.problems(delivery.event, json.loads(delivery.body)):
            self._record_violation(
                Violation(
                    kind="webhook",
                    method="POST",
                    path=delivery.url or "",
                    operation_id=problem.kind,
                    status=0,
                    errors=({**problem.as_dict(), "delivery": delivery.id, "guid": delivery.guid},),
                    time=self._clock(),
                )
            )

    def redeliver(self, delivery_id: int) -> Delivery:
        """Send a logged delivery again: same body, same ``X-GitHub-Delivery``."""
        original = self._by_id[delivery_id]
        target = WebhookTarget(
            original.app_id,
            int(original.headers["X-GitHub-Hook-ID"]),
            original.url,
            None,
            original.installation_id,
        )
        delivery = self._record(
            guid=original.guid,
            target=target,
            event=original.event,
            action=original.action,
            repository=original.repository,
            headers=dict(original.headers),
            body=original.body,
            redelivery=True,
        )
        if delivery.url is None:
            delivery.status = "failed"
            delivery.error = "the app has no webhook URL"
        elif self._queue is not None:
            self._queue.put_nowait(delivery)
        return delivery

    def _record(
        self,
        *,
        guid: str,
        target: WebhookTarget,
        event: str,
        action: str | None,
        repository: str | None,
        headers: dict[str, str],
        body: bytes,
        redelivery: bool,
    ) -> Delivery:
        delivery = Delivery(
            id=self._next_id,
            guid=guid,
            app_id=target.app_id,
            event=event,
            action=action,
            installation_id=target.installation_id,
            repository=repository,
            url=target.url,
            headers=headers,
            body=body,
            created_at=self._clock(),
            redelivery=redelivery,
        )
        self._next_id += 1
        self._log.append(delivery)
        self._by_id[delivery.id] = delivery
        return delivery

    def deliveries(self) -> list[Delivery]:
        return list(self._log)

    def get(self, delivery_id: int) -> Delivery | None:
        return self._by_id.get(delivery_id)

    # -- sending ---------------------------------------------------------------------------
    async def _run(self) -> None:
        assert self._queue is not None
        while True:
            delivery = await self._queue.get()
            try:
                await self._send(delivery)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # one bad delivery must not stop the sender
                delivery.status = "failed"
                delivery.error = f"{type(exc).__name__}: {exc}"
            finally:
                self._queue.task_done()

    async def _send(self, delivery: Delivery) -> None:
        assert self._session is not None and delivery.url is not None
        started = time.monotonic()
        try:
            async with self._session.post(
                delivery.url, data=delivery.body, headers=delivery.headers
            ) as response:
                text = await response.text(errors="replace")
                delivery.status_code = response.status
                delivery.response_body = text[:RESPONSE_BODY_LIMIT]
                delivery.status = "delivered" if 200 <= response.status < 300 else "failed"
        except (aiohttp.ClientError, asyncio.TimeoutError, OSError, ValueError) as exc:
            delivery.status = "failed"
            delivery.error = f"{type(exc).__name__}: {exc}"
        delivery.duration = round(time.monotonic() - started, 6)
