"""File uploads through POST /api/files (SEMANTICS.md §10), read back by graphs.

Blob storage is a real Azurite; clamd is a local stand-in speaking INSTREAM.
The session's plain `api` has no connection string, so it answers data: URIs.
"""

from __future__ import annotations

import asyncio
import base64
import os
import time
from collections.abc import AsyncIterator, Iterable
from datetime import UTC, datetime, timedelta
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
from azure.storage.blob.aio import BlobClient

from app.clients.clamd import ClamdClient, ClamdStreamTooLarge, ClamdUnavailable
from app.models import UploadedFile
from app.services.files import (
    MAX_FILE_NAME_CHARS,
    data_uri_limit_bytes,
    safe_content_type,
    safe_file_name,
)
from tests.azurite import Azurite
from tests.clamd_stand_in import INFECTED_MARKER, ClamdStandIn
from tests.conftest import RUN_ID, TEST_ENV
from tests.execution_helpers import execute, wait_for_end
from tests.graph_builders import block_id, create_graph, link, node
from tests.harness import ApiServer, GraphQLClient, WorkerProcess, free_port

MIB = 1024 * 1024
# The blob-backed API takes at most this much, so refusing more is cheap to test.
BLOB_UPLOAD_MAX_MB = 5
BOUNDARY = "agentgraph-test-boundary-7f3a"
CREATE_KEY = """mutation($input: ApiKeyInput!) { createApiKey(input: $input) { plainTextKey } }"""
EXECUTE_BLOCK = """mutation($id: ID!, $input: JSON!) { executeBlock(blockId: $id, input: $input) {
  outputs } }"""


# --------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
async def azurite() -> AsyncIterator[Azurite]:
    server = Azurite()
    await server.start()
    try:
        yield server
    finally:
        await server.stop()


@pytest.fixture(scope="module")
def blob_env(azurite: Azurite) -> dict[str, str]:
    # Its own queue (a sub-prefix of the run's, so clean-up covers it): only the
    # worker that can reach Azurite may run these graphs.
    return {
        **TEST_ENV,
        "REDIS_PREFIX": TEST_ENV["REDIS_PREFIX"] + "files:",
        "AZURE_STORAGE_CONNECTION_STRING": azurite.connection_string,
        "AZURE_STORAGE_CONTAINER": f"uploads-{RUN_ID}",
        "UPLOAD_MAX_MB": str(BLOB_UPLOAD_MAX_MB),
    }


@pytest.fixture(scope="module")
def blob_settings(settings, blob_env):
    return settings.model_copy(
        update={
            "AZURE_STORAGE_CONNECTION_STRING": blob_env["AZURE_STORAGE_CONNECTION_STRING"],
            "AZURE_STORAGE_CONTAINER": blob_env["AZURE_STORAGE_CONTAINER"],
        }
    )


@pytest.fixture(scope="module")
async def blob_api(database, blob_env) -> AsyncIterator[ApiServer]:
    async with ApiServer(blob_env) as server:
        yield server


@pytest.fixture(scope="module")
async def blob_worker(database, blob_env) -> AsyncIterator[WorkerProcess]:
    async with WorkerProcess(blob_env) as process:
        yield process


@pytest.fixture
async def blob_gql(blob_api) -> AsyncIterator[GraphQLClient]:
    client = GraphQLClient(blob_api.base_url)
    try:
        yield client
    finally:
        await client.aclose()


@pytest.fixture(scope="module")
def clamd() -> Iterable[ClamdStandIn]:
    stand_in = ClamdStandIn()
    stand_in.start()
    try:
        yield stand_in
    finally:
        stand_in.stop()


@pytest.fixture
def clamd_mode(clamd):
    """Lets a test make the stand-in misbehave, and puts it right afterwards."""
    yield clamd
    clamd.mode = "scan"


