"""Command line for engineers and operators: exactly the decision code the platform runs.

    speedproof check --package P --candidate C [--inputs I] [--criteria F] --report out.json
        [--plot out.png] [--budget 40] [--seed N] [--signing-key key.pem] [--python PATH] [--device /dev/nvidia0 ...]
    speedproof verify-certificate FILE --public-key K [--report report.json]
    speedproof calibrate --package P [--inputs I] [--criteria F] [--pairs 12] [--python PATH] [--device ...]
    speedproof keygen --private-key key.pem --public-key key.pub.pem

(``python -m verification.runner`` is the same command inside the platform's repository.)

``check`` exits 0 PASS, 1 FAIL, 2 INCONCLUSIVE, 3 error; ``verify-certificate`` exits 0 when valid,
1 when not, 3 on error.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path

from . import calibration, certificate, sandbox, session
from .manifest import MANIFEST_NAME
from .sandbox import runtime_paths_of

EXIT_ERROR = 3
PYTHON_HELP = "the Python that runs a command starting with `python` (default: the verifier's own)"
DEVICE_HELP = "a device node to bind into every sandbox, e.g. /dev/nvidia0 (repeat it for each node a GPU job needs)"


def _criteria(path: Path | None, package: Path) -> dict:
    if path is not None:
        return json.loads(path.read_text())
    default = package / "criteria.json" if package.is_dir() else None
    if default is not None and default.is_file():
        return json.loads(default.read_text())
    sibling = package.parent / "criteria.json"
    if sibling.is_file():
        return json.loads(sibling.read_text())
    raise SystemExit(f"no --criteria given and no criteria.json next to the package ({MANIFEST_NAME})")


def _progress(update: session.Progress) -> None:
    estimate = f" estimate {update.estimate:.3g}x" if update.estimate is not None else ""
    sys.stderr.write(
        f"\r[{update.phase}] runs {update.runs_done}/{update.runs_budget} "
        f"pairs {update.pairs_done}/{update.pairs_budget}{estimate}   "
    )
    if update.phase == "done":
        sys.stderr.write("\n")
    sys.stderr.flush()


def _runtime(python: str | None, devices: Sequence[str]) -> dict:
    """The job's Python, when it is not the verifier's own interpreter, and its environment to bind;
    the device nodes (a GPU's) to bind into every sandbox."""
    runtime: dict = {"devices": tuple(devices)}
    if python is not None:
        runtime.update(python_executable=python, runtime_paths=runtime_paths_of(python))
    return runtime


def check(args: argparse.Namespace) -> int:
    criteria = _criteria(args.criteria, args.package)
    key = certificate.load_private_key(args.signing_key) if args.signing_key else None
    report = session.run_verification(
        args.package,
        args.candidate,
        args.inputs,
        criteria,
        budget=args.budget,
        seed=args.seed,
        alpha=args.alpha,
        signing_key=key,
        progress=None if args.quiet else _progress,
        **_runtime(args.python, args.device),
    )
    report.write(args.report)
    if args.plot is not None:
        from .plot import write_plot  # matplotlib only when a plot is asked for

        write_plot(report.to_dict(), args.plot)
    print(f"{report.decision}: {report.reason}")
    for criterion in report.criteria:
        interval = criterion["interval"]
        estimate = criterion["estimate"]
        text = f"  {criterion['label']}: {criterion['decision']}"
        if estimate is not None and interval is not None:
            text += f" (estimate {estimate:.4g}, {report.settings['confidence']:.0%} interval [{interval[0]:.4g}, {interval[1]:.4g}])"
        print(text)
    if report.tier:
        print(f"  payout tier: speedup {report.tier['speedup']:g}x -> {report.tier['fraction']:.0%}")
    return report.exit_code


def verify(args: argparse.Namespace) -> int:
    document = json.loads(args.file.read_text())
    report = None
    if "certificate" in document and "decision" in document:
        report, cert = document, document["certificate"]
        if cert is None:
            print("INVALID: the report carries no certificate")
            return 1
    else:
        cert = document
    if args.report is not None:
        report = json.loads(args.report.read_text())
    public_key = certificate.load_public_key(args.public_key.read_bytes())
    try:
        payload = certificate.verify_certificate(cert, public_key, report=report)
    except certificate.CertificateError as error:
        print(f"INVALID: {error}")
        return 1
    print(
        f"VALID: {payload['decision']} (key {cert['key_id']}, runner {payload['runner_version']}, "
        f"candidate sha256 {payload['sha256']['candidate']})"
    )
    return 0


def calibrate(args: argparse.Namespace) -> int:
    criteria = _criteria(args.criteria, args.package)
    result = calibration.calibrate(
        args.package,
        args.inputs,
        criteria,
        pairs=args.pairs,
        budget=args.budget,
        seed=args.seed,
        progress=None if args.quiet else _progress,
        **_runtime(args.python, args.device),
    )
    print(json.dumps(result.to_dict(), indent=2))
    return 0 if result.report.decision != "ERROR" else EXIT_ERROR


def keygen(args: argparse.Namespace) -> int:
    key = certificate.generate_signing_key()
    args.private_key.write_bytes(certificate.private_key_pem(key))
    args.private_key.chmod(0o600)
    args.public_key.write_bytes(certificate.public_key_pem(key))
    print(f"key id {certificate.key_id(key.public_key())}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="speedproof", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    commands = parser.add_subparsers(dest="command", required=True)

    c = commands.add_parser("check", help="verify a candidate against a benchmark package")
    c.add_argument("--package", type=Path, required=True, help="package directory or .tar.gz/.zip")
    c.add_argument("--candidate", type=Path, required=True, help="candidate directory or .tar.gz/.zip")
    c.add_argument("--inputs", type=Path, help="hidden inputs (default: the package's public inputs)")
    c.add_argument("--criteria", type=Path, help="criteria JSON (default: criteria.json next to the package)")
    c.add_argument("--report", type=Path, required=True)
    c.add_argument("--plot", type=Path, help="PNG path; an SVG is written next to it")
    c.add_argument("--budget", type=int, default=session.DEFAULT_BUDGET_PAIRS, help="maximum pairs of runs")
    c.add_argument("--seed", type=int)
    c.add_argument("--alpha", type=float, default=0.05, help="error per side")
    c.add_argument("--signing-key", type=Path, help="Ed25519 private key (PEM) to certify the report")
    c.add_argument("--quiet", action="store_true")
    c.add_argument("--python", help=PYTHON_HELP)
    c.add_argument("--device", action="append", default=[], help=DEVICE_HELP)
    c.set_defaults(handler=check)

    v = commands.add_parser("verify-certificate", help="check a certificate (or a report carrying one)")
    v.add_argument("file", type=Path)
    v.add_argument("--public-key", type=Path, required=True)
    v.add_argument("--report", type=Path, help="also check that this report matches the certificate")
    v.set_defaults(handler=verify)

    a = commands.add_parser("calibrate", help="A/A run: the baseline against itself")
    a.add_argument("--package", type=Path, required=True)
    a.add_argument("--inputs", type=Path)
    a.add_argument("--criteria", type=Path)
    a.add_argument("--pairs", type=int, default=12)
    a.add_argument("--budget", type=int, default=session.DEFAULT_BUDGET_PAIRS)
    a.add_argument("--seed", type=int)
    a.add_argument("--quiet", action="store_true")
    a.add_argument("--python", help=PYTHON_HELP)
    a.add_argument("--device", action="append", default=[], help=DEVICE_HELP)
    a.set_defaults(handler=calibrate)

    k = commands.add_parser("keygen", help="make an Ed25519 key pair for certificates")
    k.add_argument("--private-key", type=Path, required=True)
    k.add_argument("--public-key", type=Path, required=True)
    k.set_defaults(handler=keygen)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    sandbox.orphans_adopt()  # this process's children are its sandboxes: it reaps their orphans
    try:
        return int(args.handler(args))
    except SystemExit as stop:
        if isinstance(stop.code, str):
            print(stop.code, file=sys.stderr)
            return EXIT_ERROR
        raise
    except Exception as error:
        print(f"error: {type(error).__name__}: {error}", file=sys.stderr)
        return EXIT_ERROR
