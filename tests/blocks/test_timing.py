"""Wait and CurrentTime, run directly."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime, timedelta

import pytest

from app.blocks.base import BlockError, InvalidBlockInput
from app.blocks.costs import cost_after_run, cost_before_run
from app.blocks.timing import CurrentTime, Wait
from tests.blocks.conftest import run_block


async def test_wait_passes_input_on_after_the_wait() -> None:
    started = time.monotonic()
    outputs = await run_block(Wait(), {"input": {"a": [1, 2]}, "seconds": 0.2})
    elapsed = time.monotonic() - started
    assert outputs == [("output", {"a": [1, 2]})]
    assert 0.19 <= elapsed < 1.0


async def test_wait_zero_seconds_and_default_input() -> None:
    assert await run_block(Wait(), {"seconds": 0}) == [("output", None)]


async def test_wait_is_cancellable() -> None:
    task = asyncio.create_task(run_block(Wait(), {"input": 1, "seconds": 30}))
    await asyncio.sleep(0.1)
    assert not task.done()
    cancelled_at = time.monotonic()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert time.monotonic() - cancelled_at < 0.5


@pytest.mark.parametrize("seconds", [-0.1, -5, 3600.5, 10_000, "soon"])
def test_wait_rejects_bad_seconds(seconds: object) -> None:
    with pytest.raises(InvalidBlockInput) as info:
        Wait().validate_input({"seconds": seconds})
    assert "seconds" in info.value.errors


def test_wait_accepts_the_bounds() -> None:
    assert Wait().validate_input({"seconds": 3600}).seconds == 3600
    assert Wait().validate_input({"seconds": 0}).seconds == 0


def test_wait_is_charged_per_second_after_the_run() -> None:
    costs = Wait().costs
    input_data = {"input": "x", "seconds": 2}
    assert cost_before_run(costs, input_data) == 0
    assert cost_after_run(costs, input_data, 2.01) == 2
    assert cost_after_run(costs, input_data, 0.2) == 1  # any run costs at least a second


async def test_current_time_defaults_to_iso_8601_utc() -> None:
    [(pin, text)] = await run_block(CurrentTime(), {})
    assert pin == "time"
    parsed = datetime.fromisoformat(text)
    assert parsed.utcoffset() == timedelta(0)
    assert abs(parsed - datetime.now(UTC)) < timedelta(seconds=5)


async def test_current_time_formats_with_strftime() -> None:
    [(_, text)] = await run_block(CurrentTime(), {"format": "%Y-%m-%d %H:%M:%S %Z"})
    parsed = datetime.strptime(text, "%Y-%m-%d %H:%M:%S UTC").replace(tzinfo=UTC)
    assert abs(parsed - datetime.now(UTC)) < timedelta(seconds=5)


async def test_current_time_in_a_time_zone() -> None:
    # Kolkata has had no daylight saving time for decades: its offset is fixed.
    [(_, text)] = await run_block(CurrentTime(), {"timezone": "Asia/Kolkata", "trigger": "go"})
    parsed = datetime.fromisoformat(text)
    assert parsed.utcoffset() == timedelta(hours=5, minutes=30)
    assert abs(parsed - datetime.now(UTC)) < timedelta(seconds=5)
    [(_, zone_name)] = await run_block(CurrentTime(), {"timezone": "Asia/Tokyo", "format": "%Z"})
    assert zone_name == "JST"


@pytest.mark.parametrize("zone", ["Mars/Olympus_Mons", "", "../etc/passwd", "/etc/localtime"])
async def test_current_time_refuses_unknown_time_zones(zone: str) -> None:
    with pytest.raises(BlockError, match="unknown time zone"):
        await run_block(CurrentTime(), {"timezone": zone})
