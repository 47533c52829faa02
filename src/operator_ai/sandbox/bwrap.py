"""The default sandbox: bubblewrap, as the lab user, in the lab's ops network namespace.

Each command gets a fresh sandbox that lives exactly as long as the command:

- its network is the lab's ops namespace (netns mode): the nodes are reachable, the host's
  address is fenced off by the lab's nft rule, and the host's 127.0.0.1 is another stack;
- its mounts are the lab's (supervisord's mount namespace), so the nodes' tmpfs data dirs
  are the real ones. Of those it sees only what a shell needs: the system directories
  (``/usr``, ``/etc`` and the links into ``/usr``) read-only, a fresh ``/dev`` and ``/proc``,
  a private size-capped tmpfs on ``/tmp`` and on ``/dev/shm``, and its own lab directory,
  the one place bound read-write (the lab's permissions still say where the lab user may
  write: ``conf/``, ``data/``, ``tmp/``, each capped in size). The rest of the root is an
  empty read-only tmpfs: no Operator home (config.toml with API keys, operator.db), no other
  lab or its sockets, no ``/home``, ``/root``, ``/run`` (host sockets: unix sockets ignore
  network namespaces), no ``/sys`` (the host's interfaces and their addresses). The lab's
  ``private/`` (supervisord's own socket, the fault record) is masked by an empty tmpfs;
  supervisorctl reaches supervisord only through the lab's door (`lab/door.py`);
- a new PID namespace with a fresh /proc, so no other process (nor its environment) is
  visible; new IPC and UTS namespaces; a new session, so no terminal to inject into;
- a clean environment: PATH, HOME=/tmp, LANG and TERM=dumb; nothing of ours, no API keys;
- the limits of :mod:`operator_ai.sandbox.limits`: rlimits on tasks (counted in the
  sandbox's own user namespace, so the nodes' threads do not count), address space, file
  size and core dumps; as root also a cgroup with pids.max and a memory cap; and output
  capped per stream.

Nothing survives the command. When it exits, bwrap's init exits and the kernel kills every
process left in the PID namespace; at the timeout we SIGKILL the cgroup and that init, with
the same effect. The cgroup is removed either way. If the Python process itself dies,
``setpriv --pdeathsig`` kills bwrap, and ``--die-with-parent`` its init. So a daemon cannot
be started from the sandbox: nodes are (re)started through supervisord, with `supervisorctl`.

The chain of one command, as root, is a few ``exec``s and bwrap's clones, about 15 ms in
all: ``sh`` (join the cgroup) → ``nsenter`` (ops network and lab mounts) → ``setpriv`` (lab
user, no groups) → ``bwrap`` → ``bash`` (set the rlimits, signal that the sandbox is up) →
``bash -c COMMAND``. A command that fails returns its exit code; a sandbox that cannot
start (no bwrap, the lab's namespace gone, a broken mount) raises :class:`SandboxError`.

Loopback mode (a lab started without root) is weaker and says so in :attr:`warning`: there
is no ops namespace, so the sandbox shares the host's network and can reach anything that
listens on 127.0.0.1; without root it also runs as the invoking user, with rlimits and no
cgroup.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import signal
import subprocess
from collections.abc import Sequence
from pathlib import Path

from operator_ai.core import NETNS
from operator_ai.errors import LabError, SandboxError
from operator_ai.lab import Lab, procs
from operator_ai.lab.state import CLEAN_PATH, WRITABLE, LabState, private_dir
from operator_ai.sandbox import BWRAP, DEFAULT_TIMEOUT, OUTPUT_CAP, CommandResult
from operator_ai.sandbox.capture import run_captured, unrunnable
from operator_ai.sandbox.limits import CommandCgroup, Limits, MiB

SYSTEM = tuple(Path(p) for p in ("/usr", "/etc", "/bin", "/sbin", "/lib", "/lib64", "/lib32"))
"""The host directories a shell needs, bound read-only (or, where they are links, linked)."""
HELPER_ENV = {"PATH": CLEAN_PATH, "LANG": "C.UTF-8"}
"""The environment of the helpers that set the sandbox up, outside it."""
SANDBOX_ENV = {"PATH": CLEAN_PATH, "HOME": "/tmp", "LANG": "C.UTF-8", "TERM": "dumb"}
KILL_WAIT = 5.0
"""Seconds to wait, at a timeout, for the sandbox's processes to be gone."""
ABOUT = """\
## Your shell

Each command runs in a fresh sandbox that ends with it:
- It has its own process namespace: `ps` shows only your command, not the nodes. supervisorctl
  is how you see and control them: `status` (each program's state and PID), `start`, `stop`,
  `restart`, and `tail NAME` (`tail -f`, `tail NAME stderr`) to read a program's output. It
  reaches supervisord through a door that allows these on this lab's programs, and nothing
  else.
- /tmp is private ({tmp} MiB) and empty again at the next command, and HOME=/tmp: nothing
  written there outlives the command. {tmp_path} is a scratch directory that keeps what you
  write between commands ({tmp_dir}).
- You can write only in {lab}'s conf/ ({conf}), tmp/ and each node's data dir under data/; no
  program can be run from any of them. The rest is read-only, and nothing of the host
  outside the system directories and this lab directory is visible.
- The platform's own records are not visible to you; the load generator's client-side stats
  are in {lab}/load.json.
"""
_FIRST = '{ulimit} && printf x >&{fd} && exec bash -c "$1" {fd}>&-'
"""The first thing run inside: set the rlimits, tell the parent the sandbox is up (a byte
on a pipe: bwrap's own status fds report before its mounts are done), run the command."""


