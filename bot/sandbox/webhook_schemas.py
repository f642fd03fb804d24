"""Webhook payloads checked against GitHub's webhook schemas.

Two descriptions ship in ``bot/sandbox/data/webhook-schemas`` (see the SOURCE.md there):

- ``github``: the ``x-webhooks`` of GitHub's own REST description (OpenAPI 3.0; entries keyed
  by ``operationId`` ``issues/labeled``, ``check-run/completed``, ``push``); validated with
  :class:`openapi_schema_validator.OAS30Validator` the way :mod:`.openapi` validates REST.
- ``octokit``: ``@octokit/webhooks-schemas`` (JSON Schema draft-07, ``issues$labeled``,
  ``push$event``), stricter about extra keys (``additionalProperties: false``).

Where the two disagree GitHub wins: an Octokit error is dropped when GitHub's description
accepts the value at that place (a key GitHub declares there, a type, enum value or optional key
GitHub allows). Everything is loaded on first use and cached (:func:`default_schemas`);
validators are compiled once per (schema, event, action).
"""

from __future__ import annotations

import functools
import hashlib
import json
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import orjson
from jsonschema import Draft4Validator, Draft7Validator, FormatChecker
from jsonschema.exceptions import ValidationError
from jsonschema.validators import extend
from openapi_schema_validator import OAS30Validator, oas30_format_checker
from referencing import Registry
from referencing.jsonschema import DRAFT4, DRAFT7

from .openapi import _escape_pointer, _nullable

GITHUB = "github"
OCTOKIT = "octokit"
DATA_DIR = "data/webhook-schemas"
GITHUB_FILE = "github-webhooks-subset.json"
OCTOKIT_FILE = "octokit-webhooks-schemas.json"
GITHUB_URI = "urn:github:webhooks-subset"
OCTOKIT_URI = "urn:octokit:webhooks-schemas"

# RFC 3986: a scheme, then no whitespace or characters outside the URI alphabet (plus "%"); or
# empty, as GitHub sends an unset ``homepage`` (its schemas still say ``format: uri``).
_URI = re.compile(r"^(?:[A-Za-z][A-Za-z0-9+.\-]*:[^\s<>\"{}|\\^`]*)?$")
# RFC 6570: a URI whose variable expressions are well-formed ``{...}`` groups.
_URI_TEMPLATE = re.compile(
    r"^[A-Za-z][A-Za-z0-9+.\-]*:(?:[^\s<>\"{}|\\^`]|\{[+#./;?&=,!@|]?[A-Za-z0-9_.%,*:]+\})*$"
)


def _format_checker(base: FormatChecker) -> FormatChecker:
    """``base`` plus ``uri`` and ``uri-template`` (jsonschema checks them only with optional
    packages installed; GitHub's descriptions use both everywhere)."""
    checker = FormatChecker(formats=())
    checker.checkers = dict(base.checkers)
    checker.checks("uri")(lambda value: not isinstance(value, str) or bool(_URI.match(value)))
    checker.checks("uri-template")(
        lambda value: not isinstance(value, str) or bool(_URI_TEMPLATE.match(value))
    )
    return checker


@dataclass(frozen=True)
class SchemaProblem:
    """One way a webhook payload breaks one of the two descriptions."""

    schema: str  # github | octokit
    event: str
    action: str | None
    field: str  # where in the payload, e.g. "repository.organization" ("" = the payload itself)
    schema_path: str  # where in the schema file: "#/components/schemas/nullable-simple-user/type"
    message: str

    @property
    def kind(self) -> str:
        return f"{self.event}.{self.action}" if self.action else self.event

    def as_dict(self) -> dict[str, Any]:
        return {
            "schema": self.schema,
            "event": self.event,
            "action": self.action,
            "field": self.field,
            "schema_path": self.schema_path,
            "message": self.message,
        }

    def __str__(self) -> str:
        return f"{self.kind} {self.field or '<payload>'}: {self.message} ({self.schema} {self.schema_path})"


def field_path(path: Iterable[Any]) -> str:
    """``repository.organization``, ``commits[0].author.username``."""
    out = ""
    for token in path:
        if isinstance(token, int):
            out += f"[{token}]"
        else:
            out += f".{token}" if out else str(token)
    return out


