"""Privileged and namespace system calls (runner/seccomp.py): real sandboxes refuse them with EPERM and
count them by name, the category ``privileged_call`` decides like the other sandbox violations, honest
threads and processes pass untouched, and a run that could not observe them says so."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from runner_testlib import EXAMPLE, REPO, candidate_with

from verification.runner import generate_signing_key, run_verification, seccomp, verify_certificate
from verification.runner import sandbox as sb
from verification.runner.violations import violations_public, violations_summarise

PYTHON = sys.executable
ARCH = seccomp.machine()
FAST = (EXAMPLE / "candidates" / "fast" / "serve.py").read_text()
needs_filter = pytest.mark.skipif(ARCH is None, reason="privileged calls are observed on x86_64 and aarch64 only")

CLONE_NEWUSER, CLONE_NEWNET, SIGCHLD = 0x10000000, 0x40000000, 17
LIBC = "import ctypes, errno, os\nlibc = ctypes.CDLL(None, use_errno=True)\n"


def _syscall(name: str, *args: str) -> str:
    """``libc.syscall`` by this machine's number for ``name``: no C library wrapper in between."""
    table = seccomp.TABLES[ARCH]
    number = {"unshare": table.unshare, "clone": table.clone, "clone3": table.clone3}.get(name)
    return f"libc.syscall({number if number is not None else table.always[name]}, {', '.join(args) or '0'})"


def _report_errno(call: str) -> str:
    """The code the candidate runs: one call, then its result and errno name on stdout."""
    return f"{LIBC}result = {call}\nprint(result, errno.errorcode.get(ctypes.get_errno(), 0))\n"


@pytest.fixture(params=["compiled", "python"])
def installer(request, monkeypatch):
    """Each installer in turn: the compiled one (where a C compiler exists) and the Python one."""
    if request.param == "python":
        monkeypatch.setattr(seccomp, "installer_binary", lambda: None)
    elif seccomp.installer_binary() is None:
        pytest.skip("no C compiler on this host: only the Python installer is used")
    return request.param


def _sandboxed(tmp_path: Path, code: str, **spec_changes) -> sb.RunOutcome:
    implementation = tmp_path / "impl"
    implementation.mkdir(exist_ok=True)
    implementation.chmod(0o755)
    (implementation / "main.py").write_text(code)
    (implementation / "main.py").chmod(0o644)
    spec = sb.SandboxSpec(
        command=[PYTHON, "main.py"],
        implementation=implementation,
        runtime_paths=sb.default_runtime_paths(),
        **spec_changes,
    )
    with sb.SandboxProcess(spec) as process:
        return process.finish()


# ---------------------------------------------------------------- the filter itself, no sandbox


@pytest.mark.parametrize("arch", sorted(seccomp.TABLES))
def test_the_filter_assembles_for_each_architecture_with_every_call_in_its_table(arch):
    program = seccomp.filter_program(arch)
    assert len(program) % 8 == 0 and len(program) // 8 < 4096  # the kernel's BPF_MAXINSNS
    table = seccomp.TABLES[arch]
    assert len(set(table.always.values())) == len(table.always)  # no two names share a number
    assert table.unshare not in table.always.values() and table.clone not in table.always.values()
    # Every instruction's jumps stay inside the program and the program ends in a return.
    instructions = [program[i : i + 8] for i in range(0, len(program), 8)]
    for index, instruction in enumerate(instructions):
        code, on_true, on_false = instruction[0] | instruction[1] << 8, instruction[2], instruction[3]
        if code in (seccomp.BPF_JEQ_K, seccomp.BPF_JGE_K, seccomp.BPF_JSET_K):
            assert index + 1 + max(on_true, on_false) < len(instructions)
    assert instructions[-1][0] == seccomp.BPF_RET_K


def test_the_tables_differ_per_architecture_and_x86_only_calls_stay_there():
    x86, arm = seccomp.TABLES["x86_64"], seccomp.TABLES["aarch64"]
    assert set(x86.always) - set(arm.always) == {"iopl", "ioperm"}
    assert (x86.always["mount"], arm.always["mount"]) == (165, 40)
    assert (x86.unshare, arm.unshare, x86.clone, arm.clone) == (272, 97, 56, 220)


