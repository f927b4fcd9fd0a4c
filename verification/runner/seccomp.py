"""Privileged and namespace system calls a sandboxed command attempts: refused with EPERM and counted.

A tiny launcher (``INSTALLER_C``, compiled once per runner process where a C compiler exists, else
``INSTALLER`` run by a Python visible inside the sandbox) starts right after ``setpriv`` has dropped to the sandbox uid and just before the command: it installs a seccomp
filter with a user-notification listener (``SECCOMP_RET_USER_NOTIF``, ``SECCOMP_FILTER_FLAG_NEW_LISTENER``;
bwrap and setpriv have already set no_new_privs), hands the listener to the runner over a Unix socket
(``SCM_RIGHTS``) on fd ``CHANNEL_FD``, closes both and execs the command. The filter applies to the
command and everything it starts; the runner (``PrivilegedCallWatch``) answers each notification with
EPERM and counts it by system call name. The command never holds the listener, so it cannot answer
its own calls, and the trusted launcher, which needs setuid and friends, is never filtered.

What is refused: namespaces (``unshare`` and ``clone`` with namespace flags, ``setns``), mounts and
root changes, identity changes (``setuid`` and the rest of the family, ``setgroups``, ``capset``),
tracing (``ptrace``, ``process_vm_readv/writev``, ``pidfd_getfd``), ``bpf``, ``perf_event_open``,
kernel modules, ``kexec``, ``reboot``, swap, the kernel keyring, host and domain names, ``acct``,
``quotactl``, ``open_by_handle_at`` and, on x86_64, ``iopl``/``ioperm``. ``clone3`` keeps its flags
in memory a filter cannot read, so it is answered ENOSYS (not counted): the C library then falls back
to ``clone``, whose flags the filter checks; threads and processes started without namespace flags
pass untouched. A system call through another ABI (32-bit ``int 0x80`` on x86_64, x32, AArch32) is
refused and counted too, so the table cannot be bypassed through a second numbering.

The filter is built for x86_64 and aarch64 (little-endian). Elsewhere, or where the kernel refuses
user notification, the command runs as before and the run says that privileged calls were not
observed: never that none were made.
"""

from __future__ import annotations

import atexit
import ctypes
import errno
import os
import platform
import select
import shutil
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

CATEGORY = "privileged_call"
CHANNEL_FD = 6  # the sandbox's end of the runner's socket, for the installer only
INSTALLER_MOUNT = "/.seccomp-installer"  # where the compiled installer is bound inside the sandbox

AUDIT_ARCH = {"x86_64": 0xC000003E, "aarch64": 0xC00000B7}
SECCOMP_SYSCALL = {"x86_64": 317, "aarch64": 277}
X32_SYSCALL_BIT = 0x40000000

# System calls refused and counted whatever their arguments, by architecture (asm/unistd_64.h and
# asm-generic/unistd.h).
_ALWAYS_X86_64 = {
    "setns": 308,
    "mount": 165,
    "umount2": 166,
    "pivot_root": 155,
    "chroot": 161,
    "open_tree": 428,
    "move_mount": 429,
    "fsopen": 430,
    "fsconfig": 431,
    "fsmount": 432,
    "fspick": 433,
    "mount_setattr": 442,
    "setuid": 105,
    "setgid": 106,
    "setreuid": 113,
    "setregid": 114,
    "setgroups": 116,
    "setresuid": 117,
    "setresgid": 119,
    "capset": 126,
    "ptrace": 101,
    "process_vm_readv": 310,
    "process_vm_writev": 311,
    "pidfd_getfd": 438,
    "bpf": 321,
    "perf_event_open": 298,
    "init_module": 175,
    "finit_module": 313,
    "delete_module": 176,
    "kexec_load": 246,
    "kexec_file_load": 320,
    "reboot": 169,
    "swapon": 167,
    "swapoff": 168,
    "keyctl": 250,
    "add_key": 248,
    "request_key": 249,
    "sethostname": 170,
    "setdomainname": 171,
    "acct": 163,
    "quotactl": 179,
    "open_by_handle_at": 304,
    "iopl": 172,
    "ioperm": 173,
}
_ALWAYS_AARCH64 = {
    "setns": 268,
    "mount": 40,
    "umount2": 39,
    "pivot_root": 41,
    "chroot": 51,
    "open_tree": 428,
    "move_mount": 429,
    "fsopen": 430,
    "fsconfig": 431,
    "fsmount": 432,
    "fspick": 433,
    "mount_setattr": 442,
    "setuid": 146,
    "setgid": 144,
    "setreuid": 145,
    "setregid": 143,
    "setgroups": 159,
    "setresuid": 147,
    "setresgid": 149,
    "capset": 91,
    "ptrace": 117,
    "process_vm_readv": 270,
    "process_vm_writev": 271,
    "pidfd_getfd": 438,
    "bpf": 280,
    "perf_event_open": 241,
    "init_module": 105,
    "finit_module": 273,
    "delete_module": 106,
    "kexec_load": 104,
    "kexec_file_load": 294,
    "reboot": 142,
    "swapon": 224,
    "swapoff": 225,
    "keyctl": 219,
    "add_key": 217,
    "request_key": 218,
    "sethostname": 161,
    "setdomainname": 162,
    "acct": 89,
    "quotactl": 60,
    "open_by_handle_at": 265,
}


