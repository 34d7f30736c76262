"""The contenders: how the benchmark runs Postbridge, fetchmail, getmail6 and the ceiling.

Each runner writes the tool's own configuration for one fresh ISP mailbox, runs the tool once
as a child process (measured by :func:`tests.bench.harness.measure`) and says where the mail
went. All of them read POP3S from the same Dovecot as ``localhost`` (the test certificate's
name; fetchmail matches DNS names only) and verify its certificate.

* Postbridge: ``python -m postbridge --config X poll --once``, as a user would run it, into
  its Maildir target or by SMTP to the office Postfix. Durable before DELE, as always.
* fetchmail (Debian's, C): ``--nokeep``, forwarding by SMTP to the same Postfix. Run as an
  unprivileged user: it warns as root (TESTBED.md).
* getmail6 (Debian's, Python): Maildir destination (it has no SMTP one), unprivileged too:
  it refuses Maildir delivery as root.
* the ceiling: ``ceiling.py``, a bare pipelined read that stores nothing and deletes nothing.
"""

from __future__ import annotations

import itertools
import os
import pwd
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from tests.bench.harness import Measured, measure
from tests.servers.common import ensure_mail_user

BENCH_USER = "pbbench"
FETCHMAIL = "/usr/bin/fetchmail"
GETMAIL = "/usr/bin/getmail"
CEILING = Path(__file__).with_name("ceiling.py")
REPO = Path(__file__).resolve().parents[2]
SECRET_NAME = "isp"


@dataclass(frozen=True)
class Isp:
    """One POP3S mailbox to empty: ``host`` is the certificate's name, ``port`` maybe a proxy."""

    host: str
    port: int
    user: str
    password: str
    ca_file: Path


@dataclass(frozen=True)
class Office:
    """The office Postfix (SMTP, no TLS, no login: the same for every tool)."""

    host: str
    port: int
    recipient: str


def bench_user() -> tuple[int, int]:
    """The unprivileged account fetchmail and getmail6 run as (created when missing)."""
    user = ensure_mail_user(BENCH_USER)
    return user.uid, user.gid


def chown_tree(path: Path, uid: int, gid: int) -> None:
    os.chown(path, uid, gid)
    for root, dirs, files in os.walk(path):
        for name in dirs + files:
            os.chown(os.path.join(root, name), uid, gid)


class Postbridge:
    """``postbridge poll --once`` in a child process; keyring and home kept in ``home``."""

    def __init__(self, home: Path, password: str, *, profile: Path | None = None) -> None:
        self.home = home
        self.profile = profile
        self._profiles = itertools.count()
        self.env = dict(os.environ)
        self.env.update(
            HOME=str(home),
            XDG_DATA_HOME=str(home / "data"),
            XDG_CONFIG_HOME=str(home / "config"),
            XDG_CACHE_HOME=str(home / "cache"),
            XDG_STATE_HOME=str(home / "state"),
            PYTHON_KEYRING_BACKEND="keyrings.alt.file.PlaintextKeyring",
        )
        self.env.pop("PYTHONPATH", None)
        # An installed Postbridge runs from compiled bytecode, as Debian's getmail6 does: never
        # let a PYTHONDONTWRITEBYTECODE in the caller's environment make every run compile
        # its sources again (~0.2 s). The cache lives beside the keyring, not in the tree.
        self.env.pop("PYTHONDONTWRITEBYTECODE", None)
        self.env["PYTHONPYCACHEPREFIX"] = str(home / "pycache")
        home.mkdir(parents=True, exist_ok=True)
        subprocess.run(
            [*self.command(), "secret", "set", SECRET_NAME],
            input=password + "\n",
            text=True,
            env=self.env,
            check=True,
            capture_output=True,
            timeout=60,
        )

    @staticmethod
    def command() -> list[str]:
        return [sys.executable, "-m", "postbridge"]

    def write_config(self, work: Path, isp: Isp, office: Office | None) -> Path:
        lines = [f'data_dir = "{work / "data"}"']
        if office is not None:
            lines += [
                "[delivery]",
                'kind = "smtp"',
                f'host = "{office.host}"',
                f"port = {office.port}",
                'security = "none"',
            ]
        lines += [
            "[[mailbox]]",
            f'name = "{SECRET_NAME}"',
            'kind = "user"',
            f'host = "{isp.host}"',
            f"port = {isp.port}",
            'security = "tls"',
            f'username = "{isp.user}"',
            'recipient = "alice@example.com"',
            f'ca_file = "{isp.ca_file}"',
        ]
        path = work / "postbridge.toml"
        path.write_text("\n".join(lines) + "\n")
        return path

    def run(self, work: Path, isp: Isp, office: Office | None) -> Measured:
        config = self.write_config(work, isp, office)
        command = [*self.command(), "--config", str(config), "poll", "--once"]
        if self.profile is not None:
            # uv run --with pyinstrument python tests/bench/collect.py --profile DIR
            self.profile.mkdir(parents=True, exist_ok=True)
            # Render later: pyinstrument --load FILE -r text [-p flat=true]
            report = self.profile / f"postbridge-{next(self._profiles):02d}.pyisession"
            command[1:1] = ["-m", "pyinstrument", "-r", "pyisession", "-o", str(report)]
        return measure(command, env=self.env, cwd=work)

    @staticmethod
    def maildir(work: Path) -> Path:
        return work / "data" / "Mail" / "alice@example.com"


