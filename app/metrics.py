"""Prometheus metrics (names promised in OPERATIONS.md).

Per-process counters live in this process's registry. Execution and node-run
counts happen in workers, so workers add them to a Redis hash and every API
process reports that hash; the queue depth is read from the arq queue at scrape.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

REGISTRY = CollectorRegistry(auto_describe=True)

GRAPHQL_REQUESTS = Counter(
    "agentgraph_graphql_requests",
    "GraphQL operations handled, by operation type",
    ["operation_type"],
    registry=REGISTRY,
)
HTTP_REQUESTS = Counter(
    "agentgraph_http_requests",
    "HTTP requests answered, by route and status",
    ["route", "status"],
    registry=REGISTRY,
)
REQUEST_SECONDS = Histogram(
    "agentgraph_http_request_seconds",
    "HTTP request latency by route",
    ["route"],
    registry=REGISTRY,
)
RESOLVER_ERRORS = Counter(
    "agentgraph_resolver_errors",
    "GraphQL errors returned, by extensions.code",
    ["code"],
    registry=REGISTRY,
)
STRIPE_WEBHOOKS = Counter(
    "agentgraph_stripe_webhooks",
    "Stripe webhook deliveries, by outcome (applied, ignored, duplicate, refused)",
    ["outcome"],
    registry=REGISTRY,
)
TRIGGER_DELIVERIES = Counter(
    "agentgraph_trigger_deliveries",
    "Webhook trigger deliveries, by outcome (accepted, rejected, duplicate, bad_signature, "
    "rate_limited, too_large, not_found, refused)",
    ["outcome"],
    registry=REGISTRY,
)


def shared_metric_families(
    counters: dict[str, int], queue_depth: int
) -> list[CounterMetricFamily | GaugeMetricFamily]:
    """Metric families built from the Redis counters hash ("<name>|<status>" -> n)."""
    executions = CounterMetricFamily(
        "agentgraph_executions", "Graph executions that reached a status", labels=["status"]
    )
    node_runs = CounterMetricFamily(
        "agentgraph_node_runs", "Node runs that ended, by status", labels=["status"]
    )
    schedule_firings = CounterMetricFamily(
        "agentgraph_schedule_firings",
        "Due schedules handled by the scheduler, by outcome",
        labels=["outcome"],
    )
    families = {
        "executions": executions,
        "node_runs": node_runs,
        "schedule_firings": schedule_firings,
    }
    for field, value in sorted(counters.items()):
        name, _, status = field.partition("|")
        if name in families and status:
            families[name].add_metric([status], value)
    depth = GaugeMetricFamily(
        "agentgraph_queue_depth", "Jobs waiting in the arq queue", value=queue_depth
    )
    return [executions, node_runs, schedule_firings, depth]