@pytest.fixture(scope="module")
async def scanning_api(database, blob_env, clamd) -> AsyncIterator[ApiServer]:
    async with ApiServer(blob_env, {"CLAMD_ADDRESS": clamd.address}) as server:
        yield server


@pytest.fixture(scope="module")
async def scanning_inline_api(database, clamd) -> AsyncIterator[ApiServer]:
    """Scanning without blob storage: files come back as data: URIs."""
    async with ApiServer(TEST_ENV, {"CLAMD_ADDRESS": clamd.address}) as server:
        yield server


# ---------------------------------------------------------------------- helpers


async def upload(
    server: ApiServer,
    data: bytes,
    *,
    name: str = "notes.txt",
    content_type: str = "text/plain",
    token: str | None = None,
    api_key: str | None = None,
    hours: str | int | None = None,
) -> httpx.Response:
    """A browser-style upload: one multipart body with a Content-Length."""
    headers = {}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    if api_key:
        headers["X-API-Key"] = api_key
    params = {"expiration_hours": str(hours)} if hours is not None else None
    async with httpx.AsyncClient(base_url=server.base_url, timeout=60) as client:
        return await client.post(
            "/api/files",
            params=params,
            files={"file": (name, data, content_type)},
            headers=headers,
        )


async def streamed_upload(
    server: ApiServer, total: int, token: str, chunk: int = 256 * 1024
) -> httpx.Response:
    """An upload sent as it is produced (chunked, no Content-Length), like a proxy
    or a script piping a file: the size is known only when the stream ends."""

    async def body() -> AsyncIterator[bytes]:
        yield (
            f"--{BOUNDARY}\r\n"
            'Content-Disposition: form-data; name="file"; filename="big.bin"\r\n'
            "Content-Type: application/octet-stream\r\n\r\n"
        ).encode()
        sent = 0
        while sent < total:
            size = min(chunk, total - sent)
            yield os.urandom(size)
            sent += size
        yield f"\r\n--{BOUNDARY}--\r\n".encode()

    async with httpx.AsyncClient(base_url=server.base_url, timeout=120) as client:
        return await client.post(
            "/api/files",
            content=body(),
            headers={
                "Authorization": f"Bearer {token}",
                "Content-Type": f"multipart/form-data; boundary={BOUNDARY}",
            },
        )


def peak_rss_mb(server: ApiServer) -> float:
    """The API process's peak resident memory so far (VmHWM), in MiB."""
    with open(f"/proc/{server.process.pid}/status") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    raise AssertionError("no VmHWM")


async def download(url: str) -> httpx.Response:
    async with httpx.AsyncClient(timeout=60) as client:
        return await client.get(url)


def assert_error(response: httpx.Response, status: int, code: str) -> dict:
    assert response.status_code == status, response.text
    body = response.json()
    assert body["error"] == code and body["message"], body
    return body


async def nothing_stored(azurite: Azurite, blob_env, user) -> bool:
    rows = await UploadedFile.filter(user_id=user.id).count()
    blobs = await azurite.blob_names(blob_env["AZURE_STORAGE_CONTAINER"], f"{user.id}/")
    return rows == 0 and blobs == []


def read_file_graph(mode: str = "text") -> dict:
    """file input 'doc' -> ReadFile -> outputs 'content' and 'name'."""
    return {
        "name": "read a file",
        "nodes": [
            node("in", "AgentInput", name="doc", type="file"),
            node("read", "ReadFile", mode=mode),
            node("content", "AgentOutput", name="content"),
            node("name", "AgentOutput", name="name"),
        ],
        "links": [
            link("in", "result", "read", "file"),
            link("read", "content", "content", "value"),
            link("read", "name", "name", "value"),
        ],
    }


# ------------------------------------------------------ data: URIs (no storage)


