"""The GraphQL schema: root types composed from the per-domain resolver mixins,
plus the request gate (schema/request_gate.py) that admits every operation
and gives every error its code."""

from __future__ import annotations

import strawberry
from graphql import GraphQLInputField, is_abstract_type, is_wrapping_type
from graphql.type.definition import GraphQLDefaultInput
from graphql.utilities.value_to_literal import default_scalar_value_to_literal

from app.settings import Settings
from resolvers.admin import AdminMutations, AdminQueries
from resolvers.api_keys import ApiKeyMutations, ApiKeyQueries
from resolvers.blocks import BlockMutations, BlockQueries
from resolvers.credentials import CredentialsMutations, CredentialsQueries
from resolvers.credits import CreditMutations, CreditQueries
from resolvers.executions import ExecutionMutations, ExecutionQueries
from resolvers.graphs import GraphMutations, GraphQueries
from resolvers.library import LibraryMutations, LibraryQueries
from resolvers.notifications import (
    NotificationMutations,
    NotificationQueries,
    NotificationSubscription,
)
from resolvers.onboarding import OnboardingMutations, OnboardingQueries
from resolvers.presets import PresetMutations, PresetQueries
from resolvers.reviews import ReviewMutations, ReviewQueries
from resolvers.schedules import ScheduleMutations, ScheduleQueries
from resolvers.subscriptions import Subscription as ExecutionSubscription
from resolvers.triggers import TriggerMutations
from resolvers.users import UserMutations, UserQueries
from schema.executor import AgentGraphExecutor, mark_plain_leaves
from schema.extension_runner import LeanExtensionsRunner
from schema.request_gate import DocumentGate, RequestGate


class AgentGraphSchema(strawberry.Schema):
    def create_extensions_runner(self, execution_context, extensions) -> LeanExtensionsRunner:
        return LeanExtensionsRunner(execution_context=execution_context, extensions=extensions)

    def process_errors(self, errors, execution_context=None) -> None:
        # The ErrorCodes extension logs what deserves a log line (masked
        # internal errors, with their errorId); client mistakes are not logged.
        return None


def build_schema(settings: Settings) -> strawberry.Schema:
    @strawberry.type
    class Query(
        UserQueries,
        OnboardingQueries,
        BlockQueries,
        CreditQueries,
        GraphQueries,
        ExecutionQueries,
        ScheduleQueries,
        ApiKeyQueries,
        NotificationQueries,
        AdminQueries,
        LibraryQueries,
        PresetQueries,
        CredentialsQueries,
        ReviewQueries,
    ):
        pass

    @strawberry.type
    class Mutation(
        UserMutations,
        OnboardingMutations,
        BlockMutations,
        CreditMutations,
        GraphMutations,
        ExecutionMutations,
        ScheduleMutations,
        ApiKeyMutations,
        NotificationMutations,
        AdminMutations,
        LibraryMutations,
        PresetMutations,
        CredentialsMutations,
        TriggerMutations,
        ReviewMutations,
    ):
        pass

    @strawberry.type
    class Subscription(ExecutionSubscription, NotificationSubscription):
        pass

    # One gate per schema: it keeps the analysis of each query text (limits,
    # parse, validation). A factory, not an instance: an extension holds
    # per-request state.
    gate = DocumentGate(settings)
    schema = AgentGraphSchema(
        query=Query,
        mutation=Mutation,
        subscription=Subscription,
        extensions=[lambda: RequestGate(gate)],
        execution_context_class=AgentGraphExecutor,
    )
    gate.bind(schema._schema)
    _give_json_defaults_a_literal(schema)
    _answer_is_one_of_for_wrapped_types(schema)
    mark_plain_leaves(schema)
    return schema


def possible_types(schema: strawberry.Schema) -> dict[str, list[str]]:
    """Every union and interface with the object types it may hold, sorted: what
    Apollo Client's InMemoryCache takes as `possibleTypes` (and urql's graphcache
    reads from the schema) to match fragments on abstract types."""
    core = schema._schema
    return {
        name: sorted(t.name for t in core.get_possible_types(named))
        for name, named in sorted(core.type_map.items())
        if is_abstract_type(named) and not name.startswith("__")
    }


def _give_json_defaults_a_literal(schema: strawberry.Schema) -> None:
    """graphql-core cannot turn a JSON scalar's object default (`inputs: JSON! = {}`)
    into an AST, so introspection of `defaultValue` would fail; give such
    defaults their literal up front."""
    for named in schema._schema.type_map.values():
        fields = getattr(named, "fields", None)
        if not isinstance(fields, dict):
            continue
        for field in fields.values():
            inputs = [field] if isinstance(field, GraphQLInputField) else []
            inputs += list(getattr(field, "args", {}).values())
            for item in inputs:
                value = item.default_value
                if item.default is None and isinstance(value, dict | list):
                    item.default = GraphQLDefaultInput(
                        literal=default_scalar_value_to_literal(value)
                    )


def _answer_is_one_of_for_wrapped_types(schema: strawberry.Schema) -> None:
    """strawberry's `__Type.isOneOf` reads the type's `extensions`, which list
    and non-null wrappers do not have: `{ __type(name: "Query") { fields { type
    { isOneOf } } } }` failed with INTERNAL once per field, each failure logged
    with its traceback (thousands from one anonymous request). For a wrapper
    the answer is null, as the spec has it for every kind but input objects."""
    field = schema._schema.type_map["__Type"].fields["isOneOf"]  # type: ignore[union-attr]
    strawberrys = field.resolve

    def is_one_of(type_, info):
        return None if is_wrapping_type(type_) else strawberrys(type_, info)

    field.resolve = is_one_of
