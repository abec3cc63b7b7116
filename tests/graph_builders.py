"""Building GraphInput payloads by block name, as a client's editor would."""

from __future__ import annotations

from typing import Any

from app.blocks.registry import block_by_name


def block_id(name: str) -> str:
    block = block_by_name(name)
    assert block is not None, f"no block named {name}"
    return str(block.id)


def node(node_id: str, block: str, **defaults: Any) -> dict[str, Any]:
    return {"id": node_id, "blockId": block_id(block), "inputDefault": defaults}


def link(source: str, source_pin: str, sink: str, sink_pin: str, static: bool = False) -> dict:
    return {
        "sourceId": source,
        "sinkId": sink,
        "sourceName": source_pin,
        "sinkName": sink_pin,
        "isStatic": static,
    }


def echo_graph(name: str = "echo") -> dict[str, Any]:
    """input 'text' -> StoreValue -> output 'result'."""
    return {
        "name": name,
        "description": "passes its input to its output",
        "nodes": [
            node("in", "AgentInput", name="text", description="what to echo", type="string"),
            node("store", "StoreValue"),
            node("out", "AgentOutput", name="result"),
        ],
        "links": [
            link("in", "result", "store", "input"),
            link("store", "output", "out", "value"),
        ],
    }


GRAPH_FIELDS = """id version isActive name description createdAt
  nodes { id blockId inputDefault metadata block { id name } }
  links { id sourceId sinkId sourceName sinkName isStatic }
  inputSchema outputSchema credentialsInputSchema settings { humanInTheLoopSafeMode }"""

CREATE = f"""mutation($g: GraphInput!, $s: GraphSource) {{
  createGraph(graph: $g, source: $s) {{ {GRAPH_FIELDS} }} }}"""
UPDATE = f"""mutation($id: ID!, $g: GraphInput!) {{
  updateGraph(id: $id, graph: $g) {{ {GRAPH_FIELDS} }} }}"""
GET = f"""query($id: ID!, $v: Int, $e: Boolean! = false) {{
  graph(id: $id, version: $v, forExport: $e) {{ {GRAPH_FIELDS} }} }}"""


async def create_graph(gql, user, graph: dict | None = None, source: str | None = None) -> dict:
    data = await gql.ok(CREATE, {"g": graph or echo_graph(), "s": source}, token=user.token)
    return data["createGraph"]


def node_ids(spec: dict[str, Any], created: dict[str, Any]) -> dict[str, str]:
    """The spec's node ids -> the ids the server gave them (nodes keep their order)."""
    assert [n["blockId"] for n in spec["nodes"]] == [n["blockId"] for n in created["nodes"]]
    return {n["id"]: c["id"] for n, c in zip(spec["nodes"], created["nodes"], strict=True)}