@dataclass(frozen=True)
class SyscallTable:
    always: dict[str, int]
    unshare: int
    clone: int
    clone3: int

    def name_of(self, number: int) -> str:
        for name, value in (*self.always.items(), ("unshare", self.unshare), ("clone", self.clone)):
            if value == number:
                return name
        return f"syscall {number}"


TABLES = {
    "x86_64": SyscallTable(always=_ALWAYS_X86_64, unshare=272, clone=56, clone3=435),
    "aarch64": SyscallTable(always=_ALWAYS_AARCH64, unshare=97, clone=220, clone3=435),
}

CLONE_NEWNS = 0x00020000
CLONE_NEWCGROUP = 0x02000000
CLONE_NEWUTS = 0x04000000
CLONE_NEWIPC = 0x08000000
CLONE_NEWUSER = 0x10000000
CLONE_NEWPID = 0x20000000
CLONE_NEWNET = 0x40000000
CLONE_NEWTIME = 0x00000080
# clone's low byte is the exit signal, so CLONE_NEWTIME (0x80) only means a namespace to unshare.
CLONE_NAMESPACES = CLONE_NEWNS | CLONE_NEWCGROUP | CLONE_NEWUTS | CLONE_NEWIPC | CLONE_NEWUSER | CLONE_NEWPID
CLONE_NAMESPACES |= CLONE_NEWNET
UNSHARE_NAMESPACES = CLONE_NAMESPACES | CLONE_NEWTIME

# Classic BPF over struct seccomp_data {int nr; u32 arch; u64 ip; u64 args[6]}.
BPF_LD_W_ABS = 0x20
BPF_JEQ_K = 0x15
BPF_JGE_K = 0x35
BPF_JSET_K = 0x45
BPF_RET_K = 0x06
SECCOMP_RET_ALLOW = 0x7FFF0000
SECCOMP_RET_USER_NOTIF = 0x7FC00000
SECCOMP_RET_ERRNO = 0x00050000
OFFSET_NR, OFFSET_ARCH, OFFSET_ARG0_LOW = 0, 4, 16  # the low half of args[0] on little-endian

# ioctl numbers: _IOWR('!', 0, struct seccomp_notif) and _IOWR('!', 1, struct seccomp_notif_resp).
NOTIF_SIZE = 80
NOTIF_RESP_SIZE = 24
SECCOMP_IOCTL_NOTIF_RECV = 0xC0000000 | (NOTIF_SIZE << 16) | (ord("!") << 8) | 0
SECCOMP_IOCTL_NOTIF_SEND = 0xC0000000 | (NOTIF_RESP_SIZE << 16) | (ord("!") << 8) | 1

OTHER_ABI = "other-ABI call"


def machine() -> str | None:
    """The architecture the filter is built for here, or None where privileged calls cannot be observed."""
    name = platform.machine()
    name = {"amd64": "x86_64", "arm64": "aarch64"}.get(name, name)
    if name in TABLES and sys.byteorder == "little" and sys.platform == "linux":
        return name
    return None


def _instruction(code: int, jump_true: int, jump_false: int, k: int) -> bytes:
    return struct.pack("=HBBI", code, jump_true, jump_false, k)