async def test_upload_without_storage_answers_a_data_uri(api, new_user):
    person = new_user()
    response = await upload(api, b"hello, file", token=person.token, hours=3)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body == {
        "file_uri": "data:text/plain;base64," + base64.b64encode(b"hello, file").decode(),
        "file_name": "notes.txt",
        "size": 11,
        "content_type": "text/plain",
        "expires_in_hours": 3,
    }
    # Nothing is kept server-side for an inline file.
    assert await UploadedFile.filter(user_id=person.id).count() == 0


async def test_data_uri_uploads_are_capped_to_what_a_graphql_request_can_carry(
    api, new_user, settings
):
    person = new_user()
    limit = data_uri_limit_bytes(settings)
    assert limit < settings.MAX_BODY_BYTES
    fits = await upload(api, b"a" * limit, name="a.bin", token=person.token)
    assert fits.status_code == 200 and fits.json()["size"] == limit
    too_big = await upload(api, b"a" * (limit + 1), name="a.bin", token=person.token)
    assert_error(too_big, 413, "BAD_USER_INPUT")


async def test_graph_reads_a_data_uri_file(api, gql, worker, user):
    uri = (await upload(api, "héllo wörld".encode(), token=user.token)).json()["file_uri"]
    graph = await create_graph(gql, user, read_file_graph())
    run = await execute(gql, user, graph["id"], {"doc": uri})
    done = await wait_for_end(gql, user, run["id"])
    assert done["status"] == "COMPLETED", done
    assert done["outputs"]["content"] == ["héllo wörld"]


async def test_read_file_block_gives_text_or_base64(api, gql, user, worker):
    binary = bytes(range(256))
    text_uri = (await upload(api, "ünïcode".encode(), token=user.token)).json()["file_uri"]
    sent = await upload(api, binary, content_type="application/x-thing", token=user.token)
    binary_uri = sent.json()["file_uri"]

    async def read(uri: str, **pins) -> dict:
        data = await gql.ok(
            EXECUTE_BLOCK,
            {"id": block_id("ReadFile"), "input": {"file": uri, **pins}},
            token=user.token,
        )
        return data["executeBlock"]["outputs"]

    assert (await read(text_uri)) == {
        "content": ["ünïcode"],
        "name": ["file"],
        "content_type": ["text/plain"],
        "size": [len("ünïcode".encode())],
    }
    encoded = await read(binary_uri, mode="base64")
    assert base64.b64decode(encoded["content"][0]) == binary
    assert encoded["content_type"] == ["application/x-thing"]
    assert "not utf-8 text" in (await read(binary_uri))["error"][0]
    assert "Malformed" in (await read("data:text/plain;base64,@@@"))["error"][0]
    # Without blob storage there are no stored files to read.
    assert "File not found" in (await read("https://example.com/a.txt"))["error"][0]


# ------------------------------------------------------------ sign-in and input


async def test_upload_needs_sign_in(api):
    anonymous = await upload(api, b"x")
    assert_error(anonymous, 401, "UNAUTHENTICATED")
    forged = await upload(api, b"x", token="not-a-jwt")
    assert_error(forged, 401, "UNAUTHENTICATED")
    unknown_key = await upload(api, b"x", api_key="agpt_" + "A" * 43)
    assert_error(unknown_key, 401, "UNAUTHENTICATED")


async def test_api_keys_need_execute_graph_to_upload(api, gql, user):
    async def key(*permissions: str) -> str:
        data = await gql.ok(
            CREATE_KEY,
            {"input": {"name": "uploads", "permissions": list(permissions)}},
            token=user.token,
        )
        return data["createApiKey"]["plainTextKey"]

    refused = await upload(api, b"x", api_key=await key("READ_GRAPH"))
    assert_error(refused, 403, "FORBIDDEN")
    allowed = await upload(api, b"x", api_key=await key("READ_GRAPH", "EXECUTE_GRAPH"))
    assert allowed.status_code == 200, allowed.text


