"""Pseudonyms: HMAC-SHA256 under the configured key; a key file is created 0600 when none is configured."""

import hashlib
import hmac
import logging
import os
import stat

import pytest

from serving.pseudonym import KEY_ENV, KEY_FILE_NAME, Pseudonymizer


def test_pseudonym_is_hex_hmac_sha256_of_the_id():
    pseudonyms = Pseudonymizer(b"secret")
    expected = hmac.new(b"secret", b"u001", hashlib.sha256).hexdigest()
    assert pseudonyms("u001") == expected
    assert len(expected) == 64
    assert Pseudonymizer(b"other")("u001") != expected  # keyed: another key, another pseudonym


def test_key_from_environment_wins(tmp_path, monkeypatch, caplog):
    caplog.set_level(logging.INFO, logger="serving.pseudonym")
    monkeypatch.setenv(KEY_ENV, "from-env")
    pseudonyms = Pseudonymizer.from_config(key_file="", service_dir=str(tmp_path))
    assert caplog.messages == [f"pseudonym key from ${KEY_ENV}"]  # where the key came from, never the key
    assert pseudonyms("u1") == Pseudonymizer(b"from-env")("u1")
    assert not os.path.exists(tmp_path / KEY_FILE_NAME)


def test_key_file_from_config(tmp_path, monkeypatch):
    monkeypatch.delenv(KEY_ENV, raising=False)
    key_file = tmp_path / "my.key"
    key_file.write_text("abc\n")
    assert Pseudonymizer.from_config(str(key_file), str(tmp_path))("u1") == Pseudonymizer(b"abc")("u1")
    key_file.write_text("")
    with pytest.raises(ValueError, match="is empty"):
        Pseudonymizer.from_config(str(key_file), str(tmp_path))


def test_without_a_key_a_random_key_file_is_created_once(tmp_path, monkeypatch, caplog):
    caplog.set_level(logging.INFO, logger="serving.pseudonym")
    monkeypatch.delenv(KEY_ENV, raising=False)
    service_dir = tmp_path / "service"
    first = Pseudonymizer.from_config("", str(service_dir))
    path = service_dir / KEY_FILE_NAME
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert len(path.read_text().strip()) == 64  # 32 random bytes, hex
    # Where the new key is, never the key itself (pseudonym.py sees no user id before a call: none to log).
    assert f"created a new random pseudonym key at {path}" in caplog.text
    assert path.read_text().strip() not in caplog.text
    second = Pseudonymizer.from_config("", str(service_dir))  # stable across restarts: the file is reused
    assert second("u1") == first("u1")
    assert Pseudonymizer.from_config("", str(tmp_path / "elsewhere"))("u1") != first("u1")
