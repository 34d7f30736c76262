"""A private Dovecot playing the ISP (POP3, POP3S, STLS) and the office's LMTP server.

Postbridge's POP3 client and LMTP delivery are tested against the real thing: this module writes
a complete ``dovecot.conf`` of its own (no include of /etc/dovecot), keeps every runtime file
in a temporary directory and listens on free loopback ports only, so it never clashes with a
system Dovecot. Messages are dropped straight into Maildirs, which is fast enough to fill a
mailbox with thousands of messages for benchmarks.
"""

from __future__ import annotations

import itertools
import os
import re
import subprocess
import time
from collections.abc import Iterable
from pathlib import Path

import psutil

from tests.servers.certs import Certificates
from tests.servers.common import (
    LOOPBACK,
    START_TIMEOUT,
    STOP_TIMEOUT,
    ServerError,
    ensure_mail_user,
    free_port,
    kill_group,
    maildir_files,
    make_root,
    port_open,
    process_tree,
    reap,
    remove_tree,
    tail,
)

DOVECOT = "/usr/sbin/dovecot"

_USER_NAME = re.compile(r"^[a-z0-9][a-z0-9._+-]*$")

_CONFIG = """\
# Written by tests/servers/dovecot.py for one test run; nothing here is read from /etc/dovecot.
protocols = pop3 lmtp
listen = {host}
base_dir = {root}/run
state_dir = {root}/state
instance_name = pbtest-{port_tag}
log_path = {log_file}
info_log_path = {log_file}
debug_log_path = {log_file}
auth_verbose = yes
auth_debug = no
mail_debug = no
shutdown_clients = yes

# The login processes and internal services keep Debian's users (created by the packages).
default_login_user = dovenull
default_internal_user = dovecot

# All mail belongs to one dedicated system user; nothing else may log in.
first_valid_uid = {uid}
last_valid_uid = {uid}
first_valid_gid = {gid}
last_valid_gid = {gid}
mail_uid = {uid}
mail_gid = {gid}

# %n: a login or LMTP recipient "alice@example.com" is the same user as "alice".
mail_location = maildir:{root}/mail/%n/Maildir
# Test mail need not survive a power cut; skipping fsync keeps LMTP benchmarks about the client.
mail_fsync = never

ssl = yes
ssl_cert = <{cert_file}
ssl_key = <{key_file}
ssl_min_protocol = TLSv1.2

# Plaintext USER/PASS on the plain port is what many ISPs still allow; the tests need it.
disable_plaintext_auth = no
# APOP and CRAM-MD5 need the plaintext password, hence {{PLAIN}} in the passwd-files.
auth_mechanisms = plain login apop cram-md5
# No auth cache: add_user() must take effect on the next login.
auth_cache_size = 0
# Failed logins are answered at once (the default delays 2 s, which slows down failure tests).
auth_failure_delay = 0

# One passwd-file per user: Dovecot stats a passwd-file at most once per second, so a user
# added to a shared file could stay unknown for up to a second; a file that did not exist is
# looked up afresh every time.
passdb {{
  driver = passwd-file
  args = scheme=PLAIN username_format=%n {passwd_dir}/%n
}}
userdb {{
  driver = passwd-file
  args = username_format=%n {passwd_dir}/%n
  default_fields = uid={uid} gid={gid} home={root}/mail/%n
}}

# Stable, readable UIDLs (UID and UIDVALIDITY in hex), as some ISPs send.
pop3_uidl_format = %08Xu%08Xv
pop3_no_flag_updates = yes

lmtp_save_to_detail_mailbox = no
recipient_delimiter =
postmaster_address = postmaster@example.com
hostname = localhost

# Keep the default listener names: a listener with a new name would leave the default :110/:995
# listener in place.
service pop3-login {{
  inet_listener pop3 {{
    address = {host}
    port = {pop3_port}
  }}
  inet_listener pop3s {{
    address = {host}
    port = {pop3s_port}
    ssl = yes
  }}
}}
service lmtp {{
  inet_listener lmtp {{
    address = {host}
    port = {lmtp_port}
  }}
}}
service imap-login {{
  inet_listener imap {{
    port = 0
  }}
  inet_listener imaps {{
    port = 0
  }}
}}
service doveadm {{
  inet_listener {{
    port = 0
  }}
}}
"""


