"""The GraphQL schema: root types composed from the per-domain resolver mixins,
plus the limit and error extensions that run before and after every resolver."""

from __future__ import annotations

import strawberry
from strawberry.extensions import AddValidationRules, MaxAliasesLimiter, MaxTokensLimiter
from strawberry.extensions.disable_introspection import DisableIntrospection

from app.settings import Settings


class AgentGraphSchema(strawberry.Schema):
    def process_errors(self, errors, execution_context=None) -> None:
        # The ErrorCodes extension logs what deserves a log line (masked
        # internal errors, with their errorId); client mistakes are not logged.
        return None


def build_schema(settings: Settings) -> strawberry.Schema:
    from resolvers.api_keys import ApiKeyMutations, ApiKeyQueries
    from resolvers.blocks import BlockMutations, BlockQueries
    from resolvers.executions import ExecutionMutations, ExecutionQueries
    from resolvers.graphs import GraphMutations, GraphQueries
    from resolvers.onboarding import OnboardingMutations, OnboardingQueries
    from resolvers.subscriptions import Subscription
    from resolvers.users import UserMutations, UserQueries
    from schema.extensions import ErrorCodes
    from schema.limits import depth_limit_rule

    @strawberry.type
    class Query(
        UserQueries,
        OnboardingQueries,
        BlockQueries,
        GraphQueries,
        ExecutionQueries,
        ApiKeyQueries,
    ):
        pass

    @strawberry.type
    class Mutation(
        UserMutations,
        OnboardingMutations,
        BlockMutations,
        GraphMutations,
        ExecutionMutations,
        ApiKeyMutations,
    ):
        pass

    depth_rule = depth_limit_rule(settings.MAX_QUERY_DEPTH)
    # Factories, not instances: an extension holds per-request state.
    extensions = [
        ErrorCodes,
        lambda: AddValidationRules([depth_rule]),
        lambda: MaxAliasesLimiter(max_alias_count=settings.MAX_ALIASES),
        lambda: MaxTokensLimiter(max_token_count=settings.MAX_TOKENS),
    ]
    if not settings.GRAPHQL_EXPLORER:
        extensions.append(DisableIntrospection)
    return AgentGraphSchema(
        query=Query, mutation=Mutation, subscription=Subscription, extensions=extensions
    )
