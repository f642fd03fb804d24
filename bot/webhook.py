"""POST /webhook: read → verify → ledger → 202.

Nothing slow runs in the request: the delivery is checked, written to the ledger (committed
before the answer) and left to the dispatcher. Bad input gets a clear 4xx, never a 5xx.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import msgspec
import orjson
from aiohttp import web

from bot.store.base import Delivery, Store, StoreError

log = logging.getLogger(__name__)

MAX_BODY_BYTES = 25 * 1024 * 1024  # GitHub caps payloads at 25 MB
NOT_RECORDED = (
    "The delivery could not be recorded ({error}). Nothing was lost on GitHub's side: "
    "redeliver it from the App's advanced settings (Recent Deliveries) once the server is healthy."
)


class WebhookRejected(Exception):
    """A delivery that must be answered with a 4xx."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status
        self.message = message


@dataclass(frozen=True, slots=True)
class ParsedDelivery:
    delivery_id: str
    event: str
    action: str
    repo: str
    installation_id: int | None


def verify_signature(body: bytes, secret: bytes, header: str | None, sha1_header: str | None) -> None:
    """Check ``X-Hub-Signature-256`` in constant time. SHA-1-only signatures are refused."""
    if not header:
        if sha1_header:
            raise WebhookRejected(
                401,
                "Only an X-Hub-Signature (SHA-1) header was sent; SHA-1 signatures are not "
                "accepted. GitHub sends X-Hub-Signature-256 when the webhook has a secret.",
            )
        raise WebhookRejected(
            401, "Missing X-Hub-Signature-256 header: deliveries must be signed with the webhook secret."
        )
    algo, _, digest = header.partition("=")
    if algo != "sha256" or not digest:
        raise WebhookRejected(401, "Malformed X-Hub-Signature-256 header: expected 'sha256=<hex digest>'.")
    expected = hmac.new(secret, body, hashlib.sha256).hexdigest()
    if not hmac.compare_digest(expected, digest.strip().lower()):
        raise WebhookRejected(401, "Signature does not match: check that the webhook secret is the same on both sides.")


class _Repository(msgspec.Struct):
    full_name: str = ""


class _Installation(msgspec.Struct):
    id: int = 0


class _Envelope(msgspec.Struct):
    """The only fields of a payload the ledger keeps in columns of their own."""

    action: str = ""
    repository: _Repository | None = None
    installation: _Installation | None = None


_ENVELOPE = msgspec.json.Decoder(_Envelope)


def parse_delivery(headers: Any, body: bytes) -> ParsedDelivery:
    """Check that the body is a JSON object and read the event, delivery id, action,
    repository and installation from it.

    Only those fields are built: msgspec checks the syntax of the whole body while it skips
    the rest, so no parsed payload exists (nothing for the garbage collector while the
    request waits for the ledger, and a fraction of a full parse's time). Strings it skips
    are not checked for UTF-8, so a body that is not ASCII is decoded once to check that.
    Fields of unexpected types (never sent by GitHub) are read leniently as missing.
    """
    try:
        if not body.isascii():
            body.decode("utf-8")
        envelope = _ENVELOPE.decode(body)
        action = envelope.action
        repo = envelope.repository.full_name if envelope.repository is not None else ""
        installation_id = envelope.installation.id if envelope.installation is not None else None
    except msgspec.ValidationError:  # (a DecodeError too: first)
        action, repo, installation_id = _read_leniently(body)
    except (msgspec.DecodeError, UnicodeDecodeError) as exc:
        raise WebhookRejected(400, f"Body is not valid JSON: {exc}") from None
    return ParsedDelivery(
        delivery_id=headers.get("X-GitHub-Delivery", "").strip(),
        event=headers.get("X-GitHub-Event", "").strip(),
        action=action,
        repo=repo,
        installation_id=installation_id,
    )