class BwrapSandbox:
    """Commands run by bubblewrap as the lab user, in the lab's ops network namespace."""

    name = BWRAP

    def __init__(
        self,
        lab: Lab,
        home: Path,
        *,
        hide: Sequence[Path] = (),
        limits: Limits | None = None,
        bwrap: str = "bwrap",
    ) -> None:
        found = shutil.which(bwrap)
        if found is None:
            raise SandboxError(
                f"bubblewrap ({bwrap}) is not installed, so commands cannot be sandboxed",
                hint="Run `make setup` as root (it installs bubblewrap), or `apt-get install "
                "bubblewrap`; --unsafe-host runs commands on the host instead (unsafe).",
            )
        self.lab = lab
        self.limits = limits or Limits()
        self._bwrap = found
        state = self._load()
        self.isolation = state.mode
        """``netns`` (the lab's ops namespace) or ``loopback`` (the host's network)."""
        self._root = os.geteuid() == 0
        if state.mode == NETNS and not self._root:
            raise SandboxError(
                f"lab {state.name!r} runs in netns mode; its sandbox joins the lab's ops "
                "network namespace, which needs root",
                hint="Run the agent as root, like `operator lab up`.",
            )
        self.user = self._account(state)
        self.warning: str | None = None
        """What is weaker than the default isolation, for the CLI to show; None if nothing."""
        if state.mode != NETNS:
            self.warning = (
                f"lab {state.name!r} runs in loopback mode: the sandbox shares this host's "
                f"network (anything listening on 127.0.0.1 is reachable) and runs as "
                f"{self.user.pw_name}"
            )
        hidden = [home.resolve(), *(p.resolve() for p in hide)]
        self._args = _bwrap_args(
            lab.path.resolve(), self.limits, [p for p in hidden if _reachable(p, self.user)]
        )
        self._ulimit = self.limits.ulimit()
        cap = "{}B" if self._root else "no size cap"  # tmpfs mounts need root
        self.about = ABOUT.format(
            lab=lab.path.resolve(), tmp=self.limits.tmp_size // MiB,
            tmp_path=lab.path.resolve() / "tmp",
            conf=cap.format(WRITABLE["conf"]), tmp_dir=cap.format(WRITABLE["tmp"]),
        )  # fmt: skip
        """What the agent is told of the sandbox: facts, not advice."""

    def run(self, command: str, timeout: float = DEFAULT_TIMEOUT) -> CommandResult:
        if rejected := unrunnable(command):
            return rejected
        state = self._load()
        prefix = self._enter(state)
        cgroup = CommandCgroup.create(self.limits)
        try:
            ready_r, ready_w = os.pipe()
            first = _FIRST.format(ulimit=self._ulimit, fd=ready_w)
            argv = [
                *_join(cgroup), *prefix, *self._setpriv(), self._bwrap, *self._args,
                "--", "bash", "-c", first, "bash", command,
            ]  # fmt: skip

            def stop(proc: subprocess.Popen[bytes]) -> None:
                if proc.poll() is None:  # the deadline; otherwise the sandbox is gone already
                    if cgroup:
                        cgroup.kill()
                    _kill_and_wait(proc)

            finished = run_captured(
                argv, env=HELPER_ENV, timeout=timeout, stop=stop, cwd=Path("/"),
                pass_fds=(ready_w,), ready=ready_r, cap=OUTPUT_CAP,
            )  # fmt: skip
        finally:
            if cgroup:
                cgroup.remove()
        if not finished.ready:
            result = finished.result
            why = (result.stderr or result.stdout).strip()[-2000:] or f"exit {result.exit_code}"
            if result.timed_out:
                why = f"it did not start within {timeout:g} s"
            raise SandboxError(
                f"the sandbox for lab {state.name!r} did not start: {why}",
                hint="`operator lab status` checks the lab; `bwrap --ro-bind / / true` as the "
                "lab user checks that unprivileged user namespaces work.",
            )
        return finished.result

    # -- the pieces of the command line ---------------------------------------------------

    def _load(self) -> LabState:
        try:
            return self.lab.dir.load()
        except LabError as exc:
            raise SandboxError(str(exc), hint=exc.hint) from exc

    def _account(self, state: LabState) -> pwd.struct_passwd:
        if not self._root:
            return pwd.getpwuid(os.geteuid())
        try:
            account = pwd.getpwnam(state.user)
        except KeyError:
            raise SandboxError(
                f"the lab user {state.user!r} does not exist",
                hint="`make setup` (as root) creates it.",
            ) from None
        if account.pw_uid == 0:
            raise SandboxError(
                f"lab {state.name!r} runs as root; the sandbox refuses to",
                hint="Bring the lab up again with an unprivileged lab_user (operator-lab).",
            )
        return account

    def _enter(self, state: LabState) -> list[str]:
        """``nsenter`` into the lab's ops network and, while supervisord runs, its mounts."""
        if state.mode != NETNS:
            return []
        netns = Path("/run/netns", state.ops_netns or f"{state.prefix}-ops")
        if not netns.exists():
            raise SandboxError(
                f"the ops network namespace of lab {state.name!r} ({netns.name}) is gone",
                hint="`operator lab status` shows what is left; `operator lab down` and "
                "`operator lab up` rebuild the lab.",
            )
        argv = ["nsenter", f"--net={netns}"]
        if supervisord := procs.still(state.supervisor_pid, state.supervisor_started):
            argv.append(f"--mount=/proc/{supervisord.pid}/ns/mnt")
        return [*argv, "--"]

    def _setpriv(self) -> list[str]:
        argv = ["setpriv"]
        if self._root:
            argv += [f"--reuid={self.user.pw_uid}", f"--regid={self.user.pw_gid}",
                     "--clear-groups"]  # fmt: skip
        # Set last, because a change of uid clears it: bwrap dies if we do.
        return [*argv, "--pdeathsig", "KILL", "--"]