def _remembering(keyword: Any, valid: dict[tuple[int, bytes], None]) -> Any:
    """``properties`` that remembers which (schema, object) pairs were valid and skips them later.

    Payloads repeat the same objects (senders, owners, the App, labels, links) within a delivery
    and across deliveries, and walking the schema is what validation costs. Only successes are
    remembered, so every problem is still found by a full walk. The key is the schema's
    ``properties`` mapping (alive as long as its document, so its ``id`` is stable) and a digest
    of the object's JSON; ``$ref`` in a document are all local, so the result depends on nothing
    else.
    """

    def properties(validator: Any, value: Any, instance: Any, schema: Mapping[str, Any]) -> Any:
        if not isinstance(instance, dict) or not instance:
            yield from keyword(validator, value, instance, schema)
            return
        try:
            key = (id(value), hashlib.blake2b(orjson.dumps(instance), digest_size=16).digest())
        except TypeError:  # not JSON: validate without remembering
            yield from keyword(validator, value, instance, schema)
            return
        if key in valid:
            return
        errors = list(keyword(validator, value, instance, schema))
        if not errors:
            if len(valid) >= _REMEMBERED:
                valid.clear()
            valid[key] = None
        yield from errors

    return properties


#: At most this many valid (schema, object) pairs are remembered per document.
_REMEMBERED = 20_000


class _Document:
    """One schema document: a registry for ``$ref`` and validators cached per JSON pointer."""

    def __init__(
        self,
        name: str,
        uri: str,
        document: Mapping[str, Any],
        validator_class: Any,
        spec: Any,
        format_checker: FormatChecker,
    ) -> None:
        self.name = name
        self.uri = uri
        self.document = document
        self._valid: dict[tuple[int, bytes], None] = {}
        remembering = _remembering(validator_class.VALIDATORS["properties"], self._valid)
        self._class = extend(validator_class, {"properties": remembering})
        self._checker = format_checker
        self._registry: Registry = Registry().with_resource(uri, spec.create_resource(document))
        self._validators: dict[str, Any] = {}

    def node(self, pointer: str) -> Any:
        node: Any = self.document
        for token in pointer.split("/")[1:]:
            token = token.replace("~1", "/").replace("~0", "~")
            node = node[int(token)] if isinstance(node, list) else node[token]
        return node

    def validator(self, pointer: str) -> Any:
        validator = self._validators.get(pointer)
        if validator is None:
            validator = self._class(
                {"$ref": f"{self.uri}#{pointer}"}, registry=self._registry, format_checker=self._checker
            )
            self._validators[pointer] = validator
        return validator

    def schema_pointer(self, error: ValidationError, root: str) -> str:
        """The document location of the keyword that failed, for a validator of ``root``.

        jsonschema leaves ``$ref`` out of schema paths, so every ``$ref`` met on the way is
        followed (its siblings are ignored in drafts 4 and 7, so a path never names them).
        """
        pointer = root
        node: Any = self.node(root)
        for token in error.absolute_schema_path:
            while isinstance(node, Mapping) and isinstance(node.get("$ref"), str):
                pointer = self._ref_pointer(node["$ref"])
                node = self.node(pointer)
            pointer = f"{pointer}/{_escape_pointer(str(token))}"
            try:
                node = node[token]
            except (KeyError, IndexError, TypeError):
                node = None
        return "#" + pointer

    def _ref_pointer(self, ref: str) -> str:
        return ref.split("#", 1)[1] if "#" in ref else ""

    # -- GitHub wins: what the document says at an instance path -------------------------
    def expand(self, pointers: Iterable[str]) -> list[str]:
        """Pointers with ``$ref`` followed and compositions (allOf/anyOf/oneOf) opened."""
        out: list[str] = []
        seen: set[str] = set()
        stack = list(pointers)
        while stack:
            pointer = stack.pop()
            node = self.node(pointer)
            while isinstance(node, Mapping) and "$ref" in node:
                pointer = self._ref_pointer(node["$ref"])
                node = self.node(pointer)
            if pointer in seen or not isinstance(node, Mapping):
                continue
            seen.add(pointer)
            out.append(pointer)
            for keyword in ("allOf", "anyOf", "oneOf"):
                for index, _ in enumerate(node.get(keyword, ())):
                    stack.append(f"{pointer}/{keyword}/{index}")
        return out

    def pointers_at(self, root: str, path: Sequence[Any]) -> list[str]:
        """The subschemas that describe the value at instance ``path`` under ``root``."""
        frontier = [root]
        for token in path:
            following: list[str] = []
            for pointer in self.expand(frontier):
                node = self.node(pointer)
                if isinstance(token, int):
                    if isinstance(node.get("items"), Mapping):
                        following.append(f"{pointer}/items")
                elif token in node.get("properties", {}):
                    following.append(f"{pointer}/properties/{_escape_pointer(token)}")
                elif isinstance(node.get("additionalProperties"), Mapping):
                    following.append(f"{pointer}/additionalProperties")
            frontier = following
            if not frontier:
                return []
        return self.expand(frontier)

    def declares(self, pointers: Iterable[str], key: str) -> bool:
        return any(key in self.node(p).get("properties", {}) for p in pointers)

    def accepts(self, pointers: Iterable[str], value: Any) -> bool:
        return any(self.validator(p).is_valid(value) for p in pointers)


