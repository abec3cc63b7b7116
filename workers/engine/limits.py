"""Bounded runs (SEMANTICS.md §7): how deep sub-graphs nest and how many node
executions one run makes. Cycles are legal (loops are how agents iterate); the
budget is what ends a loop that never stops."""

from __future__ import annotations


class RunLimitReached(Exception):
    """Ends the whole run (its root) FAILED with this message."""


class RunBudget:
    """Node executions one run may still create, shared by its sub-graph runs."""

    def __init__(self, limit: int, used: int = 0) -> None:
        self.limit = limit
        self.used = used

    def take(self, count: int) -> None:
        if self.used + count > self.limit:
            raise RunLimitReached(
                f"Run limit reached: a run may make at most {self.limit} node runs "
                "(MAX_NODE_RUNS_PER_EXECUTION), sub-graph runs and loops included"
            )
        self.used += count


def check_depth(depth: int, limit: int) -> None:
    """`depth` is how many sub-graph levels a new child run would sit below its root."""
    if depth > limit:
        raise RunLimitReached(
            f"Run limit reached: sub-graphs may nest at most {limit} levels deep "
            "(MAX_SUBGRAPH_DEPTH)"
        )