def _read_leniently(body: bytes) -> tuple[str, str, int | None]:
    """The slow path for valid JSON whose fields have unexpected types: (action, repository,
    installation id), each missing where it is not of the type GitHub sends."""
    payload = msgspec.json.decode(body)
    if not isinstance(payload, dict):
        raise WebhookRejected(400, "Body must be a JSON object.")
    action = payload.get("action")
    repo = payload.get("repository")
    installation = payload.get("installation")
    full_name = repo.get("full_name") if isinstance(repo, dict) else None
    inst_id = installation.get("id") if isinstance(installation, dict) else None
    return (
        action if isinstance(action, str) else "",
        full_name if isinstance(full_name, str) else "",
        inst_id if isinstance(inst_id, int) and not isinstance(inst_id, bool) else None,
    )


def check_headers(headers: Any) -> None:
    missing = [h for h in ("X-GitHub-Event", "X-GitHub-Delivery") if not headers.get(h, "").strip()]
    if missing:
        raise WebhookRejected(400, f"Missing header(s): {', '.join(missing)}. Is this a GitHub webhook?")
    if len(headers["X-GitHub-Delivery"]) > 200 or len(headers["X-GitHub-Event"]) > 100:
        raise WebhookRejected(400, "X-GitHub-Delivery or X-GitHub-Event header is too long.")


def check_content_type(content_type: str) -> None:
    if content_type != "application/json":
        raise WebhookRejected(
            415,
            f"Content type {content_type or '(none)'} is not supported: set the webhook's "
            "content type to application/json.",
        )


def json_answer(data: dict[str, Any], status: int) -> web.Response:
    """A small JSON answer (cheaper than ``web.json_response``)."""
    return web.Response(body=orjson.dumps(data), status=status, content_type="application/json")


class WebhookIngress:
    """The request handler. ``on_recorded`` wakes the dispatcher (it must be cheap)."""

    def __init__(
        self,
        store: Store,
        secret: str,
        *,
        clock: Callable[[], datetime],
        on_recorded: Callable[[], None] | None = None,
        on_result: Callable[[str], None] | None = None,
    ):
        if not secret:
            raise ValueError("a webhook secret is required")
        self._store = store
        self._secret = secret.encode()
        self._clock = clock
        #: Wakes the dispatcher after a new delivery was recorded (must be cheap).
        self.on_recorded = on_recorded
        #: Counts outcomes for metrics: "accepted", "duplicate", "rejected" or "unrecorded".
        self.on_result = on_result

    async def handle(self, request: web.Request) -> web.Response:
        try:
            return await self._handle(request)
        except WebhookRejected as exc:
            log.info("webhook rejected (%s): %s", exc.status, exc.message)
            if self.on_result is not None:
                self.on_result("rejected")
            return json_answer({"error": exc.message}, exc.status)
        except StoreError as exc:
            log.error("webhook not recorded: %s", exc)
            if self.on_result is not None:
                self.on_result("unrecorded")
            return json_answer({"error": NOT_RECORDED.format(error=exc)}, 503)

    async def _handle(self, request: web.Request) -> web.Response:
        length = request.content_length
        if length is not None and length > MAX_BODY_BYTES:
            raise WebhookRejected(413, "Payload over 25 MiB.")
        check_content_type(request.content_type)
        check_headers(request.headers)
        try:
            body = await request.read()
        except web.HTTPRequestEntityTooLarge:
            raise WebhookRejected(413, "Payload over 25 MiB.") from None
        if len(body) > MAX_BODY_BYTES:
            raise WebhookRejected(413, "Payload over 25 MiB.")
        verify_signature(
            body,
            self._secret,
            request.headers.get("X-Hub-Signature-256"),
            request.headers.get("X-Hub-Signature"),
        )
        parsed = parse_delivery(request.headers, body)
        inserted = await self._store.record_delivery(
            Delivery(
                id=parsed.delivery_id,
                event=parsed.event,
                action=parsed.action,
                repo=parsed.repo,
                installation_id=parsed.installation_id,
                payload=body,
                received_at=self._clock(),
            )
        )
        if self.on_result is not None:
            self.on_result("accepted" if inserted else "duplicate")
        if not inserted:
            return json_answer({"status": "duplicate", "delivery": parsed.delivery_id}, 200)
        if self.on_recorded is not None:
            self.on_recorded()
        if parsed.event == "ping":
            return json_answer({"status": "pong", "delivery": parsed.delivery_id}, 200)
        return json_answer({"status": "accepted", "delivery": parsed.delivery_id}, 202)