def filter_program(arch: str) -> bytes:
    """The filter: notify the runner of every refused call, ENOSYS for clone3, allow the rest."""
    table = TABLES[arch]
    body: list[tuple[int, int, int, int]] = []  # jump targets as labels, resolved below
    notify, allow, check_clone, check_unshare = "notify", "allow", "clone", "unshare"
    labels: dict[str, int] = {}
    pending: list[tuple[int, str | int, str | int]] = []

    def emit(code: int, k: int, on_true: str | int = 0, on_false: str | int = 0) -> None:
        pending.append((len(body), on_true, on_false))
        body.append((code, 0, 0, k))

    def label(name: str) -> None:
        labels[name] = len(body)

    emit(BPF_LD_W_ABS, OFFSET_ARCH)
    emit(BPF_JEQ_K, AUDIT_ARCH[arch], 0, notify)  # another ABI's numbers would bypass the table
    emit(BPF_LD_W_ABS, OFFSET_NR)
    if arch == "x86_64":
        emit(BPF_JGE_K, X32_SYSCALL_BIT, notify, 0)
    emit(BPF_JEQ_K, table.clone3, "enosys", 0)
    emit(BPF_JEQ_K, table.clone, check_clone, 0)
    emit(BPF_JEQ_K, table.unshare, check_unshare, 0)
    for number in sorted(table.always.values()):
        emit(BPF_JEQ_K, number, notify, 0)
    emit(BPF_RET_K, SECCOMP_RET_ALLOW)
    label(check_clone)
    emit(BPF_LD_W_ABS, OFFSET_ARG0_LOW)
    emit(BPF_JSET_K, CLONE_NAMESPACES, notify, allow)
    label(check_unshare)
    emit(BPF_LD_W_ABS, OFFSET_ARG0_LOW)
    emit(BPF_JSET_K, UNSHARE_NAMESPACES, notify, allow)
    label(allow)
    emit(BPF_RET_K, SECCOMP_RET_ALLOW)
    label("enosys")
    emit(BPF_RET_K, SECCOMP_RET_ERRNO | errno.ENOSYS)
    label(notify)
    emit(BPF_RET_K, SECCOMP_RET_USER_NOTIF)

    program = b""
    for (index, on_true, on_false), (code, _, _, k) in zip(pending, body):
        offsets = []
        for target in (on_true, on_false):
            offset = target if isinstance(target, int) else labels[target] - index - 1
            assert 0 <= offset < 256, "a BPF conditional jump reaches at most 255 instructions"
            offsets.append(offset)
        program += _instruction(code, offsets[0], offsets[1], k)
    return program


# Runs inside the sandbox as the sandbox uid, between setpriv and the command. Python's fds are not
# inherited across exec, and the listener is closed explicitly as well: the command must never hold it.
# ``_socket`` rather than ``socket``: the module's imports would cost the run several milliseconds.
INSTALLER = r"""
import _socket, ctypes, os, sys
PROGRAM = bytes.fromhex(sys.argv[1])
command = sys.argv[2:]
channel = _socket.socket(fileno=%(channel)d)
libc = ctypes.CDLL(None, use_errno=True)
libc.syscall.restype = ctypes.c_long
class Program(ctypes.Structure):
    _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_void_p)]
instructions = ctypes.create_string_buffer(PROGRAM, len(PROGRAM))
program = Program(len(PROGRAM) // 8, ctypes.addressof(instructions))
listener = -1
if libc.prctl(38, 1, 0, 0, 0) != 0:  # PR_SET_NO_NEW_PRIVS: already set, asserted here
    problem = "no_new_privs: " + os.strerror(ctypes.get_errno())
else:
    listener = libc.syscall(ctypes.c_long(%(seccomp)d), ctypes.c_long(1), ctypes.c_long(8), ctypes.byref(program))
    problem = "seccomp user notification: " + os.strerror(ctypes.get_errno()) if listener < 0 else ""
try:
    if listener >= 0:
        rights = [(_socket.SOL_SOCKET, _socket.SCM_RIGHTS, listener.to_bytes(4, sys.byteorder))]
        channel.sendmsg([b"listener"], rights)
        os.close(listener)
    else:
        channel.send(b"unavailable " + problem.encode())
finally:
    channel.close()
try:
    os.execvp(command[0], command)
except OSError as error:
    os.write(2, ("cannot start %%s: %%s\n" %% (command[0], error)).encode())
    os._exit(127)
"""


