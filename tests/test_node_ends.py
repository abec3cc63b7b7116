"""Node ends written together (workers/engine/node_ends.py): nodes ending while
another end is written go into one statement. When the database refuses such a
statement, the ends are written again one at a time: only the node whose values
were refused fails, every other end and value is kept, none twice.

The refusal is injected with a trigger (a data error, as PostgreSQL raises for
text it cannot hold) on the end of the one sink run given a marker. Whether that end
shares a statement with others depends on timing; the outcome must not.
"""

from __future__ import annotations

import uuid

from tortoise import connections

from tests.execution_helpers import execute, wait_for_end
from tests.graph_builders import create_graph, link, node, node_ids

ITEMS = 48


async def test_a_refused_end_fails_only_its_node_among_those_written_with_it(gql, user, worker):
    marker = f"refused-{uuid.uuid4().hex}"
    name = marker.replace("-", "_")
    db = connections.get("default")
    await db.execute_script(
        f"""
        CREATE FUNCTION {name}() RETURNS trigger AS $$
        BEGIN
          IF NEW.status = 'COMPLETED' AND NEW.input_data->>'input' = '{marker}' THEN
            RAISE EXCEPTION 'injected refusal' USING ERRCODE = '22021';
          END IF;
          RETURN NEW;
        END $$ LANGUAGE plpgsql;
        CREATE TRIGGER {name} BEFORE UPDATE ON node_executions
          FOR EACH ROW EXECUTE FUNCTION {name}();
        """
    )
    spec = {
        "name": "fan-out with one refused end",
        "nodes": [
            node("in", "AgentInput", name="items", type="array"),
            node("each", "ForEach"),
            node("sink", "StoreValue"),
        ],
        "links": [link("in", "result", "each", "items"), link("each", "item", "sink", "input")],
    }
    items = [f"item {i}" for i in range(ITEMS)]
    items[ITEMS // 2] = marker
    try:
        graph = await create_graph(gql, user, spec)
        started = await execute(gql, user, graph["id"], {"items": items})
        done = await wait_for_end(gql, user, started["id"], timeout=60)
    finally:
        await db.execute_script(f"DROP TRIGGER {name} ON node_executions; DROP FUNCTION {name}();")
    sink = node_ids(spec, graph)["sink"]
    sinks = [n for n in done["nodeExecutions"] if n["nodeId"] == sink]
    assert done["status"] == "FAILED", done["status"]
    assert len(sinks) == ITEMS
    assert sorted(n["inputData"]["input"] for n in sinks) == sorted(items)
    [refused] = [n for n in sinks if n["status"] == "FAILED"]
    assert refused["inputData"]["input"] == marker
    assert refused["error"].startswith("Output cannot be stored"), refused["error"]
    assert refused["outputData"] == {"error": [refused["error"]]}
    kept = [n for n in sinks if n["status"] == "COMPLETED"]
    assert len(kept) == ITEMS - 1
    assert all(n["outputData"] == {"output": [n["inputData"]["input"]]} for n in kept)
