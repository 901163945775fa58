"""A throwaway PostgreSQL server on 127.0.0.1: shared search studies end to end on one machine.

Used by the scale-out tests of ``edgekit search --storage`` and ``benchmarks/search_targets.py``;
also a quick way to try a shared study on a laptop. The cluster (initdb, trust authentication on
127.0.0.1 only) lives in a new temporary directory, removed when the server stops::

    with LocalPostgres() as pg:
        edgekit search m.keras --data digits -o DIR --storage {pg.url}

PostgreSQL refuses to run as root: as root the server runs as the ``postgres`` user the
distribution's package creates (``apt-get install postgresql``).
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import subprocess
import tempfile
import time

from loopback import free_port  # tools/loopback.py


def bin_dir():
    """The directory of initdb and pg_ctl (Debian keeps them out of PATH), or None."""
    found = shutil.which("initdb")
    if found:
        return os.path.dirname(os.path.realpath(found))
    dirs = sorted(
        glob.glob("/usr/lib/postgresql/*/bin/initdb"),
        key=lambda p: int(p.split("/")[4]) if p.split("/")[4].isdigit() else 0,
    )
    return os.path.dirname(dirs[-1]) if dirs else None


class LocalPostgres:
    def __init__(self, database: str = "edgekit"):
        # a fresh directory under the system's temporary directory (sticky, world-traversable):
        # the postgres user cannot enter a test's private tmp_path
        self.dir = tempfile.mkdtemp(prefix="edgekit-pg-", dir="/tmp" if os.path.isdir("/tmp") else None)
        self.port = free_port()
        self.database = database
        self.bin = bin_dir()
        self.user = "postgres" if os.geteuid() == 0 else pwd.getpwuid(os.geteuid()).pw_name
        self.url = f"postgresql://{self.user}@127.0.0.1:{self.port}/{database}"

    def _run(self, *argv, check=True):
        argv = [os.path.join(self.bin, argv[0]), *argv[1:]]
        if os.geteuid() == 0:
            argv = ["runuser", "-u", "postgres", "--", *argv]
        return subprocess.run(argv, capture_output=True, text=True, check=check, timeout=120)

    def __enter__(self):
        if self.bin is None:
            raise RuntimeError("PostgreSQL is not installed (apt-get install postgresql)")
        data = os.path.join(self.dir, "pgdata")
        os.makedirs(data, exist_ok=True)
        if os.geteuid() == 0:
            shutil.chown(self.dir, "postgres")
            shutil.chown(data, "postgres")
        self._run("initdb", "-D", data, "--auth=trust", "-U", self.user, "--no-sync")
        self._run(
            "pg_ctl",
            "-D",
            data,
            "-l",
            os.path.join(data, "server.log"),
            "-w",
            "-t",
            "60",
            "-o",
            f"-p {self.port} -k {data} -c listen_addresses=127.0.0.1 -c fsync=off",
            "start",
        )
        self.data = data
        self._run("createdb", "-h", "127.0.0.1", "-p", str(self.port), "-U", self.user, self.database)
        return self

    def fresh_database(self, name: str) -> str:
        """A new, empty database ``name`` on this server; its URL."""
        self._run("createdb", "-h", "127.0.0.1", "-p", str(self.port), "-U", self.user, name)
        return self.url.rsplit("/", 1)[0] + "/" + name

    def __exit__(self, *exc):
        self._run("pg_ctl", "-D", self.data, "-m", "immediate", "-w", "stop", check=False)
        time.sleep(0.1)
        shutil.rmtree(self.dir, ignore_errors=True)
