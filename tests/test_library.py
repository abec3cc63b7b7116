"""The library: own graphs and store agents, versions, favorites, removal, ratings,
and what a store agent lets its user read and run (and nothing more)."""

from __future__ import annotations

import asyncio
import uuid

from app.models import LibraryAgent, LibraryGrant, Preset, Schedule, StoreListing
from tests.agent_helpers import (
    ADD,
    CREATE_PRESET,
    LIBRARY,
    PRESETS,
    RATE,
    RECOMMENDED,
    REMOVE,
    UPDATE_LIBRARY,
    execute,
    publish,
)
from tests.execution_helpers import wait_for_end
from tests.graph_builders import (
    GET,
    UPDATE,
    create_graph,
    echo_graph,
    link,
    node,
)
from tests.harness import graphql_ws
from tests.test_api_keys import create_key
from tests.test_live_events import collect
from tests.test_schedules import (
    create_schedule,
    executions_of,
    list_schedules,
    make_due,
    wait_until,
)

GRAPH_EVENTS = """subscription($id: ID!) {
  graphExecutionEvents(graphId: $id) { execution { id status } } }"""
SETTINGS = """mutation($id: ID!, $on: Boolean) {
  updateGraphSettings(id: $id, settings: {humanInTheLoopSafeMode: $on}) {
    humanInTheLoopSafeMode } }"""
GRAPH_SETTINGS = "query($id: ID!) { graph(id: $id) { settings { humanInTheLoopSafeMode } } }"
DELETE_GRAPH = "mutation($id: ID!) { deleteGraph(id: $id) }"
SET_ACTIVE = "mutation($id: ID!, $v: Int!) { setActiveGraphVersion(id: $id, version: $v) { id } }"


async def library(gql, user, **variables) -> dict:
    return (await gql.ok(LIBRARY, variables, token=user.token))["libraryAgents"]


async def add(gql, user, listing_id: str) -> dict:
    return (await gql.ok(ADD, {"id": listing_id}, token=user.token))["addStoreAgentToLibrary"]


async def listed_graph(gql, maker, spec: dict | None = None) -> tuple[dict, str]:
    graph = await create_graph(gql, maker, spec or echo_graph("Listed echo"))
    return graph, publish(graph["id"])


# ------------------------------------------------------------------ listing


async def test_library_lists_own_graphs_and_store_agents_newest_activity_first(
    gql, new_user, worker
):
    maker, person = new_user("maker@example.com"), new_user()
    listed, listing_id = await listed_graph(gql, maker)
    first = await create_graph(gql, person, echo_graph("Alpha notes"))
    second = await create_graph(gql, person, echo_graph("Beta digest"))
    added = await add(gql, person, listing_id)
    page = await library(gql, person)
    assert [e["node"]["graphId"] for e in page["edges"]] == [
        listed["id"],
        second["id"],
        first["id"],
    ]
    own = page["edges"][1]["node"]
    assert own["isCreatedByUser"] is True and own["canRun"] is True
    assert own["creator"] == person.email.split("@")[0] and own["storeAgentId"] is None
    assert added["creator"] == "maker" and added["latestVersion"] == 1
    assert added["updateAvailable"] is False

    # A run is activity: the first graph comes first now.
    run = await execute(gql, person, first["id"], inputs={"text": "x"})
    await wait_for_end(gql, person, run["id"])
    page = await library(gql, person)
    assert page["edges"][0]["node"]["graphId"] == first["id"]

    # Search matches name or description, case-insensitively.
    found = await library(gql, person, search="BETA")
    assert [e["node"]["name"] for e in found["edges"]] == ["Beta digest"]
    assert found["totalCount"] == 1
    assert (await library(gql, person, search="passes its input"))["totalCount"] == 3

    # Pages follow on from the cursor without gaps or repeats.
    one = await library(gql, person, first=2)
    assert one["pageInfo"]["hasNextPage"] is True and one["totalCount"] == 3
    two = await library(gql, person, first=2, after=one["pageInfo"]["endCursor"])
    assert two["pageInfo"]["hasNextPage"] is False
    ids = [e["node"]["id"] for e in one["edges"] + two["edges"]]
    assert ids == [e["node"]["id"] for e in page["edges"]]
    for bad in ({"first": 0}, {"first": 101}, {"after": "nonsense"}, {"search": "x" * 201}):
        code = await gql.error_code(LIBRARY, bad, token=person.token)
        assert code == "BAD_USER_INPUT"


