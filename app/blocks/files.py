"""Blocks that read files uploaded with POST /api/files.

A graph takes a file as an AgentInput of type `file` (its value is the upload's
`file_uri`); ReadFile turns that URI into the file's content. A run may read
only its owner's files: another user's URI fails like a missing file.
"""

from __future__ import annotations

import base64
import uuid
from typing import Literal

from pydantic import Field

from app.blocks.base import (
    Block,
    BlockCategory,
    BlockError,
    BlockInput,
    BlockOutput,
    BlockRunContext,
)
from app.errors import AppError
from app.services.files import read_user_file

# Node outputs are stored with the execution: a file read into one stays modest.
MAX_READ_BYTES = 10 * 1024 * 1024


class ReadFile(Block):
    id = uuid.UUID("b1de695f-38e3-466e-b794-03d5e607813c")
    name = "ReadFile"
    description = (
        "Reads an uploaded file (the file_uri from POST /api/files, or a data: URI): "
        "its text, or its bytes as base64."
    )
    categories = (BlockCategory.INPUT, BlockCategory.DATA)
    sensitive = True

    class Input(BlockInput):
        file: str = Field(description="The file's URI, as POST /api/files returned it.")
        mode: Literal["text", "base64"] = Field(
            default="text", description="text: decode the bytes; base64: return them encoded."
        )
        encoding: str = Field(default="utf-8", description="The text encoding, for mode text.")

    class Output(BlockOutput):
        content: str = Field(description="The file's text, or its bytes as base64.")
        name: str = Field(description="The file's (sanitised) name.")
        content_type: str = Field(description="The file's media type.")
        size: int = Field(description="The file's size in bytes.")

    async def run(self, input: Input, context: BlockRunContext):
        try:
            found = await read_user_file(
                context.settings, context.user_id, input.file, MAX_READ_BYTES
            )
        except AppError as exc:
            raise BlockError(f"ReadFile: {exc.message}") from None
        if input.mode == "base64":
            content = base64.b64encode(found.data).decode("ascii")
        else:
            try:
                content = found.data.decode(input.encoding)
            except LookupError:
                raise BlockError(f"ReadFile: unknown encoding {input.encoding!r}") from None
            except UnicodeDecodeError:
                raise BlockError(
                    f"ReadFile: the file is not {input.encoding} text; use mode base64"
                ) from None
        yield "content", content
        yield "name", found.name
        yield "content_type", found.content_type
        yield "size", len(found.data)
