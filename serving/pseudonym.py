"""Pseudonyms of user ids: HMAC-SHA256 under a secret key, hex. The only form of a user id that the service
keeps (history store, logs); the raw id never leaves the request handler.

  pseudonyms = Pseudonymizer.from_config(key_file="", service_dir="demo-run/service")
  pseudonyms("u001")  # '3f0c…' (64 hex characters), the same for the same key

The key comes from, in order: the environment variable TAILTOWER_PSEUDONYM_KEY (its UTF-8 bytes), a key file
named in the configuration, or `<service_dir>/pseudonym.key`, created with 32 random bytes (mode 0600) when
there is none (and logged, without any id).

Rotating the key (a new value of the variable or a new key file) gives every user a new pseudonym: the
history store starts empty for everyone and new log records no longer join older ones by user (they still
join by request id). Old records stay pseudonymous under the old key; destroying it makes them unlinkable
for good. Keep the key as long as you want history continuity; rotate it to cut that link on purpose.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import os
import secrets

logger = logging.getLogger(__name__)

KEY_ENV = "TAILTOWER_PSEUDONYM_KEY"
KEY_FILE_NAME = "pseudonym.key"
KEY_BYTES = 32


class Pseudonymizer:
    """user id → hex HMAC-SHA256(key, user id)."""

    def __init__(self, key: bytes):
        if not key:
            raise ValueError("the pseudonym key is empty")
        self._key = key

    def __call__(self, user_id: str) -> str:
        return hmac.new(self._key, user_id.encode("utf-8"), hashlib.sha256).hexdigest()

    @classmethod
    def from_config(cls, key_file: str, service_dir: str) -> Pseudonymizer:
        """The key from KEY_ENV, else `key_file` (must exist), else <service_dir>/pseudonym.key (created)."""
        from_env = os.environ.get(KEY_ENV, "")
        if from_env:
            logger.info("pseudonym key from $%s", KEY_ENV)
            return cls(from_env.encode("utf-8"))
        if key_file:
            return cls(_read_key(key_file))
        path = os.path.join(service_dir, KEY_FILE_NAME)
        if not os.path.exists(path):
            _create_key_file(path)
            logger.warning(
                "created a new random pseudonym key at %s (mode 0600): keep it to keep history", path
            )
        return cls(_read_key(path))


def _read_key(path: str) -> bytes:
    with open(path, "rb") as f:
        key = f.read().strip()
    if not key:
        raise ValueError(f"pseudonym key file {path} is empty")
    return key


def _create_key_file(path: str) -> None:
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    # O_EXCL: two services starting at once never overwrite each other's key.
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(secrets.token_hex(KEY_BYTES) + "\n")
        f.flush()
        os.fsync(f.fileno())