async def test_favorites_and_own_version_moves(gql, user):
    graph = await create_graph(gql, user)
    await gql.ok(UPDATE, {"id": graph["id"], "g": echo_graph("echo two")}, token=user.token)
    [entry] = (await library(gql, user))["edges"]
    assert entry["node"]["graphVersion"] == 2 and entry["node"]["name"] == "echo two"
    moved = (
        await gql.ok(
            UPDATE_LIBRARY, {"id": entry["node"]["id"], "v": 1, "fav": True}, token=user.token
        )
    )["updateLibraryAgent"]
    assert moved["graphVersion"] == 1 and moved["isFavorite"] is True
    assert moved["name"] == "echo" and moved["latestVersion"] == 1
    active = (await gql.ok(GET, {"id": graph["id"]}, token=user.token))["graph"]
    assert active["version"] == 1
    code = await gql.error_code(
        UPDATE_LIBRARY, {"id": entry["node"]["id"], "v": 9}, token=user.token
    )
    assert code == "NOT_FOUND"


async def test_library_works_with_a_read_key_and_changes_need_a_person(gql, user):
    key = (await create_key(gql, user, ["READ_GRAPH"]))["plainTextKey"]
    assert (await gql.ok(LIBRARY, api_key=key))["libraryAgents"]["totalCount"] == 0
    for document, variables in (
        (ADD, {"id": str(uuid.uuid4())}),
        (REMOVE, {"id": str(uuid.uuid4())}),
        (RATE, {"id": str(uuid.uuid4()), "s": 5}),
    ):
        assert await gql.error_code(document, variables, api_key=key) == "FORBIDDEN"
    assert await gql.error_code(LIBRARY) == "UNAUTHENTICATED"


# ------------------------------------------------------------------ adding


async def test_adding_is_idempotent_and_unknown_listings_are_not_found(gql, new_user):
    maker, person = new_user(), new_user()
    listed, listing_id = await listed_graph(gql, maker)
    first, again = await add(gql, person, listing_id), await add(gql, person, listing_id)
    assert first["id"] == again["id"]
    assert await LibraryAgent.filter(user_id=person.id).count() == 1
    # The creator adding their own listing gets their own entry back.
    own = await add(gql, maker, listing_id)
    assert own["isCreatedByUser"] is True and own["graphId"] == listed["id"]
    for unknown in (str(uuid.uuid4()), "not-an-id", listed["id"]):
        assert await gql.error_code(ADD, {"id": unknown}, token=person.token) == "NOT_FOUND"


async def test_a_store_agent_is_read_only_and_keeps_its_makers_secrets(gql, new_user):
    maker, person = new_user(), new_user()
    spec = echo_graph("With a secret default")
    spec["nodes"].append(node("dict", "CreateDictionary", values={"api_key": "maker-only-123"}))
    listed, listing_id = await listed_graph(gql, maker, spec)
    await add(gql, person, listing_id)
    seen = (await gql.ok(GET, {"id": listed["id"]}, token=person.token))["graph"]
    assert seen["isActive"] is True
    dictionary = next(n for n in seen["nodes"] if n["block"]["name"] == "CreateDictionary")
    assert dictionary["inputDefault"] == {"values": {}}
    assert "maker-only-123" not in str(seen)
    # The maker still sees their own defaults.
    mine = (await gql.ok(GET, {"id": listed["id"]}, token=maker.token))["graph"]
    assert "maker-only-123" in str(mine)
    # Read-only: every change to the graph is NOT_FOUND for its user.
    for document, variables in (
        (UPDATE, {"id": listed["id"], "g": echo_graph("hijacked")}),
        (DELETE_GRAPH, {"id": listed["id"]}),
        (SET_ACTIVE, {"id": listed["id"], "v": 1}),
    ):
        assert await gql.error_code(document, variables, token=person.token) == "NOT_FOUND"
    assert (await gql.ok(GET, {"id": listed["id"]}, token=maker.token))["graph"]["name"] == (
        "With a secret default"
    )
    # Settings are the user's own.
    await gql.ok(SETTINGS, {"id": listed["id"], "on": True}, token=person.token)
    theirs = (await gql.ok(GRAPH_SETTINGS, {"id": listed["id"]}, token=person.token))["graph"]
    makers = (await gql.ok(GRAPH_SETTINGS, {"id": listed["id"]}, token=maker.token))["graph"]
    assert theirs["settings"] == {"humanInTheLoopSafeMode": True}
    assert makers["settings"] == {"humanInTheLoopSafeMode": False}


