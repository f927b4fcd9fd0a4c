#!/usr/bin/env bash
# The GPU path, checked on a GPU host as root: prints the machine (nvidia-smi, Python, torch, device
# nodes, driver libraries, cgroups), says what a verification host still lacks and, with
# SPEEDPROOF_GPU_PREPARE=1, changes the host to provide it (device nodes the sandbox's uid can open, the
# driver's libraries in the loader cache, cgroup v1 controllers where the kernel has them), starts one
# sandbox that imports torch on the GPU, then runs
# tests/verification/runner/test_gpu_example.py (A/A calibration and a verification of the example GPU
# job) and writes its figures to $OUT/gpu_figures.json and everything printed to $OUT/log.txt.
#
#   sudo OUT=/tmp/gpu-check scripts/gpu_check.sh
#   sudo SPEEDPROOF_GPU_PREPARE=1 OUT=/tmp/gpu-check scripts/gpu_check.sh   # a fresh machine
#
# Settings (environment): VERIFICATION_PYTHON (the job's Python, with torch; default python3),
# VERIFICATION_DEVICES (comma-separated device nodes; default every /dev/nvidia* character device),
# SPEEDPROOF_GPU_PREPARE (1: change the host where it lacks something, as above),
# SPEEDPROOF_GPU_DEBS (a folder of .deb files with bubblewrap, unpacked when bwrap is missing),
# SPEEDPROOF_GPU_WHEELS (a folder of wheels installed when the runner's packages are missing),
# SPEEDPROOF_GPU_TEST_TIMEOUT (seconds for the tests; default 900), and the test's own
# SPEEDPROOF_GPU_BUDGET, SPEEDPROOF_GPU_AA_PAIRS, SPEEDPROOF_GPU_BARE_RUNS.
# Exits 2 at once on a host without a usable NVIDIA GPU, else with the tests' status.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT="${OUT:-$(mktemp -d /tmp/speedproof-gpu-check.XXXXXX)}"
mkdir -p "$OUT"
exec > >(tee -a "$OUT/log.txt") 2>&1
export PYTHONUNBUFFERED=1
PY="${VERIFICATION_PYTHON:-python3}"
section() { echo; echo "== $* ($(date -u +%H:%M:%S))"; }
give_up() { echo "GPU CHECK FAILED: $*"; exit 2; }
# Runs a command that changes the host only with SPEEDPROOF_GPU_PREPARE=1; else says what it would do.
prepare() {
    if [ "${SPEEDPROOF_GPU_PREPARE:-0}" = 1 ]; then "$@"; else echo "NOT DONE (set SPEEDPROOF_GPU_PREPARE=1): $*"; false; fi
}

section "GPU"
command -v nvidia-smi >/dev/null || give_up "nvidia-smi not found: no NVIDIA driver on this host, nothing to check"
nvidia-smi || give_up "nvidia-smi cannot reach the driver"
nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.sm,clocks.max.sm --format=csv

section "host"
uname -a
grep -E '^(PRETTY_NAME|VERSION_ID)=' /etc/os-release
echo "cpus $(nproc), uid $(id -u), LD_LIBRARY_PATH=${LD_LIBRARY_PATH:-}"
command -v "$PY" >/dev/null || give_up "the job's Python $PY is not there"
"$PY" - <<'EOF' || give_up "the job's Python has no torch that sees a CUDA GPU"
import sys, time
started = time.perf_counter()
import torch
imported = time.perf_counter()
print("python", sys.version.split()[0], sys.executable, "prefix", sys.prefix, "base_prefix", sys.base_prefix)
print("torch", torch.__version__, "cuda", torch.version.cuda, "available", torch.cuda.is_available())
assert torch.cuda.is_available()
torch.zeros(1, device="cuda")
torch.cuda.synchronize()
print("device", torch.cuda.get_device_name(0), "capability", torch.cuda.get_device_capability(0))
print(f"import torch {imported - started:.2f} s, first CUDA op {time.perf_counter() - imported:.2f} s")
print([line.strip() for line in open("/proc/self/status") if line.startswith(("VmPeak", "VmHWM"))])
EOF