# "²" used to answer 500 (str.isdigit() takes it, int() does not) and "٣" passed as 3.
@pytest.mark.parametrize("hours", ["0", "49", "-1", "1.5", "two", "1e1", "²", "٣", "\uff11\uff12"])
async def test_expiration_outside_1_to_48_hours_is_refused(
    blob_api, azurite, blob_env, new_user, hours
):
    person = new_user()
    response = await upload(blob_api, b"x", token=person.token, hours=hours)
    assert_error(response, 400, "BAD_USER_INPUT")
    assert await nothing_stored(azurite, blob_env, person)


@pytest.fixture(scope="module")
async def limited_upload_api(database) -> AsyncIterator[ApiServer]:
    """Uploads capped at 1 MiB a day and 3 a minute per user."""
    limits = {"UPLOAD_QUOTA_MB_PER_DAY": "1", "UPLOAD_RATE_LIMIT_PER_MINUTE": "3"}
    async with ApiServer(TEST_ENV, limits) as server:
        yield server


async def test_uploads_stop_at_the_daily_quota(limited_upload_api, new_user):
    """Issue 13: uploads had no per-user quota."""
    person, other = new_user(), new_user()
    first = await upload(limited_upload_api, b"a" * 400_000, token=person.token)
    assert first.status_code == 200, first.text
    # Without a Content-Length the bytes are counted as they arrive.
    second = await streamed_upload(limited_upload_api, 450_000, person.token)
    assert second.status_code == 200, second.text
    third = await streamed_upload(limited_upload_api, 300_000, person.token)
    body = assert_error(third, 429, "RATE_LIMITED")
    assert "quota" in body["message"]
    # Declared sizes that cannot fit are refused before the body is read.
    fourth = await upload(limited_upload_api, b"d" * 10, token=person.token)
    assert_error(fourth, 429, "RATE_LIMITED")
    # Another user has a quota of their own.
    assert (await upload(limited_upload_api, b"x" * 400_000, token=other.token)).status_code == 200


async def test_uploads_are_rate_limited_per_user(limited_upload_api, new_user):
    into = time.time() % 60  # the limit counts per clock minute: do not straddle one
    if into > 50:
        await asyncio.sleep(60 - into + 0.1)
    person = new_user()
    for _ in range(3):
        assert (await upload(limited_upload_api, b"x", token=person.token)).status_code == 200
    assert_error(await upload(limited_upload_api, b"x", token=person.token), 429, "RATE_LIMITED")


async def test_expiration_bounds_are_accepted(api, new_user):
    person = new_user()
    for hours in (1, 48):
        response = await upload(api, b"x", token=person.token, hours=hours)
        assert response.status_code == 200 and response.json()["expires_in_hours"] == hours


async def test_requests_without_a_file_part_are_refused(api, new_user):
    person = new_user()
    headers = {"Authorization": f"Bearer {person.token}"}
    async with httpx.AsyncClient(base_url=api.base_url) as client:
        not_multipart = await client.post("/api/files", json={"file": "x"}, headers=headers)
        assert_error(not_multipart, 400, "BAD_USER_INPUT")
        wrong_field = await client.post(
            "/api/files", files={"document": ("a.txt", b"x")}, headers=headers
        )
        assert_error(wrong_field, 400, "BAD_USER_INPUT")
        cut_short = await client.post(
            "/api/files",
            content=f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="file"; '
            f'filename="a.txt"\r\n\r\npartial'.encode(),
            headers={**headers, "Content-Type": f"multipart/form-data; boundary={BOUNDARY}"},
        )
        assert_error(cut_short, 400, "BAD_USER_INPUT")


async def test_file_names_are_made_safe(api, new_user):
    person = new_user()
    cases = {
        "../../etc/passwd": "passwd",
        "C:\\Users\\me\\report 2024 (final).pdf": "report_2024_final_.pdf",
        "résumé.txt": "resume.txt",
        ".hidden": "hidden",
        "..": "file",
        "<b>x</b>.html": "b_.html",  # the / makes "b>.html" the last path part
    }
    for sent, expected in cases.items():
        response = await upload(api, b"x", name=sent, token=person.token)
        assert response.json()["file_name"] == expected, sent
    long = safe_file_name("a" * 300 + ".tar.gz")
    assert len(long) == MAX_FILE_NAME_CHARS and long.endswith(".gz")
    assert safe_content_type("Text/HTML; charset=utf-8") == "text/html"
    assert safe_content_type("not a type") == "application/octet-stream"


