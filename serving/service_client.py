"""Ask the recommendation service (serving/service.py) from the command line (make query-service).

  python -m serving.service_client --user u001 --k 10 [--history i003,i017] [--click i042]
      [--knob mmr_lambda=0.2] [--url http://127.0.0.1:8080]

`--click ITEM` first reports a click on ITEM for the user (POST /v1/events), so the list shows its effect.
"""

from __future__ import annotations

import argparse
import sys

import requests

from serving import service_api as api
from serving.client import parse_knob
from serving.config import DEFAULT_HOST
from serving.service_config import SERVICE_PORT
from trainer import features


def post(url: str, path: str, doc: dict, timeout_s: float) -> dict:
    response = requests.post(url.rstrip("/") + path, json=doc, timeout=timeout_s)
    body = response.json()
    if response.status_code != 200:
        raise RuntimeError(f"{response.status_code}: {body.get('error', body)}")
    return body


def format_list(user: str, answer: dict) -> str:
    lines = [f"recommendations for {user} (model version {answer['model_version']}, {answer['request_id']}):"]
    lines.append("rank       item_id      score  tail  new  title")
    for rank, item in enumerate(answer["items"], 1):
        score = item[features.SCORE]  # null for an item a rule pinned from outside the model's pool
        lines.append(
            f"{rank:>4}  {item[features.ITEM_ID]:>12}  {'-' if score is None else f'{score:.4f}':>9}  "
            f"{int(item[features.IS_TAIL]):>4}  {int(item[features.IS_NEW]):>3}  {item[features.TITLE]}"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", default=f"http://{DEFAULT_HOST}:{SERVICE_PORT}")
    parser.add_argument("--user", required=True)
    parser.add_argument("--k", type=int, default=api.DEFAULT_K)
    parser.add_argument("--history", default="", help="comma-separated item ids, oldest first")
    parser.add_argument("--surface", default=api.DEFAULT_SURFACE)
    parser.add_argument("--knob", type=parse_knob, action="append", default=[], help="name=value")
    parser.add_argument("--click", default="", help="report a click on this item first")
    parser.add_argument("--timeout", type=float, default=10.0, help="seconds per request")
    args = parser.parse_args(argv)
    ask = {
        features.USER_ID: args.user,
        features.K: args.k,
        features.HISTORY: [item for item in args.history.split(",") if item],
        api.SURFACE: args.surface,
        api.KNOBS: dict(args.knob),
    }
    try:
        if args.click:
            click = {api.REQUEST_ID: "", features.USER_ID: args.user, features.ITEM_ID: args.click}
            click[api.TYPE] = api.HISTORY_EVENTS[0]
            post(args.url, api.EVENTS_PATH, {api.EVENTS: [click]}, args.timeout)
        answer = post(args.url, api.RECOMMENDATIONS_PATH, ask, args.timeout)
    except (RuntimeError, requests.RequestException) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(format_list(args.user, answer))
    return 0


if __name__ == "__main__":
    sys.exit(main())
