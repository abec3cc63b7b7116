"""Uploaded files kept in blob storage until they expire."""

from tortoise import fields
from tortoise.models import Model


class UploadedFile(Model):
    id = fields.UUIDField(primary_key=True)
    user = fields.ForeignKeyField("models.User", related_name="files", on_delete=fields.CASCADE)
    # <user id>/<uuid>/<name>
    blob_name = fields.CharField(max_length=1024, unique=True)
    file_name = fields.CharField(max_length=255)
    content_type = fields.CharField(max_length=255)
    size = fields.BigIntField()
    created_at = fields.DatetimeField(auto_now_add=True)
    expires_at = fields.DatetimeField()

    class Meta:
        table = "uploaded_files"
        indexes = [("expires_at",), ("user_id", "created_at")]
