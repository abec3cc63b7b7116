"""The queue's keys and the sweep (issue 12): arq's job keys carry REDIS_PREFIX,
and a run whose job never reached the queue is enqueued again, whatever started it."""

from __future__ import annotations

import asyncio
import uuid
from datetime import timedelta

from app.clients.redis import create_redis, worker_wakeup_channel
from app.clock import utcnow
from app.models import AutoTopUpConfig, Execution, ExecutionStatus, GraphSource
from app.services.auto_top_up import QueuedAutoTopUp
from app.settings import Settings
from tests.conftest import TEST_ENV
from tests.execution_helpers import OwnStack, execute, wait_for_end
from tests.graph_builders import create_graph
from tests.harness import WorkerProcess


def settings_with_prefix(prefix: str) -> Settings:
    env = {k: v for k, v in TEST_ENV.items() if k in Settings.model_fields}
    return Settings(**{**env, "REDIS_PREFIX": prefix})


async def test_two_prefixes_on_one_redis_never_see_each_others_jobs(user):
    """Two deployments sharing one Redis (say staging beside production, with the
    same user ids): arq's job keys ignored REDIS_PREFIX, so one deployment's
    auto top-up for a user silently swallowed the other's."""
    await AutoTopUpConfig.create(user_id=user.id, threshold=100, amount=1000)
    base = TEST_ENV["REDIS_PREFIX"]
    queues = []
    for name in ("staging", "production"):
        settings = settings_with_prefix(f"{base}{name}-{uuid.uuid4().hex[:6]}:")
        redis = create_redis(settings)
        try:
            await QueuedAutoTopUp(redis, settings).balance_dropped(user.id, 150, 50, "cause-1")
            queued = await redis.zrange(f"{settings.REDIS_PREFIX}arq:queue", 0, -1)
            keys = [k async for k in redis.scan_iter(match=f"arq:*{user.id}*")]
        finally:
            await redis.aclose()
        queues.append(queued)
        # The job's keys name its deployment's prefix; none is shared.
        assert f"arq:job:{settings.REDIS_PREFIX}auto-top-up:{user.id}".encode() in keys
        assert not [key for key in keys if base.encode() not in key], keys
    assert all(len(queued) == 1 for queued in queues), queues
    assert queues[0] != queues[1]


async def test_a_run_whose_enqueue_failed_is_enqueued_by_the_sweep(database, new_user):
    """The row was stored but its job never reached Redis (the API died, or Redis
    failed, in between): only scheduled runs used to be swept up."""
    stack = OwnStack(TEST_ENV, "sweep")
    await stack.start()
    worker = stack.worker()
    try:
        person = new_user()
        await stack.gql.ok("{ me { id } }", token=person.token)
        graph = await create_graph(stack.gql, person)
        stranded = await Execution.create(
            id=uuid.uuid4(),
            user_id=person.id,
            graph_id=graph["id"],
            graph_version=1,
            status=ExecutionStatus.QUEUED,
            source=GraphSource.API,
            inputs={"text": "late but once"},
            # This deployment's run queue, as executeGraph stores it: a row without
            # one may be taken on by any deployment's sweep sharing the database
            # (another test's worker), and this worker's log would not show it.
            run_queue=f"{stack.extra_env['REDIS_PREFIX']}arq:run-queue",
        )
        await Execution.filter(id=stranded.id).update(created_at=utcnow() - timedelta(minutes=2))
        await worker.start()  # its sweep runs at start, then every minute
        done = await wait_for_end(stack.gql, person, str(stranded.id), timeout=60)
        assert done["status"] == "COMPLETED", done
        assert done["outputs"] == {"result": ["late but once"]}
        assert "re-enqueued 1 run(s)" in worker.log()
        # A run that did reach the queue is not touched.
        fresh = await execute(stack.gql, person, graph["id"], {"text": "on time"})
        assert (await wait_for_end(stack.gql, person, fresh["id"]))["status"] == "COMPLETED"
    finally:
        await worker.stop()
        await stack.stop()


async def test_an_enqueued_run_wakes_an_idle_worker_before_its_next_poll(database, new_user):
    """Workers used to find a new job only by polling the queue (every 50 ms, most
    of executeGraph -> first event). Every enqueue now wakes them: with its timed
    poll an hour apart, a worker still starts each run at once, and so does a
    second one after the first finished."""
    stack = OwnStack(TEST_ENV, "wake")
    await stack.start()
    worker = WorkerProcess(stack.env, extra_env={**stack.extra_env, "WORKER_POLL_SECONDS": "3600"})
    try:
        person = new_user()
        await stack.gql.ok("{ me { id } }", token=person.token)
        graph = await create_graph(stack.gql, person)
        await worker.start()
        await wait_for_log(worker, "listening for wake-ups on")
        for text in ("first", "second"):
            started = await execute(stack.gql, person, graph["id"], {"text": text})
            done = await wait_for_end(stack.gql, person, started["id"], timeout=30)
            assert done["status"] == "COMPLETED", done
            assert done["outputs"] == {"result": [text]}
    finally:
        await worker.stop()
        await stack.stop()


async def wait_for_log(worker: WorkerProcess, text: str, timeout: float = 30) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while text not in worker.log():
        assert asyncio.get_running_loop().time() < deadline, worker.log()
        await asyncio.sleep(0.05)


async def test_runs_wait_for_no_poll_of_the_run_queue(database, new_user):
    """Runs go to the run queue (issue 15), whose lane must be woken like the
    main queue: a run enqueued, and a run owed a slot that is moved to the front
    of the queue while it waits out a retry's delay, start with no timed poll
    (here an hour apart). The run lane polled every 50 ms and no one listened to
    its wake-ups."""
    stack = OwnStack({**TEST_ENV, "MAX_RUNNING_EXECUTIONS_PER_USER": "1"}, "wake-runs")
    await stack.start()
    worker = WorkerProcess(stack.env, extra_env={**stack.extra_env, "WORKER_POLL_SECONDS": "3600"})
    redis = stack.redis()
    try:
        person = new_user()
        await stack.gql.ok("{ me { id } }", token=person.token)
        graph = await create_graph(stack.gql, person)
        await worker.start()
        channel = worker_wakeup_channel(f"{stack.extra_env['REDIS_PREFIX']}arq:run-queue")
        deadline = asyncio.get_running_loop().time() + 30
        while (await redis.pubsub_numsub(channel))[0][1] < 1:
            assert asyncio.get_running_loop().time() < deadline, "no one listens on " + channel
            await asyncio.sleep(0.05)
        # One slot: the second run waits for the first's end, then is promoted.
        started = [await execute(stack.gql, person, graph["id"], {"text": t}) for t in "ab"]
        for run, text in zip(started, "ab", strict=True):
            done = await wait_for_end(stack.gql, person, run["id"], timeout=60)
            assert (done["status"], done["outputs"]) == ("COMPLETED", {"result": [text]}), done
    finally:
        await redis.aclose()
        await worker.stop()
        await stack.stop()
