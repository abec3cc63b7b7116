"""The graphql-core executor strawberry uses, with one leak closed.

graphql-core 3.3's per-event executor of a subscription is a shallow copy of
the subscription's executor, so every event adds entries (keyed by the id of
that event's field lists) to one shared sub-field memo that lives as long as
the subscription: about 2 KiB per event per subscriber, never freed, and
long pauses as the dict grows. Each event gets its own memo here.
"""

from __future__ import annotations

from typing import Any

from strawberry.schema.schema import StrawberryGraphQLCoreExecutionContext


class AgentGraphExecutor(StrawberryGraphQLCoreExecutionContext):
    def build_per_event_executor(self, payload: Any):
        executor = super().build_per_event_executor(payload)
        executor._relevant_sub_fields = {}
        return executor
