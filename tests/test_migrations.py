"""The aerich migrations build exactly the schema the models describe, on
PostgreSQL and on SQLite, through `agentgraph migrate`."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
import uuid

import asyncpg
import pytest

from app.schema_migrations import pending_model_changes
from tests.conftest import PG_ADMIN_DSN, TEST_ENV
from tests.harness import ROOT

GENERATE = """
import asyncio, sys
from tortoise import Tortoise
from app.settings import tortoise_config

async def main():
    await Tortoise.init(config=tortoise_config(sys.argv[1]))
    await Tortoise.generate_schemas()
    await Tortoise.close_connections()

asyncio.run(main())
"""


def _run(*args: str) -> str:
    env = {**os.environ, **TEST_ENV}
    result = subprocess.run(
        [sys.executable, *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


def _migrate(url: str) -> str:
    return _run("-m", "app.cli", "migrate", "--database-url", url)


def _generate(url: str) -> None:
    _run("-c", GENERATE, url)


def test_models_have_no_change_without_a_migration():
    assert pending_model_changes() is False


async def _pg_schema(url: str) -> dict[str, list]:
    conn = await asyncpg.connect(url)
    try:
        columns = await conn.fetch(
            "SELECT table_name, column_name, data_type, is_nullable, character_maximum_length "
            "FROM information_schema.columns WHERE table_schema = 'public'"
        )
        indexes = await conn.fetch(
            "SELECT tablename, indexdef FROM pg_indexes WHERE schemaname = 'public'"
        )
        constraints = await conn.fetch(
            "SELECT conrelid::regclass::text AS t, contype, pg_get_constraintdef(oid) AS d "
            "FROM pg_constraint WHERE connamespace = 'public'::regnamespace"
        )
    finally:
        await conn.close()
    return {
        "columns": sorted(tuple(r) for r in columns),
        "indexes": sorted(tuple(r) for r in indexes),
        "constraints": sorted(tuple(r) for r in constraints),
    }


@pytest.fixture
async def scratch_pg_databases():
    names = [f"agentgraph_scratch_{uuid.uuid4().hex[:10]}" for _ in range(2)]
    admin = await asyncpg.connect(PG_ADMIN_DSN)
    try:
        for name in names:
            await admin.execute(f'CREATE DATABASE "{name}"')
        base = PG_ADMIN_DSN.rsplit("/", 1)[0]
        yield [f"{base}/{name}" for name in names]
    finally:
        for name in names:
            await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()


async def test_postgres_migrations_match_the_models(scratch_pg_databases):
    migrated, generated = scratch_pg_databases
    output = _migrate(migrated)
    assert "applied 1 migration" in output or "applied" in output
    assert "applied 0 migration" in _migrate(migrated)  # idempotent
    _generate(generated)
    from_migrations = await _pg_schema(migrated)
    from_models = await _pg_schema(generated)
    assert len(from_models["columns"]) > 100
    for part in ("columns", "indexes", "constraints"):
        assert from_migrations[part] == from_models[part], part


def _sqlite_schema(path: str) -> dict[str, list]:
    conn = sqlite3.connect(path)
    try:
        tables = [
            r[0]
            for r in conn.execute(
                "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'"
            )
        ]
        schema: dict[str, list] = {}
        for table in sorted(tables):
            schema[table] = [
                # By name, type, nullability and key: SQLite appends a column a later
                # migration adds (and keeps the DEFAULT that filled existing rows).
                sorted(
                    (name, kind, notnull, pk)
                    for _, name, kind, notnull, _, pk in conn.execute(
                        f'PRAGMA table_info("{table}")'
                    )
                ),
                sorted(
                    (unique, [c[2] for c in conn.execute(f'PRAGMA index_info("{name}")')])
                    for _, name, unique, *_ in conn.execute(f'PRAGMA index_list("{table}")')
                ),
                sorted(tuple(r[2:5]) for r in conn.execute(f'PRAGMA foreign_key_list("{table}")')),
            ]
        return schema
    finally:
        conn.close()


def test_sqlite_migrations_match_the_models(tmp_path):
    migrated = tmp_path / "migrated.sqlite3"
    generated = tmp_path / "generated.sqlite3"
    first = _migrate(f"sqlite://{migrated}")
    assert first.startswith("applied ") and not first.startswith("applied 0 "), first
    assert "applied 0 migration" in _migrate(f"sqlite://{migrated}")
    _generate(f"sqlite://{generated}")
    from_migrations = _sqlite_schema(str(migrated))
    from_models = _sqlite_schema(str(generated))
    assert len(from_models) >= 20
    assert from_migrations == from_models
