"""Shared subscription results (schema/executor.py) never cross variables,
users or rights, on websockets and HTTP streams alike."""

from __future__ import annotations

import asyncio
import contextlib
import json

import httpx
import pytest
import websockets

from tests.execution_helpers import execute
from tests.graph_builders import create_graph
from tests.harness import (
    MULTIPART_ACCEPT,
    graphql_ws,
    multipart_parts,
    sse_events,
    until_two_fit,
)
from tests.sockets.helpers import (
    KEY,
    ME,
    SELECTIVE,
    _codes,
    assert_clean_log,
    auth,
    graph_of,
)


async def test_shared_results_never_cross_variables_users_or_rights(
    api, gql, user, new_user, settings, worker
):
    owner = user
    stranger = new_user()
    admin = new_user(admin=True)
    await gql.ok(ME, token=stranger.token)
    await gql.ok(ME, token=admin.token)
    mine = await create_graph(gql, owner)
    theirs = await create_graph(gql, stranger)
    key_read = (await gql.ok(KEY, {"p": ["READ_EXECUTION", "READ_GRAPH"]}, token=owner.token))[
        "createApiKey"
    ]["plainTextKey"]
    key_graph_only = (await gql.ok(KEY, {"p": ["READ_GRAPH"]}, token=owner.token))["createApiKey"][
        "plainTextKey"
    ]

    # (name, connection params, variables, what it must see: None for a refusal code)
    plans = [
        ("owner full", auth(owner), {"id": mine["id"], "full": True}, "full"),
        ("owner narrow", auth(owner), {"id": mine["id"], "full": False}, "narrow"),
        ("owner key full", {"X-API-Key": key_read}, {"id": mine["id"], "full": True}, "full"),
        ("owner key narrow", {"X-API-Key": key_read}, {"id": mine["id"], "full": False}, "narrow"),
        (
            "key without READ_EXECUTION",
            {"X-API-Key": key_graph_only},
            {"id": mine["id"], "full": True},
            "FORBIDDEN",
        ),
        ("stranger on mine", auth(stranger), {"id": mine["id"], "full": True}, "NOT_FOUND"),
        ("stranger on theirs", auth(stranger), {"id": theirs["id"], "full": True}, "theirs"),
        ("admin on mine", auth(admin), {"id": mine["id"], "full": True}, "ADMIN"),
    ]
    async with contextlib.AsyncExitStack() as stack:
        sockets = []
        for name, params, variables, expect in plans:
            ws = await stack.enter_async_context(graphql_ws(api.ws_url, params))
            op_id = await ws.subscribe(SELECTIVE, variables)
            sockets.append((name, ws, op_id, variables, expect))
        # Let refusals arrive; then run both graphs until every live subscriber saw a whole run.
        refused: dict[str, list[str]] = {}
        live = []
        for name, ws, op_id, variables, expect in sockets:
            if expect in ("FORBIDDEN", "NOT_FOUND", "ADMIN"):
                try:
                    message = await ws.receive(timeout=3)
                except TimeoutError:
                    message = None
                if message is None:
                    assert expect == "ADMIN", name
                    live.append((name, ws, op_id, variables, expect))
                    continue
                payload = message["payload"]
                errors = payload if isinstance(payload, list) else payload.get("errors")
                refused[name] = _codes(errors)
            else:
                live.append((name, ws, op_id, variables, expect))
        assert refused["key without READ_EXECUTION"] == ["FORBIDDEN"]
        assert refused["stranger on mine"] == ["NOT_FOUND"]
        if "admin on mine" in refused:
            assert refused["admin on mine"] in (["NOT_FOUND"], ["FORBIDDEN"])

        async def run_seen(ws, op_id, execution_ids: set[str]) -> dict[str, list[dict]]:
            seen: dict[str, list[dict]] = {}
            deadline = asyncio.get_running_loop().time() + 30
            while True:
                left = deadline - asyncio.get_running_loop().time()
                assert left > 0, seen
                message = await ws.receive(timeout=left)
                assert message["id"] == op_id, message
                assert message["type"] == "next", message
                assert "errors" not in message["payload"], message
                event = message["payload"]["data"]["graphExecutionEvents"]
                seen.setdefault(event["execution"]["id"], []).append(event)
                finished = {
                    i
                    for i, events in seen.items()
                    if any(e["execution"]["status"] == "COMPLETED" for e in events)
                }
                if execution_ids <= finished:
                    return seen

        for round_ in range(3):
            mine_run = await execute(gql, owner, mine["id"], {"text": f"mine {round_}"})
            their_run = await execute(gql, stranger, theirs["id"], {"text": f"theirs {round_}"})
            for name, ws, op_id, variables, expect in live:
                wanted = {their_run["id"]} if expect == "theirs" else {mine_run["id"]}
                if expect == "ADMIN":
                    # An admin on someone else's graph: nothing of it, ever.
                    with contextlib.suppress(TimeoutError):
                        message = await ws.receive(timeout=1)
                        raise AssertionError(f"admin saw {message}")
                    continue
                seen = await run_seen(ws, op_id, wanted)
                assert set(seen) == wanted, (name, seen)
                for events in seen.values():
                    for event in events:
                        execution = event["execution"]
                        graph_id = theirs["id"] if expect == "theirs" else mine["id"]
                        if variables["full"]:
                            assert set(execution) == {"id", "status", "graphId"}, (name, event)
                            assert execution["graphId"] == graph_id, (name, event)
                        else:
                            assert set(execution) == {"id", "status"}, (name, event)


