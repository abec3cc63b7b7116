"""What one node run may cost, from the inputs known before the run (estimateExecution).

Known inputs are a node's defaults (and, for an AgentInput, the run's input);
a linked pin's value arrives during the run, so a cost whose filter or size
depends on it is a range: the least and the most it can come to over the
values its filters name (and any other value). Per-second costs take the
block's own idea of its run time (Block.run_seconds_range).
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from app.blocks.base import Block, BlockCost, BlockCostType
from app.blocks.costs import input_size_bytes

# Filter values tried per unknown pin are few (a filter names one value each);
# past this many combinations the range falls back to "everything may apply".
_MAX_COMBINATIONS = 1024
_OTHER = object()  # a value no filter names


@dataclass
class NodeCostRange:
    fixed: int  # RUN and BYTE costs that apply whatever arrives on linked pins
    min_up_front: int
    max_up_front: int | None  # None: a BYTE cost on a pin whose size is unknown
    per_second_min: int
    per_second_max: int
    min_after: int
    max_after: int | None  # None: a per-second cost of a run with no known end

    @property
    def min_total(self) -> int:
        return self.min_up_front + self.min_after

    @property
    def max_total(self) -> int | None:
        if self.max_up_front is None or self.max_after is None:
            return None
        return self.max_up_front + self.max_after


def _filter_state(cost: BlockCost, known: Mapping[str, Any], unknown: set[str]) -> bool | None:
    """True/False when the known inputs decide the filter, None when a linked pin does."""
    for pin, value in cost.filter.items():
        if pin in unknown:
            continue
        if known.get(pin) != value:
            return False
    return None if any(pin in unknown for pin in cost.filter) else True


def _undecided_range(costs: list[BlockCost], unknown: set[str]) -> tuple[int, int]:
    """Least and most the undecided costs sum to, over the values linked pins may take."""
    if not costs:
        return 0, 0
    pins = sorted({pin for cost in costs for pin in cost.filter if pin in unknown})
    options = [
        [*{repr(c.filter[pin]): c.filter[pin] for c in costs if pin in c.filter}.values(), _OTHER]
        for pin in pins
    ]
    combinations = 1
    for values in options:
        combinations *= len(values)
    if combinations > _MAX_COMBINATIONS:
        return 0, sum(cost.amount for cost in costs)
    totals = []
    for values in itertools.product(*options):
        chosen = dict(zip(pins, values, strict=True))
        totals.append(
            sum(
                cost.amount
                for cost in costs
                if all(chosen[p] is not _OTHER and chosen[p] == v for p, v in cost.filter.items())
            )
        )
    return min(totals), max(totals)


def _rates(
    costs: Iterable[BlockCost], known: Mapping[str, Any], unknown: set[str]
) -> tuple[int, int, int]:
    """The amounts that surely apply, and the least and most that may apply."""
    decided, undecided = 0, []
    for cost in costs:
        state = _filter_state(cost, known, unknown)
        if state is None:
            undecided.append(cost)
        elif state:
            decided += cost.amount
    low, high = _undecided_range(undecided, unknown)
    return decided, decided + low, decided + high


def _charged_seconds(seconds: float) -> int:
    return max(1, round(seconds))


def node_cost_range(block: Block, known: Mapping[str, Any], unknown: set[str]) -> NodeCostRange:
    run_costs = [c for c in block.costs if c.type == BlockCostType.RUN]
    byte_costs = [c for c in block.costs if c.type == BlockCostType.BYTE]
    second_costs = [c for c in block.costs if c.type == BlockCostType.SECOND]

    run_sure, run_min, run_max = _rates(run_costs, known, unknown)
    byte_sure, byte_min, byte_max = _rates(byte_costs, known, unknown)
    # Sized only for BYTE costs: serialising a large run input once per node of a
    # big graph is what made estimates slow, and nothing else needs the size.
    size = input_size_bytes(known) if byte_costs else 0
    # Bytes are known only when no pin's value arrives during the run.
    fixed = run_sure + (0 if unknown else byte_sure * size)
    min_up_front = run_min + byte_min * size
    # A linked pin's value adds bytes nobody knows yet.
    max_up_front = None if (byte_max and unknown) else run_max + byte_max * size

    _, rate_min, rate_max = _rates(second_costs, known, unknown)
    low, high = block.run_seconds_range(known)
    min_after = rate_min * _charged_seconds(low) if rate_min else 0
    if rate_max == 0:
        max_after: int | None = 0
    else:
        max_after = None if high is None else rate_max * _charged_seconds(high)
    return NodeCostRange(
        fixed=fixed,
        min_up_front=min_up_front,
        max_up_front=max_up_front,
        per_second_min=rate_min,
        per_second_max=rate_max,
        min_after=min_after,
        max_after=max_after,
    )
