"""Reports shaped like the runner's, for runs the service records without a real host (tests and the
pipeline benchmark)."""

from verification.models import VerificationRun
from verification.runner.certificate import sign_report


def fake_report(run: VerificationRun, *, decision="PASS", fraction=1.0, estimate=2.1) -> dict:
    """A report shaped like the runner's, for the runs the service records without a real host."""
    return {
        "runner_version": "test",
        "decision": decision,
        "reason": f"{decision} in test",
        "payout_fraction": fraction,
        "tier": {"index": 2, "speedup": 2.0, "fraction": fraction} if fraction else None,
        "criteria_spec": run.criteria,
        "criteria": [
            {
                "label": "median wall_time speedup >= 1.5",
                "criterion": {"kind": "speedup", "threshold": 1.5},
                "decision": decision,
                "estimate": estimate,
                "interval": [estimate * 0.9, estimate * 1.1],
                "p_value_pass": 0.001,
                "p_value_fail": 0.9,
                "self_reported": False,
            }
        ],
        "correctness": {"passed": True, "outputs_compared": 10},
        "runs": {"pairs": 8, "total": 16, "looks": 2},
        "sha256": {
            "package": run.package.sha256,
            "candidate": run.candidate.sha256 if run.candidate_id else None,
            "hidden_inputs": run.hidden_inputs.sha256,
        },
        "settings": {"alpha": 0.05},
        "timings": {"finished_at": "2026-11-28T00:00:00+00:00"},
        "environment": {"cpu_model": "test", "cpu_count": 2},
        "measurements": [],
        "logs": [{"role": "baseline", "phase": "measure", "stderr": "secret stderr"}],
    }


def signed(run, key, **kwargs):
    report = fake_report(run, **kwargs)
    return report, sign_report(report, key)
