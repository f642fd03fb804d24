"""OpenAI chat completions, as aider (through litellm) calls it: ``POST /v1/chat/completions``.

aider edits files through an *edit format* written in plain text in the assistant's reply,
so a turn here is a :class:`Reply` whose text the helpers below render:

- :func:`whole_file` — aider's ``whole`` format (a file name line, then a fenced block with
  the whole new content); what aider uses for models it has no settings for;
- :func:`search_replace` — aider's ``diff`` format (a file name line, then a fenced
  SEARCH/REPLACE block; an empty search creates the file); what it uses for e.g. ``gpt-4o``.

Each reply carries its :class:`Usage` (``prompt_tokens``, ``completion_tokens``, cached
prompt tokens), which is what aider turns into its ``Tokens: … sent, … received.`` line.
An :class:`Error` turn answers with an HTTP error in OpenAI's error shape.

aider 0.86.2 (litellm 1.81.10) sends nothing but chat completions to the server (recorded:
no model list, no model-info lookup; it fetches its price list from GitHub, not from the
provider). A chat request that comes once the script is played out gets a plain "Done."
reply. Both ``stream: false`` (aider's ``--no-stream``, the preset's choice) and streaming
(SSE chunks, usage in the last one; litellm then reports no usage to aider, which counts
tokens itself) are answered.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from tests.model_server import ModelServer, sse

CHAT_PATH = "/v1/chat/completions"
_ids = itertools.count(1)


@dataclass(frozen=True)
class Usage:
    """Token usage reported with a reply. ``cached_tokens`` are part of ``prompt_tokens``
    (OpenAI's ``prompt_tokens_details.cached_tokens``)."""

    prompt_tokens: int = 1000
    completion_tokens: int = 100
    cached_tokens: int = 0

    def as_json(self) -> dict[str, Any]:
        usage: dict[str, Any] = {
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "total_tokens": self.prompt_tokens + self.completion_tokens,
        }
        if self.cached_tokens:
            usage["prompt_tokens_details"] = {"cached_tokens": self.cached_tokens}
        return usage


@dataclass(frozen=True)
class Reply:
    """The assistant's answer to the next chat request: ``text`` (use the edit helpers to
    make aider change files) and its ``usage``, sent after ``delay`` seconds (a slow model)."""

    text: str
    usage: Usage = field(default_factory=Usage)
    finish_reason: str = "stop"
    delay: float = 0.0


@dataclass(frozen=True)
class Error:
    """An HTTP error answer in OpenAI's shape (``{"error": {"message", "type", "code"}}``)."""

    status: int
    message: str
    type: str = "invalid_request_error"
    code: str | None = None


Turn = Reply | Error


def _fenced(content: str) -> str:
    if "```" in content:
        raise ValueError("content with a ``` fence cannot be sent in aider's edit formats as written here")
    return content if content.endswith("\n") or not content else content + "\n"


def whole_file(path: str, content: str) -> str:
    """aider's ``whole`` edit format: ``path``, then the file's whole new content in a fence.
    aider writes the lines between the fences, so ``content`` should end with a newline to
    be written exactly."""
    return f"{path}\n```\n{_fenced(content)}```\n"


def search_replace(path: str, search: str, replace: str) -> str:
    """aider's ``diff`` edit format: one SEARCH/REPLACE block for ``path`` (an empty
    ``search`` creates the file with ``replace`` as its content)."""
    return (
        f"{path}\n```\n<<<<<<< SEARCH\n{_fenced(search)}=======\n{_fenced(replace)}>>>>>>> REPLACE\n```\n"
    )


def _text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(str(p.get("text", "")) for p in content if isinstance(p, dict) and p.get("type") == "text")
    return ""


def messages(body: Any) -> list[tuple[str, str]]:
    """``(role, text)`` of each message of a recorded chat request."""
    if not isinstance(body, dict):
        return []
    return [
        (str(m.get("role")), _text(m.get("content")))
        for m in body.get("messages") or []
        if isinstance(m, dict)
    ]


def last_user_text(body: Any) -> str:
    """The last user message of a recorded chat request: what aider sends of the prompt
    (aider puts its own few-shot example exchanges before it)."""
    users = [text for role, text in messages(body) if role == "user"]
    return users[-1] if users else ""


def routes(server: ModelServer) -> list[web.RouteDef]:
    async def completions(request: web.Request) -> web.StreamResponse:
        body = await request.json()
        server.conversation(request)
        turn = server.script.next()
        if turn is None:
            turn = Reply("Done.", Usage(prompt_tokens=10, completion_tokens=1))
        if isinstance(turn, Error):
            return web.json_response(
                {"error": {"message": turn.message, "type": turn.type, "code": turn.code, "param": None}},
                status=turn.status,
            )
        if not isinstance(turn, Reply):
            raise TypeError(f"the chat completions server cannot play {turn!r}")
        if turn.delay:
            await asyncio.sleep(turn.delay)
        model = str(body.get("model") or "scripted")
        ident = f"chatcmpl-{next(_ids)}"
        created = int(time.time())
        if body.get("stream"):
            def chunk(delta: dict[str, Any], finish: str | None, usage: dict[str, Any] | None = None) -> dict[str, Any]:
                data: dict[str, Any] = {
                    "id": ident,
                    "object": "chat.completion.chunk",
                    "created": created,
                    "model": model,
                    "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
                }
                if usage is not None:
                    data["usage"] = usage
                return data

            return await sse(
                request,
                [
                    (None, chunk({"role": "assistant", "content": turn.text}, None)),
                    (None, chunk({}, turn.finish_reason, turn.usage.as_json())),
                    (None, "[DONE]"),
                ],
            )
        return web.json_response(
            {
                "id": ident,
                "object": "chat.completion",
                "created": created,
                "model": model,
                "choices": [
                    {
                        "index": 0,
                        "message": {"role": "assistant", "content": turn.text},
                        "finish_reason": turn.finish_reason,
                    }
                ],
                "usage": turn.usage.as_json(),
            }
        )

    return [
        web.post(CHAT_PATH, completions),
        web.post("/chat/completions", completions),  # a base URL given without /v1
    ]