def test_where_the_installer_cannot_be_compiled_the_python_one_is_used(tmp_path, monkeypatch):
    monkeypatch.setattr(seccomp, "_COMPILED", {})
    monkeypatch.setenv("SPEEDPROOF_RUNTIME_DIR", str(tmp_path / "missing"))
    assert seccomp.installer_binary() is None
    command = seccomp.installer_command("x86_64", "/usr/bin/python3")
    assert (
        command[:4] == ["/usr/bin/python3", "-I", "-S", "-c"] and command[5] == seccomp.filter_program("x86_64").hex()
    )
    assert seccomp.installer_command("aarch64", None, compiled=True) == [
        seccomp.INSTALLER_MOUNT,
        seccomp.filter_program("aarch64").hex(),
    ]


def test_an_unobserved_category_is_summarised_and_shown_to_both_parties():
    class Record:
        def __init__(self, role, public, violations, unobserved):
            self.role, self.public_inputs, self.violations, self.unobserved = role, public, violations, unobserved

    records = [
        Record("candidate", True, {}, ["privileged_call"]),
        Record("candidate", False, {"network": 2}, ["privileged_call"]),
        Record("candidate", False, {}, ["privileged_call"]),
        Record("baseline", False, {}, []),
    ]
    summary = violations_summarise(records, {"network": "fail", "privileged_call": "fail"})
    assert summary["unobserved"] == [
        {"role": "candidate", "category": "privileged_call", "inputs": "hidden", "runs": 2},
        {"role": "candidate", "category": "privileged_call", "inputs": "public", "runs": 1},
    ]
    assert violations_public(summary)["unobserved"] == summary["unobserved"]
    assert "unobserved" not in violations_summarise(records[3:], {})


# ---------------------------------------------------------------- real sandboxes

PROBES = {
    "unshare(CLONE_NEWUSER)": (f"libc.unshare({CLONE_NEWUSER})", "unshare"),
    "unshare(CLONE_NEWNET)": (f"libc.unshare({CLONE_NEWNET})", "unshare"),
    "clone(CLONE_NEWUSER)": (_syscall("clone", str(CLONE_NEWUSER | SIGCHLD), "0", "0", "0", "0"), "clone"),
    "setns": ("libc.setns(0, 0)", "setns"),
    "mount": ('libc.mount(b"none", b"/tmp", b"tmpfs", 0, None)', "mount"),
    "umount2": ('libc.umount2(b"/tmp", 0)', "umount2"),
    "chroot": ('libc.chroot(b"/tmp")', "chroot"),
    "pivot_root": (_syscall("pivot_root", 'b"/tmp"', 'b"/tmp"') if ARCH else "", "pivot_root"),
    "setuid(0)": ("libc.setuid(0)", "setuid"),
    "setresgid": ("libc.setresgid(0, 0, 0)", "setresgid"),
    "setgroups": ("libc.setgroups(0, None)", "setgroups"),
    "ptrace": ("libc.ptrace(16, 1, 0, 0)", "ptrace"),  # PTRACE_ATTACH to the launcher
    "bpf": (_syscall("bpf", "0", "0", "0") if ARCH else "", "bpf"),
    "perf_event_open": (_syscall("perf_event_open", "0", "0", "-1", "-1", "0") if ARCH else "", "perf_event_open"),
    "init_module": (_syscall("init_module", "0", "0", "0") if ARCH else "", "init_module"),
    "keyctl": (_syscall("keyctl", "0", "0") if ARCH else "", "keyctl"),
    "reboot": (_syscall("reboot", "0", "0", "0", "0") if ARCH else "", "reboot"),
}


@pytest.mark.sandbox
@needs_filter
@pytest.mark.parametrize("probe", sorted(PROBES))
def test_each_privileged_call_is_refused_with_eperm_and_counted_by_name(tmp_path, probe, installer):
    call, name = PROBES[probe]
    outcome = _sandboxed(tmp_path, _report_errno(call))
    assert outcome.exit_code == 0, outcome.stderr
    assert outcome.stdout.decode().split() == ["-1", "EPERM"]
    assert outcome.violations == {"privileged_call": 1}
    assert outcome.privileged_calls == {name: 1}
    assert outcome.unobserved == []
    assert "privileged calls: 1 system call(s) refused with EPERM" in outcome.blocked


