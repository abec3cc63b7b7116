"""The exported schema against the public contract, kept in the repo as
tests/contract/schema.graphql (a copy of the product's contract, so a fresh
clone tests against it with nothing beside it).

Strict: no breaking change against the contract, and of graphql-core's
"dangerous" changes only additions (a new optional argument or input field,
enum value, union member or interface), so nothing in it is missing, renamed,
retyped or given another default.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from graphql import (
    DangerousChangeType,
    build_schema,
    find_breaking_changes,
    find_dangerous_changes,
    is_abstract_type,
)

from app.settings import get_settings
from resolvers.root import build_schema as build_our_schema

ROOT = Path(__file__).resolve().parent.parent
CONTRACT = Path(__file__).resolve().parent / "contract" / "schema.graphql"


def _exported():
    return build_schema(build_our_schema(get_settings()).as_str())


def test_exported_schema_has_no_breaking_change_against_the_contract():
    contract = build_schema(CONTRACT.read_text())
    assert [c.description for c in find_breaking_changes(contract, _exported())] == []


ADDITIONS = {
    DangerousChangeType.OPTIONAL_ARG_ADDED,
    DangerousChangeType.VALUE_ADDED_TO_ENUM,
    DangerousChangeType.TYPE_ADDED_TO_UNION,
    DangerousChangeType.OPTIONAL_INPUT_FIELD_ADDED,
    DangerousChangeType.IMPLEMENTED_INTERFACE_ADDED,
}


def test_exported_schema_changes_nothing_dangerous_but_additions():
    contract = build_schema(CONTRACT.read_text())
    changes = find_dangerous_changes(contract, _exported())
    assert [c.description for c in changes if c.type not in ADDITIONS] == []


def test_every_contract_type_and_field_is_exported():
    contract, exported = build_schema(CONTRACT.read_text()), _exported()
    missing = []
    for name, contract_type in contract.type_map.items():
        if name.startswith("__"):
            continue
        ours = exported.get_type(name)
        if ours is None:
            missing.append(name)
            continue
        for field in getattr(contract_type, "fields", {}) or {}:
            if field not in ours.fields:
                missing.append(f"{name}.{field}")
    assert missing == []


def test_committed_sdl_is_current():
    committed = (ROOT / "schema.graphql").read_text()
    assert committed.strip() == build_our_schema(get_settings()).as_str().strip(), (
        "schema.graphql is stale: run `make schema`"
    )


def test_committed_possible_types_are_current():
    """possible-types.json (Apollo's `possibleTypes`) names every union and
    interface with all its members, as `make schema` writes it."""
    committed = json.loads((ROOT / "possible-types.json").read_text())
    exported = _exported()
    abstract = {
        name: sorted(t.name for t in exported.get_possible_types(named))
        for name, named in exported.type_map.items()
        if is_abstract_type(named) and not name.startswith("__")
    }
    assert abstract, "the schema has unions (ExecutionEvent)"
    assert committed == abstract, "possible-types.json is stale: run `make schema`"


def test_export_schema_prints_the_possible_types():
    result = subprocess.run(
        [sys.executable, "-m", "app.cli", "export-schema", "--possible-types"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    )
    assert json.loads(result.stdout) == json.loads((ROOT / "possible-types.json").read_text())
