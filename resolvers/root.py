"""The GraphQL schema: root types composed from the per-domain resolver mixins,
plus the limit and error extensions (schema/) that run around every resolver."""

from __future__ import annotations

import strawberry
from graphql import GraphQLInputField
from graphql.type.definition import GraphQLDefaultInput
from graphql.utilities.value_to_literal import default_scalar_value_to_literal
from strawberry.extensions import AddValidationRules, MaxTokensLimiter
from strawberry.extensions.disable_introspection import DisableIntrospection
from strawberry.extensions.max_aliases import create_validator as create_alias_limit_rule

from app.settings import Settings
from resolvers.api_keys import ApiKeyMutations, ApiKeyQueries
from resolvers.blocks import BlockMutations, BlockQueries
from resolvers.credentials import CredentialsMutations, CredentialsQueries
from resolvers.credits import CreditMutations, CreditQueries
from resolvers.executions import ExecutionMutations, ExecutionQueries
from resolvers.graphs import GraphMutations, GraphQueries
from resolvers.library import LibraryMutations, LibraryQueries
from resolvers.onboarding import OnboardingMutations, OnboardingQueries
from resolvers.presets import PresetMutations, PresetQueries
from resolvers.schedules import ScheduleMutations, ScheduleQueries
from resolvers.subscriptions import Subscription
from resolvers.triggers import TriggerMutations
from resolvers.users import UserMutations, UserQueries
from schema.executor import AgentGraphExecutor
from schema.extensions import CachedParse, CachedValidation, ErrorCodes
from schema.limits import depth_limit_rule
from schema.rate_limit import MutationRateLimit
from schema.storable_values import RefuseUnstorableValues


class AgentGraphSchema(strawberry.Schema):
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
        LibraryQueries,
        PresetQueries,
        CredentialsQueries,
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
        LibraryMutations,
        PresetMutations,
        CredentialsMutations,
        TriggerMutations,
    ):
        pass

    # Built once: the validation cache keys on the rules, so they must be the
    # same objects on every request.
    limit_rules = [
        depth_limit_rule(settings.MAX_QUERY_DEPTH),
        create_alias_limit_rule(settings.MAX_ALIASES),
    ]
    # Factories, not instances: an extension holds per-request state.
    extensions = [
        ErrorCodes,
        MutationRateLimit,
        lambda: MaxTokensLimiter(max_token_count=settings.MAX_TOKENS),
        CachedParse,
        lambda: AddValidationRules(limit_rules),
        # Before validation: it also keeps graphql-core from reading numbers it cannot.
        RefuseUnstorableValues,
        CachedValidation,
    ]
    if not settings.GRAPHQL_EXPLORER:
        extensions.append(DisableIntrospection)
    schema = AgentGraphSchema(
        query=Query,
        mutation=Mutation,
        subscription=Subscription,
        extensions=extensions,
        execution_context_class=AgentGraphExecutor,
    )
    _give_json_defaults_a_literal(schema)
    return schema


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
