"""The report's plot is drawn for every report a run can end with, including one with no timed run."""

import warnings

from verification.runner.plot import write_plot


def _report(measurements: list[dict]) -> dict:
    return {
        "decision": "ERROR",
        "measurements": measurements,
        "criteria": [
            {
                "criterion": {"kind": "speedup", "threshold": 1.5},
                "estimate": None,
                "interval": None,
                "decision": "ERROR",
            }
        ],
    }


def test_a_report_without_timed_runs_is_plotted_without_warnings(tmp_path):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        png, svg = write_plot(
            _report([{"phase": "warmup", "role": "baseline", "wall_seconds": 0.01}]), tmp_path / "p.png"
        )
    assert png.read_bytes().startswith(b"\x89PNG") and "no timed runs" in svg.read_text()


def test_timed_runs_get_a_legend(tmp_path):
    rows = [{"phase": "measure", "role": r, "wall_seconds": s} for r, s in (("baseline", 0.012), ("candidate", 0.006))]
    _, svg = write_plot(_report(rows), tmp_path / "p.png")
    assert "baseline" in svg.read_text() and "no timed runs" not in svg.read_text()