NODE_EVENTS = """subscription($id: ID!, $after: Int) {
  executionEvents(executionId: $id, afterSeq: $after) {
    ... on ExecutionStatusEvent { execution { status outputs } }
    ... on NodeExecutionEvent { nodeExecution { inputData outputData error } } } }"""
SHARE = "mutation($id: ID!) { shareExecution(id: $id) { shareToken } }"
SHARED = "query($t: String!) { sharedExecution(shareToken: $t) { outputs } }"


async def test_runs_of_a_store_agent_keep_its_makers_secrets_too(api, gql, new_user, worker):
    """The graph was shown without the maker's secret-looking defaults, but its
    runs showed them in every node's inputs (and in what nodes made of them)."""
    maker, person = new_user(), new_user()
    secret = f"maker-only-{uuid.uuid4().hex}"
    spec = echo_graph("With a secret default")
    spec["nodes"] += [
        node("dict", "CreateDictionary", values={"api_key": secret, "plan": "pro"}),
        node("leak", "AgentOutput", name="made"),
    ]
    spec["links"].append(link("dict", "dictionary", "leak", "value"))
    listed, listing_id = await listed_graph(gql, maker, spec)
    await add(gql, person, listing_id)
    run = await execute(gql, person, listed["id"], inputs={"text": "hi"})
    done = await wait_for_end(gql, person, run["id"])
    assert done["status"] == "COMPLETED", done
    assert secret not in str(done)
    assert done["outputs"] == {"result": ["hi"], "made": [{"api_key": "***", "plan": "pro"}]}
    dictionary = next(n for n in done["nodeExecutions"] if "values" in n["inputData"])
    assert dictionary["inputData"] == {"values": {"api_key": "***", "plan": "pro"}}
    # Live (here replayed from the start) the same.
    async with graphql_ws(api.ws_url, {"Authorization": f"Bearer {person.token}"}) as ws:
        events, ended = await collect(ws, NODE_EVENTS, {"id": run["id"], "after": 0})
    assert ended == "complete" and len(events) > 3
    assert secret not in str(events) and "'api_key': '***'" in str(events)
    # And shared with the world.
    token = (await gql.ok(SHARE, {"id": run["id"]}, token=person.token))["shareExecution"]
    shared = (await gql.ok(SHARED, {"t": token["shareToken"]}))["sharedExecution"]
    assert shared["outputs"]["made"] == [{"api_key": "***", "plan": "pro"}]
    # The maker's own runs are theirs to read in full.
    own = await execute(gql, maker, listed["id"], inputs={"text": "mine"})
    assert secret in str(await wait_for_end(gql, maker, own["id"]))


