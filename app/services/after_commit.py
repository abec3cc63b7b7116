"""Redis side effects of executeGraph held back until a database transaction commits.

A worker must never pick up the job of an execution row it cannot see yet, so a
caller that starts a run inside its own transaction (a schedule firing, a webhook
delivery) gives executeGraph these stand-ins and runs the actions after COMMIT.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from arq import ArqRedis

from app.events import EventPublisher


@dataclass
class AfterCommit:
    actions: list[Callable[[], Awaitable[Any]]] = field(default_factory=list)

    async def run(self) -> None:
        for action in self.actions:
            await action()


class DeferredQueue:
    def __init__(self, after_commit: AfterCommit, arq: ArqRedis) -> None:
        self.after_commit, self.arq = after_commit, arq

    async def enqueue_job(self, *args: Any, **kwargs: Any) -> None:
        self.after_commit.actions.append(lambda: self.arq.enqueue_job(*args, **kwargs))


class DeferredPublisher:
    def __init__(self, after_commit: AfterCommit, publisher: EventPublisher) -> None:
        self.after_commit, self.publisher = after_commit, publisher

    async def publish(self, *args: Any, **kwargs: Any) -> int:
        self.after_commit.actions.append(lambda: self.publisher.publish(*args, **kwargs))
        return 0
