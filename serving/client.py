"""Print recommendations from a TF Serving endpoint (ours or tensorflow_model_server), over REST or gRPC.

  python -m serving.client --user u001 --k 10 [--history i003,i017] [--protocol grpc] [--knob mmr_lambda=0.2]

The clients themselves live in serving/rest_client.py and serving/grpc_client.py (one file per protocol, as
TF Serving's resnet_client*.py examples); serving/local_client.py is the same interface in-process, and
serving/recommend_request.py the request builder and response reader they share.
"""

from __future__ import annotations

import argparse
import sys

from serving.client_error import ServingClientError
from serving.config import DEFAULT_HOST, GRPC_PORT, MODEL_NAME, REST_PORT
from serving.recommend_request import Recommendations, knob_names, with_knobs_off
from serving.rest_client import RestClient
from trainer import features


def parse_knob(text: str) -> tuple[str, int | float | str]:
    """name=value; the value becomes an int or a float when it parses as one."""
    name, sep, raw = text.partition("=")
    if not sep or not name:
        raise argparse.ArgumentTypeError(f"expected name=value, got {text!r}")
    for convert in (int, float):
        try:
            return name, convert(raw)
        except ValueError:
            pass
    return name, raw


def format_table(user: str, result: Recommendations) -> str:
    rows = result.rows(0)
    version = f" (model version {result.version})" if result.version else ""
    lines = [f"recommendations for {user}{version}:"]
    columns = [features.ITEM_IDS] + sorted(set(rows[0]) - {features.ITEM_IDS}) if rows else []
    lines.append("rank  " + "  ".join(f"{c:>12}" for c in columns))
    for rank, row in enumerate(rows, 1):
        cells = (f"{row[c]:>12.4f}" if isinstance(row[c], float) else f"{row[c]!s:>12}" for c in columns)
        lines.append(f"{rank:>4}  " + "  ".join(cells))
    return "\n".join(lines)


def with_default_knobs(client, knobs: dict) -> dict:
    """The model's knobs, those not given turned off (`with_knobs_off`); the CLI says which, since the
    signature itself has no defaults."""
    names = knob_names(client.scalar_inputs(features.RECOMMEND_SIGNATURE))
    complete = with_knobs_off(knobs, names)
    for name in sorted(set(names) - set(knobs)):
        print(f"{name} not given: sending {complete[name]} (off)", file=sys.stderr)
    return complete


def build_client(args: argparse.Namespace):
    if args.protocol == "grpc":
        from serving.grpc_client import GrpcClient  # imports TensorFlow: only when asked for

        return GrpcClient(f"{args.host}:{args.grpc_port}", args.model, args.timeout)
    return RestClient(f"http://{args.host}:{args.rest_port}", args.model, args.timeout)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--user", required=True)
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--history", default="", help="comma-separated item ids, oldest first")
    parser.add_argument("--protocol", choices=("rest", "grpc"), default="rest")
    parser.add_argument("--host", default=DEFAULT_HOST)
    parser.add_argument("--rest_port", type=int, default=REST_PORT)
    parser.add_argument("--grpc_port", type=int, default=GRPC_PORT)
    parser.add_argument("--model", default=MODEL_NAME)
    parser.add_argument("--timeout", type=float, default=10.0, help="seconds per request")
    parser.add_argument("--knob", type=parse_knob, action="append", default=[], help="extra scalar input")
    args = parser.parse_args(argv)
    history = [item for item in args.history.split(",") if item]
    client = build_client(args)
    try:
        knobs = with_default_knobs(client, dict(args.knob))
        result = client.recommend([args.user], [history], args.k, **knobs)
    except ServingClientError as e:
        print(f"error {e.status}: {e.message}", file=sys.stderr)
        return 1
    except ValueError as e:  # a knob the model does not have
        print(f"error: {e}", file=sys.stderr)
        return 1
    finally:
        client.close()
    print(format_table(args.user, result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