# ------------------------------------------------------------- blob storage


async def test_upload_is_stored_with_a_read_only_expiring_url(blob_api, azurite, blob_env, user):
    # Several blocks' worth, so the staged blocks must be committed in order.
    data = os.urandom(4 * MIB + 12345)
    before = datetime.now(UTC)
    response = await upload(
        blob_api, data, name="photo.png", content_type="image/png", token=user.token, hours=2
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["file_name"] == "photo.png" and body["size"] == len(data)
    assert body["content_type"] == "image/png" and body["expires_in_hours"] == 2

    row = await UploadedFile.get(user_id=user.id)
    assert row.blob_name == f"{user.id}/{row.id}/photo.png"
    assert row.size == len(data) and row.content_type == "image/png"
    assert before + timedelta(hours=2) <= row.expires_at <= datetime.now(UTC) + timedelta(hours=2)

    url = body["file_uri"]
    assert urlsplit(url).path.endswith(f"/{blob_env['AZURE_STORAGE_CONTAINER']}/{row.blob_name}")
    sas = parse_qs(urlsplit(url).query)
    assert sas["sp"] == ["r"]  # read only
    expiry = datetime.fromisoformat(sas["se"][0].replace("Z", "+00:00"))
    assert abs(expiry - row.expires_at) < timedelta(seconds=2)

    fetched = await download(url)
    assert fetched.status_code == 200
    assert fetched.content == data
    assert fetched.headers["content-type"] == "image/png"

    # The SAS cannot write or delete, and the blob is private without it.
    async with BlobClient.from_blob_url(url) as with_sas:
        with pytest.raises(Exception) as refused:
            await with_sas.upload_blob(b"overwritten", overwrite=True)
        assert getattr(refused.value, "status_code", None) == 403
        with pytest.raises(Exception) as refused:
            await with_sas.delete_blob()
        assert getattr(refused.value, "status_code", None) == 403
    assert (await download(url.split("?")[0])).status_code in (403, 404)
    assert (await download(url)).content == data


@pytest.mark.parametrize(
    "size",
    [
        # Just over: found while streaming, after blocks were staged.
        BLOB_UPLOAD_MAX_MB * MIB + 1,
        # Far over: the declared Content-Length alone refuses it.
        2 * BLOB_UPLOAD_MAX_MB * MIB,
    ],
)
async def test_oversize_upload_is_refused_and_nothing_kept(
    blob_api, azurite, blob_env, new_user, size
):
    person = new_user()
    response = await upload(blob_api, os.urandom(size), name="big.bin", token=person.token)
    body = assert_error(response, 413, "BAD_USER_INPUT")
    assert str(BLOB_UPLOAD_MAX_MB * MIB) in body["message"]
    assert await nothing_stored(azurite, blob_env, person)


async def test_oversize_stream_is_cut_off_without_buffering_it(
    blob_api, azurite, blob_env, new_user
):
    """No Content-Length: the limit is found while streaming; the staged blocks are
    dropped and the process never held the body (its peak memory grows far less)."""
    person = new_user()
    total = 40 * MIB
    peak_before = peak_rss_mb(blob_api)
    response = await streamed_upload(blob_api, total, person.token)
    assert_error(response, 413, "BAD_USER_INPUT")
    assert await nothing_stored(azurite, blob_env, person)
    grown = peak_rss_mb(blob_api) - peak_before
    assert grown < total / MIB / 2, f"peak RSS grew {grown:.1f} MiB for a {total / MIB} MiB body"


async def test_a_stream_within_the_limit_is_stored_whole(blob_api, new_user):
    person = new_user()
    response = await streamed_upload(blob_api, BLOB_UPLOAD_MAX_MB * MIB, person.token)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["size"] == BLOB_UPLOAD_MAX_MB * MIB
    assert len((await download(body["file_uri"])).content) == BLOB_UPLOAD_MAX_MB * MIB


async def test_expired_files_are_deleted_by_the_worker_job(
    blob_api, azurite, blob_env, blob_settings, new_user
):
    from workers.jobs.files import delete_expired_files

    person = new_user()
    expiring = (await upload(blob_api, b"old", name="old.txt", token=person.token, hours=1)).json()
    keeping = (await upload(blob_api, b"new", name="new.txt", token=person.token, hours=1)).json()
    old = await UploadedFile.get(user_id=person.id, file_name="old.txt")
    # An hour is too long to wait: move the one file's expiry into the past.
    await UploadedFile.filter(id=old.id).update(expires_at=datetime.now(UTC) - timedelta(minutes=1))

    deleted = await delete_expired_files({"settings": blob_settings})
    assert deleted >= 1
    assert not await UploadedFile.exists(id=old.id)
    names = await azurite.blob_names(blob_env["AZURE_STORAGE_CONTAINER"], f"{person.id}/")
    assert names == [(await UploadedFile.get(user_id=person.id)).blob_name]
    assert (await download(expiring["file_uri"])).status_code == 404
    assert (await download(keeping["file_uri"])).content == b"new"
    # Running again (as a second worker or a retry would) changes nothing.
    assert await delete_expired_files({"settings": blob_settings}) == 0
    assert await UploadedFile.filter(user_id=person.id).count() == 1


def test_the_expiry_job_is_a_worker_cron_job():
    from workers.settings import worker_settings

    names = {job.name for job in worker_settings().cron_jobs}
    # Named with REDIS_PREFIX, so its job ids (and arq keys) are this deployment's.
    assert f"{TEST_ENV['REDIS_PREFIX']}cron:delete_expired_files" in names


# ------------------------------------------------------------- files in graphs


async def test_graph_reads_the_users_uploaded_file(blob_api, blob_gql, blob_worker, new_user):
    person = new_user()
    text = "quarterly numbers: 1, 2, 3"
    uri = (await upload(blob_api, text.encode(), name="q3.txt", token=person.token)).json()[
        "file_uri"
    ]
    graph = await create_graph(blob_gql, person, read_file_graph())
    run = await execute(blob_gql, person, graph["id"], {"doc": uri})
    done = await wait_for_end(blob_gql, person, run["id"])
    assert done["status"] == "COMPLETED", done
    assert done["outputs"] == {"content": [text], "name": ["q3.txt"]}


async def test_another_user_cannot_read_a_file_through_a_graph(
    blob_api, blob_gql, blob_worker, new_user
):
    owner, other = new_user(), new_user()
    secret = b"owner's secret"
    uri = (await upload(blob_api, secret, token=owner.token)).json()["file_uri"]
    own_file = (await upload(blob_api, b"mine", token=other.token)).json()["file_uri"]
    owner_id, other_id = str(owner.id), str(other.id)
    attempts = [
        uri,
        # Their own path prefix, walking out of it.
        uri.replace(owner_id, f"{other_id}/..%2F{owner_id}"),
        # Their own URL, pointed at another host (the URL is never fetched as given).
        own_file.replace("127.0.0.1", "localhost"),
    ]
    graph = await create_graph(blob_gql, other, read_file_graph(mode="base64"))
    for attempt in attempts:
        run = await execute(blob_gql, other, graph["id"], {"doc": attempt})
        done = await wait_for_end(blob_gql, other, run["id"])
        assert done["status"] == "FAILED", attempt
        assert "content" not in done["outputs"]
        failed = [n for n in done["nodeExecutions"] if n["status"] == "FAILED"]
        assert "File not found" in failed[0]["error"]
        assert base64.b64encode(secret).decode() not in str(done)
    # The owner's own run still reads it.
    mine = await create_graph(blob_gql, owner, read_file_graph())
    done = await wait_for_end(
        blob_gql, owner, (await execute(blob_gql, owner, mine["id"], {"doc": uri}))["id"]
    )
    assert done["outputs"]["content"] == [secret.decode()]


# ------------------------------------------------------------------- scanning


async def test_clean_upload_is_scanned_then_stored(scanning_api, clamd, new_user):
    person = new_user()
    data = os.urandom(3 * MIB)
    response = await upload(scanning_api, data, name="clean.bin", token=person.token)
    assert response.status_code == 200, response.text
    assert len(data) in clamd.scanned  # clamd saw the whole file
    assert (await download(response.json()["file_uri"])).content == data


async def test_infected_upload_is_refused_and_nothing_kept(
    scanning_api, azurite, blob_env, new_user
):
    person = new_user()
    data = b"harmless prefix " + INFECTED_MARKER + b" and more"
    response = await upload(scanning_api, data, name="eicar.com", token=person.token)
    body = assert_error(response, 400, "BAD_USER_INPUT")
    assert "malware" in body["message"]
    assert await nothing_stored(azurite, blob_env, person)


async def test_scanner_not_answering_is_503_and_nothing_kept(
    scanning_api, azurite, blob_env, clamd_mode, new_user
):
    person = new_user()
    clamd_mode.mode = "hangup"
    response = await upload(scanning_api, b"some bytes", token=person.token)
    assert_error(response, 503, "INTERNAL")
    assert await nothing_stored(azurite, blob_env, person)


async def test_data_uri_uploads_are_scanned_too(scanning_inline_api, clamd, new_user):
    person = new_user()
    clean = await upload(scanning_inline_api, b"clean inline bytes", token=person.token)
    assert clean.status_code == 200, clean.text
    assert clean.json()["file_uri"].startswith("data:text/plain;base64,")
    assert clamd.scanned[-1] == len(b"clean inline bytes")
    infected = await upload(scanning_inline_api, INFECTED_MARKER, token=person.token)
    assert_error(infected, 400, "BAD_USER_INPUT")


async def _chunks(*parts: bytes) -> AsyncIterator[bytes]:
    for part in parts:
        yield part


async def test_clamd_client_speaks_instream(clamd_mode):
    client = ClamdClient(clamd_mode.address)
    clean = await client.scan(_chunks(b"a" * 100, b"b" * (2 * MIB)))
    assert clean.clean and clean.signature is None
    assert clamd_mode.scanned[-1] == 100 + 2 * MIB
    # The marker split across two chunks is still found.
    half = len(INFECTED_MARKER) // 2
    infected = await client.scan(_chunks(INFECTED_MARKER[:half], INFECTED_MARKER[half:]))
    assert not infected.clean and infected.signature == "Eicar-Test-Signature"


async def test_clamd_client_reports_a_scanner_that_does_not_answer(clamd_mode):
    with pytest.raises(ClamdUnavailable):
        await ClamdClient(f"127.0.0.1:{free_port()}").scan(_chunks(b"x"))
    clamd_mode.mode = "hangup"
    with pytest.raises(ClamdUnavailable):
        await ClamdClient(clamd_mode.address).scan(_chunks(b"x"))
    clamd_mode.mode = "silent"
    with pytest.raises(ClamdUnavailable):
        await ClamdClient(clamd_mode.address, reply_timeout=0.5).scan(_chunks(b"x"))


async def test_clamd_client_reports_a_stream_past_clamds_limit(clamd_mode):
    clamd_mode.max_stream_bytes = 1000
    try:
        with pytest.raises(ClamdStreamTooLarge):
            await ClamdClient(clamd_mode.address).scan(_chunks(b"x" * 5000))
    finally:
        clamd_mode.max_stream_bytes = 1 << 40