async def test_a_store_agent_with_a_sub_graph_runs_for_its_user(gql, new_user, worker):
    maker, person = new_user(), new_user()
    inner = await create_graph(gql, maker, echo_graph("inner"))
    outer_spec = {
        "name": "outer",
        "nodes": [
            node("sub", "SubGraph", graph_id=inner["id"], graph_version=1, inputs={"text": "deep"}),
            node("out", "AgentOutput", name="wrapped"),
        ],
        "links": [link("sub", "result", "out", "value")],
    }
    outer, listing_id = await listed_graph(gql, maker, outer_spec)
    other = await create_graph(gql, maker, echo_graph("not part of it"))
    await add(gql, person, listing_id)
    run = await execute(gql, person, outer["id"])
    done = await wait_for_end(gql, person, run["id"])
    assert done["status"] == "COMPLETED", done
    assert done["outputs"] == {"wrapped": ["deep"]}
    # The sub-graph is part of the agent (readable); the maker's other graphs are not.
    assert (await gql.ok(GET, {"id": inner["id"]}, token=person.token))["graph"] is not None
    assert (await gql.ok(GET, {"id": other["id"]}, token=person.token))["graph"] is None
    grants = await LibraryGrant.filter(user_id=person.id).values_list("graph_id", flat=True)
    assert {str(g) for g in grants} == {outer["id"], inner["id"]}


async def _until_completed(messages, execution_id: str, seen: list[str]) -> None:
    """Read graph events until `execution_id` completes, noting every run seen."""
    while True:
        event = (await anext(messages))["payload"]["data"]["graphExecutionEvents"]
        seen.append(event["execution"]["id"])
        if event["execution"]["id"] == execution_id and event["execution"]["status"] == (
            "COMPLETED"
        ):
            return


async def test_graph_events_show_each_user_only_their_own_runs(api, gql, new_user, worker):
    maker, person = new_user(), new_user()
    listed, listing_id = await listed_graph(gql, maker)
    await add(gql, person, listing_id)
    async with graphql_ws(api.ws_url, {"Authorization": f"Bearer {person.token}"}) as ws:
        op_id = await ws.subscribe(GRAPH_EVENTS, {"id": listed["id"]})
        messages = ws.results(op_id, timeout=30)
        seen: list[str] = []
        # Until the subscription shows a run of ours it may not be listening yet.
        mine = await execute(gql, person, listed["id"], inputs={"text": "me"})
        await _until_completed(messages, mine["id"], seen)
        makers = await execute(gql, maker, listed["id"], inputs={"text": "maker"})
        await wait_for_end(gql, maker, makers["id"])
        # Events of one graph arrive in order: the maker's run came before this one.
        last = await execute(gql, person, listed["id"], inputs={"text": "again"})
        await _until_completed(messages, last["id"], seen)
    assert makers["id"] not in seen
    assert set(seen) == {mine["id"], last["id"]}


# ------------------------------------------------------------------ versions and removal


async def test_update_available_and_moving_to_a_newer_listed_version(gql, new_user):
    maker, person = new_user(), new_user()
    listed, listing_id = await listed_graph(gql, maker)
    entry = await add(gql, person, listing_id)
    preset = (
        await gql.ok(
            CREATE_PRESET,
            {"input": {"graphId": listed["id"], "name": "p", "inputs": {"text": "hi"}}},
            token=person.token,
        )
    )["createPreset"]
    assert preset["graphVersion"] == 1
    # The maker saves v2 (not listed) and v3 (listed).
    await gql.ok(UPDATE, {"id": listed["id"], "g": echo_graph("v2")}, token=maker.token)
    await gql.ok(UPDATE, {"id": listed["id"], "g": echo_graph("v3")}, token=maker.token)
    publish(listed["id"])
    [now] = [e["node"] for e in (await library(gql, person))["edges"]]
    assert now["updateAvailable"] is True and now["latestVersion"] == 3
    assert now["graphVersion"] == 1
    # An unlisted version cannot be moved to.
    code = await gql.error_code(UPDATE_LIBRARY, {"id": entry["id"], "v": 2}, token=person.token)
    assert code == "NOT_FOUND"
    moved = (await gql.ok(UPDATE_LIBRARY, {"id": entry["id"], "v": 3}, token=person.token))[
        "updateLibraryAgent"
    ]
    assert moved["graphVersion"] == 3 and moved["name"] == "v3"
    assert moved["updateAvailable"] is False
    seen = (await gql.ok(GET, {"id": listed["id"]}, token=person.token))["graph"]
    assert seen["version"] == 3
    # Version 1 is no longer granted; the preset moved along.
    assert (await gql.ok(GET, {"id": listed["id"], "v": 1}, token=person.token))["graph"] is None
    [moved_preset] = (await gql.ok(PRESETS, {"g": listed["id"]}, token=person.token))["presets"]
    assert moved_preset["graphVersion"] == 3


