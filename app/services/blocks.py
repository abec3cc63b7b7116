"""The block catalogue clients read, and running one block directly (executeBlock)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any
from urllib.parse import urlparse

from aiocache import Cache
from aiocache.serializers import JsonSerializer
from arq import ArqRedis

from app.blocks.base import ERROR_PIN, Block, BlockError, BlockRunContext, InvalidBlockInput
from app.blocks.costs import cost_after_run, cost_before_run
from app.blocks.registry import all_blocks, code_version, get_block
from app.clients.redis import arq_job_id
from app.errors import AppError, ErrorCode, bad_input, not_found
from app.models import CreditTransactionType
from app.services import ledger
from app.settings import Settings

log = logging.getLogger(__name__)

EXECUTE_BLOCK_JOB = "execute_block"
# executeBlock answers an HTTP request within EXECUTE_BLOCK_TIMEOUT_SECONDS: a
# worker must start the run within BLOCK_RUN_START_SECONDS (else it is dropped
# unrun) and the block gets BLOCK_RUN_SECONDS. Longer work belongs in a graph run.
EXECUTE_BLOCK_TIMEOUT_SECONDS = 60
BLOCK_RUN_START_SECONDS = 8
BLOCK_RUN_SECONDS = 50


def describe_block(block: Block, settings: Settings) -> dict[str, Any]:
    return {
        "id": str(block.id),
        "name": block.name,
        "description": block.description,
        "categories": [str(c) for c in block.categories],
        "inputSchema": block.input_schema(),
        "outputSchema": block.output_schema(),
        "staticOutput": block.static_output,
        "sensitive": block.sensitive,
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
                # Redis only shares the work: away, this process describes the
                # blocks itself (every list of nodes finds its blocks here).
                try:
                    cached = await self._cache.get(self.key)
                except Exception:
                    log.warning("block catalogue cache unavailable", exc_info=True)
                    cached, shared = None, False
                else:
                    shared = True
                if cached is None:
                    cached = [describe_block(b, self.settings) for b in all_blocks().values()]
                    cached.sort(key=lambda d: d["name"])
                    self.computed += 1
                    if shared:
                        with contextlib.suppress(Exception):
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


def unexpected_block_error(block: Block, exc: BaseException) -> str:
    """The error to show for an exception a block did not mean to raise: never its
    text (it may carry internals), an id that the log line carries too."""
    error_id = uuid.uuid4().hex[:12]
    log.error(
        "block %s raised %s (error id %s)",
        block.name,
        type(exc).__name__,
        error_id,
        exc_info=exc,
        extra={"error_id": error_id},
    )
    return f"{block.name} failed unexpectedly (error id {error_id})"


@dataclass
class BlockRunResult:
    outputs: dict[str, list[Any]]
    cost: int


def _checked(settings: Settings, block_id: str, input_data: Any) -> tuple[Block, Any]:
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
    return block, typed


async def execute_block(
    settings: Settings, arq: ArqRedis, user_id: uuid.UUID, block_id: str, input_data: Any
) -> BlockRunResult:
    """Run one block outside any graph, charged like a node run. The API process
    runs no block code: the run is a worker's job, awaited here."""
    block, _ = _checked(settings, block_id, input_data)
    needed = cost_before_run(block.costs, input_data) + cost_after_run(block.costs, input_data, 1.0)
    available = await ledger.get_available(user_id)
    if needed > available or (block.costs and available <= 0):
        raise AppError(ErrorCode.INSUFFICIENT_CREDITS, "Insufficient credits", balance=available)
    run_id = uuid.uuid4()
    job = await arq.enqueue_job(
        EXECUTE_BLOCK_JOB,
        str(user_id),
        str(block.id),
        input_data,
        str(run_id),
        _job_id=arq_job_id(settings, "block-run", run_id),
        _expires=timedelta(seconds=BLOCK_RUN_START_SECONDS),
    )
    if job is None:  # pragma: no cover - the run id is new
        raise AppError(ErrorCode.INTERNAL, "The block run could not be queued")
    try:
        result = await job.result(timeout=EXECUTE_BLOCK_TIMEOUT_SECONDS, poll_delay=0.05)
    except TimeoutError:
        raise AppError(ErrorCode.INTERNAL, "The block run did not finish in time") from None
    except Exception:
        log.warning("block run %s did not run", run_id, exc_info=True)
        raise AppError(ErrorCode.INTERNAL, "No worker could run the block; try again") from None
    if "error" in result:
        error = result["error"]
        raise AppError(ErrorCode(error["code"]), error["message"], **error["extensions"])
    return BlockRunResult(outputs=result["outputs"], cost=result["cost"])