section "device nodes"
ls -la /dev/nvidia* 2>&1
for node in /dev/nvidia*; do
    if [ -c "$node" ] && [ "$(stat -c %a "$node")" != 666 ]; then
        echo "$node is mode $(stat -c %a "$node"): the sandbox's uid 65534 must open it"
        prepare chmod 0666 "$node"
    fi
done

section "driver libraries"
if ! ldconfig -p | grep -q 'libcuda\.so\.1'; then
    found=$(find /usr/local/nvidia /usr/lib /usr/lib64 /lib /usr/local/cuda* -name 'libcuda.so.1' 2>/dev/null | head -1)
    [ -n "$found" ] || give_up "libcuda.so.1 not found"
    echo "libcuda.so.1 is in $(dirname "$found"), not in the loader cache the sandbox uses: adding it"
    case "$found" in /usr/*) ;; *) echo "WARNING: $found is outside /usr, which the sandbox does not bind";; esac
    prepare sh -c "dirname '$found' >/etc/ld.so.conf.d/zz-speedproof-gpu.conf && ldconfig"
fi
ldconfig -p | grep -E 'libcuda\.so|libnvidia-ml\.so' | head -4

section "bubblewrap"
if ! command -v bwrap >/dev/null; then
    [ -n "${SPEEDPROOF_GPU_DEBS:-}" ] || give_up "bubblewrap is missing: apt-get install -y bubblewrap"
    root=/opt/speedproof-bwrap
    for deb in "$SPEEDPROOF_GPU_DEBS"/*.deb; do dpkg -x "$deb" "$root"; done
    mkdir -p /opt/speedproof-bin
    if ldd "$root/usr/bin/bwrap" | grep -q 'not found'; then
        printf '#!/bin/sh\nLD_LIBRARY_PATH=%s exec %s "$@"\n' "$root/lib/x86_64-linux-gnu:$root/usr/lib/x86_64-linux-gnu" \
            "$root/usr/bin/bwrap" >/opt/speedproof-bin/bwrap
        chmod 0755 /opt/speedproof-bin/bwrap
    else
        ln -sf "$root/usr/bin/bwrap" /opt/speedproof-bin/bwrap
    fi
    export PATH="/opt/speedproof-bin:$PATH"
fi
bwrap --version || give_up "bwrap does not run"
for tool in setpriv tar; do command -v "$tool" >/dev/null || give_up "$tool is missing (the sandbox's launcher needs it)"; done
bwrap --ro-bind / / --dev /dev --proc /proc --unshare-pid --unshare-net --unshare-ipc --unshare-uts true \
    && echo "bwrap starts namespaces here" || echo "WARNING: bwrap cannot create its namespaces here"

section "cgroups"
echo "/sys/fs/cgroup is $(stat -fc %T /sys/fs/cgroup 2>&1)"
grep cgroup /proc/mounts
cat /proc/cgroups 2>&1
cat /proc/self/cgroup
for controller in memory pids cpuacct; do
    [ -d "/sys/fs/cgroup/$controller" ] && continue
    # The runner uses cgroup v1 controllers (memory cap and peak, process count, CPU time); a kernel
    # built with them can mount one beside cgroup2 while cgroup2 does not use that controller.
    if prepare sh -c "mkdir -p /sys/fs/cgroup/$controller && mount -t cgroup -o $controller speedproof-$controller /sys/fs/cgroup/$controller"; then
        echo "mounted the cgroup v1 $controller controller"
    else
        rmdir "/sys/fs/cgroup/$controller" 2>/dev/null
        echo "no cgroup v1 $controller controller mounted: the runner falls back to rlimits"
    fi
done

section "runner"
if ! "$PY" -c "import cryptography" 2>/dev/null; then
    [ -n "${SPEEDPROOF_GPU_WHEELS:-}" ] || give_up "the runner needs the cryptography package in $PY"
    "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/speedproof-site \
        "$SPEEDPROOF_GPU_WHEELS"/*.whl || give_up "cannot install the carried wheels"
    export PYTHONPATH="/tmp/speedproof-site${PYTHONPATH:+:$PYTHONPATH}"
fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
"$PY" -c "from verification.runner import RUNNER_VERSION; print('runner', RUNNER_VERSION)" || give_up "the runner does not import"

section "one sandbox on the GPU"
# The first variant is the host as it is. The others say what a failure comes from, and the first one
# that works is what the tests use here (SPEEDPROOF_GPU_MEMORY_MB, SPEEDPROOF_GPU_EXTRA_PATHS; the
# figures record it): CUDA reserves far more address space than it uses, so where no memory cgroup exists
# the runner's fallback cap (RLIMIT_AS at limits.memory_mb) may stop it.
adjustments=$(mktemp /tmp/speedproof-gpu-adjust.XXXXXX)
"$PY" - "$adjustments" <<'EOF'
import os, stat, sys, time
from dataclasses import replace
from pathlib import Path
from verification.runner.manifest import load_manifest
from verification.runner.sandbox import SandboxError, SandboxProcess, SandboxSpec, runtime_paths_of

PROBE = r"""
import os, time
started = time.perf_counter()
import torch
imported = time.perf_counter()
try:
    torch.zeros(1, device="cuda")
    torch.cuda.synchronize()
    print("cuda ok:", torch.cuda.get_device_name(0))
except Exception as error:
    print("cuda failed:", type(error).__name__, str(error)[:500])
print(f"uid {os.getuid()}, import torch {imported - started:.2f} s, first CUDA op {time.perf_counter() - imported:.2f} s")
print([line.strip() for line in open("/proc/self/status") if line.startswith(("VmPeak", "VmHWM"))])
"""
python = sys.executable
package = Path("examples/gpu_attention/package")
limits = load_manifest(package).limits
devices = [d for d in os.environ.get("VERIFICATION_DEVICES", "").split(",") if d] or sorted(
    str(p) for p in Path("/dev").glob("nvidia*") if stat.S_ISCHR(p.stat().st_mode)
)
runtime = runtime_paths_of(python)
print("devices", devices, "runtime paths", [str(p) for p in runtime])
uncapped_mb = 1 << 26  # 64 TiB of address space: no cap in practice
variants = [
    ("the host as it is", None, []),
    ("address-space cap lifted", uncapped_mb, []),
    ("/sys bound read-only", None, ["/sys"]),
    ("both", uncapped_mb, ["/sys"]),
]
for name, memory_mb, extra in variants:
    spec = SandboxSpec(
        command=[python, "-c", PROBE],
        implementation=package / "implementation",
        runtime_paths=[*runtime, *map(Path, extra)],
        limits=replace(limits, memory_bytes=memory_mb << 20) if memory_mb else limits,
        devices=devices,
        supervisor_python=python,
    )
    started = time.perf_counter()
    try:
        with SandboxProcess(spec) as sandbox:
            outcome = sandbox.finish()
    except SandboxError as error:
        print(f"-- {name}: the sandbox could not start: {error}")
        continue
    print(
        f"-- {name}: exit {outcome.exit_code}, limit {outcome.limit_broken}, {time.perf_counter() - started:.2f} s,"
        f" peak memory {outcome.peak_memory_bytes}, cpu {outcome.cpu_seconds}"
    )
    print(outcome.stdout.decode(errors="replace")[-1500:], outcome.stderr.decode(errors="replace")[-1500:])
    if b"cuda ok" in outcome.stdout:
        with open(sys.argv[1], "w") as adjustments:
            if memory_mb:
                adjustments.write(f"export SPEEDPROOF_GPU_MEMORY_MB={memory_mb}\n")
            if extra:
                adjustments.write(f"export SPEEDPROOF_GPU_EXTRA_PATHS={':'.join(extra)}\n")
        break
else:
    print("no variant reached the GPU from inside the sandbox")
EOF
cat "$adjustments"
# shellcheck disable=SC1090
. "$adjustments"

section "tests"
ini=$(mktemp /tmp/speedproof-gpu-pytest.XXXXXX.ini)
printf '[pytest]\nmarkers =\n    gpu: GPU\n    sandbox: sandboxes\n' >"$ini"
SPEEDPROOF_GPU_FIGURES="$OUT/gpu_figures.json" timeout "${SPEEDPROOF_GPU_TEST_TIMEOUT:-900}" \
    "$PY" -m pytest -c "$ini" --rootdir . --noconftest -p no:cacheprovider -m gpu -s -v -rA \
    tests/verification/runner/test_gpu_example.py
status=$?
section "done: tests exited $status"
[ -f "$OUT/gpu_figures.json" ] && cat "$OUT/gpu_figures.json"
exit $status
