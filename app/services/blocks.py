"""The block catalogue clients read, and running one block directly (executeBlock)."""

from __future__ import annotations

import asyncio
import time
import uuid
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlparse

from aiocache import Cache
from aiocache.serializers import JsonSerializer

from app.blocks.base import ERROR_PIN, Block, BlockError, BlockRunContext, InvalidBlockInput
from app.blocks.costs import cost_after_run, cost_before_run
from app.blocks.registry import all_blocks, code_version, get_block
from app.errors import AppError, ErrorCode, bad_input, not_found
from app.models import CreditTransactionType
from app.services import ledger
from app.settings import Settings

# executeBlock answers an HTTP request; longer work belongs in a graph run.
EXECUTE_BLOCK_TIMEOUT_SECONDS = 60


def describe_block(block: Block, settings: Settings) -> dict[str, Any]:
    return {
        "id": str(block.id),
        "name": block.name,
        "description": block.description,
        "categories": [str(c) for c in block.categories],
        "inputSchema": block.input_schema(),
        "outputSchema": block.output_schema(),
        "staticOutput": block.static_output,
        "disabled": block.is_disabled(settings),
        "costs": [
            {"amount": c.amount, "type": str(c.type), "filter": dict(c.filter)} for c in block.costs
        ],
    }


class BlockCatalog:
    """Block descriptors, computed once per code version and shared through Redis
    (aiocache); each process also keeps the decoded list after its first read."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        host, port, db = _redis_location(settings)
        self._cache = Cache(
            Cache.REDIS,
            endpoint=host,
            port=port,
            db=db,
            namespace=f"{settings.REDIS_PREFIX}blocks",
            serializer=JsonSerializer(),
        )
        self._descriptors: list[dict[str, Any]] | None = None
        self._by_id: dict[str, dict[str, Any]] = {}
        self._lock = asyncio.Lock()
        self.computed = 0  # how many times this process built the descriptors

    @property
    def key(self) -> str:
        # Settings that change a descriptor (which blocks are disabled) are part of the key.
        disabled = sorted(b.name for b in all_blocks().values() if b.is_disabled(self.settings))
        return f"{code_version()}:{','.join(disabled)}"

    async def descriptors(self) -> list[dict[str, Any]]:
        if self._descriptors is not None:
            return self._descriptors
        async with self._lock:
            if self._descriptors is None:
                cached = await self._cache.get(self.key)
                if cached is None:
                    cached = [describe_block(b, self.settings) for b in all_blocks().values()]
                    cached.sort(key=lambda d: d["name"])
                    self.computed += 1
                    await self._cache.set(self.key, cached)
                self._by_id = {d["id"]: d for d in cached}
                self._descriptors = cached
        return self._descriptors

    async def get(self, block_id: str) -> dict[str, Any] | None:
        await self.descriptors()
        return self._by_id.get(str(block_id).lower())

    def get_loaded(self, block_id: str) -> tuple[bool, dict[str, Any] | None]:
        """Without awaiting: (loaded, descriptor). Lists of nodes resolve their
        blocks synchronously once the catalogue is in memory."""
        if self._descriptors is None:
            return False, None
        return True, self._by_id.get(str(block_id).lower())

    async def aclose(self) -> None:
        await self._cache.close()


def _redis_location(settings: Settings) -> tuple[str, int, int]:
    url = urlparse(settings.REDIS_URL)
    db = url.path.strip("/")
    return url.hostname or "127.0.0.1", url.port or 6379, int(db) if db.isdigit() else 0


@dataclass
class BlockRunResult:
    outputs: dict[str, list[Any]]
    cost: int


async def execute_block(
    settings: Settings, user_id: uuid.UUID, block_id: str, input_data: Any
) -> BlockRunResult:
    """Run one block outside any graph, charged like a node run."""
    block = get_block(block_id)
    if block is None:
        raise not_found("Block")
    if block.is_disabled(settings):
        raise AppError(ErrorCode.FORBIDDEN, f"{block.name} is disabled on this server")
    if not isinstance(input_data, dict):
        raise bad_input("input must be an object", field="input")
    try:
        typed = block.validate_input(input_data)
    except InvalidBlockInput as exc:
        raise bad_input(f"Invalid input: {exc}", pinErrors=exc.errors) from exc
    run_id = uuid.uuid4()
    cost = cost_before_run(block.costs, input_data)
    balance = await ledger.get_balance(user_id)
    if balance <= 0 and cost == 0 and block.costs:
        raise AppError(ErrorCode.INSUFFICIENT_CREDITS, "Insufficient credits", balance=balance)
    if cost:
        await ledger.record_transaction(
            user_id,
            -cost,
            CreditTransactionType.USAGE,
            f"block-run:{run_id}",
            description=f"Block run: {block.name}",
            metadata={"block_id": str(block.id)},
        )
    outputs: dict[str, list[Any]] = {}
    context = BlockRunContext(settings=settings, user_id=user_id)
    started = time.monotonic()
    try:
        async with asyncio.timeout(EXECUTE_BLOCK_TIMEOUT_SECONDS):
            async for pin, value in block.run(typed, context):
                outputs.setdefault(pin, []).append(value)
    except TimeoutError:
        outputs.setdefault(ERROR_PIN, []).append(
            f"timed out after {EXECUTE_BLOCK_TIMEOUT_SECONDS} s"
        )
    except BlockError as exc:
        outputs.setdefault(ERROR_PIN, []).append(str(exc))
    except Exception as exc:
        outputs.setdefault(ERROR_PIN, []).append(f"{type(exc).__name__}: {exc}")
    seconds_cost = cost_after_run(block.costs, input_data, time.monotonic() - started)
    if seconds_cost:
        # Time already spent is owed even past zero.
        await ledger.record_transaction(
            user_id,
            -seconds_cost,
            CreditTransactionType.USAGE,
            f"block-run:{run_id}:time",
            allow_negative=True,
            description=f"Block run time: {block.name}",
        )
    return BlockRunResult(outputs=outputs, cost=cost + seconds_cost)
