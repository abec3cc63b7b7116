"""Graphs (id + version), their nodes and links, library entries and store listings."""

from tortoise import fields
from tortoise.models import Model


class Graph(Model):
    # Surrogate row id; the public identity is (graph_id, version).
    id = fields.BigIntField(primary_key=True)
    graph_id = fields.UUIDField()
    version = fields.IntField()
    is_active = fields.BooleanField(default=True)
    user = fields.ForeignKeyField("models.User", related_name="graphs", on_delete=fields.CASCADE)
    name = fields.CharField(max_length=200)
    description = fields.TextField(default="")
    created_at = fields.DatetimeField(auto_now_add=True)

    nodes: fields.ReverseRelation["Node"]
    links: fields.ReverseRelation["Link"]

    class Meta:
        table = "graphs"
        unique_together = (("graph_id", "version"),)
        indexes = [("user_id", "is_active", "created_at")]


class Node(Model):
    # Fresh for every saved version: node ids are unique across versions.
    id = fields.UUIDField(primary_key=True)
    graph = fields.ForeignKeyField("models.Graph", related_name="nodes", on_delete=fields.CASCADE)
    block_id = fields.UUIDField()
    input_default = fields.JSONField(default=dict)
    metadata = fields.JSONField(default=dict)
    position = fields.IntField(default=0)

    class Meta:
        table = "graph_nodes"
        indexes = [("graph_id", "position")]


class Link(Model):
    id = fields.UUIDField(primary_key=True)
    graph = fields.ForeignKeyField("models.Graph", related_name="links", on_delete=fields.CASCADE)
    source_id = fields.UUIDField()
    sink_id = fields.UUIDField()
    source_name = fields.CharField(max_length=200)
    sink_name = fields.CharField(max_length=200)
    is_static = fields.BooleanField(default=False)
    position = fields.IntField(default=0)

    class Meta:
        table = "graph_links"
        indexes = [("graph_id", "position")]


class LibraryAgent(Model):
    """A graph in a user's library, with the user's settings for it."""

    id = fields.UUIDField(primary_key=True)
    user = fields.ForeignKeyField(
        "models.User", related_name="library_agents", on_delete=fields.CASCADE
    )
    graph_id = fields.UUIDField()
    graph_version = fields.IntField()
    # {"human_in_the_loop_safe_mode": bool}
    settings = fields.JSONField(default=dict)
    created_at = fields.DatetimeField(auto_now_add=True)
    updated_at = fields.DatetimeField(auto_now=True)
    # The version's name and description, kept here so the library can be searched.
    name = fields.CharField(max_length=200, default="")
    description = fields.TextField(null=True)
    is_favorite = fields.BooleanField(default=False)
    # Set for a store agent: the listing version it was added (or updated) from.
    listing_version_id = fields.UUIDField(null=True)
    # Last save, version move or run; the library lists newest activity first.
    activity_at = fields.DatetimeField(null=True)

    class Meta:
        table = "library_agents"
        unique_together = (("user", "graph_id"),)
        indexes = [("graph_id",), ("user_id", "activity_at")]


class StoreListing(Model):
    """A published graph; re-publishing adds a version."""

    id = fields.UUIDField(primary_key=True)
    owner = fields.ForeignKeyField(
        "models.User", related_name="store_listings", on_delete=fields.CASCADE
    )
    graph_id = fields.UUIDField(unique=True)
    runs = fields.IntField(default=0)
    rating = fields.FloatField(default=0.0)
    is_deleted = fields.BooleanField(default=False)
    created_at = fields.DatetimeField(auto_now_add=True)
    updated_at = fields.DatetimeField(auto_now=True)

    versions: fields.ReverseRelation["StoreListingVersion"]

    class Meta:
        table = "store_listings"
        indexes = [("is_deleted", "runs")]


class StoreListingVersion(Model):
    id = fields.UUIDField(primary_key=True)
    listing = fields.ForeignKeyField(
        "models.StoreListing", related_name="versions", on_delete=fields.CASCADE
    )
    version = fields.IntField()
    graph_id = fields.UUIDField()
    graph_version = fields.IntField()
    name = fields.CharField(max_length=200)
    description = fields.TextField(default="")
    creator = fields.CharField(max_length=200)
    categories: list[str] = fields.JSONField(default=list)
    # Integrations (block families) the graph uses, matched against onboarding.
    integrations: list[str] = fields.JSONField(default=list)
    is_approved = fields.BooleanField(default=True)
    created_at = fields.DatetimeField(auto_now_add=True)

    class Meta:
        table = "store_listing_versions"
        unique_together = (("listing", "version"),)
