"""Errors the emulator answers with, in GitHub's JSON shape."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

DOCUMENTATION_URL = "https://docs.github.com/rest"


class ApiError(Exception):
    """An HTTP error answer: ``{"message", "documentation_url", "status"[, "errors"]}``.

    ``errors`` is GitHub's list of error objects, or (as GitHub sends for an unsupported API
    version) one string. ``rate_headers=False``: the answer carries no ``x-ratelimit-*``
    headers (GitHub's secondary-rate-limit answers have none).
    """

    def __init__(
        self,
        status: int,
        message: str,
        *,
        errors: Sequence[Mapping[str, Any]] | str | None = None,
        headers: Mapping[str, str] | None = None,
        documentation_url: str = DOCUMENTATION_URL,
        rate_headers: bool = True,
    ) -> None:
        super().__init__(f"{status} {message}")
        self.status = status
        self.message = message
        self.errors: list[dict[str, Any]] | str | None
        if errors is None or isinstance(errors, str):
            self.errors = errors
        else:
            self.errors = [dict(e) for e in errors]
        self.headers = dict(headers or {})
        self.documentation_url = documentation_url
        self.rate_headers = rate_headers

    def body(self) -> dict[str, Any]:
        data: dict[str, Any] = {"message": self.message}
        if self.errors is not None:
            data["errors"] = self.errors
        data["documentation_url"] = self.documentation_url
        data["status"] = str(self.status)
        return data


def not_found(message: str = "Not Found") -> ApiError:
    return ApiError(404, message)


def validation_failed(
    resource: str, field: str, code: str = "invalid", message: str | None = None, **extra: Any
) -> ApiError:
    error: dict[str, Any] = {"resource": resource, "field": field, "code": code}
    if message is not None:
        error["message"] = message
    error.update(extra)
    return ApiError(422, "Validation Failed", errors=[error])


def unprocessable(message: str) -> ApiError:
    """A 422 that GitHub answers with a message and a custom-coded error."""
    return ApiError(422, message, errors=[{"resource": "Resource", "code": "custom", "message": message}])
