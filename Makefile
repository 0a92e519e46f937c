# Every target runs inside the project environment (scripts/env creates it on first use).
ENV := scripts/env
DATA ?=
TRAINER_CONFIG ?=
OUTPUT ?= demo-run
PYTEST_ARGS ?=

.PHONY: help env test test-fast lint demo compile compile-refresh refresh bench-refresh bench-scale clean eval loop report

help:
	@echo "make test             run the whole test suite (builds the environment on first use)"
	@echo "make demo [DATA=dir] [TRAINER_CONFIG='{\"epochs\": 4}'] [LOGS=demo-run/logs]  run the TFX pipeline locally into ./$(OUTPUT)/ (synthetic data by default; LOGS: train on the service's logs too)"
	@echo "make eval DATA=dir [OUT=eval-out]  offline evaluation: baselines + our system (evaluation/harness.py)"
	@echo "make loop [DATA=dir] [DAYS=3] [SKIP_FIRST_RUN=1]  pipeline (or, with SKIP_FIRST_RUN, the model make demo pushed), service, simulated shoppers, retrain on the logs, hot swap, more days (into ./$(OUTPUT)/)"
	@echo "make report [LOGS=dir] [CATALOG=dir] [OUT=dir]  merchant exposure report of the service's logs (default ./$(OUTPUT)/logs) into ./$(OUTPUT)/report: HTML + CSVs"
	@echo "make serve            serve ./$(OUTPUT)/serving/tailtower over TF Serving's REST (8501) and gRPC (8500) APIs"
	@echo "make query USER=u001  ask the running server for recommendations (K=10, PROTOCOL=rest|grpc)"
	@echo "make bench-serve      latency/throughput of recommend: REST, gRPC and in-process"
	@echo "make bench-scale [SCALES=1,10] [OUT=bench-scale]  the whole pipeline on synthetic data at 1×/10×(/100×) amazon-office's size: seconds and peak RSS per component, table + log-log plot"
	@echo "make bench-scale-serving [ITEMS=10000,100000,1000000]  recommend over synthetic catalogs of N items: SavedModel size, load time, p50/p99 next to the N·d floor"
	@echo "make bench-ann [ITEMS=10000,100000,1000000]  faiss HNSW/IVF over N synthetic clustered vectors vs numpy brute force: build s, size, Recall@10, p50/p99 (installs .[ann])"
	@echo "make service          the recommendation service on 127.0.0.1:8080 (JSON API, history, logs under ./$(OUTPUT)/logs); MODEL_ENDPOINT=in-process: no make serve needed"
	@echo "make screenshots      the web explorer (the service's page at /) and make report's page in headless Chromium: docs/explorer.png, docs/report.png (SERVICE_URL=http://127.0.0.1:8080/, USER=id)"
	@echo "make query-service USER=u001 [K=10] [CLICK=item]  ask the running service (CLICK reports a click first)"
	@echo "make forget-user USER=u001  remove a user from the history store and every log span (service stopped)"
	@echo "make bench-service    the service vs direct gRPC: latency, durable events/s, SIGKILL and model-server faults"
	@echo "make refresh DATA=dir  new/removed items of DATA's items file recommendable without retraining: a new model version under ./$(OUTPUT)/serving"
	@echo "make bench-refresh DATA=dir [NEW_ITEMS=1000]  time until NEW_ITEMS held-out items are recommended after a refresh, their recall"
	@echo "make compile          compile the Kubeflow Pipelines v2 spec to tailtower_pipeline.json"
	@echo "make compile-refresh  compile the catalog refresh pipeline's spec to tailtower_refresh_pipeline.json"
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
	$(ENV) python -m pipeline.demo --output $(OUTPUT) $(if $(DATA),--data $(DATA)) \
		$(if $(TRAINER_CONFIG),--trainer-config '$(TRAINER_CONFIG)') $(if $(LOGS),--logs $(LOGS))

compile:
	$(ENV) python -m pipeline.kubeflow_runner --output tailtower_pipeline.json

compile-refresh:
	$(ENV) python -m pipeline.kubeflow_runner --refresh --output tailtower_refresh_pipeline.json

refresh:
	@test -n "$(DATA)" || { echo "usage: make refresh DATA=<dataset folder with the updated items file> [OUTPUT=demo-run]"; exit 2; }
	$(ENV) python -m pipeline.refresh --data $(DATA) --output $(OUTPUT)

NEW_ITEMS ?= 1000
bench-refresh:
	@test -n "$(DATA)" || { echo "usage: make bench-refresh DATA=<dataset folder> [NEW_ITEMS=1000] [OUT=bench-refresh]"; exit 2; }
	$(ENV) python -m evaluation.refresh_bench --data $(DATA) --new-items $(NEW_ITEMS) \
		--out $(if $(filter file,$(origin OUT)),bench-refresh,$(OUT))

clean:
	rm -rf demo-run eval-out tailtower_pipeline.json tailtower_refresh_pipeline.json .pytest_cache

# --- serving: a local TF-Serving-compatible server (REST 8501, gRPC 8500), its client and benchmark -------
MODEL_BASE_PATH ?= $(OUTPUT)/serving/tailtower
MODEL_NAME ?= tailtower
K ?= 10
PROTOCOL ?= rest
HISTORY ?=
CLICK ?=
KNOBS ?=
# USER is also the login name in the environment: only a command-line USER=... picks the user to query.
QUERY_USER := $(if $(filter command line,$(origin USER)),$(USER),u001)