AfterCharge = Callable[[uuid.UUID, int | None, int, str], Awaitable[None]]


async def run_block(
    settings: Settings,
    after_charge: AfterCharge,
    user_id: uuid.UUID,
    block_id: str,
    input_data: Any,
    run_id: str,
) -> dict[str, Any]:
    """A worker's side of executeBlock: charge, run with a time limit, charge the run
    time. Returns {"outputs", "cost"} or {"error": {"code", "message", "extensions"}}."""
    try:
        block, typed = _checked(settings, block_id, input_data)
        cost = await _charge_before(after_charge, user_id, block, input_data, run_id)
    except AppError as exc:
        return {
            "error": {"code": str(exc.code), "message": exc.message, "extensions": exc.extensions}
        }
    outputs: dict[str, list[Any]] = {}
    context = BlockRunContext(settings=settings, user_id=user_id)
    started = time.monotonic()
    try:
        async with asyncio.timeout(BLOCK_RUN_SECONDS):
            async for pin, value in block.run(typed, context):
                outputs.setdefault(pin, []).append(value)
    except TimeoutError:
        outputs.setdefault(ERROR_PIN, []).append(f"timed out after {BLOCK_RUN_SECONDS} s")
    except BlockError as exc:
        outputs.setdefault(ERROR_PIN, []).append(str(exc))
    except Exception as exc:
        outputs.setdefault(ERROR_PIN, []).append(unexpected_block_error(block, exc))
    time_key = f"block-run:{run_id}:time"
    seconds_cost = cost_after_run(block.costs, input_data, time.monotonic() - started)
    if seconds_cost:
        # Time already spent is owed even past zero (by at most what the run used
        # beyond the minimum it reserved).
        entry = await ledger.record_transaction(
            user_id,
            -seconds_cost,
            CreditTransactionType.USAGE,
            time_key,
            allow_negative=True,
            release_reservation=time_key,
            description=f"Block run time: {block.name}",
        )
        if entry.created:
            await after_charge(user_id, entry.transaction.running_balance, seconds_cost, time_key)
    else:
        await ledger.release(user_id, time_key)
    return {"outputs": outputs, "cost": cost + seconds_cost}


async def _charge_before(
    after_charge: AfterCharge,
    user_id: uuid.UUID,
    block: Block,
    input_data: dict[str, Any],
    run_id: str,
) -> int:
    """Reserve the run-time minimum, then charge the up-front cost (or neither)."""
    time_key = f"block-run:{run_id}:time"
    await ledger.reserve(user_id, time_key, cost_after_run(block.costs, input_data, 1.0))
    cost = cost_before_run(block.costs, input_data)
    if block.costs and not cost and await ledger.get_available(user_id) < 0:
        await ledger.release(user_id, time_key)
        raise AppError(ErrorCode.INSUFFICIENT_CREDITS, "Insufficient credits")
    if cost:
        try:
            entry = await ledger.record_transaction(
                user_id,
                -cost,
                CreditTransactionType.USAGE,
                f"block-run:{run_id}",
                description=f"Block run: {block.name}",
                metadata={"block_id": str(block.id)},
            )
        except BaseException:
            await ledger.release(user_id, time_key)
            raise
        if entry.created:
            await after_charge(
                user_id, entry.transaction.running_balance, cost, entry.transaction.key
            )
    return cost