# The same installer in C: about 1 ms where the Python one costs a Python start (~10 ms of CPU, in the
# run's cgroup, so in its CPU time too). Built from this source by the host's compiler, never shipped.
INSTALLER_C = r"""
#include <errno.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <stdio.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <unistd.h>

static int hex(char c) { return c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10 : -1; }

int main(int argc, char **argv) {
    static struct sock_filter code[BPF_MAXINSNS];
    unsigned char *bytes = (unsigned char *)code;
    size_t length = argc > 2 ? strlen(argv[1]) : 0;
    char problem[200] = "";
    long listener = -1;
    if (argc < 3 || length %% 16 != 0 || length / 2 > sizeof(code)) {
        fputs("seccomp installer: usage: installer FILTER-HEX COMMAND...\n", stderr);
        return 127;
    }
    for (size_t i = 0; i < length; i += 2) {
        int high = hex(argv[1][i]), low = hex(argv[1][i + 1]);
        if (high < 0 || low < 0) {
            fputs("seccomp installer: the filter is not hex\n", stderr);
            return 127;
        }
        bytes[i / 2] = (unsigned char)(high << 4 | low);
    }
    struct sock_fprog program = {.len = (unsigned short)(length / 16), .filter = code};
    if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0) {
        snprintf(problem, sizeof problem, "unavailable no_new_privs: %%s", strerror(errno));
    } else {
        listener = syscall(SYS_seccomp, SECCOMP_SET_MODE_FILTER, SECCOMP_FILTER_FLAG_NEW_LISTENER, &program);
        if (listener < 0)
            snprintf(problem, sizeof problem, "unavailable seccomp user notification: %%s", strerror(errno));
    }
    if (listener >= 0) {
        char word[] = "listener";
        struct iovec part = {.iov_base = word, .iov_len = sizeof word - 1};
        union { char buffer[CMSG_SPACE(sizeof(int))]; struct cmsghdr align; } control;
        memset(&control, 0, sizeof control);
        struct msghdr message = {.msg_iov = &part, .msg_iovlen = 1, .msg_control = control.buffer,
                                 .msg_controllen = sizeof control.buffer};
        struct cmsghdr *header = CMSG_FIRSTHDR(&message);
        int descriptor = (int)listener;
        header->cmsg_level = SOL_SOCKET;
        header->cmsg_type = SCM_RIGHTS;
        header->cmsg_len = CMSG_LEN(sizeof(int));
        memcpy(CMSG_DATA(header), &descriptor, sizeof descriptor);
        sendmsg(%(channel)d, &message, MSG_NOSIGNAL);
        close(descriptor);
    } else {
        send(%(channel)d, problem, strlen(problem), MSG_NOSIGNAL);
    }
    close(%(channel)d);
    execvp(argv[2], argv + 2);
    fprintf(stderr, "cannot start %%s: %%s\n", argv[2], strerror(errno));
    return 127;
}
""" % {"channel": CHANNEL_FD}

_COMPILED: dict[str, Path | None] = {}
_COMPILE_LOCK = threading.Lock()


def installer_binary() -> Path | None:
    """The compiled installer, built once per process (None where no C compiler can build it: the
    Python installer is used then). Its directory is the runner's own, 0755: the sandbox uid reads it."""
    with _COMPILE_LOCK:
        if "path" in _COMPILED:
            path = _COMPILED["path"]
            if path is None or path.exists():
                return path
        _COMPILED["path"] = _compile()
        return _COMPILED["path"]


def _compile() -> Path | None:
    compiler = shutil.which("cc") or shutil.which("gcc")
    if compiler is None:
        return None
    try:
        directory = Path(tempfile.mkdtemp(prefix="speedproof-seccomp-", dir=os.environ.get("SPEEDPROOF_RUNTIME_DIR")))
        atexit.register(shutil.rmtree, directory, True)
        directory.chmod(0o755)
        source, binary = directory / "installer.c", directory / "installer"
        source.write_text(INSTALLER_C)
        subprocess.run([compiler, "-O2", "-o", str(binary), str(source)], capture_output=True, timeout=120, check=True)
        binary.chmod(0o755)
    except (OSError, subprocess.SubprocessError):
        return None  # the Python installer is used then
    return binary


def installer_command(arch: str, python: str | None, *, compiled: bool = False) -> list[str]:
    """The argv prefix that runs the installer before the command (append the command): the compiled
    one bound at ``INSTALLER_MOUNT`` where ``compiled``, else the Python one run by ``python``."""
    program = filter_program(arch).hex()
    if compiled:
        return [INSTALLER_MOUNT, program]
    assert python is not None
    source = INSTALLER % {"channel": CHANNEL_FD, "seccomp": SECCOMP_SYSCALL[arch]}
    return [python, "-I", "-S", "-c", source, program]


