# The image an orchestrator (Kubeflow Pipelines / Vertex AI Pipelines) runs every component in:
# the pinned stack, the pipeline code, and the pretrained MiniLM weights at the path
# pipeline/kubeflow_runner.py passes to Transform and Trainer (IMAGE_BERT_DIR).
#   docker build -t tailtower:latest .
#   docker build --build-arg TENSORFLOW_GPU=1 -t tailtower-gpu:latest .   # for a GPU Trainer job
#     (kubeflow_runner --trainer-image): adds the CUDA libraries of the pinned TensorFlow (tensorflow[and-cuda])
#   scripts/env python -m pipeline.kubeflow_runner --image tailtower:latest --output tailtower_pipeline.json
FROM python:3.13-slim-trixie

RUN apt-get update && apt-get install -y --no-install-recommends build-essential \
    && rm -rf /var/lib/apt/lists/*

ENV TF_USE_LEGACY_KERAS=1 \
    TAILTOWER_IN_ENV=1 \
    PYTHONUNBUFFERED=1

WORKDIR /opt/tailtower/src
# Dependencies first, so code changes do not reinstall the stack.
COPY setup.py pyproject.toml ./
# evaluation/ holds the Evaluator's custom TFMA metrics (pipeline/configs.py METRICS_MODULE).
RUN mkdir -p pipeline components trainer serving evaluation \
    && touch pipeline/__init__.py components/__init__.py trainer/__init__.py serving/__init__.py \
       evaluation/__init__.py \
    && pip install --no-cache-dir -e .
# Without CUDA's libraries TensorFlow sees no GPU: a GPU Trainer would silently train on the CPU.
ARG TENSORFLOW_GPU=0
RUN if [ "$TENSORFLOW_GPU" = 1 ]; then \
      pip install --no-cache-dir "tensorflow[and-cuda]==$(python -c 'import tensorflow as tf; print(tf.__version__)')"; \
    fi

COPY . .
RUN python -c "from trainer.bert import fetch_minilm; fetch_minilm('/opt/tailtower/models')"
