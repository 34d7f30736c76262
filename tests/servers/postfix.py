"""A private Postfix for the tests: the office mail server, and an ISP that holds mail for ETRN.

Postbridge hands mail to the office server by SMTP, so its delivery code is tested against a
real Postfix: own ``main.cf``/``master.cf`` built by :class:`PostfixConfig`, queue and logs in a
temporary directory, smtpd on a free loopback port, no chroot, no DNS, no syslog. A role is a
function that adds parameters to a config (:func:`office_role`); an ISP role (relay_domains,
fast_flush_domains, defer_transports for ETRN) can be added beside it without touching the
instance plumbing in :class:`PostfixInstance`.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import re
import signal
import smtplib
import time
from dataclasses import dataclass, field
from pathlib import Path

import psutil

from tests.servers.certs import Certificates
from tests.servers.common import (
    LOOPBACK,
    START_TIMEOUT,
    STOP_TIMEOUT,
    MailUser,
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
    run,
    tail,
    wait_until,
)

POSTFIX = "/usr/sbin/postfix"
POSTMAP = "/usr/sbin/postmap"
POSTSUPER = "/usr/sbin/postsuper"

# The queue subdirectories that hold messages (see qmgr(8)); empty means nothing in flight.
_QUEUES = ("maildrop", "incoming", "active", "deferred", "hold")

_ADDRESS = re.compile(r"^[a-z0-9][a-z0-9._+-]*@[a-z0-9][a-z0-9.-]*$")

# master.cf services every instance runs. No chroot anywhere (column 5 = n): the chroot jail
# would need copies of /etc files inside the temp queue directory.
_BASE_SERVICES = """\
pickup    unix  n       -       n       60      1       pickup
cleanup   unix  n       -       n       -       0       cleanup
qmgr      unix  n       -       n       300     1       qmgr
tlsmgr    unix  -       -       n       1000?   1       tlsmgr
rewrite   unix  -       -       n       -       -       trivial-rewrite
bounce    unix  -       -       n       -       0       bounce
defer     unix  -       -       n       -       0       bounce
trace     unix  -       -       n       -       0       bounce
verify    unix  -       -       n       -       1       verify
flush     unix  n       -       n       1000?   0       flush
proxymap  unix  -       -       n       -       -       proxymap
proxywrite unix -       -       n       -       1       proxymap
smtp      unix  -       -       n       -       -       smtp
relay     unix  -       -       n       -       -       smtp
showq     unix  n       -       n       -       -       showq
error     unix  -       -       n       -       -       error
retry     unix  -       -       n       -       -       error
discard   unix  -       -       n       -       -       discard
local     unix  -       n       n       -       -       local
lmtp      unix  -       -       n       -       -       lmtp
anvil     unix  -       -       n       -       1       anvil
scache    unix  -       -       n       -       1       scache
postlog   unix-dgram n  -       n       -       1       postlogd
"""


@dataclass
class PostfixConfig:
    """main.cf parameters and master.cf lines of one instance; roles add to both."""

    root: Path
    smtp_port: int
    main: dict[str, str] = field(default_factory=dict)
    services: list[str] = field(default_factory=list)

    @property
    def config_dir(self) -> Path:
        return self.root / "etc"

    def map_path(self, name: str) -> Path:
        return self.config_dir / name

    def render_main(self) -> str:
        lines = ["# Written by tests/servers/postfix.py; nothing here comes from /etc/postfix."]
        lines += [f"{key} = {value}" for key, value in self.main.items()]
        return "\n".join(lines) + "\n"

    def render_master(self) -> str:
        return _BASE_SERVICES + "".join(line + "\n" for line in self.services)


def base_config(
    *, root: Path, smtp_port: int, certificates: Certificates, hostname: str
) -> PostfixConfig:
    """Everything an instance needs before it has a role: paths, loopback, no DNS, logs, TLS."""
    config = PostfixConfig(root=root, smtp_port=smtp_port)
    config.main.update(
        {
            "compatibility_level": "3.6",
            "queue_directory": str(root / "queue"),
            "data_directory": str(root / "data"),
            "mail_owner": "postfix",
            "setgid_group": "postdrop",
            "myhostname": hostname,
            "mydomain": hostname,
            "myorigin": "$myhostname",
            "mydestination": "",
            "local_recipient_maps": "",
            "alias_maps": "",
            "alias_database": "",
            "biff": "no",
            "append_dot_mydomain": "no",
            "inet_interfaces": LOOPBACK,
            "inet_protocols": "ipv4",
            "mynetworks": "127.0.0.0/8",
            # No DNS at all: the machine may have no resolver, and tests must not leak traffic.
            "smtp_dns_support_level": "disabled",
            "lmtp_host_lookup": "native",
            "smtpd_peername_lookup": "no",
            "smtpd_helo_required": "no",
            "smtpd_banner": "$myhostname ESMTP Postfix (pbtest)",
            # Postfix slows down fast clients and failing clients by default; both distort
            # tests and benchmarks.
            "in_flow_delay": "0s",
            "smtpd_error_sleep_time": "0s",
            "smtpd_soft_error_limit": "100",
            "smtpd_hard_error_limit": "1000",
            "delay_warning_time": "0h",
            "queue_run_delay": "1s",
            "minimal_backoff_time": "1s",
            "maximal_backoff_time": "2s",
            # No syslog on a test machine: postlogd writes this file (master.cf "postlog").
            "maillog_file": str(root / "log" / "postfix.log"),
            "maillog_file_prefixes": str(root / "log"),
            "smtpd_tls_security_level": "may",
            "smtpd_tls_cert_file": str(certificates.cert_file),
            "smtpd_tls_key_file": str(certificates.key_file),
            "smtpd_tls_session_cache_database": "",
            "smtpd_tls_loglevel": "0",
            # "(using TLSv1.3 with cipher ...)" in Received: lets a test see that TLS was used.
            "smtpd_tls_received_header": "yes",
            "smtp_tls_security_level": "none",
            "smtpd_relay_restrictions": "permit_mynetworks, reject_unauth_destination",
            # Never send anything off the machine (bounces included): fail at once instead.
            "default_transport": "error:5.7.1 pbtest server does not relay",
            "relay_transport": "error:5.7.1 pbtest server does not relay",
        }
    )
    config.services.append(
        # max_use=1: every SMTP connection gets a fresh smtpd that opens its maps anew, so a
        # postmap applies to the very next connection without a reload.
        f"{LOOPBACK}:{smtp_port} inet n - n - - smtpd -o max_use=1"
    )
    return config


def office_role(config: PostfixConfig, *, domains: tuple[str, ...], mail_user: MailUser) -> None:
    """Deliver mail for ``domains`` into Maildirs ``ROOT/mail/<domain>/<local>/Maildir/``.

    The hash map ``virtual_mailboxes`` lists each address with its Maildir path: smtpd uses it
    to reject unknown recipients with 550 at RCPT time, virtual(8) to find the Maildir (it
    refuses regexp substitutions, so the path cannot be computed). A ``recipient_access`` hash
    map lets a test make one address answer 450.
    """
    mailboxes = config.map_path("virtual_mailboxes")
    access = config.map_path("recipient_access")
    config.main.update(
        {
            "virtual_mailbox_domains": " ".join(domains),
            "virtual_mailbox_maps": f"hash:{mailboxes}",
            "virtual_mailbox_base": str(config.root / "mail"),
            "virtual_uid_maps": f"static:{mail_user.uid}",
            "virtual_gid_maps": f"static:{mail_user.gid}",
            "virtual_minimum_uid": str(mail_user.uid),
            "virtual_transport": "virtual",
            "virtual_mailbox_limit": "0",
            "smtpd_recipient_restrictions": (
                f"check_recipient_access hash:{access}, permit_mynetworks, "
                "reject_unauth_destination"
            ),
        }
    )
    config.services.append("virtual   unix  -       n       n       -       -       virtual")


def isp_role(
    config: PostfixConfig,
    *,
    held: tuple[str, ...],
    unflushed: tuple[str, ...],
) -> None:
    """Relay mail for ``held`` + ``unflushed`` to the office, but only when told to (ETRN).

    Every relayed domain goes through the ``held`` transport (an smtp(8) client listed in
    ``defer_transports``), so its mail stays queued as deferred; the transport map (written
    by :class:`PostfixIsp`) points it at the office server. ``held`` domains are also
    ``fast_flush_domains``: ``ETRN domain`` releases their mail (``250 Queuing started``).
    For ``unflushed`` ones Postfix refuses ETRN (RFC 1985 459).
    """
    config.main.update(
        {
            "relay_domains": " ".join(held + unflushed),
            "fast_flush_domains": " ".join(held),
            "transport_maps": f"hash:{config.map_path('transport')}",
            "defer_transports": "held",
        }
    )
    config.services.append("held      unix  -       -       n       -       -       smtp")


class PostfixInstance:
    """Directories, start/stop, maps and queue of one private Postfix; roles configure it."""

    name = "postfix"

    def __init__(self, *, certificates: Certificates, hostname: str) -> None:
        self.host = LOOPBACK
        self.ca_file = certificates.ca_file
        self.mail_user = ensure_mail_user()
        self.root = make_root(f"pb-{self.name}-")
        self.config_dir = self.root / "etc"
        self.log_file = self.root / "log" / "postfix.log"
        self.smtp_port = 0
        self._certs = certificates
        self._hostname = hostname
        self._master_pid: int | None = None
        self._map_stamps: dict[str, int] = {}
        for sub in ("etc", "queue", "data", "log"):
            (self.root / sub).mkdir(mode=0o755)
        os.chown(self.root / "data", _uid("postfix"), -1)
        self.config = self._build_config(free_port())
        self._write_config()  # postmap reads main.cf too

    # -- configuration ------------------------------------------------------------------------

    def _build_config(self, smtp_port: int) -> PostfixConfig:
        """Subclasses add their role to the base config."""
        self.smtp_port = smtp_port
        return base_config(
            root=self.root,
            smtp_port=smtp_port,
            certificates=self._certs,
            hostname=self._hostname,
        )

    def write_map(self, name: str, entries: dict[str, str]) -> None:
        """Write ``etc/<name>`` as "key value" lines and postmap it (hash tables).

        A running daemon notices a changed table by its mtime, in whole seconds, and then
        restarts before its next connection; two postmaps within one second would look like
        one. Each .db therefore gets a strictly increasing mtime.
        """
        path = self.config.map_path(name)
        tmp = path.with_suffix(".tmp")
        tmp.write_text("".join(f"{key} {value}\n" for key, value in sorted(entries.items())))
        os.replace(tmp, path)
        run([POSTMAP, "-c", str(self.config_dir), f"hash:{path}"])
        stamp = max(int(time.time()), self._map_stamps.get(name, 0) + 1)
        self._map_stamps[name] = stamp
        os.utime(path.with_name(path.name + ".db"), (stamp, stamp))

    def reload(self, timeout: float = STOP_TIMEOUT) -> None:
        """Reload configuration and tables; wait until the old daemons (smtpd aside) are gone.

        Needed after changing a table that delivery agents read: the queue manager keeps a
        connection to an already running agent, which would still use the old table. Idle
        daemons exit within about 60 ms; smtpd processes are not waited for (a test may hold
        an SMTP session open) and pick up changes per connection anyway (max_use=1).
        """
        if self._master_pid is None:
            return
        old = [
            proc
            for proc in process_tree(self._master_pid)[1:]
            if _process_name(proc) not in ("smtpd", "")
        ]
        # What "postfix reload" does, minus the queue check it leaves running in the background.
        os.kill(self._master_pid, signal.SIGHUP)
        reap(old, timeout=timeout)

    def _write_config(self) -> None:
        # Every Postfix program re-reads main.cf in 300 ms steps while its mtime is the current
        # second (it could still be being edited): backdate the files to start at once.
        past = time.time() - 10
        for name, text in (
            ("main.cf", self.config.render_main()),
            ("master.cf", self.config.render_master()),
        ):
            path = self.config_dir / name
            path.write_text(text)
            os.utime(path, (past, past))

    def _postfix(self, *args: str, timeout: float = 60.0) -> None:
        run([POSTFIX, "-c", str(self.config_dir), *args], timeout=timeout)

    # -- lifecycle ----------------------------------------------------------------------------

    def start(self) -> None:
        """Start the master and wait until smtpd answers; up to 3 tries if a port is taken."""
        last_error: ServerError | None = None
        for attempt in range(3):  # the port may be taken between free_port() and bind()
            if attempt:
                self.config = self._build_config(free_port())
            try:
                self._start_once()
                return
            except ServerError as exc:
                last_error = exc
                self._kill()
        assert last_error is not None
        raise last_error

    def _start_once(self) -> None:
        self._write_config()
        self._postfix("start")
        pid_file = self.root / "queue" / "pid" / "master.pid"
        deadline = time.monotonic() + START_TIMEOUT
        while not port_open(self.smtp_port):
            if time.monotonic() > deadline:
                raise ServerError(
                    f"postfix did not listen on {self.smtp_port}:\n{tail(self.log_file)}"
                )
            time.sleep(0.02)
        self._master_pid = int(pid_file.read_text().split()[0])

    def stop(self) -> None:
        """``postfix stop``, then make sure the master and all its children are gone."""
        self._kill()
        remove_tree(self.root)

    def _kill(self) -> None:
        pid, self._master_pid = self._master_pid, None
        if pid is None:
            pid = self._read_master_pid()
        if pid is None:
            return
        tree = process_tree(pid)
        if not tree or _process_name(tree[0]) != "master":
            return  # a stale pid file: that pid is not our master (any more)
        with contextlib.suppress(ServerError):
            self._postfix("stop", timeout=STOP_TIMEOUT)
        try:
            reap(tree, timeout=STOP_TIMEOUT)
        finally:
            # The master ran setsid(): its pid is the process group of all its children, and
            # Linux does not hand out a pid that is still some group's id.
            kill_group(pid)

    def _read_master_pid(self) -> int | None:
        try:
            return int((self.root / "queue" / "pid" / "master.pid").read_text().split()[0])
        except (OSError, ValueError, IndexError):
            return None

    def processes(self) -> list[psutil.Process]:
        """The master and its children right now ([] when stopped); for leak checks."""
        return [] if self._master_pid is None else process_tree(self._master_pid)

    def __enter__(self) -> PostfixInstance:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    # -- queue --------------------------------------------------------------------------------

    def queue_is_empty(self) -> bool:
        queue = self.root / "queue"
        for name in _QUEUES:
            directory = queue / name
            if not directory.is_dir():
                continue
            for _dirpath, _dirnames, filenames in os.walk(directory):
                if filenames:
                    return False
        return True

    def wait_for_empty_queue(self, timeout: float = 10.0) -> None:
        wait_until(self.queue_is_empty, timeout=timeout, what="an empty postfix queue")

    def delete_queue(self) -> None:
        run([POSTSUPER, "-c", str(self.config_dir), "-d", "ALL"])

    def log_text(self) -> str:
        try:
            return self.log_file.read_text(errors="replace")
        except OSError:
            return ""


class PostfixOffice(PostfixInstance):
    """Postfix as the office mail server: accepts mail for its users and stores it in Maildirs.

    Users are full addresses in ``domains`` (example.com by default). Unknown recipients get
    ``550 5.1.1``; ``defer(address)`` makes one recipient answer ``450 4.2.0`` until
    ``undefer(address)``. Both apply from the next SMTP connection on.
    """

    name = "office"
    DEFAULT_USERS = ("alice@example.com", "bob@example.com", "carol@example.com")
    DEFER_REPLY = "450 4.2.0 Try again later (pbtest defer)"

    def __init__(
        self,
        *,
        certificates: Certificates,
        domains: tuple[str, ...] = ("example.com",),
        users: tuple[str, ...] = DEFAULT_USERS,
    ) -> None:
        self.domains = tuple(d.lower() for d in domains)
        self._users: set[str] = set()
        self._deferred: dict[str, str] = {}
        super().__init__(certificates=certificates, hostname="office.test")
        mail = self.root / "mail"
        mail.mkdir(mode=0o755)
        os.chown(mail, self.mail_user.uid, self.mail_user.gid)
        self._write_access_map()
        self._default_users = tuple(self._address(u) for u in users)
        self._users = set(self._default_users)
        self._write_users_map()

    def _build_config(self, smtp_port: int) -> PostfixConfig:
        config = super()._build_config(smtp_port)
        office_role(config, domains=self.domains, mail_user=self.mail_user)
        return config

    def _address(self, address: str) -> str:
        address = address.lower()
        if not _ADDRESS.match(address) or address.split("@", 1)[1] not in self.domains:
            raise ValueError(f"not a test address in {self.domains}: {address!r}")
        return address

    def _write_users_map(self) -> None:
        # "<domain>/<local>/Maildir/": the trailing slash means Maildir (not mbox) to virtual(8).
        self.write_map(
            "virtual_mailboxes",
            {user: "{1}/{0}/Maildir/".format(*user.split("@", 1)) for user in self._users},
        )
        self.reload()

    def _write_access_map(self) -> None:
        self.write_map("recipient_access", dict(self._deferred))

    # -- users and replies ----------------------------------------------------------------------

    def add_user(self, address: str) -> None:
        """Accept mail for ``address`` from the next SMTP connection on."""
        self._users.add(self._address(address))
        self._write_users_map()

    def defer(self, address: str, reply: str = DEFER_REPLY) -> None:
        """Make RCPT TO:<address> answer ``reply`` (a 4xx by default) until undefer()."""
        if not re.match(r"^[45]\d\d [45]\.\d{1,3}\.\d{1,3} \S", reply):
            raise ValueError(f"reply must be 'NNN X.Y.Z text': {reply!r}")
        self._deferred[self._address(address)] = reply
        self._write_access_map()

    def undefer(self, address: str) -> None:
        self._deferred.pop(self._address(address), None)
        self._write_access_map()

    def reset(self, timeout: float = 10.0) -> None:
        """Back to the state after start: default users, no defers, empty Maildirs and queue.

        Lets one session-wide server serve many tests without leaking mail between them.
        """
        try:
            self.wait_for_empty_queue(timeout)
        except ServerError:
            self.delete_queue()
        if self._deferred:
            self._deferred.clear()
            self._write_access_map()
        if self._users != set(self._default_users):
            self._users = set(self._default_users)
            self._write_users_map()
        mail = self.root / "mail"
        for domain_dir in mail.iterdir():
            remove_tree(domain_dir)

    # -- mail -----------------------------------------------------------------------------------

    def maildir(self, address: str) -> Path:
        local, domain = self._address(address).split("@", 1)
        return self.root / "mail" / domain / local / "Maildir"

    def messages(self, address: str) -> list[bytes]:
        """Every message delivered to ``address`` (``new/`` and ``cur/``), ordered by file name."""
        return [path.read_bytes() for path in maildir_files(self.maildir(address))]

    def count(self, address: str) -> int:
        return len(maildir_files(self.maildir(address)))

    def wait_for(self, address: str, count: int, timeout: float = 10.0) -> list[bytes]:
        """Wait until ``address`` has at least ``count`` messages, then return them all.

        Postfix delivers asynchronously after answering 250 to DATA, so tests poll the Maildir.
        """
        try:
            wait_until(
                lambda: self.count(address) >= count,
                timeout=timeout,
                interval=0.02,
                what=f"{count} message(s) for {address}",
            )
        except ServerError as exc:
            raise ServerError(
                f"{exc}; have {self.count(address)}. Log:\n{tail(self.log_file)}"
            ) from None
        return self.messages(address)


class PostfixIsp(PostfixInstance):
    """Postfix as an ISP that holds the office's mail until the office sends ETRN (RFC 1985).

    Mail for ``held`` domains (example.com, the office's, by default) and ``unflushed`` ones
    is accepted from anyone on loopback and queued; ``ETRN <held domain>`` makes Postfix
    deliver it to the office server at ``office_port`` within about a second. ``ETRN`` for
    an ``unflushed`` domain is answered 459.
    """

    name = "isp"

    def __init__(
        self,
        *,
        certificates: Certificates,
        office_port: int,
        held: tuple[str, ...] = ("example.com", "held.test"),
        unflushed: tuple[str, ...] = ("noflush.test",),
    ) -> None:
        self.held = held
        self.unflushed = unflushed
        super().__init__(certificates=certificates, hostname="mx.isp.test")
        target = f"held:[{LOOPBACK}]:{office_port}"
        self.write_map("transport", {domain: target for domain in held + unflushed})

    def _build_config(self, smtp_port: int) -> PostfixConfig:
        config = super()._build_config(smtp_port)
        isp_role(config, held=self.held, unflushed=self.unflushed)
        return config

    def send(self, message: bytes, *, sender: str, recipients: list[str]) -> None:
        """Submit one message by SMTP, as the Internet would."""
        with smtplib.SMTP(self.host, self.smtp_port, timeout=10) as smtp:
            refused = smtp.sendmail(sender, recipients, message)
        if refused:
            raise ServerError(f"the ISP refused {refused}")

    def queued(self) -> int:
        """How many messages wait in the queue (deferred ones included)."""
        queue = self.root / "queue"
        return sum(
            len(files) for name in _QUEUES for _dirpath, _dirnames, files in os.walk(queue / name)
        )


def _uid(user: str) -> int:
    return pwd.getpwnam(user).pw_uid


def _process_name(proc: psutil.Process) -> str:
    try:
        return proc.name()
    except psutil.NoSuchProcess:
        return ""
