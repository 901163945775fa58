"""A throwaway OpenSSH server on 127.0.0.1: remote mode end to end without a board.

Used by the SSH tests and ``benchmarks/harness_targets.py``; also handy to try ``edgekit bench
--host`` on a laptop. Everything (host key, client key, configs, log) lives in one directory::

    with LoopbackSSHD(workdir) as server:
        edgekit bench m.tflite --host {server.host} --ssh-config {server.client_config}

The client config also defines the alias ``wrongkey`` (same server, a key it does not accept),
to exercise authentication failures.
"""

from __future__ import annotations

import getpass
import os
import shutil
import socket
import subprocess
import time


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def sshd_path():
    return shutil.which("sshd") or ("/usr/sbin/sshd" if os.path.exists("/usr/sbin/sshd") else None)


class LoopbackSSHD:
    def __init__(self, workdir: str):
        self.dir = os.path.abspath(workdir)
        self.port = free_port()
        self.user = getpass.getuser()
        self.host = f"{self.user}@127.0.0.1:{self.port}"
        self.client_config = os.path.join(self.dir, "ssh_config")
        self.proc = None

    def _keygen(self, name: str) -> str:
        path = os.path.join(self.dir, name)
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", path], check=True)
        return path

    def start(self) -> "LoopbackSSHD":
        sshd = sshd_path()
        if not sshd or not shutil.which("ssh"):
            raise RuntimeError("needs openssh-server and openssh-client (apt-get install openssh-server)")
        os.makedirs(self.dir, exist_ok=True)
        d = self.dir
        host_key, user_key, other_key = (self._keygen(n) for n in ("host_key", "user_key", "other_key"))
        shutil.copy(user_key + ".pub", os.path.join(d, "authorized_keys"))
        with open(os.path.join(d, "sshd_config"), "w") as f:
            f.write(
                f"Port {self.port}\nListenAddress 127.0.0.1\nHostKey {host_key}\n"
                f"AuthorizedKeysFile {d}/authorized_keys\nPidFile {d}/sshd.pid\nStrictModes no\n"
                "PasswordAuthentication no\nKbdInteractiveAuthentication no\nUsePAM no\n"
                "PermitRootLogin prohibit-password\nMaxSessions 20\nMaxStartups 50\n"
            )
        common = (
            f"  Port {self.port}\n  IdentitiesOnly yes\n  UserKnownHostsFile {d}/known_hosts\n"
            "  StrictHostKeyChecking accept-new\n  LogLevel ERROR\n"
        )
        with open(self.client_config, "w") as f:
            f.write(
                f"Host 127.0.0.1 localhost\n  IdentityFile {user_key}\n{common}"
                f"Host wrongkey\n  HostName 127.0.0.1\n  IdentityFile {other_key}\n{common}"
            )
        if os.geteuid() == 0:
            os.makedirs("/run/sshd", exist_ok=True)  # the privilege-separation directory
        self._log = open(os.path.join(d, "sshd.log"), "w")
        self.proc = subprocess.Popen([sshd, "-D", "-e", "-f", os.path.join(d, "sshd_config")], stderr=self._log)
        for _ in range(200):
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", self.port)) == 0:
                    return self
            if self.proc.poll() is not None:
                break
            time.sleep(0.05)
        self.stop()
        with open(os.path.join(d, "sshd.log")) as f:
            raise RuntimeError("sshd did not start: " + " ".join(f.read().split())[-300:])

    def descendants(self) -> list:
        """(pid, command line) of every process this server started, and theirs: its sessions and
        what they run (read from /proc; nothing else on the machine is listed)."""
        parent = {}
        for entry in os.listdir("/proc"):
            if entry.isdigit():
                try:
                    with open(f"/proc/{entry}/stat") as f:
                        parent[int(entry)] = int(f.read().rpartition(")")[2].split()[1])
                except (OSError, IndexError, ValueError):
                    continue  # gone meanwhile
        mine, grew = {self.proc.pid}, True
        while grew:
            new = {pid for pid, ppid in parent.items() if ppid in mine and pid not in mine}
            mine |= new
            grew = bool(new)
        found = []
        for pid in sorted(mine - {self.proc.pid}):
            try:
                with open(f"/proc/{pid}/cmdline", "rb") as f:
                    found.append((pid, f.read().replace(b"\0", b" ").decode(errors="replace").strip()))
            except OSError:
                continue
        return found

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(timeout=10)
        if getattr(self, "_log", None):
            self._log.close()

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()