async def test_schedules_follow_a_store_agent_to_its_new_version_and_still_fire(
    gql, new_user, worker
):
    """The old version stops being the user's to run when they move on: a schedule
    pinned to it used to be deleted, silently, at its next firing."""
    maker, person = new_user(), new_user()
    listed, listing_id = await listed_graph(gql, maker)
    entry = await add(gql, person, listing_id)
    schedule = await create_schedule(gql, person, listed["id"], inputs={"text": "tick"})
    assert schedule["graphVersion"] == 1
    await gql.ok(UPDATE, {"id": listed["id"], "g": echo_graph("v2")}, token=maker.token)
    publish(listed["id"])
    await gql.ok(UPDATE_LIBRARY, {"id": entry["id"], "v": 2}, token=person.token)
    [moved] = await list_schedules(gql, person, listed["id"])
    assert moved["id"] == schedule["id"] and moved["graphVersion"] == 2

    await make_due([schedule["id"]])

    async def fired():
        runs = await executions_of(gql, person, listed["id"])
        return runs if runs and runs[0]["status"] == "COMPLETED" else None

    [run] = await wait_until(fired, 60, "the moved schedule's run")
    assert run["graphVersion"] == 2 and run["source"] == "SCHEDULE"
    assert (await wait_for_end(gql, person, run["id"]))["outputs"] == {"result": ["tick"]}
    assert [s["id"] for s in await list_schedules(gql, person, listed["id"])] == [schedule["id"]]


async def test_concurrent_moves_adds_and_removal_of_one_entry_stay_consistent(gql, new_user):
    """Moving and removing one entry at once used to insert grants for an entry that
    was just deleted (a foreign key violation: INTERNAL)."""
    maker = new_user()
    listed, first_listing = await listed_graph(gql, maker)
    await gql.ok(UPDATE, {"id": listed["id"], "g": echo_graph("v2")}, token=maker.token)
    second_listing = publish(listed["id"])
    for _ in range(3):
        person = new_user()
        entry = await add(gql, person, first_listing)

        async def one(i: int, entry_id: str, token: str) -> str:
            if i == 5:
                query, variables = REMOVE, {"id": entry_id}
            elif i % 3 == 0:
                query, variables = ADD, {"id": second_listing}
            else:
                query, variables = UPDATE_LIBRARY, {"id": entry_id, "v": 1 + i % 2}
            result = await gql.execute(query, variables, token=token)
            return result["errors"][0]["extensions"]["code"] if result.get("errors") else "ok"

        codes = await asyncio.gather(*(one(i, entry["id"], person.token) for i in range(12)))
        assert set(codes) <= {"ok", "NOT_FOUND"}, codes
        entries = await LibraryAgent.filter(user_id=person.id)
        grants = await LibraryGrant.filter(user_id=person.id)
        if entries:
            [kept] = entries
            assert [(g.library_agent_id, g.graph_version) for g in grants] == [
                (kept.id, kept.graph_version)
            ]
        else:
            assert grants == []