@pytest.mark.parametrize("protocol", ["graphql-transport-ws", "graphql-ws"])
async def test_live_subscriptions_dropped_mid_stream_give_everything_back(
    capped, capped_user, protocol
):
    headers = auth(capped_user)
    graph = await graph_of(capped, capped_user)
    start = "subscribe" if protocol == "graphql-transport-ws" else "start"
    for round_ in range(6):
        connection = await websockets.connect(capped.ws_url, subprotocols=[protocol])
        await connection.send(json.dumps({"type": "connection_init", "payload": headers}))
        assert json.loads(await connection.recv())["type"] == "connection_ack"
        for n in range(3):
            await connection.send(
                json.dumps(
                    {
                        "id": str(n),
                        "type": start,
                        "payload": {
                            "query": SELECTIVE,
                            "variables": {"id": graph["id"], "full": bool(n % 2)},
                        },
                    }
                )
            )
        if round_ % 3 == 0:
            # Stop one, then subscribe again under the same id.
            stop = "complete" if protocol == "graphql-transport-ws" else "stop"
            await connection.send(json.dumps({"id": "0", "type": stop}))
            await connection.send(
                json.dumps(
                    {
                        "id": "0",
                        "type": start,
                        "payload": {
                            "query": SELECTIVE,
                            "variables": {"id": graph["id"], "full": True},
                        },
                    }
                )
            )
        if round_ % 2:
            connection.transport.abort()
        else:
            await connection.close()
        await until_two_fit(capped, headers)
    assert_clean_log(capped)


async def test_many_subscriptions_with_different_variables_on_one_socket(api, gql, user, worker):
    graphs = [await create_graph(gql, user) for _ in range(3)]
    ops = {}
    async with graphql_ws(api.ws_url, auth(user)) as ws:
        for index, graph in enumerate(graphs):
            for full in (True, False):
                for copy in range(2):
                    op_id = f"{index}-{full}-{copy}"
                    await ws.subscribe(SELECTIVE, {"id": graph["id"], "full": full}, op_id=op_id)
                    ops[op_id] = (graph["id"], full)
        runs = {}
        for graph in graphs:
            runs[graph["id"]] = (await execute(gql, user, graph["id"], {"text": "many"}))["id"]
        completed: set[str] = set()
        deadline = asyncio.get_running_loop().time() + 60
        while completed != set(ops):
            left = deadline - asyncio.get_running_loop().time()
            assert left > 0, (completed, set(ops))
            message = await ws.receive(timeout=left)
            assert message["type"] == "next", message
            graph_id, full = ops[message["id"]]
            execution = message["payload"]["data"]["graphExecutionEvents"]["execution"]
            assert execution["id"] == runs[graph_id], (message, runs)
            if full:
                assert execution["graphId"] == graph_id, message
            else:
                assert "graphId" not in execution, message
            if execution["status"] == "COMPLETED":
                completed.add(message["id"])


async def test_shared_results_over_http_streams_keep_each_selection(api, gql, user, worker):
    graph = await create_graph(gql, user)
    headers = auth(user)

    async def sse(full: bool, seen: list, ready: asyncio.Event, done: asyncio.Event) -> None:
        async with (
            httpx.AsyncClient(base_url=api.base_url, timeout=60) as client,
            client.stream(
                "POST",
                "/graphql",
                json={"query": SELECTIVE, "variables": {"id": graph["id"], "full": full}},
                headers={**headers, "Accept": "text/event-stream"},
            ) as response,
        ):
            assert response.status_code == 200
            ready.set()
            async for event, data in sse_events(response):
                if event == "next":
                    seen.append(json.loads(data))
                    if (
                        seen[-1]["data"]["graphExecutionEvents"]["execution"]["status"]
                        == "COMPLETED"
                    ):
                        done.set()
                        return

    async def multipart(full: bool, seen: list, ready: asyncio.Event, done: asyncio.Event) -> None:
        async with (
            httpx.AsyncClient(base_url=api.base_url, timeout=60) as client,
            client.stream(
                "POST",
                "/graphql",
                json={"query": SELECTIVE, "variables": {"id": graph["id"], "full": full}},
                headers={**headers, "Accept": MULTIPART_ACCEPT},
            ) as response,
        ):
            assert response.status_code == 200
            ready.set()
            async for part in multipart_parts(response):
                if part:
                    seen.append(part["payload"])
                    if (
                        seen[-1]["data"]["graphExecutionEvents"]["execution"]["status"]
                        == "COMPLETED"
                    ):
                        done.set()
                        return

    plans = [(sse, True), (sse, False), (multipart, True), (multipart, False)]
    seen = [[] for _ in plans]
    ready = [asyncio.Event() for _ in plans]
    done = [asyncio.Event() for _ in plans]
    tasks = [
        asyncio.create_task(reader(full, seen[i], ready[i], done[i]))
        for i, (reader, full) in enumerate(plans)
    ]
    try:
        async with asyncio.timeout(60):
            for event in ready:
                await event.wait()
            # The streams are live once a run reached each of them whole.
            while not all(e.is_set() for e in done):
                await execute(gql, user, graph["id"], {"text": "streams"})
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(10):
                        for event in done:
                            await event.wait()
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    for (reader, full), results in zip(plans, seen, strict=True):
        assert results, reader.__name__
        for result in results:
            assert "errors" not in result, result
            execution = result["data"]["graphExecutionEvents"]["execution"]
            if full:
                assert execution["graphId"] == graph["id"], (reader.__name__, result)
            else:
                assert "graphId" not in execution, (reader.__name__, result)
