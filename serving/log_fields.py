"""The names in the service's logs (record kinds, event types, field names), importing nothing heavy.

serving/event_log.py owns the schema built from them and re-exports them; pipeline and example-generator
configs import them from here without loading pyarrow.
"""

SERVED = "served"
EVENTS = "events"
KINDS = (SERVED, EVENTS)
EVENT_TYPES = ("impression", "click", "add_to_cart", "purchase")
SCHEMA_VERSION_FIELD = "schema_version"
USER_PSEUDONYM = "user_pseudonym"
REQUEST_ID, TS, TYPE, POSITIONS = "request_id", "ts", "type", "positions"
MODEL_VERSION = "model_version"
SPONSORED = "sponsored"  # served: per slot, placed by a sponsored rule (also the answer's item field)
REASONS = "reasons"  # served: per slot, the reason code shown (serving/explanations.py; "" = none)
RULES_FIRED = "rules_fired"  # served: the ids of the rules that changed the list (serving/rules.py)
# What counts as displayed, for live exposure and for training negatives: impression events, or every
# served slot (for shops that send no impressions).
SHOWN_IMPRESSIONS, SHOWN_SERVED = "impressions", "served"
SHOWN = (SHOWN_IMPRESSIONS, SHOWN_SERVED)
# How the service cuts spans: every UTC hour (YYYYMMDDHH), or only on POST /v1/logs/rotate (1, 2, 3, ...:
# a simulation cuts one per simulated day).
HOURLY_SPANS, MANUAL_SPANS = "hourly", "manual"
SPAN_MODES = (HOURLY_SPANS, MANUAL_SPANS)
MAX_PENDING_RECORDS = 10_000  # the log writer's queue bound by default (LogFull beyond: 503 in the service)
