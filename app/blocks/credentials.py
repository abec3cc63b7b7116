"""Credentials in blocks: what a block declares it needs, what it gets at run time, and
keeping the secret out of everything the block yields or reports.

A block lists its fields in `credentials_fields` (field name -> CredentialsField).
They are not input pins: a run maps each field to one of the user's stored
credentials (`credentialsInputs`), the server checks the mapping before the run
and decrypts the secret only for the node run that needs it
(BlockRunContext.credentials). Whatever a server sends back, a secret never
leaves a block: `redact` replaces it in outputs and error messages.
"""

from __future__ import annotations

import base64
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from app.settings import Settings

REDACTED = "***"
# Secrets shorter than this are not searched for in outputs: replacing every "a"
# in a page would destroy it and protect nothing.
MIN_REDACTED_LENGTH = 4


@dataclass(frozen=True)
class CredentialsField:
    """Credentials a block needs: a provider (None: any) and the types it accepts."""

    provider: str | None
    types: tuple[str, ...]
    description: str
    required: bool = True
    # A setting whose value the block uses when a run maps no credentials here
    # (LLMCall: the operator's LLM_API_KEY); while it is set the field is optional.
    server_default_setting: str | None = None

    def is_required(self, settings: Settings) -> bool:
        if not self.required:
            return False
        return not (
            self.server_default_setting and getattr(settings, self.server_default_setting, None)
        )

    def json_schema(self, name: str) -> dict[str, Any]:
        schema: dict[str, Any] = {
            "title": name,
            "type": "string",
            "format": "uuid",
            "description": self.description,
            "credentials_types": list(self.types),
        }
        if self.provider is not None:
            schema["credentials_provider"] = self.provider
        return schema


@dataclass(frozen=True)
class CredentialsSecret:
    """Decrypted credentials for one node run. The secret never shows in a repr."""

    provider: str
    type: str
    secret: str = field(repr=False)

    def authorization_header(self) -> str:
        if self.type == "BASIC":
            return "Basic " + base64.b64encode(self.secret.encode()).decode()
        return "Bearer " + self.secret

    def secret_forms(self) -> list[str]:
        """The secret as it may come back from a server: as given, and as sent."""
        forms = [self.secret]
        if self.type == "BASIC":
            forms.append(base64.b64encode(self.secret.encode()).decode())
            _, _, password = self.secret.partition(":")
            forms.append(password)
        return [form for form in forms if len(form) >= MIN_REDACTED_LENGTH]


def secret_forms(credentials: Iterable[CredentialsSecret]) -> list[str]:
    # Longest first, so a secret containing another is replaced whole.
    forms = {form for item in credentials for form in item.secret_forms()}
    return sorted(forms, key=len, reverse=True)


def redact_text(text: str, secrets: list[str]) -> str:
    for secret in secrets:
        if secret in text:
            text = text.replace(secret, REDACTED)
    return text


def redact(value: Any, secrets: list[str]) -> Any:
    """`value` with every occurrence of a secret replaced, at any depth (keys too)."""
    if not secrets:
        return value
    if isinstance(value, str):
        return redact_text(value, secrets)
    if isinstance(value, dict):
        return {redact_text(str(k), secrets): redact(v, secrets) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [redact(item, secrets) for item in value]
    return value
