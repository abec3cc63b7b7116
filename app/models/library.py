"""What a store agent in someone's library lets them run, and store ratings."""

from tortoise import fields
from tortoise.models import Model


class LibraryGrant(Model):
    """A graph version made by someone else that a user may read and run because a
    store agent in their library is (or includes, as a sub-graph) that version."""

    id = fields.BigIntField(primary_key=True)
    library_agent = fields.ForeignKeyField(
        "models.LibraryAgent", related_name="grants", on_delete=fields.CASCADE
    )
    user = fields.ForeignKeyField(
        "models.User", related_name="library_grants", on_delete=fields.CASCADE
    )
    graph_id = fields.UUIDField()
    graph_version = fields.IntField()

    class Meta:
        table = "library_grants"
        unique_together = (("library_agent", "graph_id", "graph_version"),)
        indexes = [("user_id", "graph_id", "graph_version")]


class StoreReview(Model):
    """One user's rating of a store listing (1 to 5); rating again changes it."""

    id = fields.UUIDField(primary_key=True)
    listing = fields.ForeignKeyField(
        "models.StoreListing", related_name="reviews", on_delete=fields.CASCADE
    )
    user = fields.ForeignKeyField(
        "models.User", related_name="store_reviews", on_delete=fields.CASCADE
    )
    score = fields.IntField()
    created_at = fields.DatetimeField(auto_now_add=True)
    updated_at = fields.DatetimeField(auto_now=True)

    class Meta:
        table = "store_reviews"
        unique_together = (("listing", "user"),)
