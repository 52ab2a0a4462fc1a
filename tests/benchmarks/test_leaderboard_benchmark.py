"""benchmarks/leaderboard.py runs end to end with --quick and writes its JSON (not a timing)."""

import json

from benchmarks import leaderboard


def test_leaderboard_benchmark_runs_quick(tmp_path):
    assert leaderboard.main(["--quick", "--out", str(tmp_path)]) == 0
    data = json.loads((tmp_path / "leaderboard.json").read_text())
    assert data["benchmark"] == "leaderboard" and data["quick"] is True
    first, *pairing = data["rows"]
    assert first["product"] > 0 and first["alternative"] > 0 and first["target"] == "≤ 5 s"
    assert pairing and all(row["product"] > 0 and row["alternative"] > 0 for row in pairing)
    assert data["results"]["product"]["top"][0]["model version"].startswith("v")
