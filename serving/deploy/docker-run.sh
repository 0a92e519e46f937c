#!/usr/bin/env bash
# Serve the pushed model with stock TF Serving (gRPC 8500, REST 8501), the same ports and APIs as
# `make serve`. Usage: serving/deploy/docker-run.sh [MODEL_BASE_PATH]   (default demo-run/serving/tailtower)
# TF_SERVING_VERSION: see README.md in this folder (TF Text op versions).
set -euo pipefail
MODEL_BASE_PATH="$(cd "${1:-demo-run/serving/tailtower}" && pwd)"
MODEL_NAME="${MODEL_NAME:-tailtower}"
TF_SERVING_VERSION="${TF_SERVING_VERSION:-2.21.0}"
# Published on loopback only, like the local server; drop "127.0.0.1:" to expose them.
exec docker run --rm \
  -p 127.0.0.1:8500:8500 -p 127.0.0.1:8501:8501 \
  -v "${MODEL_BASE_PATH}:/models/${MODEL_NAME}:ro" \
  -e MODEL_NAME="${MODEL_NAME}" \
  "tensorflow/serving:${TF_SERVING_VERSION}"
