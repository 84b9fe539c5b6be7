"""A Debian bookworm booted by a real systemd in a container, for the tests that need one.

The root file system comes from `debootstrap --variant=minbase` (about a minute) and is cached outside the
repository, under CACHE/rootfs-<hash of suite and packages>: built in a temporary directory and renamed into
place, so a build that was killed never leaves half a root behind. Each container boots an overlay of it
(what a test writes goes to its own temp dir, and survives a reboot of the container), with
`systemd-nspawn --boot --console=pipe --register=no --keep-unit`: PID 1 here is not systemd, so nspawn can
neither register the machine nor make a scope for it. It shares the host's network, so whatever listens
inside must use ports that are free on the host. Commands run inside with `nsenter -a` in a clean
environment, as root.
"""
import fcntl
import hashlib
import os
import re
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

from conftest import poll

SUITE = "bookworm"
PACKAGES = ("systemd", "systemd-sysv", "dbus", "python3", "python3-venv", "ca-certificates")
CACHE = Path(os.environ.get("IRISFLOW_TEST_CACHE", "/var/cache/irisflow-test"))
PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
REBOOTED = 133  # nspawn's exit status when the container rebooted (systemd-nspawn@.service restarts on it)
# How nspawn says that the kernel will not give it the namespaces or mounts a container needs.
KERNEL_REFUSED = re.compile(r"Operation not permitted|not supported|Function not implemented|"
                            r"Failed to (create|clone|mount|unshare)", re.I)


def mirror():
    """The Debian mirror apt uses on this machine (deb822 sources), else deb.debian.org."""
    for sources in sorted(Path("/etc/apt/sources.list.d").glob("*.sources")):
        for uri in re.findall(r"^URIs:\s*(\S+)", sources.read_text(), re.M):
            if uri.rstrip("/").endswith("/debian"):
                return uri
    return "http://deb.debian.org/debian"


def cached_root():
    """The cached root file system, built first if there is none (a lock keeps two runs from both building)."""
    key = hashlib.sha256(f"{SUITE} {' '.join(PACKAGES)}".encode()).hexdigest()[:16]
    root = CACHE / f"rootfs-{key}"
    if root.is_dir():
        return root
    CACHE.mkdir(parents=True, exist_ok=True)
    with open(CACHE / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if root.is_dir():
            return root
        for stale in CACHE.glob(".rootfs-*"):  # left by a killed build: none runs while the lock is held
            shutil.rmtree(stale, ignore_errors=True)
        building = Path(tempfile.mkdtemp(prefix=f".rootfs-{key}-", dir=CACHE))
        try:
            building.chmod(0o755)  # it becomes the container's /
            result = subprocess.run(["debootstrap", "--variant=minbase", f"--include={','.join(PACKAGES)}", SUITE,
                                     str(building), mirror()], capture_output=True, text=True, timeout=900)
            if result.returncode != 0:
                pytest.fail(f"debootstrap failed ({result.returncode}): {(result.stdout + result.stderr)[-2000:]}")
            building.rename(root)
        finally:
            shutil.rmtree(building, ignore_errors=True)
    return root


class Container:
    """An overlay of the cached root under `workdir`, booted; `terminate()` ends it and removes everything."""

    def __init__(self, workdir):
        self.workdir = workdir
        self.root = workdir / "root"
        for name in ("upper", "work", "root"):
            (workdir / name).mkdir()
        lower = cached_root()
        subprocess.run(["mount", "-t", "overlay", "overlay", "-o",
                        f"lowerdir={lower},upperdir={workdir / 'upper'},workdir={workdir / 'work'}", str(self.root)],
                       check=True, capture_output=True, timeout=60)
        self.nspawn = None
        self.pid = None

    def boot(self, timeout=120):
        """Start the container and wait until its systemd says the system is running."""
        with open(self.workdir / "nspawn.log", "a") as log:
            # setpriv: should the test process die without cleaning up, nspawn gets SIGTERM and halts the container.
            self.nspawn = subprocess.Popen(
                ["setpriv", "--pdeathsig", "TERM", "--", "systemd-nspawn", "-D", str(self.root), "--boot",
                 "--console=pipe", "--register=no", "--keep-unit", "--machine=irisflow-test"],
                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT)
        self.pid = poll("the container's systemd", self._init_pid, timeout)
        state = poll("the container's boot", self._system_state, timeout)
        assert state == "running", f"{state}: {self.run('systemctl', '--failed', '--no-pager', check=False).stdout}"

    def _system_state(self):
        """What `systemctl is-system-running --wait` says once systemd has set itself up, else None: PID 1 is
        named systemd a moment before it has made /run/systemd/system, and until then systemctl says "offline"."""
        state = self.run("systemctl", "is-system-running", "--wait", check=False).stdout.strip()
        return None if state in ("", "offline") else state

    def _init_pid(self):
        """The container's PID 1 as the host sees it: nspawn's child, once it is systemd."""
        if self.nspawn.poll() is not None:
            said = (self.workdir / "nspawn.log").read_text().strip()
            if KERNEL_REFUSED.search(said):
                pytest.skip(f"the kernel refuses to boot a container: {said.splitlines()[-1]}")
            pytest.fail(f"systemd-nspawn exited with {self.nspawn.returncode}: {said[-2000:]}")
        try:
            for task in Path(f"/proc/{self.nspawn.pid}/task").iterdir():
                for child in (task / "children").read_text().split():
                    if Path(f"/proc/{child}/comm").read_text().strip() == "systemd":
                        return int(child)
        except FileNotFoundError:  # a process that ended while being looked at
            pass
        return None

    def run(self, *argv, check=True, timeout=300, input=None):
        """`argv` inside the container as root, in a clean environment; the CompletedProcess."""
        result = subprocess.run(["nsenter", "-t", str(self.pid), "-a", "env", "-i", f"PATH={PATH}", "HOME=/root",
                                 "LANG=C.UTF-8", *argv], capture_output=True, text=True, timeout=timeout, input=input)
        if check:
            assert result.returncode == 0, f"{' '.join(argv)}: {result.returncode}\n{result.stdout}{result.stderr}"
        return result

    def out(self, *argv, **kwargs):
        """What `argv` prints, stripped, once it succeeded."""
        return self.run(*argv, **kwargs).stdout.strip()

    def reboot(self, timeout=120):
        """`systemctl reboot` inside; nspawn then exits with 133, and is started again, as
        systemd-nspawn@.service would."""
        self.run("systemctl", "reboot", check=False)
        assert self.nspawn.wait(timeout) == REBOOTED, (self.workdir / "nspawn.log").read_text()[-2000:]
        self.boot(timeout)

    def terminate(self):
        """Halt the container (nspawn's SIGTERM), or kill its PID 1, which ends every process in it; then
        unmount and remove the overlay. Safe to call at any stage, and more than once."""
        if self.nspawn is not None and self.nspawn.poll() is None:
            self.nspawn.send_signal(signal.SIGTERM)
            try:
                self.nspawn.wait(60)
            except subprocess.TimeoutExpired:
                if self.pid is not None:
                    os.kill(self.pid, signal.SIGKILL)  # in its own PID namespace: the kernel kills the rest
                self.nspawn.kill()
                self.nspawn.wait(60)
        for attempt in range(10):
            if subprocess.run(["mountpoint", "-q", str(self.root)]).returncode != 0:
                break
            if subprocess.run(["umount", str(self.root)], capture_output=True).returncode == 0:
                break
            time.sleep(1)
        else:
            subprocess.run(["umount", "--lazy", str(self.root)], capture_output=True)
        shutil.rmtree(self.workdir, ignore_errors=True)