class Dovecot:
    """One private Dovecot master with POP3 (STLS), POP3S and LMTP on loopback ports.

    Users are local parts ("alice"); a POP3 login as "alice" or "alice@anything" and an LMTP
    recipient "alice@example.com" all reach ``ROOT/mail/alice/Maildir``.
    """

    def __init__(self, *, certificates: Certificates) -> None:
        self.host = LOOPBACK
        self.ca_file = certificates.ca_file
        self._certs = certificates
        self._mail_user = ensure_mail_user()
        self.root = make_root("pb-dovecot-")
        self.log_file = self.root / "dovecot.log"
        self.config_file = self.root / "dovecot.conf"
        self._passwd_dir = self.root / "passwd.d"
        self._process: subprocess.Popen[bytes] | None = None
        self._counter = itertools.count()
        self._unique = f"P{os.getpid()}"
        self.pop3_port = 0
        self.pop3s_port = 0
        self.lmtp_port = 0
        for sub in ("run", "state", "mail", "passwd.d"):
            (self.root / sub).mkdir(mode=0o755)
        os.chown(self.root / "mail", self._mail_user.uid, self._mail_user.gid)

    # -- lifecycle ----------------------------------------------------------------------------

    def start(self) -> None:
        """Start the master on fresh ports and wait until all three listeners answer."""
        last_error: ServerError | None = None
        for _attempt in range(3):  # a port may be taken between free_port() and bind()
            try:
                self._start_once()
                return
            except ServerError as exc:
                last_error = exc
                self._kill()
        assert last_error is not None
        raise last_error

    def _start_once(self) -> None:
        self.pop3_port, self.pop3s_port, self.lmtp_port = free_port(), free_port(), free_port()
        self.config_file.write_text(
            _CONFIG.format(
                host=self.host,
                root=self.root,
                port_tag=self.pop3_port,
                log_file=self.log_file,
                uid=self._mail_user.uid,
                gid=self._mail_user.gid,
                cert_file=self._certs.cert_file,
                key_file=self._certs.key_file,
                passwd_dir=self._passwd_dir,
                pop3_port=self.pop3_port,
                pop3s_port=self.pop3s_port,
                lmtp_port=self.lmtp_port,
            )
        )
        with self.log_file.open("ab") as log:
            # -F: stay in the foreground as our child, in a process group of its own, so that
            # stop() can always find (and if need be kill) every process dovecot started.
            self._process = subprocess.Popen(
                [DOVECOT, "-F", "-c", str(self.config_file)],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
                start_new_session=True,
            )
        ports = (self.pop3_port, self.pop3s_port, self.lmtp_port)
        deadline = time.monotonic() + START_TIMEOUT
        while not all(port_open(port) for port in ports):
            if self._process.poll() is not None:
                raise ServerError(
                    f"dovecot exited with {self._process.returncode}:\n{tail(self.log_file)}"
                )
            if time.monotonic() > deadline:
                raise ServerError(f"dovecot did not listen on {ports}:\n{tail(self.log_file)}")
            time.sleep(0.01)

    def stop(self) -> None:
        """Stop the master and every child; idempotent. Removes the temp directory."""
        self._kill()
        remove_tree(self.root)

    def _kill(self) -> None:
        process, self._process = self._process, None
        if process is None:
            return
        # No graceful shutdown: SIGTERM costs the master about 1.1 s (6 s while it is still
        # starting its services), and nothing of value outlives the test (deliveries are
        # complete once LMTP has answered, and the directory is removed). SIGKILL to the
        # process group reaches every child, which all stay in the master's group; the
        # snapshot of the tree catches any that might not.
        tree = process_tree(process.pid)
        kill_group(process.pid)
        try:
            process.wait(timeout=STOP_TIMEOUT)
        except subprocess.TimeoutExpired as exc:
            raise ServerError(f"dovecot master {process.pid} survived SIGKILL") from exc
        reap(tree, timeout=STOP_TIMEOUT)

    def processes(self) -> list[psutil.Process]:
        """The master and its children right now ([] when stopped); for leak checks."""
        return [] if self._process is None else process_tree(self._process.pid)

    def __enter__(self) -> Dovecot:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    # -- users ----------------------------------------------------------------------------------

    def add_user(self, name: str, password: str) -> None:
        """Add a POP3 user (or change the password) and create the Maildir; works while running.

        A new user can log in at once. A changed password is seen by Dovecot within a second
        (it re-reads a known passwd-file at most once per second), so this waits for that.
        """
        local = _local_part(name)
        if ":" in password or "\n" in password or not password:
            raise ValueError("passwd-file passwords must be non-empty without ':' or newlines")
        path = self._passwd_dir / local
        old_mtime = int(path.stat().st_mtime) if path.exists() else None
        tmp = path.with_name(f".{local}.tmp")
        tmp.write_text(f"{local}:{{PLAIN}}{password}::::::\n")
        # Readable by the auth process (user dovecot); these are throw-away test passwords.
        tmp.chmod(0o644)
        if old_mtime is not None:
            # Dovecot compares whole-second mtimes (and sizes): make the change visible.
            stamp = max(int(time.time()), old_mtime + 1)
            os.utime(tmp, (stamp, stamp))
        os.replace(tmp, path)
        self._make_maildir(local)
        if old_mtime is not None:
            time.sleep(1.05)

    def maildir(self, user: str) -> Path:
        return self.root / "mail" / _local_part(user) / "Maildir"

    def _make_maildir(self, local: str) -> None:
        uid, gid = self._mail_user.uid, self._mail_user.gid
        home = self.root / "mail" / local
        maildir = home / "Maildir"
        for path in (home, maildir, maildir / "tmp", maildir / "new", maildir / "cur"):
            path.mkdir(mode=0o700, exist_ok=True)
            os.chown(path, uid, gid)

    # -- messages -------------------------------------------------------------------------------

    def add_message(self, user: str, data: bytes) -> None:
        """Drop one message into the user's Maildir ``new/``, as a delivery agent would.

        Written to ``tmp/`` and renamed, with ``,S=`` (physical) and ``,W=`` (CRLF) sizes in the
        name so that Dovecot answers STAT/LIST without opening each file.
        """
        self.add_messages(user, (data,))

    def add_messages(self, user: str, messages: Iterable[bytes]) -> None:
        maildir = self.maildir(user)
        if not (maildir / "new").is_dir():
            raise ServerError(f"no such user {user!r}: call add_user() first")
        uid, gid = self._mail_user.uid, self._mail_user.gid
        tmp_dir, new_dir = maildir / "tmp", maildir / "new"
        for data in messages:
            size = len(data)
            vsize = size + data.count(b"\n") - data.count(b"\r\n")
            # Dovecot orders new mail by the seconds, then numerically by the M field, so a
            # padded counter there keeps POP3 numbering and name order equal to insertion order.
            name = (
                f"{int(time.time())}.M{next(self._counter):08d}{self._unique}.pbtest"
                f",S={size},W={vsize}"
            )
            tmp_path = tmp_dir / name
            with open(tmp_path, "xb") as file:
                file.write(data)
                os.fchown(file.fileno(), uid, gid)
            os.rename(tmp_path, new_dir / name)

    def messages(self, user: str) -> list[bytes]:
        """Every message in the user's ``new/`` and ``cur/``, ordered by file name."""
        return [path.read_bytes() for path in maildir_files(self.maildir(user))]

    def count(self, user: str) -> int:
        return len(maildir_files(self.maildir(user)))

    def log_text(self) -> str:
        try:
            return self.log_file.read_text(errors="replace")
        except OSError:
            return ""


def _local_part(name: str) -> str:
    local = name.split("@", 1)[0].lower()
    if not _USER_NAME.match(local):
        raise ValueError(f"unsupported test user name {name!r}")
    return local
