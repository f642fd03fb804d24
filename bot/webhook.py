"""POST /webhook: read → verify → ledger → 202.

Nothing slow runs in the request: the delivery is checked, written to the ledger (committed
before the answer) and left to the dispatcher. Bad input gets a clear 4xx, never a 5xx.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import msgspec
import orjson
from aiohttp import web
from aiohttp.web_protocol import RequestPayloadError

from bot.store.base import INT64_MAX, INT64_MIN, Delivery, Store, StoreError

log = logging.getLogger(__name__)

MAX_BODY_BYTES = 25 * 1024 * 1024  # GitHub caps payloads at 25 MB
#: Longest X-GitHub-Delivery (GitHub's are 36-character UUIDs) and X-GitHub-Event accepted.
MAX_DELIVERY_ID_CHARS = 200
MAX_EVENT_CHARS = 100
NOT_RECORDED = (
    "The delivery could not be recorded ({error}). Nothing was lost on GitHub's side: "
    "redeliver it from the App's advanced settings (Recent Deliveries) once the server is healthy."
)
COMPRESSED_BODY = (
    "Compressed bodies (Content-Encoding) are not accepted: GitHub sends webhook bodies uncompressed."
)
PAYLOAD_TOO_LARGE = "Payload over 25 MiB."
BODY_NOT_READ = "The request body could not be read: the connection broke or the body was malformed."
MALFORMED_SIGNATURE = "Malformed X-Hub-Signature-256 header: expected 'sha256=<hex digest>'."
HEADER_TOO_LONG = "{name} header is too long (at most {limit} characters)."
HEADER_NOT_PRINTABLE = "{name} header must be printable ASCII (GitHub sends a UUID and an event name)."
INSTALLATION_ID_OUT_OF_RANGE = "installation.id must be an integer of at most 64 bits (signed)."
NESTED_TOO_DEEPLY = "Body is not valid JSON for a webhook: it is nested too deeply."
NOT_AN_OBJECT = "Body must be a JSON object."


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
    sender: str = ""  # the payload's sender.login ("" when it names none)


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
    if algo != "sha256" or not digest or not digest.isascii():
        raise WebhookRejected(401, MALFORMED_SIGNATURE)
    expected = hmac.new(secret, body, hashlib.sha256).hexdigest()
    if not hmac.compare_digest(expected, digest.strip().lower()):
        raise WebhookRejected(401, "Signature does not match: check that the webhook secret is the same on both sides.")


class _Repository(msgspec.Struct):
    full_name: str = ""


class _Installation(msgspec.Struct):
    id: int = 0


class _Sender(msgspec.Struct):
    login: str = ""


class _Envelope(msgspec.Struct):
    """The only fields of a payload the ledger keeps in columns of their own."""

    action: str = ""
    repository: _Repository | None = None
    installation: _Installation | None = None
    sender: _Sender | None = None


class _RawEnvelope(msgspec.Struct):
    """The same fields, each kept as its JSON text (the slow path reads each by itself)."""

    action: msgspec.Raw = msgspec.Raw()
    repository: msgspec.Raw = msgspec.Raw()
    installation: msgspec.Raw = msgspec.Raw()
    sender: msgspec.Raw = msgspec.Raw()


class _RawRepository(msgspec.Struct):
    full_name: msgspec.Raw = msgspec.Raw()


class _RawInstallation(msgspec.Struct):
    id: msgspec.Raw = msgspec.Raw()


class _RawSender(msgspec.Struct):
    login: msgspec.Raw = msgspec.Raw()


_ENVELOPE = msgspec.json.Decoder(_Envelope)
_RAW_ENVELOPE = msgspec.json.Decoder(_RawEnvelope)


def parse_delivery(headers: Any, body: bytes) -> ParsedDelivery:
    """Check that the body is a JSON object and read the event, delivery id, action,
    repository, installation and sender's login from it.

    Only those fields are built: msgspec checks the syntax of the whole body while it skips
    the rest, so no parsed payload exists (nothing for the garbage collector while the
    request waits for the ledger, and a fraction of a full parse's time). Strings it skips
    are not checked for UTF-8, so a body that is not ASCII is decoded once to check that.
    Fields of unexpected types (never sent by GitHub) are read leniently as missing, except
    an ``installation.id`` that is a number the ledger cannot hold (a 400), as is a body
    nested deeper than the parser goes.
    """
    try:
        if not body.isascii():
            body.decode("utf-8")
        try:
            envelope = _ENVELOPE.decode(body)
        except msgspec.ValidationError:  # (a DecodeError too)
            action, repo, installation_id, sender = _read_leniently(body)
        else:
            action = envelope.action
            repo = envelope.repository.full_name if envelope.repository is not None else ""
            installation_id = envelope.installation.id if envelope.installation is not None else None
            sender = envelope.sender.login if envelope.sender is not None else ""
    except (msgspec.DecodeError, UnicodeDecodeError) as exc:
        raise WebhookRejected(400, f"Body is not valid JSON: {exc}") from None
    except RecursionError:
        raise WebhookRejected(400, NESTED_TOO_DEEPLY) from None
    if installation_id is not None and not INT64_MIN <= installation_id <= INT64_MAX:
        raise WebhookRejected(400, INSTALLATION_ID_OUT_OF_RANGE)
    return ParsedDelivery(
        delivery_id=headers.get("X-GitHub-Delivery", "").strip(),
        event=headers.get("X-GitHub-Event", "").strip(),
        action=action,
        repo=repo,
        installation_id=installation_id,
        sender=sender,
    )


def _read_leniently(body: bytes) -> tuple[str, str, int | None, str]:
    """The slow path for valid JSON whose fields have unexpected types: (action, repository,
    installation id, sender's login), each missing where it is not of the type GitHub sends.
    Each field is read by itself, so a value out of range elsewhere in the body is skipped,
    as above."""
    try:
        fields = _RAW_ENVELOPE.decode(body)
    except msgspec.ValidationError:
        raise WebhookRejected(400, NOT_AN_OBJECT) from None
    repository = _loose(fields.repository, _RawRepository)
    installation = _loose(fields.installation, _RawInstallation)
    sender = _loose(fields.sender, _RawSender)
    return (
        _loose(fields.action, str) or "",
        (_loose(repository.full_name, str) if repository is not None else None) or "",
        _installation_id(installation.id) if installation is not None else None,
        (_loose(sender.login, str) if sender is not None else None) or "",
    )


def _loose(raw: msgspec.Raw, kind: Any) -> Any:
    """The JSON text ``raw`` as ``kind``, or None where it is missing or of another type."""
    if not raw:
        return None
    try:
        return msgspec.json.decode(raw, type=kind)
    except msgspec.ValidationError:
        return None


def _installation_id(raw: msgspec.Raw) -> int | None:
    """``installation.id``: None unless a number; a number the ledger cannot hold is a 400."""
    if not raw:
        return None
    try:
        value = msgspec.json.decode(raw)
    except msgspec.ValidationError:  # a number out of any range (1e999, thousands of digits)
        raise WebhookRejected(400, INSTALLATION_ID_OUT_OF_RANGE) from None
    if isinstance(value, float):
        raise WebhookRejected(400, INSTALLATION_ID_OUT_OF_RANGE)
    return value if isinstance(value, int) and not isinstance(value, bool) else None


_PRINTABLE_ASCII = re.compile(r"[\x21-\x7e]+")


def check_headers(headers: Any) -> None:
    missing = [h for h in ("X-GitHub-Event", "X-GitHub-Delivery") if not headers.get(h, "").strip()]
    if missing:
        raise WebhookRejected(400, f"Missing header(s): {', '.join(missing)}. Is this a GitHub webhook?")
    for name, limit in (("X-GitHub-Delivery", MAX_DELIVERY_ID_CHARS), ("X-GitHub-Event", MAX_EVENT_CHARS)):
        value = headers[name].strip()
        if len(value) > limit:
            raise WebhookRejected(400, HEADER_TOO_LONG.format(name=name, limit=limit))
        if not _PRINTABLE_ASCII.fullmatch(value):
            raise WebhookRejected(400, HEADER_NOT_PRINTABLE.format(name=name))


def check_content_encoding(headers: Any) -> None:
    """GitHub never compresses a webhook body: any Content-Encoding but identity is a 415,
    answered before the body is read (nothing is ever decompressed)."""
    for value in headers.getall("Content-Encoding", ()):
        if value.strip().lower() not in ("", "identity"):
            raise WebhookRejected(415, COMPRESSED_BODY)


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
        check_content_encoding(request.headers)
        length = request.content_length
        if length is not None and length > MAX_BODY_BYTES:
            raise WebhookRejected(413, PAYLOAD_TOO_LARGE)
        check_content_type(request.content_type)
        check_headers(request.headers)
        try:
            body = await request.read()
        except web.HTTPRequestEntityTooLarge:
            raise WebhookRejected(413, PAYLOAD_TOO_LARGE) from None
        except (ConnectionError, RequestPayloadError):  # (the answer may not reach anyone)
            raise WebhookRejected(400, BODY_NOT_READ) from None
        if len(body) > MAX_BODY_BYTES:
            raise WebhookRejected(413, PAYLOAD_TOO_LARGE)
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
                sender=parsed.sender,
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
