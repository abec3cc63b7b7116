"""SQL pieces the PostgreSQL run store (store_postgres.py) builds its one
statement per step from: the fence, the rows parameter, node snapshots."""

from __future__ import annotations

OWNER = "owner AS (SELECT 1 FROM executions WHERE id = $1 AND runner_epoch = $2 FOR KEY SHARE)"
OWNED = "EXISTS (SELECT 1 FROM owner)"
ROWS = (
    "jsonb_to_recordset({param}::jsonb) AS r(id uuid, node_id uuid, block_id uuid, "
    "status text, input_data jsonb, arrival bigint, queued_at timestamptz, "
    "started_at timestamptz)"
)
INSERT = (
    "INSERT INTO node_executions (id, execution_id, node_id, block_id, status, input_data, "
    "output_data, arrival, queued_at, started_at, cost) SELECT r.id, {execution}, r.node_id, "
    "r.block_id, r.status, r.input_data, '{{}}'::jsonb, r.arrival, r.queued_at, r.started_at, "
    "0 FROM " + ROWS
)
SNAPSHOT = (
    "json_build_object('id', n.id, 'nodeId', n.node_id, 'blockId', n.block_id, "
    "'status', n.status, 'inputData', n.input_data, 'outputData', n.output_data, "
    "'queuedAt', n.queued_at, 'startedAt', n.started_at, 'endedAt', n.ended_at, "
    "'error', n.error)::text"
)
# A RUNNING row no stop of this runner noted (the stop's earlier try failed, or
# its node ended on a run limit): it keeps what the ledger charged for it, up
# front (keyed by its id) and for its run time (":time"), which its row had not
# been told.
CHARGED_WHILE_RUNNING = (
    "CASE WHEN n.status = 'RUNNING' THEN greatest(n.cost, (SELECT coalesce(-sum(t.amount), 0) "
    "FROM credit_transactions t WHERE t.key IN (n.id::text, n.id::text || ':time'))) "
    "ELSE n.cost END"
)
ENDED = f"n.execution_id, n.arrival, n.queued_at IS NOT NULL AS was_run, {SNAPSHOT} AS snapshot"