@pytest.mark.sandbox
@needs_filter
def test_clone3_answers_enosys_uncounted_and_threads_and_processes_work_through_clone(tmp_path, installer):
    code = f"""{LIBC}
import concurrent.futures, subprocess, sys, threading
import numpy

if __name__ == "__main__":
    print({_syscall("clone3", "None", "0")}, errno.errorcode.get(ctypes.get_errno()))
    threads = [threading.Thread(target=numpy.ones(1000).sum) for _ in range(4)]
    [t.start() for t in threads]
    [t.join() for t in threads]
    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        print(sum(pool.map(abs, range(-5, 5))))
    print(subprocess.run(["sh", "-c", "echo child; (echo grandchild)"], capture_output=True, text=True).stdout.split())
    children = [os.fork() for _ in range(2)]
    if 0 in children:
        os._exit(0)
    print([os.waitstatus_to_exitcode(os.waitpid(child, 0)[1]) for child in children])
    print(subprocess.run([sys.executable, "-c", "print(3)"], capture_output=True, text=True).stdout.split())
"""
    outcome = _sandboxed(tmp_path, code)
    assert outcome.exit_code == 0, outcome.stderr
    assert outcome.stdout.decode().split("\n")[:5] == [
        "-1 ENOSYS",
        "25",
        "['child', 'grandchild']",
        "[0, 0]",
        "['3']",
    ]
    assert outcome.violations == {} and outcome.privileged_calls == {} and outcome.unobserved == []


@pytest.mark.sandbox
@needs_filter
def test_the_command_holds_neither_the_listener_nor_the_runners_socket(tmp_path, installer):
    code = """import json, os
targets = {}
for fd in os.listdir("/proc/self/fd"):
    try:
        targets[fd] = os.readlink(f"/proc/self/fd/{fd}")
    except OSError:
        pass  # the listing's own descriptor, closed by now
print(json.dumps(targets))
"""
    outcome = _sandboxed(tmp_path, code)
    assert outcome.exit_code == 0, outcome.stderr
    targets = json.loads(outcome.stdout)
    assert set(targets) == {"0", "1", "2"}, targets
    assert not any("seccomp" in target or "socket" in target for target in targets.values())


@pytest.mark.sandbox
@pytest.mark.skipif(ARCH != "x86_64", reason="x32 numbering exists on x86_64 only")
def test_a_call_through_another_abi_is_refused_and_counted(tmp_path, installer):
    outcome = _sandboxed(tmp_path, _report_errno(f"libc.syscall({seccomp.X32_SYSCALL_BIT | 39})"))  # x32 getpid
    assert outcome.stdout.decode().split() == ["-1", "EPERM"]
    assert outcome.privileged_calls == {seccomp.OTHER_ABI: 1}


# A runner already under a seccomp listener (a nested sandbox, say): the kernel allows one listener per
# filter chain, so the installer's is refused. Prepended to a script run in a fresh Python.
UNDER_A_LISTENER = f"""
import ctypes, json, sys
sys.path.insert(0, {str(REPO)!r}); sys.path.insert(0, {str(Path(__file__).parent)!r})
from pathlib import Path
from verification.runner import seccomp
libc = ctypes.CDLL(None, use_errno=True)
libc.syscall.restype = ctypes.c_long
allow = seccomp._instruction(seccomp.BPF_RET_K, 0, 0, seccomp.SECCOMP_RET_ALLOW)
class Program(ctypes.Structure):
    _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_void_p)]
buffer = ctypes.create_string_buffer(allow, 8)
listener = libc.syscall(ctypes.c_long(seccomp.SECCOMP_SYSCALL[seccomp.machine() or "x86_64"]), ctypes.c_long(1),
                        ctypes.c_long(8), ctypes.byref(Program(1, ctypes.addressof(buffer))))
assert listener >= 0, ctypes.get_errno()
"""


def _under_a_listener(script: str, *args: str) -> dict:
    result = subprocess.run(
        [PYTHON, "-c", UNDER_A_LISTENER + script, *args],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=REPO,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout.splitlines()[-1])


