"""The JSON Schemas derived from a graph's nodes (§6), and what export strips."""

from __future__ import annotations

from typing import Any

from app.blocks.credentials import MIN_REDACTED_LENGTH
from app.blocks.registry import get_block
from app.models import Node
from app.settings import Settings

# Keys (pin names, or keys nested in a default such as HTTP headers) whose values
# are secrets or credential ids: never exported.
_SECRET_MARKERS = (
    "credential",
    "api_key",
    "apikey",
    "api-key",
    "password",
    "secret",
    "token",
    "authorization",
    "cookie",
)


def input_schema(nodes: list[Node]) -> dict[str, Any]:
    """JSON Schema of a graph's inputs: one property per AgentInput node."""
    properties: dict[str, Any] = {}
    required: list[str] = []
    for node in nodes:
        block = get_block(node.block_id)
        if block is None or block.name != "AgentInput":
            continue
        defaults = node.input_default or {}
        name = defaults.get("name")
        if not isinstance(name, str) or name in properties:
            continue
        prop: dict[str, Any] = {"title": name, **_json_type(defaults.get("type", "any"))}
        if defaults.get("description"):
            prop["description"] = defaults["description"]
        if defaults.get("value") is not None:
            prop["default"] = defaults["value"]
        else:
            required.append(name)
        properties[name] = prop
    return {"type": "object", "properties": properties, "required": required}


def output_schema(nodes: list[Node]) -> dict[str, Any]:
    """JSON Schema of a graph's outputs: one property per AgentOutput name."""
    properties: dict[str, Any] = {}
    for node in nodes:
        block = get_block(node.block_id)
        if block is None or block.name != "AgentOutput":
            continue
        defaults = node.input_default or {}
        name = defaults.get("name")
        if isinstance(name, str) and name not in properties:
            prop: dict[str, Any] = {"title": name}
            if defaults.get("description"):
                prop["description"] = defaults["description"]
            properties[name] = prop
    return {"type": "object", "properties": properties}


def _json_type(kind: str) -> dict[str, Any]:
    if kind == "file":
        # Files travel as URIs: data: or a signed blob URL from POST /api/files.
        return {"type": "string", "format": "uri", "contentMediaType": "application/octet-stream"}
    if kind in ("string", "number", "integer", "boolean", "object", "array"):
        return {"type": kind}
    return {}


def credentials_input_schema(settings: Settings, nodes: list[Node]) -> dict[str, Any]:
    """The credentials the given nodes' blocks declare (pass a graph's nodes and
    its sub-graphs' nodes), each field once; a run maps each to a credentials id."""
    properties: dict[str, Any] = {}
    required: set[str] = set()
    for node in nodes:
        block = get_block(node.block_id)
        if block is not None:
            for name, wanted in block.credentials_fields.items():
                properties.setdefault(name, wanted.json_schema(name))
                if wanted.is_required(settings):
                    required.add(name)
    return {"type": "object", "properties": properties, "required": sorted(required)}


def _is_secret_key(key: Any) -> bool:
    return any(marker in str(key).lower() for marker in _SECRET_MARKERS)


def secret_default_values(nodes: list[Node]) -> list[str]:
    """The texts that export strips from these nodes' defaults (what sits under a
    secret-looking key, at any depth), longest first."""
    found: set[str] = set()

    def walk(value: Any, hidden: bool) -> None:
        if isinstance(value, dict):
            for key, item in value.items():
                walk(item, hidden or _is_secret_key(key))
        elif isinstance(value, list):
            for item in value:
                walk(item, hidden)
        elif hidden and isinstance(value, str) and len(value) >= MIN_REDACTED_LENGTH:
            found.add(value)

    for node in nodes:
        walk(node.input_default or {}, False)
    return sorted(found, key=len, reverse=True)


def export_defaults(value: Any) -> Any:
    """A node's defaults without secrets or credential ids, at any depth (forExport)."""
    if isinstance(value, dict):
        return {
            key: export_defaults(item) for key, item in value.items() if not _is_secret_key(key)
        }
    if isinstance(value, list):
        return [export_defaults(item) for item in value]
    return value
