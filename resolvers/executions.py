"""Executions: start, stop, read, share, delete."""

from __future__ import annotations

from typing import Annotated

import strawberry
from strawberry.scalars import JSON
from strawberry.types.nodes import SelectedField

from app.context import Info
from app.errors import AppError, ErrorCode
from app.models import ApiKeyPermission, OnboardingStep, UserOnboarding
from app.services import estimates, execution_sharing, executions, onboarding
from app.services.maker_secrets import masked
from schema.permissions import CanExecuteGraph, CanReadExecution, SignedInUser
from schema.types.estimates import ExecutionEstimate
from schema.types.executions import (
    Execution,
    ExecutionConnection,
    ExecutionEdge,
    ExecutionStatus,
    SharedExecution,
    ShareLink,
)
from schema.types.graphs import GraphSource, PageInfo


@strawberry.type
class ExecutionQueries:
    @strawberry.field(
        permission_classes=[CanReadExecution], description="The user's executions, newest first."
    )
    async def executions(
        self,
        info: Info,
        graph_id: strawberry.ID | None = None,
        statuses: list[ExecutionStatus] | None = None,
        first: Annotated[int, strawberry.argument(description="1 to 100.")] = 25,
        after: str | None = None,
    ) -> ExecutionConnection:
        page = await executions.list_executions(
            await info.context.user_id(), graph_id, statuses, first, after
        )
        edges = [
            ExecutionEdge(cursor=page.cursor(e), node=Execution.from_model(e))
            for e in page.executions
        ]
        return ExecutionConnection(
            edges=edges,
            page_info=PageInfo(
                has_next_page=page.has_next, end_cursor=edges[-1].cursor if edges else None
            ),
            total_count=page.total,
        )

    @strawberry.field(
        permission_classes=[CanReadExecution], description="Null when absent or not the caller's."
    )
    async def execution(self, info: Info, id: strawberry.ID) -> Execution | None:
        principal = await info.context.principal()
        user_id = await info.context.user_id()
        row = await executions.get_execution(user_id, id)
        if row is None:
            return None
        if not principal.via_api_key:
            progress = await UserOnboarding.get_or_none(user_id=user_id)
            if progress is not None and progress.onboarding_agent_execution_id == row.id:
                await onboarding.complete_step(
                    info.context.settings, user_id, OnboardingStep.GET_RESULTS
                )
        return Execution.from_model(row)

    @strawberry.field(
        permission_classes=[CanExecuteGraph],
        description=(
            "What a run of the graph version (the active one when left out) with these inputs "
            "will cost: per node, in total, and as its recent runs really cost."
        ),
    )
    async def estimate_execution(
        self,
        info: Info,
        graph_id: strawberry.ID,
        version: int | None = None,
        inputs: JSON = {},  # noqa: B006
    ) -> ExecutionEstimate:
        estimate = await estimates.estimate_execution(
            info.context.settings, await info.context.user_id(), graph_id, version, inputs
        )
        return ExecutionEstimate.from_estimate(estimate)

    @strawberry.field(description="No sign-in needed.")
    async def shared_execution(self, info: Info, share_token: str) -> SharedExecution | None:
        found = await info.context.loaders.shared_executions.load(share_token)
        if found is None:
            return None
        execution, graph = found
        hidden = await info.context.loaders.maker_secrets.load(
            (execution.user_id, execution.graph_id, execution.graph_version)  # type: ignore[attr-defined]
        )
        return SharedExecution(
            id=execution.id,
            graph_name=graph.name if graph else "",
            graph_description=graph.description if graph else "",
            status=execution.status,
            created_at=execution.created_at,
            outputs=masked(execution.outputs, hidden),
        )


# What a run took in and gave out: READ_EXECUTION reads these, not EXECUTE_GRAPH.
RUN_DATA_FIELDS = frozenset({"inputs", "outputs", "nodeExecutions", "stats"})


def _selects_run_data(selections: list) -> bool:
    """Whether the selection (fragments included) asks for any RUN_DATA_FIELDS."""
    for selection in selections:
        if isinstance(selection, SelectedField) and selection.name in RUN_DATA_FIELDS:
            return True
        if _selects_run_data(selection.selections):
            return True
    return False


@strawberry.type
class ExecutionMutations:
    @strawberry.mutation(permission_classes=[CanExecuteGraph])
    async def execute_graph(
        self,
        info: Info,
        graph_id: strawberry.ID,
        version: int | None = None,
        # strawberry copies argument defaults per request, so {} is not shared.
        inputs: JSON = {},  # noqa: B006
        credentials_inputs: JSON = {},  # noqa: B006
        graph_source: Annotated[GraphSource | None, strawberry.argument(name="source")] = None,
        preset_id: Annotated[
            strawberry.ID | None,
            strawberry.argument(
                description=(
                    "Start from this preset's inputs and credentials (those given here win) "
                    "and, without version, its graph version."
                )
            ),
        ] = None,
        max_credits: Annotated[
            int | None,
            strawberry.argument(
                description=(
                    'A budget: the run ends FAILED with "Budget exceeded" before the charge '
                    "(its sub-graph runs' and run-time charges included) that would take it "
                    "past this many credits; that charge is not made. Positive."
                )
            ),
        ] = None,
    ) -> Execution:
        services = info.context.services
        row = await executions.execute_graph(
            info.context.settings,
            services.redis,
            services.publisher,
            await info.context.user_id(),
            graph_id,
            version,
            inputs,
            credentials_inputs,
            graph_source,
            preset_id=preset_id,
            max_credits=max_credits,
        )
        return Execution.from_model(row)

    @strawberry.mutation(
        permission_classes=[CanExecuteGraph],
        description=(
            "Stops a queued or running execution; returns it, or null if it had already ended."
        ),
    )
    async def stop_execution(self, info: Info, id: strawberry.ID) -> Execution | None:
        principal = await info.context.principal()
        asked = info.selected_fields[0].selections if info.selected_fields else []
        if not principal.allows(ApiKeyPermission.READ_EXECUTION) and _selects_run_data(asked):
            # Refused before stopping anything: the key may stop runs, not read them.
            raise AppError(
                ErrorCode.FORBIDDEN,
                "This API key lacks the READ_EXECUTION permission to read a run's "
                "inputs, outputs, node executions or stats",
            )
        services = info.context.services
        row = await executions.stop_execution(
            info.context.settings,
            services.redis,
            services.publisher,
            await info.context.user_id(),
            id,
        )
        return Execution.from_model(row) if row else None

    @strawberry.mutation(permission_classes=[SignedInUser])
    async def delete_execution(self, info: Info, id: strawberry.ID) -> strawberry.ID:
        services = info.context.services
        return await executions.delete_execution(
            info.context.settings,
            services.redis,
            services.publisher,
            await info.context.user_id(),
            id,
        )

    @strawberry.mutation(permission_classes=[SignedInUser])
    async def share_execution(self, info: Info, id: strawberry.ID) -> ShareLink:
        row = await execution_sharing.share_execution(await info.context.user_id(), id)
        token = str(row.share_token)
        base = info.context.settings.FRONTEND_BASE_URL.rstrip("/")
        return ShareLink(
            share_url=f"{base}/share/{token}",
            share_token=token,
            execution=Execution.from_model(row),
        )

    @strawberry.mutation(permission_classes=[SignedInUser])
    async def unshare_execution(self, info: Info, id: strawberry.ID) -> Execution:
        return Execution.from_model(
            await execution_sharing.unshare_execution(await info.context.user_id(), id)
        )