@pytest.mark.sandbox
@needs_filter
def test_a_run_that_cannot_observe_privileged_calls_says_so_and_still_runs(tmp_path, installer):
    script = f"""
from test_runner_seccomp import _sandboxed, _report_errno
if {installer!r} == "python":
    seccomp.installer_binary = lambda: None
outcome = _sandboxed(Path(sys.argv[1]), _report_errno("libc.unshare({CLONE_NEWUSER})"))
print(json.dumps({{"exit": outcome.exit_code, "stdout": outcome.stdout.decode(), "violations": outcome.violations,
                  "unobserved": outcome.unobserved, "blocked": outcome.blocked}}))
"""
    seen = _under_a_listener(script, str(tmp_path))
    assert seen["exit"] == 0 and seen["stdout"].split()[0] in ("0", "-1")  # ran: the kernel alone decided
    assert seen["violations"] == {} and seen["unobserved"] == ["privileged_call"]
    assert any(
        line.startswith("privileged calls: not observed in this run (seccomp user notification: ")
        for line in seen["blocked"]
    ), seen["blocked"]


@pytest.mark.sandbox
@needs_filter
def test_a_verification_that_could_not_observe_says_so_in_the_signed_report(tmp_path, hidden_inputs, criteria):
    script = """
from verification.report_schema import report_shape_errors
from verification.runner import generate_signing_key, run_verification, verify_certificate
key = generate_signing_key()
package, candidate = Path(sys.argv[1]) / "package", Path(sys.argv[2])
report = run_verification(package, candidate, Path(sys.argv[3]), json.loads(sys.argv[4]), budget=8, seed=2,
                          signing_key=key)
data = json.loads(report.to_json())
payload = verify_certificate(data["certificate"], key.public_key(), report=data)
print(json.dumps({"decision": data["decision"], "reason": data["reason"], "violations": data["sandbox_violations"],
                  "signed": payload["sandbox_violations"], "shape": report_shape_errors(data),
                  "blocked": data["blocked_actions"]}))
"""
    candidate = _probing(tmp_path, _prelude(f"libc.unshare({CLONE_NEWUSER})"))
    seen = _under_a_listener(script, str(EXAMPLE), str(candidate), str(hidden_inputs), json.dumps(criteria))
    # Not observed is not "none made": the verification goes on (nothing decides on what nobody saw),
    # and the report, the certificate and both parties' views say which runs were blind.
    assert seen["decision"] == "PASS", seen["reason"]
    assert seen["shape"] == {}
    assert seen["violations"]["observed"] == []
    blind = {(entry["role"], entry["inputs"]): entry for entry in seen["violations"]["unobserved"]}
    assert set(blind) == {
        ("baseline", "public"),
        ("baseline", "hidden"),
        ("candidate", "public"),
        ("candidate", "hidden"),
    }
    assert all(entry["category"] == "privileged_call" and entry["runs"] >= 1 for entry in blind.values())
    assert seen["signed"]["unobserved"] == seen["violations"]["unobserved"]
    assert any(
        b["role"] == "candidate" and b["action"].startswith("privileged calls: not observed") for b in seen["blocked"]
    )


@pytest.mark.sandbox
def test_a_sandbox_asked_not_to_observe_says_so(tmp_path):
    outcome = _sandboxed(tmp_path, _report_errno(f"libc.unshare({CLONE_NEWUSER})"), observe_privileged_calls=False)
    assert outcome.exit_code == 0 and outcome.violations == {} and outcome.unobserved == ["privileged_call"]


# ---------------------------------------------------------------- verifications


def _probing(tmp_path: Path, prelude: str) -> Path:
    return candidate_with(
        tmp_path / "candidate", FAST.replace("def main() -> None:\n", f"{prelude}\ndef main() -> None:\n")
    )


def _prelude(call: str) -> str:
    return f"import ctypes\n_libc = ctypes.CDLL(None, use_errno=True)\n_refused = {call.replace('libc.', '_libc.')}\n"


CANDIDATE_PROBES = {
    "unshare(CLONE_NEWUSER)": (f"libc.unshare({CLONE_NEWUSER})", {"unshare": 1}),
    "mount": ('libc.mount(b"none", b"/tmp", b"tmpfs", 0, None)', {"mount": 1}),
    "setuid(0) and ptrace": ("(libc.setuid(0), libc.ptrace(16, 1, 0, 0))", {"setuid": 1, "ptrace": 1}),
}


