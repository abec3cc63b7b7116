"""The long-lived clients one API process shares across requests, opened by the
lifespan and reached by every request through its context."""

from __future__ import annotations

from dataclasses import dataclass

from arq import ArqRedis

from app.clients.redis import create_redis
from app.event_hub import EventHub
from app.events import EventPublisher, EventReader
from app.services.blocks import BlockCatalog
from app.services.graphs_cache import close_graphs_caches
from app.services.notifications import Notifier
from app.settings import Settings


@dataclass
class AppServices:
    """What the lifespan opened; every request and resolver reaches it through the context."""

    settings: Settings
    # Redis for events, caches and counters; also enqueues arq jobs.
    redis: ArqRedis
    blocks: BlockCatalog
    publisher: EventPublisher
    events: EventReader
    hub: EventHub
    # Makes notifications: in-app events at once, emails through the worker.
    notifier: Notifier

    async def aclose(self) -> None:
        await self.hub.aclose()
        await self.blocks.aclose()
        await close_graphs_caches()
        await self.redis.aclose()


async def start_services(settings: Settings) -> AppServices:
    """The long-lived clients one API process shares across requests."""
    redis = create_redis(settings)
    hub = EventHub(settings.REDIS_URL)
    await hub.start()
    return AppServices(
        settings=settings,
        redis=redis,
        blocks=BlockCatalog(settings),
        publisher=EventPublisher(redis, settings.REDIS_PREFIX),
        events=EventReader(redis, settings.REDIS_PREFIX),
        hub=hub,
        notifier=Notifier(settings, redis),
    )