async def test_removing_a_store_agent_takes_access_presets_and_schedules(gql, new_user):
    maker, person = new_user(), new_user()
    listed, listing_id = await listed_graph(gql, maker)
    entry = await add(gql, person, listing_id)
    await gql.ok(
        CREATE_PRESET,
        {"input": {"graphId": listed["id"], "name": "p", "inputs": {"text": "hi"}}},
        token=person.token,
    )
    await create_schedule(gql, person, listed["id"])
    removed = (await gql.ok(REMOVE, {"id": entry["id"]}, token=person.token))["removeLibraryAgent"]
    assert removed == entry["id"]
    assert (await gql.ok(GET, {"id": listed["id"]}, token=person.token))["graph"] is None
    code = await gql.error_code(REMOVE, {"id": entry["id"]}, token=person.token)
    assert code == "NOT_FOUND"
    assert not await Preset.filter(user_id=person.id).exists()
    assert not await Schedule.filter(user_id=person.id).exists()
    assert not await LibraryGrant.filter(user_id=person.id).exists()
    # The maker's graph is untouched; their own entry cannot be removed, only deleted.
    [own] = (await library(gql, maker))["edges"]
    assert await gql.error_code(REMOVE, {"id": own["node"]["id"]}, token=maker.token) == "CONFLICT"


async def test_a_deleted_listed_graph_cannot_run_any_more(gql, new_user):
    maker, person = new_user(), new_user()
    listed, listing_id = await listed_graph(gql, maker)
    await add(gql, person, listing_id)
    await gql.ok(DELETE_GRAPH, {"id": listed["id"]}, token=maker.token)
    [entry] = [e["node"] for e in (await library(gql, person))["edges"]]
    assert entry["canRun"] is False
    code = await gql.error_code(
        "mutation($id: ID!) { executeGraph(graphId: $id) { id } }",
        {"id": listed["id"]},
        token=person.token,
    )
    assert code == "NOT_FOUND"
    # Its listing went with it: not recommended any more, nor added, nor rated.
    stranger = new_user()
    agents = (await gql.ok(RECOMMENDED, token=stranger.token))["recommendedAgents"]
    assert listing_id not in [a["id"] for a in agents]
    assert await gql.error_code(ADD, {"id": listing_id}, token=stranger.token) == "NOT_FOUND"
    code = await gql.error_code(RATE, {"id": listing_id, "s": 4}, token=stranger.token)
    assert code == "NOT_FOUND"


# ------------------------------------------------------------------ ratings


async def test_ratings_are_one_per_user_changeable_and_averaged(gql, new_user):
    maker, first, second = new_user(), new_user(), new_user()
    _, listing_id = await listed_graph(gql, maker)
    rated = (await gql.ok(RATE, {"id": listing_id, "s": 5}, token=first.token))["rateStoreAgent"]
    assert rated["rating"] == 5.0 and rated["myRating"] == 5
    await gql.ok(RATE, {"id": listing_id, "s": 2}, token=second.token)
    changed = (await gql.ok(RATE, {"id": listing_id, "s": 3}, token=first.token))["rateStoreAgent"]
    assert changed["rating"] == 2.5 and changed["myRating"] == 3
    agents = (await gql.ok(RECOMMENDED, token=second.token))["recommendedAgents"]
    mine = next(a for a in agents if a["id"] == listing_id)
    assert mine["rating"] == 2.5 and mine["myRating"] == 2
    listing = await StoreListing.get(versions__id=listing_id)
    assert listing.rating == 2.5
    for score in (0, 6, -1):
        code = await gql.error_code(RATE, {"id": listing_id, "s": score}, token=first.token)
        assert code == "BAD_USER_INPUT"
    assert await gql.error_code(RATE, {"id": listing_id, "s": 5}, token=maker.token) == (
        "BAD_USER_INPUT"
    )
    code = await gql.error_code(RATE, {"id": str(uuid.uuid4()), "s": 5}, token=first.token)
    assert code == "NOT_FOUND"
    assert (await StoreListing.get(id=listing.id)).rating == 2.5


async def test_store_runs_count_runs_from_before_publishing(gql, user, worker):
    graph = await create_graph(gql, user)
    for text in ("a", "b"):
        run = await execute(gql, user, graph["id"], inputs={"text": text})
        await wait_for_end(gql, user, run["id"])
    listing_id = publish(graph["id"])
    agents = (await gql.ok(RECOMMENDED, token=user.token))["recommendedAgents"]
    assert next(a for a in agents if a["id"] == listing_id)["runs"] == 2
