"""What a block run costs (1 credit = 1 US cent)."""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from typing import Any

from app.blocks.base import BlockCost, BlockCostType


def _matches(cost_filter: Mapping[str, Any], input_data: Mapping[str, Any]) -> bool:
    return all(input_data.get(pin) == value for pin, value in cost_filter.items())


def input_size_bytes(input_data: Mapping[str, Any]) -> int:
    return len(json.dumps(input_data, default=str, separators=(",", ":")).encode())


def cost_before_run(costs: Iterable[BlockCost], input_data: Mapping[str, Any]) -> int:
    """RUN costs whose filter matches the input, plus BYTE costs per byte of input."""
    total = 0
    for cost in costs:
        if not _matches(cost.filter, input_data):
            continue
        if cost.type == BlockCostType.RUN:
            total += cost.amount
        elif cost.type == BlockCostType.BYTE:
            total += cost.amount * input_size_bytes(input_data)
    return total


def cost_after_run(
    costs: Iterable[BlockCost], input_data: Mapping[str, Any], run_seconds: float
) -> int:
    """SECOND costs per second of run time: rounded, and at least one once it ran."""
    seconds = max(1, round(run_seconds)) if run_seconds > 0 else 0
    return sum(
        cost.amount * seconds
        for cost in costs
        if cost.type == BlockCostType.SECOND and _matches(cost.filter, input_data)
    )
