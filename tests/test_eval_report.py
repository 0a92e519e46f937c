"""evaluation.report: the sweep lines both plots draw, and the cold trade-off plot."""

from evaluation import report


def _entry(name: str, cold: float | None, warm: float, **settings) -> dict:
    return {"name": name, "cold_recall@10": cold, "warm_recall@10": warm, "settings": settings}


ENTRIES = [
    _entry("EASE λ=50", 0.0, 0.12, system="EASE λ=50"),
    _entry("tailtower new_item_boost=0.2", 0.08, 0.10, system="tailtower", sweep="new_item_boost", value=0.2),
    _entry("tailtower", 0.03, 0.13, system="tailtower"),
    _entry(
        "tailtower new_item_boost=0.05", 0.05, 0.1, system="tailtower", sweep="new_item_boost", value=0.05
    ),
    _entry("tailtower mmr_lambda=0.5", 0.03, 0.11, system="tailtower", sweep="mmr_lambda", value=0.5),
]


def test_sweep_lines_start_at_the_unswept_entry_and_follow_the_values():
    lines = report.sweep_lines(ENTRIES)
    assert list(lines) == ["tailtower mmr_lambda", "tailtower new_item_boost"]
    assert [e["name"] for e in lines["tailtower new_item_boost"]] == [
        "tailtower",
        "tailtower new_item_boost=0.05",
        "tailtower new_item_boost=0.2",
    ]
    assert [e["name"] for e in lines["tailtower mmr_lambda"]] == ["tailtower", "tailtower mmr_lambda=0.5"]


def test_cold_tradeoff_plot_only_where_a_target_is_cold(tmp_path):
    path = tmp_path / "cold.png"
    assert report.plot_cold_tradeoff(str(path), ENTRIES, 10)
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    no_cold = [_entry("EASE λ=50", None, 0.12, system="EASE λ=50")]  # the standard protocol, nothing cold
    assert not report.plot_cold_tradeoff(str(tmp_path / "none.png"), no_cold, 10)
    assert not (tmp_path / "none.png").exists()
