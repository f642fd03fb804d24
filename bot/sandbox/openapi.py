"""GitHub's REST description: operation lookup and request/response validation.

The description is the trimmed OpenAPI 3.0.3 document shipped in ``bot/sandbox/data``. Schemas are
validated with :class:`openapi_schema_validator.OAS30Validator`; ``$ref`` is resolved through a
``referencing`` registry holding the whole document, and compiled validators are cached per JSON
pointer on the :class:`RestDescription` instance.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from types import MappingProxyType
from typing import Any
from urllib.parse import unquote

from jsonschema import Draft4Validator
from jsonschema.validators import extend
from openapi_schema_validator import OAS30Validator, oas30_format_checker
from referencing import Registry
from referencing.jsonschema import DRAFT4

DOCUMENT_URI = "urn:github:rest-openapi-subset"
HTTP_METHODS = ("get", "post", "patch", "put", "delete")
# Path parameters whose values contain slashes on GitHub (refs, file paths, "base...head").
MULTI_SEGMENT_PARAMETERS = frozenset({"path", "ref", "branch", "basehead"})
DOCUMENTATION_URL = "https://docs.github.com/rest"


@dataclass(frozen=True)
class Problem:
    """One way a request breaks the description (becomes an item of GitHub's ``errors`` list)."""

    location: str  # path | query | body
    field: str
    code: str  # missing_field | invalid | missing
    message: str

    def as_error(self, resource: str) -> dict[str, Any]:
        return {"resource": resource, "field": self.field, "code": self.code, "message": self.message}


@dataclass(frozen=True)
class Parameter:
    name: str
    location: str  # path | query | header
    required: bool
    schema_pointer: str
    schema_type: str | None


@dataclass(frozen=True)
class Operation:
    operation_id: str
    method: str  # upper case
    template: str
    pattern: re.Pattern[str]
    literal_length: int
    parameters: tuple[Parameter, ...]
    body_pointer: str | None
    body_required: bool
    responses: Mapping[str, str | None]  # status -> JSON schema pointer (None: no JSON body)
    resource: str  # the name GitHub uses in validation errors, e.g. "Issue"
    documentation_url: str = DOCUMENTATION_URL  # the operation's page in GitHub's REST docs


@dataclass(frozen=True)
class RouteMatch:
    operation: Operation
    raw_params: Mapping[str, str]


def _escape_pointer(token: str) -> str:
    return token.replace("~", "~0").replace("/", "~1")


def _template_regex(template: str) -> tuple[re.Pattern[str], int]:
    parts: list[str] = []
    literal = 0
    for chunk in re.split(r"(\{[^}]+\})", template):
        if chunk.startswith("{") and chunk.endswith("}"):
            name = chunk[1:-1]
            body = "[^/]+"
            if name in MULTI_SEGMENT_PARAMETERS:
                body = ".*" if name == "path" else ".+"  # "contents/" is the root directory
            parts.append(f"(?P<{name}>{body})")
        elif chunk:
            parts.append(re.escape(chunk))
            literal += len(chunk)
    return re.compile("^" + "".join(parts) + "/?$"), literal


def _nullable(keyword: Any) -> Any:
    """``keyword`` that lets ``null`` through where the schema says ``nullable: true``.

    GitHub's description relies on two readings of OpenAPI 3.0 that ``OAS30Validator`` does not
    make: ``nullable`` next to ``enum`` or a composition (``oneOf`` without ``type``) allows
    ``null`` — GitHub answers ``"conclusion": null`` and ``"author": null`` — and
    ``discriminator`` is a hint (its implicit mappings name schemas that do not exist, e.g. in
    ``checks/create``), so compositions are checked by their subschemas only.
    """

    def check(validator: Any, value: Any, instance: Any, schema: Mapping[str, Any]) -> Any:
        if instance is None and schema.get("nullable") is True:
            return iter(())
        return keyword(validator, value, instance, schema)

    return check


_RESOURCE_NAMES = MappingProxyType(
    {
        "issues": "Issue",
        "pulls": "PullRequest",
        "checks": "CheckRun",
        "reactions": "Reaction",
        "repos": "Repository",
        "apps": "Integration",
        "actions": "WorkflowRun",
        "git": "Reference",
    }
)


class RestDescription:
    """Operations of the REST description, with cached validators."""

    def __init__(self, document: Mapping[str, Any]) -> None:
        self.document = document
        self._registry: Registry = Registry().with_resource(DOCUMENT_URI, DRAFT4.create_resource(document))
        self._validators: dict[str, Any] = {}
        # plain JSON Schema compositions (no discriminator), null allowed where nullable: see _nullable
        self._validator_class = extend(
            OAS30Validator,
            {
                "oneOf": _nullable(Draft4Validator.VALIDATORS["oneOf"]),
                "anyOf": _nullable(Draft4Validator.VALIDATORS["anyOf"]),
                "allOf": _nullable(Draft4Validator.VALIDATORS["allOf"]),
                "enum": _nullable(Draft4Validator.VALIDATORS["enum"]),
            },
        )
        operations: list[Operation] = []
        for template, item in document["paths"].items():
            for method in HTTP_METHODS:
                if method in item:
                    operations.append(self._operation(template, method, item[method]))
        operations.sort(key=lambda op: -op.literal_length)
        self.operations: dict[str, Operation] = {op.operation_id: op for op in operations}
        self._ordered = tuple(operations)

    @classmethod
    def load(cls, path: Path | None = None) -> RestDescription:
        """Read the description from ``path`` or from the copy shipped with the package."""
        if path is None:
            text = (
                resources.files("bot.sandbox")
                .joinpath("data/rest-openapi-subset.json")
                .read_text(encoding="utf-8")
            )
        else:
            text = path.read_text(encoding="utf-8")
        return cls(json.loads(text))

    # -- building ------------------------------------------------------------------------
    def _resolve(self, node: Any, pointer: str) -> tuple[Any, str]:
        """Follow local ``$ref`` chains; return the target and its JSON pointer."""
        while isinstance(node, Mapping) and "$ref" in node:
            ref = node["$ref"]
            pointer = ref[1:]
            node = self.document
            for token in pointer.split("/")[1:]:
                node = node[token.replace("~1", "/").replace("~0", "~")]
        return node, pointer

    def _operation(self, template: str, method: str, op: Mapping[str, Any]) -> Operation:
        base = f"/paths/{_escape_pointer(template)}/{method}"
        params: list[Parameter] = []
        for index, raw in enumerate(op.get("parameters", ())):
            param, pointer = self._resolve(raw, f"{base}/parameters/{index}")
            schema = param.get("schema", {})
            params.append(
                Parameter(
                    name=param["name"],
                    location=param["in"],
                    required=bool(param.get("required", False)),
                    schema_pointer=f"{pointer}/schema",
                    schema_type=schema.get("type") if isinstance(schema, Mapping) else None,
                )
            )
        body_pointer = None
        body_required = False
        if "requestBody" in op:
            body, pointer = self._resolve(op["requestBody"], f"{base}/requestBody")
            body_required = bool(body.get("required", False))
            if "application/json" in body.get("content", {}):
                body_pointer = f"{pointer}/content/application~1json/schema"
        responses: dict[str, str | None] = {}
        for status, raw in op.get("responses", {}).items():
            response, pointer = self._resolve(raw, f"{base}/responses/{status}")
            content = response.get("content", {})
            if "application/json" in content and "schema" in content["application/json"]:
                responses[status] = f"{pointer}/content/application~1json/schema"
            else:
                responses[status] = None
        pattern, literal = _template_regex(template)
        operation_id = op["operationId"]
        return Operation(
            operation_id=operation_id,
            method=method.upper(),
            template=template,
            pattern=pattern,
            literal_length=literal,
            parameters=tuple(params),
            body_pointer=body_pointer,
            body_required=body_required,
            responses=responses,
            resource=_RESOURCE_NAMES.get(operation_id.split("/")[0], "Resource"),
            documentation_url=str((op.get("externalDocs") or {}).get("url") or DOCUMENTATION_URL),
        )

    # -- lookup --------------------------------------------------------------------------
    def match(self, method: str, raw_path: str) -> RouteMatch | None:
        """The operation for ``method`` and the still percent-encoded ``raw_path``."""
        method = method.upper()
        for op in self._ordered:
            if op.method != method:
                continue
            found = op.pattern.match(raw_path)
            if found:
                return RouteMatch(op, {k: unquote(v) for k, v in found.groupdict().items()})
        return None

    def validator(self, pointer: str) -> Any:
        """A compiled validator for the schema at ``pointer`` (cached)."""
        validator = self._validators.get(pointer)
        if validator is None:
            validator = self._validator_class(
                {"$ref": f"{DOCUMENT_URI}#{pointer}"},
                registry=self._registry,
                format_checker=oas30_format_checker,
            )
            self._validators[pointer] = validator
        return validator

    # -- requests ------------------------------------------------------------------------
    def path_params(self, match: RouteMatch) -> tuple[dict[str, Any], list[Problem]]:
        """Path parameters converted to their schema types."""
        values: dict[str, Any] = {}
        problems: list[Problem] = []
        for param in match.operation.parameters:
            if param.location != "path":
                continue
            raw = match.raw_params.get(param.name, "")
            if param.schema_type == "integer":
                if raw.isdigit():
                    values[param.name] = int(raw)
                else:
                    problems.append(
                        Problem("path", param.name, "invalid", f"{param.name} must be an integer")
                    )
            else:
                values[param.name] = raw
        return values, problems

    def query_params(
        self, operation: Operation, query: Mapping[str, str]
    ) -> tuple[dict[str, Any], list[Problem]]:
        """Declared query parameters converted and validated; undeclared ones are ignored."""
        values: dict[str, Any] = {}
        problems: list[Problem] = []
        for param in operation.parameters:
            if param.location != "query":
                continue
            if param.name not in query:
                if param.required:
                    problems.append(
                        Problem("query", param.name, "missing_field", f"{param.name} is required")
                    )
                continue
            raw = query[param.name]
            value: Any = raw
            if param.schema_type == "integer":
                try:
                    value = int(raw)
                except ValueError:
                    problems.append(Problem("query", param.name, "invalid", f"{raw!r} is not an integer"))
                    continue
            elif param.schema_type == "boolean":
                if raw not in ("true", "false"):
                    problems.append(Problem("query", param.name, "invalid", f"{raw!r} is not a boolean"))
                    continue
                value = raw == "true"
            for error in self.validator(param.schema_pointer).iter_errors(value):
                problems.append(Problem("query", param.name, "invalid", error.message))
            values[param.name] = value
        return values, problems

    def body_problems(self, operation: Operation, body: Any) -> list[Problem]:
        """Schema problems of a parsed JSON request body."""
        if operation.body_pointer is None:
            return []
        problems = []
        for error in self.validator(operation.body_pointer).iter_errors(body):
            field = "/".join(str(p) for p in error.absolute_path) or ""
            if error.validator == "required":
                missing = error.message.split("'")[1] if "'" in error.message else field
                field = f"{field}/{missing}" if field else missing
                problems.append(Problem("body", field, "missing_field", error.message))
            else:
                problems.append(Problem("body", field, "invalid", error.message))
        return problems

    # -- responses -----------------------------------------------------------------------
    def response_problems(self, operation: Operation, status: int, body: Any) -> list[str]:
        """Why a JSON response body does not match the description ([] when it does).

        Error statuses the operation does not list are checked against ``basic-error``.
        """
        key = str(status)
        if key not in operation.responses:
            if status >= 400:
                pointer: str | None = "/components/schemas/basic-error"
            else:
                return [f"status {status} is not documented for {operation.operation_id}"]
        else:
            pointer = operation.responses[key]
        if pointer is None:
            if body is None:
                return []
            if status >= 400:
                pointer = "/components/schemas/basic-error"
            else:
                return [f"{operation.operation_id} {status} has no body in the description"]
        if body is None:
            return [f"{operation.operation_id} {status} needs a JSON body"]
        return [
            f"{'/'.join(str(p) for p in error.absolute_path)}: {error.message}"
            for error in self.validator(pointer).iter_errors(body)
        ]