@dataclass
class PrivilegedCalls:
    """What one run's watch saw: ``observed`` False means the calls could not be seen (``problem`` says why)."""

    observed: bool
    counts: dict[str, int] = field(default_factory=dict)
    problem: str = ""
    exec_at: float | None = None  # when the installer handed over, just before it started the command

    @property
    def total(self) -> int:
        return sum(self.counts.values())


class PrivilegedCallWatch:
    """The runner's side: receives the listener, answers every notification with EPERM, counts it."""

    def __init__(self, arch: str) -> None:
        self.arch = arch
        self._table = TABLES[arch]
        self._runner_end, self._sandbox_end = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        self._stop_read, self._stop_write = os.pipe()
        self._counts: dict[str, int] = {}
        self._problem = "the sandbox's launcher never handed over the seccomp listener"
        self._observed = False
        self._exec_at: float | None = None
        self._thread: threading.Thread | None = None
        self._libc = ctypes.CDLL(None, use_errno=True)

    def sandbox_fd(self) -> int:
        """The end to hand to the sandbox (at ``CHANNEL_FD``); close it here once the sandbox started."""
        return self._sandbox_end.fileno()

    def started(self) -> None:
        self._sandbox_end.close()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def finish(self) -> PrivilegedCalls:
        """Stop (every sandboxed process has ended by now), answering what is still queued."""
        os.write(self._stop_write, b"x")
        if self._thread is not None:
            self._thread.join(timeout=5)
        self.close()
        return PrivilegedCalls(
            observed=self._observed,
            counts=dict(self._counts),
            problem="" if self._observed else self._problem,
            exec_at=self._exec_at,
        )

    def close(self) -> None:
        for end in (self._runner_end, self._sandbox_end):
            end.close()
        for fd in (self._stop_read, self._stop_write):
            try:
                os.close(fd)
            except OSError:
                pass
        self._stop_read = self._stop_write = -1

    def _serve(self) -> None:
        listener = self._receive_listener()
        if listener is None:
            return
        try:
            self._answer(listener)
        finally:
            os.close(listener)

    def _receive_listener(self) -> int | None:
        ready, _, _ = select.select([self._runner_end, self._stop_read], [], [])
        if self._runner_end not in ready:
            return None
        try:
            message, fds, _, _ = socket.recv_fds(self._runner_end, 512, 1)
        except OSError as error:
            self._problem = f"cannot receive the seccomp listener: {error}"
            return None
        if message == b"listener" and len(fds) == 1:
            self._exec_at = time.perf_counter()
            self._observed = True
            return fds[0]
        for fd in fds:
            os.close(fd)
        if message.startswith(b"unavailable "):
            self._problem = message[len(b"unavailable ") :].decode("utf-8", "replace")[:200]
        return None

    def _answer(self, listener: int) -> None:
        poller = select.poll()
        poller.register(listener, select.POLLIN)
        poller.register(self._stop_read, select.POLLIN)
        stopping = False
        while True:
            events = dict(poller.poll(0 if stopping else None))
            if events.get(listener, 0) & select.POLLIN:
                self._answer_one(listener)
                continue
            if stopping or events.get(listener, 0) & (select.POLLHUP | select.POLLERR):
                return  # nothing queued, and nobody left to make a call
            if self._stop_read in events:
                stopping = True

    def _answer_one(self, listener: int) -> None:
        notification = ctypes.create_string_buffer(NOTIF_SIZE)  # RECV wants it zeroed
        if self._libc.ioctl(listener, ctypes.c_ulong(SECCOMP_IOCTL_NOTIF_RECV), notification) != 0:
            return  # ENOENT: the caller was killed while it waited
        notification_id, _, _, number, arch = struct.unpack_from("=QIIiI", notification.raw)
        if arch != AUDIT_ARCH[self.arch] or (self.arch == "x86_64" and number & X32_SYSCALL_BIT):
            name = OTHER_ABI
        else:
            name = self._table.name_of(number)
        self._counts[name] = self._counts.get(name, 0) + 1
        response = struct.pack("=QqiI", notification_id, 0, -errno.EPERM, 0)
        self._libc.ioctl(listener, ctypes.c_ulong(SECCOMP_IOCTL_NOTIF_SEND), ctypes.c_char_p(response))