def fetchmail_available() -> str | None:
    return (
        None
        if Path(FETCHMAIL).exists()
        else "fetchmail is not installed (apt-get install fetchmail)"
    )


def run_fetchmail(work: Path, isp: Isp, office: Office) -> Measured:
    uid, gid = bench_user()
    home = work / "fetchmail"
    home.mkdir()
    rc = home / "fetchmailrc"
    rc.write_text(
        "set no syslog\n"
        f"poll {isp.host} with protocol POP3 port {isp.port} timeout 120:\n"
        f'  user "{isp.user}" there with password "{isp.password}" '
        f'is "{office.recipient}" here\n'
        f'  options ssl sslcertck sslcertfile "{isp.ca_file}" nokeep\n'
        f'  smtphost "{office.host}/{office.port}"\n'
    )
    rc.chmod(0o600)
    chown_tree(home, uid, gid)
    env = {"HOME": str(home), "PATH": "/usr/bin:/bin", "LC_ALL": "C"}
    return measure(
        [FETCHMAIL, "-f", str(rc), "-i", str(home / "fetchids"), "--nokeep", "-N", "-s"],
        env=env,
        user=BENCH_USER,
        cwd=home,
    )


def getmail_available() -> str | None:
    return (
        None if Path(GETMAIL).exists() else "getmail6 is not installed (apt-get install getmail6)"
    )


def run_getmail(work: Path, isp: Isp) -> Measured:
    uid, gid = bench_user()
    home = work / "getmail"
    maildir = home / "Maildir"
    for sub in ("tmp", "new", "cur"):
        (maildir / sub).mkdir(parents=True)
    rc = home / "getmailrc"
    rc.write_text(
        "[retriever]\n"
        "type = SimplePOP3SSLRetriever\n"
        f"server = {isp.host}\n"
        f"port = {isp.port}\n"
        f"username = {isp.user}\n"
        f"password = {isp.password}\n"
        f"ca_certs = {isp.ca_file}\n"
        "[destination]\n"
        "type = Maildir\n"
        f"path = {maildir}/\n"
        "[options]\n"
        "verbose = 0\n"
        "read_all = true\n"
        "delete = true\n"
        "message_log_syslog = false\n"
    )
    chown_tree(home, uid, gid)
    env = {"HOME": str(home), "PATH": "/usr/bin:/bin", "LC_ALL": "C.UTF-8"}
    return measure(
        [GETMAIL, f"--rcfile={rc}", f"--getmaildir={home}"], env=env, user=BENCH_USER, cwd=home
    )


def getmail_maildir(work: Path) -> Path:
    return work / "getmail" / "Maildir"


def run_ceiling(isp: Isp) -> Measured:
    return measure(
        [sys.executable, str(CEILING), isp.host, str(isp.port), isp.user, str(isp.ca_file)],
        stdin=(isp.password + "\n").encode(),
        env={"PATH": os.environ.get("PATH", "/usr/bin:/bin")},
    )


def remove_work(work: Path) -> None:
    shutil.rmtree(work, ignore_errors=True)


def user_exists(name: str) -> bool:
    try:
        pwd.getpwnam(name)
    except KeyError:
        return False
    return True
