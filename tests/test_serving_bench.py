"""bench-serve's queries, its three targets (through the project's clients) and table rows, against the toy
model and an in-process server (the timed load itself runs in `make bench-serve`)."""

from serving import bench
from serving.local_client import LocalClient
from tests.test_serving_toy import MODEL, running_server, save_toy_model

POOL = list("abcdefghijk")


def test_request_set_cycles_users_and_draws_distinct_history_items():
    queries = bench.request_set(250, POOL)
    assert [q.user for q in queries[:3]] == ["u000", "u001", "u002"]
    assert queries[200].user == "u000"  # 200 users in turn
    assert {len(q.history) for q in queries} == set(range(11))  # 0-10 items
    for query in queries:
        assert len(set(query.history)) == len(query.history) and set(query.history) <= set(POOL)
    assert bench.request_set(250, POOL) == queries  # seeded


def test_every_target_sends_the_same_request_through_its_client(tmp_path):
    base = str(tmp_path / MODEL)
    local = LocalClient(save_toy_model(base, 3))
    with running_server(base) as server:
        targets = bench.Targets(local, server.rest_port, server.grpc_port, MODEL, k=2)
        assert targets.knobs == {"boost": 0}  # every knob off
        assert bench.history_pool(local, targets.knobs, size=3) == ["v3-u000-0", "v3-u000-1", "v3-u000-2"]
        queries = bench.request_set(6, POOL)
        try:
            for name, make_sender in targets.senders().items():
                result = bench.run_load(name, 2, queries, make_sender)
                assert (result.target, len(result.latencies_s), result.errors) == (name, 6, 0)
                # The toy answers "v<version>-<user>-<j>" with score boost - j (boost 0: the knob is off).
                answer = make_sender()(queries[1])
                assert answer.item_ids() == [["v3-u001-0", "v3-u001-1"]], name
                assert [row["scores"] for row in answer.rows(0)] == [0.0, -1.0], name
        finally:
            targets.close()


def test_a_target_whose_requests_all_failed_still_gets_a_row():
    failed = bench.Result("gRPC", 1, latencies_s=[], errors=7, wall_s=1.0)
    assert failed.cells(floor_p99_ms=2.0) == ["gRPC", "1", "0", "-", "-", "-", "0", "7"]
    ok = bench.Result("REST", 8, latencies_s=[0.001, 0.003], errors=0, wall_s=0.5)
    assert ok.cells(floor_p99_ms=2.0) == ["REST", "8", "2", "2.00", "2.98", "1.49", "4", "0"]
    assert ok.cells(floor_p99_ms=None)[5] == "-"


def test_the_table_is_github_markdown(monkeypatch):
    monkeypatch.setattr(bench.os, "cpu_count", lambda: 2)
    floor = bench.Result("in-process (floor)", 1, latencies_s=[0.002], errors=0, wall_s=1.0)
    failed = bench.Result("gRPC", 1, latencies_s=[], errors=7, wall_s=1.0)
    assert bench.table([floor, failed], n=4, k=10) == [
        "`recommend` (k=10, 4 requests per row, 0-10 history items), 2 CPUs",
        "",
        "| target             | concurrency   | ok   | p50 ms   | p99 ms   | p99 / floor p99   | req/s   | errors   |",  # noqa: E501
        "|--------------------|---------------|------|----------|----------|-------------------|---------|----------|",  # noqa: E501
        "| in-process (floor) | 1             | 1    | 2.00     | 2.00     | 1.00              | 1       | 0        |",  # noqa: E501
        "| gRPC               | 1             | 0    | -        | -        | -                 | 0       | 7        |",  # noqa: E501
    ]
