"""Encryption at rest for stored credentials and trigger secrets (Fernet, with rotation).

CREDENTIALS_ENCRYPTION_KEY holds one or more Fernet keys: the first encrypts, any
of them decrypts, so a new key is put first and the old ones stay until
`agentgraph credentials reencrypt` has moved every secret onto the new key.
"""

from __future__ import annotations

from functools import lru_cache

from cryptography.fernet import Fernet, InvalidToken, MultiFernet

from app.settings import Settings


class SecretUnreadable(Exception):
    """No configured key decrypts this secret (it was encrypted under a removed key)."""


class SecretBox:
    def __init__(self, keys: tuple[str, ...]) -> None:
        self._fernet = MultiFernet([Fernet(key) for key in keys])

    def encrypt(self, plain: str) -> str:
        return self._fernet.encrypt(plain.encode()).decode()

    def decrypt(self, token: str) -> str:
        try:
            return self._fernet.decrypt(token.encode()).decode()
        except (InvalidToken, ValueError):
            raise SecretUnreadable(
                "the secret cannot be decrypted with the configured keys"
            ) from None

    def rotate(self, token: str) -> str:
        """The same secret, encrypted under the first key."""
        try:
            return self._fernet.rotate(token.encode()).decode()
        except (InvalidToken, ValueError):
            raise SecretUnreadable(
                "the secret cannot be decrypted with the configured keys"
            ) from None


@lru_cache(maxsize=4)
def _box(keys: tuple[str, ...]) -> SecretBox:
    return SecretBox(keys)


def secret_box(settings: Settings) -> SecretBox:
    return _box(tuple(settings.credentials_encryption_keys))
