"""Graph versions a user may read and run besides their own: those a store agent in
their library grants (the listed version and the sub-graph versions it runs).

Granted versions are read-only: every mutation of a graph still checks the owner.
Anything neither owned nor granted behaves exactly like an absent graph (§3).
"""

from __future__ import annotations

import uuid

from tortoise.expressions import Q

from app.models import Graph, LibraryAgent, LibraryGrant


async def granted_graph(
    user_id: uuid.UUID, graph_id: uuid.UUID, version: int | None
) -> Graph | None:
    """The granted version (the library entry's version, or the newest granted one,
    when `version` is None); None when nothing grants it."""
    grants = await LibraryGrant.filter(user_id=user_id, graph_id=graph_id).values_list(
        "graph_version", flat=True
    )
    if not grants:
        return None
    entry = await LibraryAgent.get_or_none(user_id=user_id, graph_id=graph_id).only(
        "id", "graph_version"
    )
    default = entry.graph_version if entry is not None else max(grants)
    wanted = default if version is None else version
    if wanted not in grants:
        return None
    row = await Graph.get_or_none(graph_id=graph_id, version=wanted)
    if row is not None:
        # For this user the version their library runs is the active one.
        row.is_active = row.version == default
    return row


async def granted_versions(user_id: uuid.UUID, graph_id: uuid.UUID) -> list[Graph]:
    grants = await LibraryGrant.filter(user_id=user_id, graph_id=graph_id).values_list(
        "graph_version", flat=True
    )
    if not grants:
        return []
    entry = await LibraryAgent.get_or_none(user_id=user_id, graph_id=graph_id).only(
        "id", "graph_version"
    )
    default = entry.graph_version if entry is not None else max(grants)
    rows = await Graph.filter(graph_id=graph_id, version__in=sorted(set(grants))).order_by(
        "-version"
    )
    for row in rows:
        row.is_active = row.version == default
    return rows


async def replace_grants(conn, entry: LibraryAgent, versions: list[tuple[uuid.UUID, int]]) -> None:
    """The entry grants exactly `versions` from now on."""
    await LibraryGrant.filter(library_agent_id=entry.id).using_db(conn).delete()
    await LibraryGrant.bulk_create(
        [
            LibraryGrant(
                library_agent_id=entry.id,
                user_id=entry.user_id,  # type: ignore[attr-defined]
                graph_id=graph_id,
                graph_version=version,
            )
            for graph_id, version in dict.fromkeys(versions)
        ],
        using_db=conn,
    )


def versions_query(pairs: list[tuple[uuid.UUID, int]]) -> Q:
    query = Q()
    for graph_id, version in pairs:
        query |= Q(graph_id=graph_id, version=version)
    return query
