"""Presets: saved inputs and credentials for one graph version (own or a store agent's).

A preset is checked as a complete run when it is saved (every required input and
credentials), and again whenever it runs: a preset moves along with the user's
library entry (a newly saved or activated version, a newer listed version), so a
graph that changed under it fails validation with node errors, as any run does.
A preset of a graph version with a WebhookTrigger node gets a trigger of its own.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

from tortoise.transactions import in_transaction

from app.errors import bad_input, not_found
from app.models import Node, Preset, Schedule
from app.services import run_requests, trigger_setup
from app.services.executions import check_run_inputs
from app.services.graph_validation import MAX_DESCRIPTION, MAX_NAME, parse_uuid
from app.services.graphs import validation_error
from app.settings import Settings

MAX_PRESETS_PER_GRAPH = 200


@dataclass
class PresetSpec:
    """What a client sent; None means 'leave as it is' on update."""

    name: str | None = None
    description: str | None = None
    graph_version: int | None = None
    inputs: Any = None
    credentials_inputs: Any = None


def _name(value: str) -> str:
    name = value.strip()
    if not name or len(name) > MAX_NAME:
        raise bad_input(f"name must be 1 to {MAX_NAME} characters", field="name")
    return name


def _description(value: str) -> str:
    if len(value) > MAX_DESCRIPTION:
        raise bad_input(f"description is longer than {MAX_DESCRIPTION} characters")
    return value


def _object(value: Any, field: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise bad_input(f"{field} must be an object", field=field)
    return value


async def _checked(
    settings: Settings,
    user_id: uuid.UUID,
    graph_id: str,
    version: int | None,
    inputs: dict[str, Any],
    credentials_inputs: dict[str, Any],
) -> run_requests.RunRequest:
    """The graph version (NOT_FOUND unless the user can run it) with the preset's
    inputs and credentials checked as a run would check them."""
    request = await run_requests.prepare(user_id, graph_id, version, inputs, credentials_inputs)
    nodes = await Node.filter(graph_id=request.graph.id)
    validation = check_run_inputs(settings, nodes, inputs)
    await run_requests.check_credentials(settings, user_id, request, nodes, validation)
    if not validation.valid:
        raise validation_error(validation)
    return request


async def _give_trigger(settings: Settings, preset: Preset) -> None:
    nodes = await Node.filter(graph__graph_id=preset.graph_id, graph__version=preset.graph_version)
    if trigger_setup.trigger_node(nodes) is not None:
        await trigger_setup.ensure_trigger(
            settings,
            preset.user_id,
            preset.graph_id,
            preset.id,  # type: ignore[attr-defined]
        )


async def create_preset(
    settings: Settings, user_id: uuid.UUID, graph_id: str, spec: PresetSpec
) -> Preset:
    name = _name(spec.name or "")
    description = _description(spec.description or "")
    inputs = _object(spec.inputs if spec.inputs is not None else {}, "inputs")
    credentials_inputs = _object(
        spec.credentials_inputs if spec.credentials_inputs is not None else {},
        "credentialsInputs",
    )
    request = await _checked(
        settings, user_id, graph_id, spec.graph_version, inputs, credentials_inputs
    )
    graph = request.graph
    count = await Preset.filter(user_id=user_id, graph_id=graph.graph_id).count()
    if count >= MAX_PRESETS_PER_GRAPH:
        raise bad_input(f"at most {MAX_PRESETS_PER_GRAPH} presets per graph")
    preset = await Preset.create(
        id=uuid.uuid4(),
        user_id=user_id,
        graph_id=graph.graph_id,
        graph_version=graph.version,
        name=name,
        description=description,
        inputs=inputs,
        credentials_inputs=credentials_inputs,
    )
    await _give_trigger(settings, preset)
    return preset


async def get_preset(user_id: uuid.UUID, preset_id: str) -> Preset | None:
    return await run_requests.get_preset(user_id, preset_id)


async def update_preset(
    settings: Settings, user_id: uuid.UUID, preset_id: str, spec: PresetSpec
) -> Preset:
    preset = await get_preset(user_id, preset_id)
    if preset is None:
        raise not_found("Preset")
    name = _name(spec.name) if spec.name is not None else preset.name
    description = (
        _description(spec.description) if spec.description is not None else preset.description
    )
    inputs = _object(spec.inputs, "inputs") if spec.inputs is not None else preset.inputs
    credentials_inputs = (
        _object(spec.credentials_inputs, "credentialsInputs")
        if spec.credentials_inputs is not None
        else preset.credentials_inputs
    )
    version = spec.graph_version if spec.graph_version is not None else preset.graph_version
    request = await _checked(
        settings, user_id, str(preset.graph_id), version, inputs, credentials_inputs
    )
    preset.name, preset.description = name, description
    preset.inputs, preset.credentials_inputs = inputs, credentials_inputs
    preset.graph_version = request.graph.version
    await preset.save()
    await _give_trigger(settings, preset)
    return preset


async def delete_preset(user_id: uuid.UUID, preset_id: str) -> uuid.UUID:
    """Its trigger (with its deliveries) and its schedules go with it."""
    parsed = parse_uuid(preset_id)
    async with in_transaction() as conn:
        if (
            parsed is None
            or not await Preset.filter(id=parsed, user_id=user_id).using_db(conn).delete()
        ):
            raise not_found("Preset")
        await Schedule.filter(preset_id=parsed, user_id=user_id).using_db(conn).delete()
    return parsed


async def list_presets(user_id: uuid.UUID, graph_id: str | None) -> list[Preset]:
    query = Preset.filter(user_id=user_id)
    if graph_id is not None:
        parsed = parse_uuid(graph_id)
        if parsed is None:
            return []
        query = query.filter(graph_id=parsed)
    return await query.order_by("-created_at", "-id")
