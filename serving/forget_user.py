"""Forget a user (make forget-user): remove them from the history store and from every log span.

  python -m serving.forget_user --output demo-run --user u001

The id is turned into its pseudonym with the service's key, found as the service finds it
(serving/pseudonym.py: $TAILTOWER_PSEUDONYM_KEY, --pseudonym_key_file, <output>/service/pseudonym.key); the
id itself is never printed or logged, the pseudonym only as a prefix. With no key at all it stops: a new key
would match nobody.

Stop the service first. The logs have one writer at a time (serving/event_log.py: a lock on
<output>/logs/.lock, held by the running service), and this tool takes that lock: it refuses while a
service writes the logs, and a service cannot start until it is done. Every log file holding the user (closed
spans' Parquet files and open journals) is rewritten aside, fsync'd and renamed over the old one; other
records stay as they were. Then the user's history is deleted from the service's backend (--history_backend:
SQLite, one transaction; Redis, one MULTI), which is checked to answer before anything is removed. Prints
what went, per kind and span.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import os
import sys
import typing
from collections import Counter
from dataclasses import dataclass

from serving import event_log
from serving.event_log import KINDS, LogLocked, Removal
from serving.history_store import HistoryUnavailable, open_history_store
from serving.pseudonym import KEY_ENV, KEY_FILE_NAME, Pseudonymizer
from serving.service_config import ConfigError, ServiceConfig

# The service settings this tool reads, each a flag of the same name with the service's default.
FLAGS = ("output", "pseudonym_key_file", "history_backend", "redis_url")
SHOWN_PREFIX = 12  # characters of the pseudonym printed


class NoKey(RuntimeError):
    """No pseudonym key is configured or stored."""


@dataclass(frozen=True)
class ForgetReport:
    pseudonym: str
    history_items: int
    removals: list[Removal]

    def records(self, kind: str) -> int:
        return sum(removal.records for removal in self.removals if removal.kind == kind)

    def lines(self) -> list[str]:
        per_span: Counter = Counter()
        for removal in self.removals:
            per_span[removal.kind, removal.span, removal.is_open] += removal.records
        totals = ", ".join(f"{kind} {self.records(kind)}" for kind in KINDS)
        lines = [
            f"forgot user {self.pseudonym[:SHOWN_PREFIX]}… (pseudonym prefix)",
            f"  history: {self.history_items} items",
            f"  log records: {totals} ({len(self.removals)} files rewritten)",
        ]
        for (kind, span, is_open), records in sorted(per_span.items()):
            state = "open journal" if is_open else "closed"
            lines.append(f"  {kind} span={span} ({state}): {records} records")
        return lines


def pseudonymizer(config: ServiceConfig) -> Pseudonymizer:
    """The service's key, never a new one (Pseudonymizer.from_config would create one)."""
    stored = os.path.join(config.service_dir, KEY_FILE_NAME)
    if not (os.environ.get(KEY_ENV) or config.pseudonym_key_file or os.path.exists(stored)):
        raise NoKey(
            f"no pseudonym key: ${KEY_ENV} is unset, --pseudonym_key_file is empty and {stored} does not "
            "exist (has the service run with this --output?)"
        )
    return Pseudonymizer.from_config(config.pseudonym_key_file, config.service_dir)


def forget_user(config: ServiceConfig, user_id: str) -> ForgetReport:
    """Nothing is removed unless the history backend answers and the logs' lock is free (no service)."""
    pseudonym = pseudonymizer(config)(user_id)
    store = open_history_store(config)
    try:
        store.ping()
        removals = event_log.forget(config.logs_dir, pseudonym)
        return ForgetReport(pseudonym, store.forget(pseudonym), removals)
    finally:
        store.close()


def parse_args(argv: list[str] | None = None) -> tuple[ServiceConfig, str]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--user", required=True, help="the user id as the shop sends it (never printed)")
    defaults = ServiceConfig()
    hints = typing.get_type_hints(ServiceConfig)
    for item in dataclasses.fields(ServiceConfig):
        if item.name in FLAGS:
            parser.add_argument(f"--{item.name}", type=hints[item.name], default=getattr(defaults, item.name))
    args = vars(parser.parse_args(argv))
    user = args.pop("user")
    if not user:
        parser.error("argument --user: must not be empty")
    try:
        return ServiceConfig(**args), user
    except ConfigError as e:
        parser.error(f"argument --{e.name}: {e.message} (got {args[e.name]!r})")


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    config, user = parse_args(argv)
    try:
        report = forget_user(config, user)
    except (NoKey, LogLocked, HistoryUnavailable) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print("\n".join(report.lines()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