def _read(directory: Path | None, name: str) -> Any:
    if directory is None:
        text = resources.files("bot.sandbox").joinpath(f"{DATA_DIR}/{name}").read_text(encoding="utf-8")
    else:
        text = (directory / name).read_text(encoding="utf-8")
    return json.loads(text)


class WebhookSchemas:
    """Both descriptions, keyed by (event, action); ``problems`` validates one payload."""

    def __init__(self, github: Mapping[str, Any], octokit: Mapping[str, Any]) -> None:
        github_class = extend(
            OAS30Validator,
            {
                "oneOf": _nullable(Draft4Validator.VALIDATORS["oneOf"]),
                "anyOf": _nullable(Draft4Validator.VALIDATORS["anyOf"]),
                "allOf": _nullable(Draft4Validator.VALIDATORS["allOf"]),
                "enum": _nullable(Draft4Validator.VALIDATORS["enum"]),
            },
        )
        self.github = _Document(
            GITHUB, GITHUB_URI, github, github_class, DRAFT4, _format_checker(oas30_format_checker)
        )
        self.octokit = _Document(
            OCTOKIT,
            OCTOKIT_URI,
            octokit,
            Draft7Validator,
            DRAFT7,
            _format_checker(Draft7Validator.FORMAT_CHECKER),
        )
        self._github_keys: dict[tuple[str, str | None], str] = {}
        for name, item in github.get("x-webhooks", {}).items():
            post = item.get("post", {})
            operation = str(post.get("operationId", name))
            event, _, action = operation.partition("/")
            key = (event.replace("-", "_"), action.replace("-", "_") or None)
            schema = post["requestBody"]["content"]["application/json"]["schema"]
            ref = schema.get("$ref")
            self._github_keys[key] = (
                ref.split("#", 1)[1]
                if ref
                else f"/x-webhooks/{_escape_pointer(name)}/post/requestBody/content/application~1json/schema"
            )
        self._octokit_keys: dict[tuple[str, str | None], str] = {}
        for name in octokit.get("definitions", {}):
            event, dollar, action = name.partition("$")
            if dollar:
                self._octokit_keys[(event, None if action == "event" else action)] = (
                    f"/definitions/{_escape_pointer(name)}"
                )

    @classmethod
    def load(cls, directory: Path | None = None) -> WebhookSchemas:
        """Read both files from ``directory`` or from the copies shipped with the package."""
        return cls(_read(directory, GITHUB_FILE), _read(directory, OCTOKIT_FILE))

    def pointer(self, schema: str, event: str, action: str | None) -> str | None:
        """The JSON pointer of the payload schema of (event, action) in ``schema``."""
        return (self._github_keys if schema == GITHUB else self._octokit_keys).get((event, action))

    def problems(self, event: str, payload: Any) -> list[SchemaProblem]:
        """Why ``payload`` (the parsed body of an ``event`` delivery) breaks the schemas."""
        action = payload.get("action") if isinstance(payload, Mapping) else None
        action = action if isinstance(action, str) else None
        github_root = self.pointer(GITHUB, event, action)
        octokit_root = self.pointer(OCTOKIT, event, action)
        if github_root is None:  # GitHub's description (the subset patchwright may receive) wins
            what = f"{event}.{action}" if action else f"{event} (no action)"
            field = "action" if action else ""
            message = f"GitHub documents no webhook {what}"
            return [SchemaProblem(GITHUB, event, action, field, "#/x-webhooks", message)]
        problems: list[SchemaProblem] = []
        for error in self.github.validator(github_root).iter_errors(payload):
            if error.validator == "type" and error.message == "None for not nullable":
                continue  # OAS30Validator follows it with "None is not of type ...": one is enough
            problems.extend(self._report(self.github, github_root, event, action, error, None))
        if octokit_root is not None:  # Octokit has no entry for a few newer actions
            for error in self.octokit.validator(octokit_root).iter_errors(payload):
                problems.extend(self._report(self.octokit, octokit_root, event, action, error, github_root))
        return problems

    # -- errors ------------------------------------------------------------------------------
    def _report(
        self,
        doc: _Document,
        root: str,
        event: str,
        action: str | None,
        error: ValidationError,
        github_root: str | None,
    ) -> list[SchemaProblem]:
        """Leaf problems of ``error``; for Octokit, without what GitHub's description allows."""
        if error.validator in ("oneOf", "anyOf") and error.context:
            # no branch matched; every branch has errors in the context
            branches: dict[Any, list[SchemaProblem]] = {}
            for sub in error.context:
                branch = sub.relative_schema_path[0] if sub.relative_schema_path else None
                found = self._report(doc, root, event, action, sub, github_root)
                branches.setdefault(branch, []).extend(found)
            if any(not found for found in branches.values()):
                return []  # a branch passes once GitHub wins
            return max(
                branches.values(),
                key=lambda found: (max(f.field.count(".") + f.field.count("[") for f in found), -len(found)),
            )
        path = list(error.absolute_path)
        pointer = doc.schema_pointer(error, root)
        if error.validator == "additionalProperties" and isinstance(error.instance, Mapping):
            schema = error.schema if isinstance(error.schema, Mapping) else {}
            declared = set(schema.get("properties", {}))
            patterns = [re.compile(p) for p in schema.get("patternProperties", {})]
            extras = [
                key
                for key in error.instance
                if key not in declared and not any(p.search(key) for p in patterns)
            ]
            if github_root is not None:
                here = self.github.pointers_at(github_root, path)
                extras = [key for key in extras if not self.github.declares(here, key)]
            where = field_path(path) or "the payload"
            return [
                SchemaProblem(
                    doc.name,
                    event,
                    action,
                    field_path([*path, key]),
                    pointer,
                    f"{key!r} is not allowed in {where}",
                )
                for key in extras
            ]
        if github_root is not None:
            here = self.github.pointers_at(github_root, path)
            if error.validator == "required":
                missing = self._missing_key(error)
                if here and missing is not None and not any(
                    missing in (self.github.node(p).get("required") or ()) for p in here
                ):
                    return []
            elif here and self.github.accepts(here, error.instance):
                return []
        field = field_path(path)
        if error.validator == "required":
            missing = self._missing_key(error)
            if missing is not None:
                field = field_path([*path, missing])
        return [SchemaProblem(doc.name, event, action, field, pointer, error.message)]

    @staticmethod
    def _missing_key(error: ValidationError) -> str | None:
        found = re.match(r"^'(.*)' is a required property$", error.message)
        return found.group(1) if found else None


@functools.cache
def default_schemas() -> WebhookSchemas:
    """The shipped schemas, loaded on first use and shared (validators are cached on it)."""
    return WebhookSchemas.load()


def validate(event: str, payload: Any) -> list[SchemaProblem]:
    """Problems of one payload against the shipped schemas ([] when it is valid)."""
    return default_schemas().problems(event, payload)
