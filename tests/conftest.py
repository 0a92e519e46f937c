"""Shared pytest setup: every test runs with Keras 2 (TFRS refuses Keras 3)."""

import os

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