.PHONY: serve query bench-serve bench-scale-serving bench-ann service query-service forget-user bench-service screenshots

serve:
	$(ENV) python -m serving.server --model_base_path $(MODEL_BASE_PATH) --model_name $(MODEL_NAME)

query:
	$(ENV) python -m serving.client --model $(MODEL_NAME) --user $(QUERY_USER) --k $(K) --protocol $(PROTOCOL) $(if $(HISTORY),--history $(HISTORY)) $(foreach knob,$(KNOBS),--knob $(knob))

service:
	$(ENV) python -m serving.service --output $(OUTPUT) --model_base_path $(MODEL_BASE_PATH) --model_name $(MODEL_NAME) $(if $(MODEL_ENDPOINT),--model_endpoint $(MODEL_ENDPOINT))

query-service:
	$(ENV) python -m serving.service_client --user $(QUERY_USER) --k $(K) $(if $(HISTORY),--history $(HISTORY)) $(if $(CLICK),--click $(CLICK)) $(foreach knob,$(KNOBS),--knob $(knob))

bench-serve:
	$(ENV) python -m serving.bench --model_base_path $(MODEL_BASE_PATH) --model_name $(MODEL_NAME) --output $(OUTPUT)/bench-serve.md

# The pipeline at SCALES × amazon-office's size (evaluation/scale_bench.py); 100 is optional (hours here).
bench-scale:
	$(ENV) python -m evaluation.scale_bench --out $(if $(filter file,$(origin OUT)),bench-scale,$(OUT)) \
		$(if $(SCALES),--scales $(SCALES))

# Untrained models over synthetic catalogs (serving/bench_scale.py): no demo run needed.
bench-scale-serving:
	$(ENV) python -m serving.bench_scale --output $(OUTPUT)/bench-scale-serving.md $(if $(ITEMS),--items $(ITEMS))

# The two-stage pattern's index outside TF Serving (serving/ann_bench.py): faiss-cpu, the `ann` extra, on demand.
bench-ann:
	$(ENV) python -m pip install -q -e '.[ann]'
	$(ENV) python -m serving.ann_bench --output $(OUTPUT)/bench-ann.md $(if $(ITEMS),--items $(ITEMS))

# The raw id is not echoed (@): it stays out of terminal logs; the tool prints its pseudonym's prefix only.
forget-user:
	@test "$(origin USER)" = "command line" || { echo "usage: make forget-user USER=<user id> [OUTPUT=demo-run]"; exit 2; }
	@$(ENV) python -m serving.forget_user --output $(OUTPUT) --user '$(USER)'

# The README's screenshot of the web explorer (serving/explorer/), from a running service (make service).
screenshots:
	$(ENV) python -m serving.screenshots --out docs/explorer.png $(if $(SERVICE_URL),--url $(SERVICE_URL)) $(if $(filter command line,$(origin USER)),--user '$(QUERY_USER)') \
		--report $(REPORT_OUT)/index.html --report_out docs/report.png

bench-service:
	$(ENV) python -m serving.bench_service --model_base_path $(MODEL_BASE_PATH) --model_name $(MODEL_NAME) --output $(OUTPUT)/bench-service.md

# The production loop on one machine (pipeline/loop/__main__.py): everything under $(OUTPUT), as make demo.
DAYS ?= 3
loop:
	$(ENV) python -m pipeline.loop --output $(OUTPUT) --days $(DAYS) $(if $(DATA),--data $(DATA)) \
		$(if $(TRAINER_CONFIG),--trainer-config '$(TRAINER_CONFIG)') $(if $(SKIP_FIRST_RUN),--skip-first-run)

# Offline evaluation: baselines + our system on one dataset (see evaluation/harness.py for the options).
# make eval DATA=/work/shared/data/amazon-office OUT=eval-out [K=10] [PROTOCOLS=standard] [SYSTEMS=baselines]
#           [EVAL_ARGS='--sweep "mmr_lambda=0.25,0.5" --train-variants "[{\"logq_beta\": 0.5}]"']
OUT ?= eval-out
PROTOCOLS ?= standard,cold_items
SYSTEMS ?= baselines,ours
EVAL_ARGS ?=

eval:
	@test -n "$(DATA)" || { echo "usage: make eval DATA=<dataset folder> OUT=<folder>"; exit 2; }
	$(ENV) python -m evaluation.harness --data $(DATA) --out $(OUT) --k $(K) --protocols $(PROTOCOLS) \
		--systems $(SYSTEMS) $(EVAL_ARGS)

# The merchant exposure report (evaluation/exposure_report.py) of the service's logs, the open span included.
# OUT above defaults to eval-out for make eval: here it defaults to $(OUTPUT)/report unless given.
REPORT_OUT = $(if $(filter file,$(origin OUT)),$(OUTPUT)/report,$(OUT))
report:
	$(ENV) python -m evaluation.exposure_report --logs $(or $(LOGS),$(OUTPUT)/logs) --out $(REPORT_OUT) \
		--model_base_path $(MODEL_BASE_PATH) $(if $(CATALOG),--catalog $(CATALOG))
