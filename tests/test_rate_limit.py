"""Per-user mutation rate limit (SEMANTICS.md §11) on a real API process."""

from __future__ import annotations

import asyncio
import time

from tests.conftest import TEST_ENV
from tests.harness import ApiServer, GraphQLClient

SET_ZONE = "mutation($z: String!) { updateTimezone(timezone: $z) { timezone } }"


async def _start_of_a_fresh_window() -> None:
    # The window is a clock minute; do not straddle its end.
    into = time.time() % 60
    if into > 45:
        await asyncio.sleep(60 - into + 0.1)


async def test_mutations_beyond_the_limit_are_refused_and_change_nothing(database, new_user):
    server = ApiServer(TEST_ENV, {"MUTATION_RATE_LIMIT_PER_MINUTE": "5"})
    await server.start()
    client = GraphQLClient(server.base_url)
    try:
        busy, other = new_user(), new_user()
        await _start_of_a_fresh_window()
        for _ in range(5):
            await client.ok(SET_ZONE, {"z": "Europe/Paris"}, token=busy.token)
        error = await client.error(SET_ZONE, {"z": "Asia/Tokyo"}, token=busy.token)
        assert error["extensions"]["code"] == "RATE_LIMITED"
        assert 0 < error["extensions"]["retryAfterSeconds"] <= 60
        me = await client.ok("{ me { timezone } }", token=busy.token)
        assert me["me"]["timezone"] == "Europe/Paris"  # queries still answer
        # Another user has their own budget; aliases count one each.
        aliased = (
            "mutation { "
            + " ".join(f'z{i}: updateTimezone(timezone: "UTC") {{ timezone }}' for i in range(5))
            + " }"
        )
        await client.ok(aliased, token=other.token)
        assert await client.error_code(SET_ZONE, {"z": "UTC"}, token=other.token) == "RATE_LIMITED"
    finally:
        await client.aclose()
        await server.stop()
