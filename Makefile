# Every target runs inside the project environment (scripts/env creates it on first use).
ENV := scripts/env
DATA ?=
OUTPUT ?= demo-run
PYTEST_ARGS ?=

.PHONY: help env test test-fast lint demo compile clean

help:
	@echo "make test             run the whole test suite (builds the environment on first use)"
	@echo "make demo [DATA=dir]  run the TFX pipeline locally into ./$(OUTPUT)/ (synthetic data by default)"
	@echo "make compile          compile the Kubeflow Pipelines v2 spec to tailtower_pipeline.json"
	@echo "make lint             ruff"
	@echo "make env              build (or check) the environment only"

env:
	$(ENV) python -c "import tfx, tensorflow; print('tfx', tfx.__version__, '| tensorflow', tensorflow.__version__)"

test:
	$(ENV) python -m pytest -ra $(PYTEST_ARGS)

test-fast:
	$(ENV) python -m pytest -ra -m "not slow" $(PYTEST_ARGS)

lint:
	$(ENV) ruff check .

demo:
	$(ENV) python -m pipeline.demo --output $(OUTPUT) $(if $(DATA),--data $(DATA))

compile:
	$(ENV) python -m pipeline.kubeflow_runner --output tailtower_pipeline.json

clean:
	rm -rf demo-run tailtower_pipeline.json .pytest_cache