def sandbox(lab: Lab, home: Path, hide: Sequence[Path]) -> BwrapSandbox:
    """The ``bwrap`` SandboxFactory."""
    return BwrapSandbox(lab, home, hide=hide)


def _kill_and_wait(proc: subprocess.Popen[bytes]) -> None:
    """SIGKILL the sandbox's init, and wait for bwrap to see it die.

    The init exits only once the kernel has killed and reaped every process in its PID
    namespace, and bwrap reaps the init, so when bwrap exits nothing is left, not even a
    zombie. (Killing bwrap first would orphan the init to the host's PID 1.) Before bwrap
    has cloned the init, or if it does not exit, bwrap itself is killed."""
    init = next(iter(procs.tree(proc.pid)[1:]), None)  # bwrap's only child; not reaped yet
    if init is not None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(init, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=KILL_WAIT)
    if proc.poll() is None:
        proc.kill()
        proc.wait()


def _join(cgroup: CommandCgroup | None) -> list[str]:
    """A shell that moves itself into the cgroup, then execs the rest of the command line:
    everything the command starts is in the cgroup from its first fork."""
    if cgroup is None:
        return []
    files = [str(f) for f in cgroup.procs_files]
    joins = "".join(f'echo $$ > "${i}" || exit 125; ' for i in range(1, len(files) + 1))
    return ["/bin/sh", "-c", f'{joins}shift {len(files)}; exec "$@"', "sh", *files]


def _reachable(path: Path, account: pwd.struct_passwd) -> bool:
    """Whether ``account``, with no groups (as the sandbox runs), can reach ``path``: only
    then is there anything to hide, and only then can bwrap mount over it."""
    try:
        path.stat()
        for folder in path.parents:  # each must let the account through (x)
            info = folder.stat()
            shift = 6 if info.st_uid == account.pw_uid else 0
            if not (info.st_mode >> shift) & 1:
                return False
    except OSError:
        return False
    return True


def _bwrap_args(lab: Path, limits: Limits, hide: Sequence[Path] = ()) -> list[str]:
    """bwrap's options, from the system directories down to the clean environment."""
    args = [
        "--unshare-pid", "--unshare-ipc", "--unshare-uts", "--die-with-parent", "--new-session",
    ]  # fmt: skip
    for path in SYSTEM:
        if path.is_symlink():
            args += ["--symlink", os.readlink(path), str(path)]
        elif path.is_dir():
            args += ["--ro-bind", str(path), str(path)]
    args += [
        "--dev", "/dev", "--proc", "/proc",
        "--size", str(limits.tmp_size), "--tmpfs", "/tmp",
        "--size", str(limits.shm_size), "--tmpfs", "/dev/shm",
        "--bind", str(lab), str(lab),
        "--tmpfs", str(private_dir(lab)), "--remount-ro", str(private_dir(lab)),
    ]  # fmt: skip
    for path in hide:  # only what lies inside a bound system directory can be seen at all
        if not any(path.is_relative_to(s) for s in SYSTEM if not s.is_symlink()):
            continue
        if path.is_dir():
            args += ["--tmpfs", str(path), "--remount-ro", str(path)]
        elif path.is_file():
            args += ["--ro-bind", "/dev/null", str(path)]
    args += ["--remount-ro", "/", "--chdir", str(lab), "--clearenv"]
    for key, value in SANDBOX_ENV.items():
        args += ["--setenv", key, value]
    return args
