"""The exported schema against the public contract (../shared/api/schema.graphql).

Nothing that exists may break the contract. Parts that later issues build
are listed below as not yet built; they may be missing, and the list must
shrink as they land (a listed part that now exists fails the test too).
"""

from __future__ import annotations

from pathlib import Path

from graphql import (
    BreakingChangeType,
    build_schema,
    find_breaking_changes,
    find_dangerous_changes,
)

from app.settings import get_settings
from schema import build_schema as build_our_schema

ROOT = Path(__file__).resolve().parent.parent
CONTRACT = ROOT.parent / "shared" / "api" / "schema.graphql"

NOT_YET_BUILT: set[str] = set()


def _exported():
    return build_schema(build_our_schema(get_settings()).as_str())


def _missing_part(change) -> str | None:
    """The contract part a removal names, e.g. 'Query.blocks' or 'Graph'."""
    text = change.description
    if change.type == BreakingChangeType.FIELD_REMOVED:
        return text.removeprefix("Field ").split(" was removed")[0]
    if change.type == BreakingChangeType.TYPE_REMOVED:
        return text.removeprefix("Standard scalar ").split(" was removed")[0]
    return None


def test_exported_schema_breaks_nothing_that_exists():
    contract = build_schema(CONTRACT.read_text())
    breaking = find_breaking_changes(contract, _exported())
    unexpected = [c.description for c in breaking if _missing_part(c) not in NOT_YET_BUILT]
    assert unexpected == []
    assert find_dangerous_changes(contract, _exported()) == []


def test_not_yet_built_list_is_current():
    exported = _exported()
    built = set()
    for name in NOT_YET_BUILT:
        type_name, _, field = name.partition(".")
        graphql_type = exported.get_type(type_name)
        if graphql_type is not None and (not field or field in graphql_type.fields):
            built.add(name)
    assert built == set(), "built now: remove these from NOT_YET_BUILT"


def test_committed_sdl_is_current():
    committed = (ROOT / "schema.graphql").read_text()
    assert committed.strip() == build_our_schema(get_settings()).as_str().strip(), (
        "schema.graphql is stale: run `make schema`"
    )
