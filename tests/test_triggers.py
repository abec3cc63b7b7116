"""Webhook triggers: a signed POST to a trigger URL starts a run as the graph's owner
(or with a preset's inputs), watched live; everything else changes nothing."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from datetime import timedelta

import httpx

from app.clock import utcnow
from app.models import (
    CreditTransactionType,
    Execution,
    GraphSource,
    Trigger,
    TriggerDelivery,
)
from app.services import ledger
from app.services.trigger_deliveries import sign
from tests.agent_helpers import (
    CREATE_PRESET,
    DELIVERIES,
    GRAPH_TRIGGER,
    ROTATE,
    SET_ENABLED,
    post_delivery,
    trigger_graph,
)
from tests.execution_helpers import wait_for_end
from tests.graph_builders import UPDATE, create_graph, echo_graph, node, node_ids
from tests.harness import graphql_ws
from tests.test_live_events import EVENTS, collect
from workers.jobs.maintenance import prune_trigger_deliveries

SET_ACTIVE = "mutation($id: ID!, $v: Int!) { setActiveGraphVersion(id: $id, version: $v) { id } }"


async def armed_trigger(gql, user, spec: dict | None = None) -> tuple[dict, dict, str]:
    """(graph, trigger, signing secret) for a new graph with a WebhookTrigger."""
    graph = await create_graph(gql, user, spec or trigger_graph())
    trigger = (await gql.ok(GRAPH_TRIGGER, {"id": graph["id"]}, token=user.token))["graph"][
        "trigger"
    ]
    rotated = (await gql.ok(ROTATE, {"id": trigger["id"]}, token=user.token))["rotateTriggerSecret"]
    return graph, trigger, rotated["secret"]


async def deliveries(gql, user, graph_id: str, **variables) -> dict:
    data = await gql.ok(DELIVERIES, {"id": graph_id, **variables}, token=user.token)
    return data["graph"]["triggerDeliveries"]


def body_of(payload) -> bytes:
    return json.dumps(payload).encode()


async def test_a_signed_post_starts_a_run_watched_live(api, gql, user, worker):
    graph, trigger, secret = await armed_trigger(gql, user)
    assert trigger["isEnabled"] is True and trigger["presetId"] is None
    assert trigger["url"] == f"http://localhost:8000/api/triggers/{trigger['id']}"
    assert secret.startswith("agwh_")
    assert secret not in (await Trigger.get(id=trigger["id"])).encrypted_secret

    payload = {"order": 42, "items": ["tea", "cake"]}
    response = await post_delivery(api.base_url, trigger["id"], secret, body_of(payload))
    assert response.status_code == 202, response.text
    accepted = response.json()
    assert accepted["status"] == "ACCEPTED"
    execution_id = accepted["executionId"]
    async with graphql_ws(api.ws_url, {"Authorization": f"Bearer {user.token}"}) as ws:
        events, ended = await collect(ws, EVENTS, {"id": execution_id})
    assert ended == "complete"
    assert events[0]["execution"]["id"] == execution_id
    assert events[-1]["execution"]["status"] == "COMPLETED"
    assert events[-1]["execution"]["outputs"] == {"payload": [payload], "greeting": ["hello"]}
    done = await wait_for_end(gql, user, execution_id)
    assert done["source"] == "WEBHOOK" and done["graphId"] == graph["id"]
    hook_node = node_ids(trigger_graph(), graph)["hook"]
    [hook_run] = [n for n in done["nodeExecutions"] if n["nodeId"] == hook_node]
    assert hook_run["outputData"] == {"payload": [payload]}

    page = await deliveries(gql, user, graph["id"])
    assert page["totalCount"] == 1
    [delivery] = [edge["node"] for edge in page["edges"]]
    assert delivery["status"] == "ACCEPTED" and delivery["executionId"] == execution_id
    assert delivery["deliveryId"] == accepted["deliveryId"] and delivery["attempts"] == 1
    assert delivery["triggerId"] == trigger["id"] and delivery["deliveryId"].startswith("sig-")


async def test_bad_signatures_change_nothing(api, gql, user):
    graph, trigger, secret = await armed_trigger(gql, user)
    body = body_of({"x": 1})
    now = int(time.time())
    refused = [
        await post_delivery(api.base_url, trigger["id"], "agwh_wrong", body),
        await post_delivery(api.base_url, trigger["id"], None, body),
        await post_delivery(api.base_url, trigger["id"], None, body, signature="t=1,v1="),
        await post_delivery(api.base_url, trigger["id"], None, body, signature="garbage"),
        # Twice the tolerance away: a busy machine cannot bring them back within it.
        await post_delivery(api.base_url, trigger["id"], secret, body, timestamp=now - 600),
        await post_delivery(api.base_url, trigger["id"], secret, body, timestamp=now + 600),
    ]
    # A signature of another body does not sign this one.
    refused.append(
        await post_delivery(
            api.base_url, trigger["id"], None, body_of({"x": 2}), signature=sign(secret, body)
        )
    )
    # After a rotation the old secret no longer signs.
    await gql.ok(ROTATE, {"id": trigger["id"]}, token=user.token)
    refused.append(await post_delivery(api.base_url, trigger["id"], secret, body))
    for response in refused:
        assert response.status_code == 401, response.text
        assert response.json()["error"] == "UNAUTHENTICATED"
    assert not await Execution.filter(user_id=user.id).exists()
    assert not await TriggerDelivery.filter(trigger_id=trigger["id"]).exists()
    assert (await deliveries(gql, user, graph["id"]))["totalCount"] == 0


async def test_a_signature_header_with_non_ascii_digits_is_refused_not_a_crash(api, gql, user):
    """Header values arrive as Latin-1: "t=²" passed str.isdigit() and crashed int()
    with a 500 before any secret was needed."""
    graph, trigger, secret = await armed_trigger(gql, user)
    body = body_of({"x": 1})
    good = sign(secret, body).encode()
    v1 = good.split(b"v1=")[1]
    async with httpx.AsyncClient(base_url=api.base_url, timeout=30) as client:
        for header in (b"t=\xb2,v1=" + v1, b"t=\xb9\xb2\xb3,v1=" + v1, b"t=1\xb2,v1=" + v1):
            response = await client.post(
                f"/api/triggers/{trigger['id']}",
                content=body,
                headers={"AgentGraph-Signature": header, "Content-Type": "application/json"},
            )
            assert response.status_code == 401, (header, response.text)
            assert response.json()["error"] == "UNAUTHENTICATED"
    assert not await TriggerDelivery.filter(trigger_id=trigger["id"]).exists()
    assert (await deliveries(gql, user, graph["id"]))["totalCount"] == 0


async def test_disabled_unknown_and_trigger_less_versions_answer_404(api, gql, user):
    graph, trigger, secret = await armed_trigger(gql, user)
    body = body_of({"x": 1})
    off = (await gql.ok(SET_ENABLED, {"id": trigger["id"], "on": False}, token=user.token))[
        "setTriggerEnabled"
    ]
    assert off["isEnabled"] is False
    for trigger_id in (trigger["id"], str(uuid.uuid4()), "not-an-id"):
        response = await post_delivery(api.base_url, trigger_id, secret, body)
        assert response.status_code == 404 and response.json()["error"] == "NOT_FOUND"
    await gql.ok(SET_ENABLED, {"id": trigger["id"], "on": True}, token=user.token)
    # A newer active version without the trigger node: nothing to feed, so 404.
    await gql.ok(UPDATE, {"id": graph["id"], "g": echo_graph()}, token=user.token)
    assert (await gql.ok(GRAPH_TRIGGER, {"id": graph["id"]}, token=user.token))["graph"][
        "trigger"
    ] is None
    response = await post_delivery(api.base_url, trigger["id"], secret, body)
    assert response.status_code == 404
    await gql.ok(SET_ACTIVE, {"id": graph["id"], "v": 1}, token=user.token)
    response = await post_delivery(api.base_url, trigger["id"], secret, body)
    assert response.status_code == 202
    assert not await TriggerDelivery.filter(trigger_id=trigger["id"], status="REJECTED").exists()


async def test_replays_are_ignored_by_delivery_id(api, gql, user):
    graph, trigger, secret = await armed_trigger(gql, user)
    body = body_of({"n": 1})
    stamp = int(time.time())
    first = await post_delivery(api.base_url, trigger["id"], secret, body, timestamp=stamp)
    again = await post_delivery(api.base_url, trigger["id"], secret, body, timestamp=stamp)
    assert first.status_code == 202 and again.status_code == 200
    assert again.json() == {
        "status": "DUPLICATE",
        "deliveryId": first.json()["deliveryId"],
        "executionId": first.json()["executionId"],
    }
    # A sender's retry: re-signed later, with its own delivery id.
    retry_body = body_of({"n": 2})
    one = await post_delivery(api.base_url, trigger["id"], secret, retry_body, delivery_id="evt_7")
    two = await post_delivery(
        api.base_url, trigger["id"], secret, retry_body, delivery_id="evt_7", timestamp=stamp - 5
    )
    assert one.status_code == 202 and two.status_code == 200
    assert two.json()["executionId"] == one.json()["executionId"]
    # A replayed request with a made-up delivery id is still the same signed content.
    forged = await post_delivery(
        api.base_url, trigger["id"], secret, body, timestamp=stamp, delivery_id="other"
    )
    assert forged.status_code == 200 and forged.json()["executionId"] == first.json()["executionId"]
    assert await Execution.filter(user_id=user.id).count() == 2
    page = await deliveries(gql, user, graph["id"])
    assert sorted(e["node"]["attempts"] for e in page["edges"]) == [2, 3]
    bad_id = await post_delivery(
        api.base_url, trigger["id"], secret, body_of({"n": 3}), delivery_id="no spaces please"
    )
    assert bad_id.status_code == 400


async def test_concurrent_copies_of_one_delivery_start_one_run(api, gql, user):
    _, trigger, secret = await armed_trigger(gql, user)
    body = body_of({"burst": True})
    stamp = int(time.time())
    responses = await asyncio.gather(
        *(
            post_delivery(api.base_url, trigger["id"], secret, body, timestamp=stamp)
            for _ in range(8)
        )
    )
    codes = sorted(r.status_code for r in responses)
    assert codes == [200] * 7 + [202]
    assert len({r.json()["executionId"] for r in responses}) == 1
    assert await Execution.filter(user_id=user.id).count() == 1


async def test_an_oversized_body_is_refused_with_413(api, gql, user, settings):
    _, trigger, secret = await armed_trigger(gql, user)
    big = body_of({"blob": "x" * settings.TRIGGER_MAX_BODY_BYTES})
    declared = await post_delivery(api.base_url, trigger["id"], secret, big)
    assert declared.status_code == 413

    async def chunks():
        for _ in range(settings.TRIGGER_MAX_BODY_BYTES // 65536 + 2):
            yield b" " * 65536

    async with httpx.AsyncClient(base_url=api.base_url, timeout=30) as client:
        streamed = await client.post(
            f"/api/triggers/{trigger['id']}",
            content=chunks(),
            headers={"AgentGraph-Signature": "t=1,v1=00"},
        )
    assert streamed.status_code == 413
    assert not await TriggerDelivery.filter(trigger_id=trigger["id"]).exists()


async def test_each_trigger_has_a_rate_limit(api, gql, user, settings):
    # Deliveries that cannot start a run (a required input is missing) still count.
    graph, trigger, secret = await armed_trigger(gql, user, trigger_graph(required_input=True))
    limit = settings.TRIGGER_RATE_LIMIT_PER_MINUTE
    answered: list[httpx.Response] = []
    # Within two clock minutes at most 2 x limit get through: one more must be refused.
    for n in range(2 * limit + 1):
        response = await post_delivery(api.base_url, trigger["id"], secret, body_of({"n": n}))
        answered.append(response)
        if response.status_code == 429:
            break
    refused = answered[-1]
    assert refused.status_code == 429, [r.status_code for r in answered]
    assert refused.json()["error"] == "RATE_LIMITED"
    assert 1 <= int(refused.headers["Retry-After"]) <= 60
    assert {r.status_code for r in answered[:-1]} == {400}
    recorded = await TriggerDelivery.filter(trigger_id=trigger["id"]).count()
    assert recorded == len(answered) - 1
    # Another trigger is not limited by this one.
    _, other, other_secret = await armed_trigger(gql, user)
    ok = await post_delivery(api.base_url, other["id"], other_secret, body_of({"fine": 1}))
    assert ok.status_code == 202
    assert (await deliveries(gql, user, graph["id"], first=5))["pageInfo"]["hasNextPage"] is True


async def test_deliveries_that_cannot_run_are_recorded_with_the_reason(api, gql, user):
    graph, trigger, secret = await armed_trigger(gql, user, trigger_graph(required_input=True))
    not_json = await post_delivery(api.base_url, trigger["id"], secret, b"{nope")
    assert not_json.status_code == 400 and not_json.json()["error"] == "BAD_USER_INPUT"
    invalid = await post_delivery(api.base_url, trigger["id"], secret, body_of({"a": 1}))
    assert invalid.status_code == 400
    assert invalid.json()["error"] == "GRAPH_VALIDATION_FAILED"
    nul = await post_delivery(api.base_url, trigger["id"], secret, b'{"a": "\\u0000"}')
    assert nul.status_code == 400
    deep = await post_delivery(api.base_url, trigger["id"], secret, b"[" * 5000 + b"]" * 5000)
    assert deep.status_code == 400
    page = await deliveries(gql, user, graph["id"], first=2)
    assert page["totalCount"] == 4 and page["pageInfo"]["hasNextPage"] is True
    rest = await deliveries(gql, user, graph["id"], first=2, after=page["pageInfo"]["endCursor"])
    nodes = [e["node"] for e in page["edges"] + rest["edges"]]
    assert [n["status"] for n in nodes] == ["REJECTED"] * 4
    assert all(n["executionId"] is None for n in nodes)
    assert [n["error"] for n in nodes][::-1][:2] == [
        "The body is not JSON",
        "Graph is invalid: 1 problem(s) in 1 node(s)",
    ]
    assert nodes[0]["error"] == "The body is not JSON"  # nesting too deep for JSON
    assert "NUL" in nodes[1]["error"]
    assert not await Execution.filter(user_id=user.id).exists()


async def test_a_delivery_without_credits_is_recorded_and_refused(api, gql, user):
    graph, trigger, secret = await armed_trigger(gql, user)
    balance = await ledger.get_balance(user.id)
    await ledger.record_transaction(
        user.id, -balance, CreditTransactionType.USAGE, f"drain:{user.id}"
    )
    response = await post_delivery(api.base_url, trigger["id"], secret, body_of({"x": 1}))
    assert response.status_code == 402 and response.json()["error"] == "INSUFFICIENT_CREDITS"
    [delivery] = [e["node"] for e in (await deliveries(gql, user, graph["id"]))["edges"]]
    assert delivery["status"] == "REJECTED"
    assert not await Execution.filter(user_id=user.id).exists()


async def test_a_senders_retry_of_a_rejected_delivery_is_tried_again(api, gql, user, worker):
    """A retry of a delivery refused for want of credits used to answer 200 DUPLICATE
    (no run): the sender took it as delivered and the event was lost for good."""
    graph, trigger, secret = await armed_trigger(gql, user)
    balance = await ledger.get_balance(user.id)
    await ledger.record_transaction(
        user.id, -balance, CreditTransactionType.USAGE, f"drain:{user.id}"
    )
    body = body_of({"order": "important"})
    refused = await post_delivery(api.base_url, trigger["id"], secret, body, delivery_id="evt_9")
    assert refused.status_code == 402
    # Still no credits: the retry is refused again, not swallowed.
    again = await post_delivery(api.base_url, trigger["id"], secret, body, delivery_id="evt_9")
    assert again.status_code == 402 and again.json()["error"] == "INSUFFICIENT_CREDITS"
    await ledger.record_transaction(user.id, 1000, CreditTransactionType.GRANT, f"top-up:{user.id}")
    # Copies of the next retry arrive at once: one run starts, the rest see it.
    retries = await asyncio.gather(
        *(
            post_delivery(api.base_url, trigger["id"], secret, body, delivery_id="evt_9")
            for _ in range(4)
        )
    )
    assert sorted(r.status_code for r in retries) == [200, 200, 200, 202]
    [started] = [r.json() for r in retries if r.status_code == 202]
    assert started["status"] == "ACCEPTED" and started["deliveryId"] == "evt_9"
    assert {r.json()["executionId"] for r in retries} == {started["executionId"]}
    done = await wait_for_end(gql, user, started["executionId"])
    assert done["status"] == "COMPLETED"
    assert done["outputs"]["payload"] == [{"order": "important"}]
    [delivery] = [e["node"] for e in (await deliveries(gql, user, graph["id"]))["edges"]]
    assert delivery["status"] == "ACCEPTED" and delivery["error"] is None
    assert delivery["executionId"] == started["executionId"] and delivery["attempts"] == 6
    assert await Execution.filter(user_id=user.id).count() == 1


async def test_a_presets_trigger_runs_with_the_presets_inputs(api, gql, user, worker):
    graph, graph_trigger, graph_secret = await armed_trigger(
        gql, user, trigger_graph(required_input=True)
    )
    preset = (
        await gql.ok(
            CREATE_PRESET,
            {"input": {"graphId": graph["id"], "name": "shop", "inputs": {"greeting": "hi shop"}}},
            token=user.token,
        )
    )["createPreset"]
    trigger = preset["trigger"]
    assert trigger["presetId"] == preset["id"] and trigger["id"] != graph_trigger["id"]
    secret = (await gql.ok(ROTATE, {"id": trigger["id"]}, token=user.token))["rotateTriggerSecret"][
        "secret"
    ]
    # The graph's own trigger has no greeting to give; the preset's has.
    assert (
        await post_delivery(api.base_url, graph_trigger["id"], graph_secret, b"{}")
    ).status_code == 400
    response = await post_delivery(api.base_url, trigger["id"], secret, body_of({"order": 1}))
    assert response.status_code == 202, response.text
    done = await wait_for_end(gql, user, response.json()["executionId"])
    assert done["status"] == "COMPLETED"
    assert done["inputs"] == {"greeting": "hi shop"}
    assert done["outputs"] == {"payload": [{"order": 1}], "greeting": ["hi shop"]}
    run = await Execution.get(id=done["id"])
    assert run.source == GraphSource.WEBHOOK
    page = await deliveries(gql, user, graph["id"])
    assert {e["node"]["triggerId"] for e in page["edges"]} == {graph_trigger["id"], trigger["id"]}
    # The secret of one trigger does not sign for another.
    assert (
        await post_delivery(api.base_url, trigger["id"], graph_secret, b"{}")
    ).status_code == 401


async def test_a_graph_has_at_most_one_webhook_trigger(gql, user):
    spec = trigger_graph()
    spec["nodes"].append(node("hook2", "WebhookTrigger"))
    error = await gql.error(
        "mutation($g: GraphInput!) { createGraph(graph: $g) { id } }", {"g": spec}, token=user.token
    )
    assert error["extensions"]["code"] == "GRAPH_VALIDATION_FAILED"
    assert error["extensions"]["nodeErrors"] == {
        "hook2": {"blockId": "a graph has at most one WebhookTrigger"}
    }


async def test_only_the_owner_manages_a_trigger(gql, user, new_user):
    _, trigger, _ = await armed_trigger(gql, user)
    stranger = new_user()
    for document, variables in (
        (ROTATE, {"id": trigger["id"]}),
        (SET_ENABLED, {"id": trigger["id"], "on": False}),
    ):
        error = await gql.error(document, variables, token=stranger.token)
        assert error["extensions"]["code"] == "NOT_FOUND"
        assert error["message"] == "Trigger not found"
    assert (await Trigger.get(id=trigger["id"])).is_enabled is True


async def test_old_deliveries_are_pruned(api, gql, user):
    _, trigger, secret = await armed_trigger(gql, user)
    fresh = await post_delivery(api.base_url, trigger["id"], secret, body_of({"keep": 1}))
    assert fresh.status_code == 202
    old = await TriggerDelivery.create(
        id=uuid.uuid4(),
        trigger_id=trigger["id"],
        delivery_id="evt_old",
        signature_digest="0" * 64,
        status="REJECTED",
        error="long ago",
    )
    await TriggerDelivery.filter(id=old.id).update(received_at=utcnow() - timedelta(days=31))
    assert await prune_trigger_deliveries() >= 1
    remaining = await TriggerDelivery.filter(trigger_id=trigger["id"]).values_list(
        "delivery_id", flat=True
    )
    assert remaining == [fresh.json()["deliveryId"]]
