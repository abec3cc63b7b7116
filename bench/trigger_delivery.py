"""What issue 16 adds to starting a run, as the client waiting for the answer sees it.

- trigger_delivery_p50: a signed POST to a trigger URL until its 202 (signature
  check with the decrypted secret, rate limit, the delivery row and the run in one
  transaction).
- preset_run_p50: executeGraph with a preset whose inputs and stored-credentials
  mapping are merged in and checked (the credentials looked up, owner and type).

Baseline for both (same run, interleaved so every figure sees the same load):
executeGraph of the same graph with its inputs given directly and no credentials.
No worker runs: the runs stay QUEUED, so only the API's work is measured.
"""

from __future__ import annotations

import asyncio
import json
import time

import httpx

from bench.support import bench_stack, figure_line, median, ms, percentile, signed_in_user

WARMUP, RUNS = 5, 200
GRAPH = "mutation($g: GraphInput!) { createGraph(graph: $g) { id } }"
GRAPH_TRIGGER = "query($id: ID!) { graph(id: $id) { trigger { id } } }"
ROTATE = "mutation($id: ID!) { rotateTriggerSecret(id: $id) { secret } }"
CREDENTIALS = """mutation { createCredentials(provider: "example", type: BEARER,
  title: "bench", secret: "bench-bearer-token-0123456789") { id } }"""
PRESET = "mutation($input: PresetInput!) { createPreset(input: $input) { id } }"
EXECUTE = """mutation($id: ID!, $inputs: JSON! = {}, $preset: ID) {
  executeGraph(graphId: $id, inputs: $inputs, presetId: $preset) { id } }"""


def bench_graph() -> dict:
    from tests.graph_builders import link, node

    return {
        "name": "bench trigger",
        "nodes": [
            node("hook", "WebhookTrigger"),
            node("payload", "AgentOutput", name="payload"),
            node("in", "AgentInput", name="text", type="string", value="default"),
            node("out", "AgentOutput", name="text"),
            node("get", "HttpRequest", url="https://example.com/"),
        ],
        "links": [
            link("hook", "payload", "payload", "value"),
            link("in", "result", "out", "value"),
        ],
    }


async def main() -> None:
    from app.services.trigger_deliveries import sign
    from tests.harness import GraphQLClient

    # The rate limits (per trigger, per user) would refuse most of what is measured.
    limits = {"TRIGGER_RATE_LIMIT_PER_MINUTE": "100000", "MUTATION_RATE_LIMIT_PER_MINUTE": "100000"}
    async with bench_stack(api_env=limits) as stack:
        gql = GraphQLClient(stack.server.base_url)
        http = httpx.AsyncClient(base_url=stack.server.base_url, timeout=30)
        try:
            user = await signed_in_user(gql)
            graph = (await gql.ok(GRAPH, {"g": bench_graph()}, token=user.token))["createGraph"]
            trigger = (await gql.ok(GRAPH_TRIGGER, {"id": graph["id"]}, token=user.token))["graph"][
                "trigger"
            ]
            secret = (await gql.ok(ROTATE, {"id": trigger["id"]}, token=user.token))[
                "rotateTriggerSecret"
            ]["secret"]
            credentials = (await gql.ok(CREDENTIALS, token=user.token))["createCredentials"]
            preset = (
                await gql.ok(
                    PRESET,
                    {
                        "input": {
                            "graphId": graph["id"],
                            "name": "bench",
                            "inputs": {"text": "from preset"},
                            "credentialsInputs": {"http_credentials": credentials["id"]},
                        }
                    },
                    token=user.token,
                )
            )["createPreset"]
            plain, with_preset, deliveries = [], [], []
            for index in range(WARMUP + RUNS):
                started = time.perf_counter()
                await gql.ok(
                    EXECUTE, {"id": graph["id"], "inputs": {"text": "x"}}, token=user.token
                )
                plain_seconds = time.perf_counter() - started

                started = time.perf_counter()
                await gql.ok(EXECUTE, {"id": graph["id"], "preset": preset["id"]}, token=user.token)
                preset_seconds = time.perf_counter() - started

                body = json.dumps({"delivery": index}).encode()
                headers = {"AgentGraph-Signature": sign(secret, body)}
                started = time.perf_counter()
                response = await http.post(
                    f"/api/triggers/{trigger['id']}", content=body, headers=headers
                )
                delivery_seconds = time.perf_counter() - started
                assert response.status_code == 202, response.text
                if index >= WARMUP:
                    plain.append(plain_seconds)
                    with_preset.append(preset_seconds)
                    deliveries.append(delivery_seconds)
        finally:
            await http.aclose()
            await gql.aclose()

    base = median(plain)
    print(f"{RUNS} of each, interleaved; no worker, so every run stays QUEUED")
    print(f"  executeGraph (inputs given): p50 {ms(base)}, p99 {ms(percentile(plain, 99))}")
    print(
        f"  executeGraph with a preset + credentials: p50 {ms(median(with_preset))}, "
        f"p99 {ms(percentile(with_preset, 99))}"
    )
    print(
        f"  signed trigger POST -> 202: p50 {ms(median(deliveries))}, "
        f"p99 {ms(percentile(deliveries, 99))}"
    )
    for name, samples in (("trigger_delivery_p50", deliveries), ("preset_run_p50", with_preset)):
        value = median(samples)
        print(figure_line(name, value * 1000, "ms", base * 1000, value / base))


if __name__ == "__main__":
    asyncio.run(main())