@pytest.mark.sandbox
@needs_filter
@pytest.mark.parametrize("probe", sorted(CANDIDATE_PROBES))
def test_a_privileged_call_fails_the_candidate_by_default(tmp_path, example_package, hidden_inputs, criteria, probe):
    call, calls = CANDIDATE_PROBES[probe]
    key = generate_signing_key()
    report = run_verification(
        example_package, _probing(tmp_path, _prelude(call)), hidden_inputs, criteria, budget=4, signing_key=key
    )
    data = json.loads(report.to_json())
    assert (data["decision"], data["reason_code"]) == ("FAIL", "sandbox_violation"), data["reason"]
    assert "(privileged_call)" in data["reason"]
    assert data["sandbox_violations"]["observed"] == [
        {
            "role": "candidate",
            "category": "privileged_call",
            "inputs": "public",
            "action": "fail",
            "runs": 1,
            "events": sum(calls.values()),
        }
    ]
    assert "unobserved" not in data["sandbox_violations"]
    warmup = next(m for m in data["measurements"] if m["role"] == "candidate")
    assert (warmup["phase"], warmup["privileged_calls"]) == ("warmup", calls)
    payload = verify_certificate(data["certificate"], key.public_key(), report=data)
    assert payload["criteria_spec"]["sandbox_policy"]["privileged_call"] == "fail"
    assert [o["category"] for o in payload["sandbox_violations"]["observed"]] == ["privileged_call"]


@pytest.mark.sandbox
@needs_filter
def test_report_lets_a_privileged_caller_pass_with_the_counts_listed(
    tmp_path, example_package, hidden_inputs, criteria
):
    criteria["sandbox_policy"] = {"privileged_call": "report"}
    report = run_verification(
        example_package,
        _probing(tmp_path, _prelude(f"libc.unshare({CLONE_NEWUSER})")),
        hidden_inputs,
        criteria,
        budget=8,
        seed=2,
    )
    data = json.loads(report.to_json())
    assert data["decision"] == "PASS", data["reason"]
    measured = [m for m in data["measurements"] if m["role"] == "candidate" and m["phase"] == "measure"]
    assert measured and all(m["privileged_calls"] == {"unshare": 1} for m in measured)
    observed = {o["inputs"]: o for o in data["sandbox_violations"]["observed"]}
    assert observed["hidden"] == {
        "role": "candidate",
        "category": "privileged_call",
        "inputs": "hidden",
        "action": "report",
        "runs": len(measured),
        "events": len(measured),
    }
    assert observed["public"]["events"] == 1


HONEST = """import threading, subprocess, concurrent.futures
_threads = [threading.Thread(target=sum, args=(range(1000),)) for _ in range(3)]
[t.start() for t in _threads]; [t.join() for t in _threads]
with concurrent.futures.ThreadPoolExecutor(2) as _pool:
    list(_pool.map(abs, range(10)))
subprocess.run(["true"], check=True)
"""


@pytest.mark.sandbox
@needs_filter
def test_an_honest_threaded_and_forking_candidate_is_unaffected(tmp_path, example_package, hidden_inputs, criteria):
    report = run_verification(example_package, _probing(tmp_path, HONEST), hidden_inputs, criteria, budget=6, seed=4)
    assert report.decision == "PASS", report.reason
    assert report.sandbox_violations["observed"] == [] and "unobserved" not in report.sandbox_violations
    assert all(m.get("privileged_calls") == {} for m in json.loads(report.to_json())["measurements"])


@pytest.mark.sandbox
@needs_filter
def test_the_baselines_privileged_calls_are_listed_and_never_decide(
    tmp_path, example_package, candidates, hidden_inputs, criteria
):
    package = tmp_path / "package"
    shutil.copytree(example_package, package)
    serve = package / "implementation" / "serve.py"
    prelude = _prelude("libc.mount(b'none', b'/tmp', b'tmpfs', 0, None)")
    serve.write_text(serve.read_text().replace("def main() -> None:\n", f"{prelude}\ndef main() -> None:\n"))
    report = run_verification(package, candidates / "fast", hidden_inputs, criteria, budget=6, seed=4)
    assert report.decision == "PASS", report.reason
    observed = report.sandbox_violations["observed"]
    assert {(o["role"], o["category"], o["action"]) for o in observed} == {("baseline", "privileged_call", "report")}
    assert all(o["events"] == o["runs"] for o in observed)
