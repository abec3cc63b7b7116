"""Block work that is CPU-bound runs off the event loop.

A worker's event loop serves every run it holds (and renews their leases), so
no user-controlled computation may run on it: regular expressions go through
the `regex` engine with a time limit, with the GIL released while they match
(`concurrent=True`), on a small thread pool of their own.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

import regex

from app.blocks.base import BlockError

T = TypeVar("T")

# A pattern that needs longer on its text is refused (catastrophic backtracking).
REGEX_TIMEOUT_SECONDS = 2.0
_POOL = ThreadPoolExecutor(max_workers=4, thread_name_prefix="block-compute")


async def off_loop(fn: Callable[..., T], *args: Any) -> T:
    """`fn(*args)` on the block compute pool."""
    return await asyncio.get_running_loop().run_in_executor(_POOL, functools.partial(fn, *args))


def compile_pattern(pattern: str, case_sensitive: bool, dot_all: bool) -> regex.Pattern:
    flags = (0 if case_sensitive else regex.IGNORECASE) | (regex.DOTALL if dot_all else 0)
    try:
        # VERSION0: the same syntax and meaning as Python's `re`.
        return regex.compile(pattern, flags | regex.VERSION0)
    except (regex.error, ValueError, OverflowError, RecursionError) as exc:
        raise BlockError(f"invalid regular expression {pattern!r}: {exc}") from exc


def _timed_out(pattern: regex.Pattern) -> BlockError:
    return BlockError(
        f"the regular expression {pattern.pattern!r} took longer than "
        f"{REGEX_TIMEOUT_SECONDS:g} s on this text (it backtracks too much: simplify it)"
    )


async def search(pattern: regex.Pattern, text: str) -> regex.Match | None:
    try:
        return await off_loop(
            functools.partial(pattern.search, text, timeout=REGEX_TIMEOUT_SECONDS, concurrent=True)
        )
    except TimeoutError:
        raise _timed_out(pattern) from None


async def find_all(pattern: regex.Pattern, text: str) -> list[regex.Match]:
    def every() -> list[regex.Match]:
        return list(pattern.finditer(text, timeout=REGEX_TIMEOUT_SECONDS, concurrent=True))

    try:
        return await off_loop(every)
    except TimeoutError:
        raise _timed_out(pattern) from None
