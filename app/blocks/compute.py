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


# Counted repeats are unrolled when a pattern compiles, on the event loop and with
# no time limit: `(?:(?:(?:a{50}){50}){50}){50}` took 7 s, one level more minutes and
# gigabytes. A pattern whose repeats unroll to more than this many items is refused.
MAX_PATTERN_EXPANSION = 100_000
_COUNTED = regex.compile(r"\{(\d*)(?:,(\d*))?\}")


def pattern_expansion(pattern: str, cap: int = MAX_PATTERN_EXPANSION) -> int:
    """How many items `pattern` unrolls to (an upper bound; stops counting past `cap`)."""
    frames = [[0, 0]]  # per open group: [items so far, items of the last atom]
    i = 0
    while i < len(pattern):
        char = pattern[i]
        frame = frames[-1]
        if char == "(":
            frames.append([0, 0])
        elif char == ")" and len(frames) > 1:
            inner = frames.pop()[0]
            frames[-1][0] += inner
            frames[-1][1] = inner
        elif char == "{" and (counted := _COUNTED.match(pattern, i)) and frame[1]:
            low, high = counted.group(1), counted.group(2)
            times = int(high if high else low or 0) if counted.group(0) != "{}" else 1
            times = min(max(times, 1), cap + 1)
            frame[0] = min(frame[0] + frame[1] * (times - 1), cap + 1)
            frame[1] = min(frame[1] * times, cap + 1)
            if frame[0] > cap:
                return cap + 1
            i = counted.end()
            continue
        elif char == "[":
            # A class is one item: skip to its closing bracket.
            j = i + 1
            if j < len(pattern) and pattern[j] == "^":
                j += 1
            if j < len(pattern) and pattern[j] == "]":
                j += 1
            while j < len(pattern) and pattern[j] != "]":
                j += 2 if pattern[j] == "\\" else 1
            frame[0] += 1
            frame[1] = 1
            i = j + 1
            continue
        elif char not in "*+?|":
            if char == "\\":
                i += 1  # the escaped character is the item
            frame[0] += 1
            frame[1] = 1
        if frames[-1][0] > cap:  # a group's count only grows its parents'
            return cap + 1
        i += 1
    return sum(f[0] for f in frames)


def compile_pattern(pattern: str, case_sensitive: bool, dot_all: bool) -> regex.Pattern:
    flags = (0 if case_sensitive else regex.IGNORECASE) | (regex.DOTALL if dot_all else 0)
    if pattern_expansion(pattern) > MAX_PATTERN_EXPANSION:
        raise BlockError(
            f"the regular expression {pattern[:100]!r} is too large: its counted repeats "
            f"({{n}}) unroll to more than {MAX_PATTERN_EXPANSION:,} items"
        )
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
