"""Turn a fetchmailrc into Postbridge mailboxes, passwords and settings.

An office moving from fetchmail should not have to retype its ISP accounts.
Each ``poll`` entry's users become mailboxes: one local name makes a user
mailbox, several local names (or ``*``) make a global (multidrop) mailbox with
its ``localdomains``, ``envelope`` header and ``remote = local`` mappings.
``proto ETRN`` and ``proto ODMR`` entries become the online signal, an
explicit ``smtphost`` (with ``lmtp``) the delivery target, ``set daemon`` the
schedule. Passwords are returned apart, for the keyring.

Nothing is dropped silently: every option that Postbridge does not take over,
or takes over differently, becomes an :class:`ImportNote` with its line
number and the reason in words, and so does every gap the user must fill in
(a missing password, a local name without a domain). The result is a draft
for the settings dialog, not a finished configuration: values are not
validated here, the dialog does that field by field.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

from postbridge.engine.config import (
    ENVELOPE_HEADERS,
    RESERVED_NAMES,
    DeliveryConfig,
    LoginMethod,
    MailboxConfig,
    Security,
    SignalConfig,
    SignalKind,
)
from postbridge.engine.importers.draft import ImportDraft, ImportFileError, ImportNote, NoteKind
from postbridge.engine.importers.fetchmail_options import (
    KEEP_DAYS,
    LOOPBACK,
    NAME_CHARS,
    PORT_NAMES,
    REASONS,
    SERVER_USED,
    SIGNAL_USED,
    USER_USED,
    flag_of,
    list_of,
    text_of,
)
from postbridge.engine.importers.rcfile import Entry, Option, RcFile, User, parse_rcfile


class _Converter:
    """One pass over the parsed file; every option is either used or noted."""

    def __init__(self, rc: RcFile, *, domain: str | None) -> None:
        self.rc = rc
        self.domain = domain
        self.result = ImportDraft()
        self.defaults_server: dict[str, Option] = {}
        self.defaults_user: dict[str, Option] = {}
        self.postmaster = text_of(rc.settings.get("postmaster"))
        self.esmtp: tuple[Option, Option | None] | None = None

    def note(self, line: int, kind: NoteKind, text: str) -> None:
        if ImportNote(line, kind, text) not in self.result.notes:  # defaults repeat per entry
            self.result.note(line, kind, text)

    def port(self, option: Option | None) -> int | None:
        value = text_of(option)
        if not value or option is None:
            return None
        if value.isdigit() and 1 <= int(value) <= 65535:
            return int(value)
        if value.lower() in PORT_NAMES:
            return PORT_NAMES[value.lower()]
        self.note(option.line, "todo", f"the port “{value}” is not a number; enter the port")
        return None

    def run(self) -> ImportDraft:
        for stray in self.rc.strays:
            self.note(stray.line, "skipped", f"not understood: {stray.text}")
        self.settings()
        for entry in self.rc.entries:
            if entry.kind == "defaults":
                self.defaults_server = dict(entry.options)
                for user in entry.users:
                    self.defaults_user.update(user.options)
            elif text_of(
                entry.options.get("protocol") or self.defaults_server.get("protocol")
            ).lower() in ("etrn", "odmr"):
                self.signal(entry)
            else:
                self.entry(entry)
        self.delivery_login()
        if not self.result.mailboxes and self.result.signal is None:
            self.note(0, "todo", "the file has no POP3 poll entries to import")
        return self.result

    def settings(self) -> None:
        for name, option in self.rc.settings.items():
            if name == "daemon":
                text = text_of(option)
                seconds = int(text) if text.isdigit() else 0
                if seconds > 0:
                    minutes = min(1440, max(1, round(seconds / 60)))
                    self.result.interval_minutes = minutes
                    if seconds != minutes * 60:
                        self.note(
                            option.line,
                            "changed",
                            f"polling every {seconds} seconds became every {minutes} minute(s)",
                        )
            elif name != "postmaster" and option.value is not False:
                self.leftover(option, f"set {name}")

    def leftover(self, option: Option, shown: str | None = None) -> None:
        why = REASONS.get(option.name, "Postbridge has no such setting")
        self.note(option.line, "skipped", f"“{shown or option.name}”: {why}")

    def leftovers(self, options: dict[str, Option], used: frozenset[str]) -> None:
        for option in options.values():
            if option.name not in used and option.value is not False:
                self.leftover(option)

    def entry(self, entry: Entry) -> None:
        server = {**self.defaults_server, **entry.options}
        protocol = text_of(server.get("protocol")).lower() or "auto"
        line = server["protocol"].line if "protocol" in server else entry.line
        if protocol not in ("pop3", "apop", "auto"):
            self.note(
                line,
                "skipped",
                f"{entry.name} (protocol {protocol.upper()}): Postbridge collects mail by "
                "POP3 only; set this account up again if the ISP offers POP3",
            )
            return
        if protocol == "auto":
            self.note(line, "changed", f"{entry.name}: imported as POP3; use Test to check it")
        host = text_of(server.get("via")) or entry.name
        if "via" in server:
            self.note(server["via"].line, "changed", f"{entry.name}: connects to {host}")
        if "esmtpname" in server and self.esmtp is None:
            self.esmtp = (server["esmtpname"], server.get("esmtppassword"))
        self.leftovers(server, SERVER_USED)
        if not entry.users:
            self.note(entry.line, "todo", f"{entry.name} names no user; nothing to import")
        for user in entry.users:
            self.mailbox(entry, server, user, host=host, apop=protocol == "apop")

    def _name(self, user: User, entry: Entry) -> str:
        base = (user.remote or entry.name).split("@")[0]
        base = NAME_CHARS.sub("-", base).strip("-._")[:60] or "mailbox"
        if base in RESERVED_NAMES:
            base += "-isp"
        taken = {m.name for m in self.result.mailboxes}
        name, n = base, 2
        while name in taken:
            name, n = f"{base}-{n}", n + 1
        return name

    def qualify(self, name: str, domains: tuple[str, ...], opts: dict[str, Option]) -> str:
        """A full address for a fetchmail local name ("alice" -> "alice@example.com")."""
        if "@" in name:
            return name.lower()
        domain = domains[0] if domains else text_of(opts.get("smtpaddress")) or self.domain or ""
        return f"{name}@{domain}".lower() if domain else name

    def mailbox(
        self, entry: Entry, server: dict[str, Option], user: User, *, host: str, apop: bool
    ) -> None:
        opts = {**self.defaults_user, **user.options}
        name = self._name(user, entry)
        domains = tuple(d.lower() for d in list_of(server.get("localdomains")))
        port = self.port(server.get("port") or server.get("service"))
        security: Security = "tls" if flag_of(opts.get("ssl")) or port == 995 else "starttls"
        if security == "starttls":
            self.note(
                user.line,
                "changed",
                f"{name}: fetchmail used encryption only when offered; Postbridge requires "
                "STARTTLS (choose another security setting if Test says the ISP has none)",
            )
        if not user.remote:
            self.note(user.line, "todo", f"{name}: enter the ISP user name")
        password = text_of(opts.get("password"))
        if password:
            self.result.passwords[name] = password
        else:
            self.note(
                user.line,
                "todo",
                f"{name}: no password in the file (fetchmail may have read it from ~/.netrc "
                "or asked for it); enter it on the mailbox page",
            )
        if entry.kind == "skip":
            self.note(entry.line, "changed", f"{name}: imported switched off (“skip”)")
        auth: LoginMethod = "apop" if apop else "auto"
        box = MailboxConfig(
            name=name,
            kind="user",
            host=host,
            port=port or (995 if security == "tls" else 110),
            security=security,
            username=user.remote or "",
            enabled=entry.kind == "poll",
            auth=auth,
        )
        box = replace(box, **self.options(name, server, opts))
        if user.wildcard or len(user.localnames) > 1:
            box = self.global_box(box, server, user, opts, domains)
        else:
            box = self.user_box(box, server, user, opts, domains)
        self.result.mailboxes.append(box)
        self.delivery(opts)
        self.leftovers(opts, USER_USED)

    def options(
        self, name: str, server: dict[str, Option], opts: dict[str, Option]
    ) -> dict[str, Any]:
        """Mailbox settings from the options fetchmail shares with Postbridge."""
        out: dict[str, Any] = {}
        if flag_of(opts.get("keep")):
            out["leave_on_server_days"] = KEEP_DAYS
            self.note(
                opts["keep"].line,
                "changed",
                f"{name}: “keep” became “leave a copy on the ISP for {KEEP_DAYS} days”",
            )
        if flag_of(opts.get("flush")):
            self.note(
                opts["flush"].line,
                "skipped",
                f"{name}: “flush”: Postbridge never deletes mail it has not delivered",
            )
        timeout = text_of(server.get("timeout"))
        if timeout.isdigit() and 1 <= int(timeout) <= 3600:
            out["timeout"] = float(timeout)
        elif timeout:
            self.note(server["timeout"].line, "skipped", f"timeout {timeout}: not 1 to 3600")
        expunge = text_of(opts.get("expunge"))
        if expunge.isdigit() and int(expunge) > 0:
            out["delete_batch"] = int(expunge)
        auth = text_of(server.get("auth"))
        if auth and auth not in ("any", "password"):
            self.note(
                server["auth"].line,
                "changed",
                f"{name}: login method “{auth}” is not available; Postbridge picks the safest "
                "method the ISP offers (APOP, AUTH PLAIN or USER/PASS over TLS)",
            )
        ca_file = text_of(opts.get("sslcertfile"))
        if ca_file:
            out["ca_file"] = Path(ca_file).expanduser()
        if text_of(opts.get("sslcertpath")):
            self.note(
                opts["sslcertpath"].line,
                "todo",
                f"{name}: “sslcertpath” names a folder; choose the one CA file to trust",
            )
        if "sslcertck" in opts and not flag_of(opts.get("sslcertck")):
            self.note(
                opts["sslcertck"].line,
                "changed",
                f"{name}: “no sslcertck”: Postbridge always checks the server's certificate",
            )
        for key in ("mda", "bsmtp"):
            if key in opts:
                self.note(
                    opts[key].line,
                    "skipped",
                    f"“{key}”: Postbridge delivers by SMTP, LMTP or into Maildir folders; "
                    "choose one on the Delivery page",
                )
        return out

    def user_box(
        self,
        box: MailboxConfig,
        server: dict[str, Option],
        user: User,
        opts: dict[str, Option],
        domains: tuple[str, ...],
    ) -> MailboxConfig:
        recipient = ""
        if user.localnames:
            local, mapped = user.localnames[0]
            recipient = self.qualify(mapped or local, domains, opts)
        if not recipient:
            self.note(
                user.line,
                "todo",
                f"{box.name}: fetchmail delivered it to the user running fetchmail; enter the "
                "recipient's address",
            )
        elif "@" not in recipient:
            self.note(
                user.line,
                "todo",
                f"{box.name}: “{recipient}” is a local user name; enter the full address",
            )
        if "envelope" in server:
            self.note(
                server["envelope"].line,
                "skipped",
                f"{box.name}: the envelope header matters only for a mailbox of several people",
            )
        return replace(box, recipient=recipient)

    def global_box(
        self,
        box: MailboxConfig,
        server: dict[str, Option],
        user: User,
        opts: dict[str, Option],
        domains: tuple[str, ...],
    ) -> MailboxConfig:
        if not domains:
            self.note(
                user.line,
                "todo",
                f"{box.name}: collects for several people but “localdomains” is not set; "
                "enter the office's domains",
            )
        address_map: dict[str, tuple[str, ...]] = {}
        plain = []
        for remote, local in user.localnames:
            if local is None:
                plain.append(remote)
                continue
            sources = [remote] if "@" in remote else [f"{remote}@{d}" for d in domains]
            if not sources:
                self.note(user.line, "todo", f"{box.name}: “{remote} = {local}” needs a domain")
            for source in sources:
                target = self.qualify(local, (source.split("@")[1],), opts)
                address_map[source.lower()] = (target,)
        if plain and not user.wildcard and domains:
            self.note(
                user.line,
                "changed",
                f"{box.name}: fetchmail accepted only {', '.join(plain)}; Postbridge delivers "
                f"every address in {', '.join(domains)} to that address (add mappings for "
                "exceptions)",
            )
        postmaster = self.qualify(self.postmaster, domains, opts) if self.postmaster else ""
        if postmaster and "@" not in postmaster:
            line = self.rc.settings["postmaster"].line
            self.note(line, "todo", f"{box.name}: enter the postmaster's full address")
        return replace(
            box,
            kind="global",
            local_domains=domains,
            envelope_header=self.envelope(box.name, server),
            postmaster=postmaster,
            address_map=address_map,
        )

    def envelope(self, name: str, server: dict[str, Option]) -> str:
        option = server.get("envelope")
        if option is None:
            return "auto"
        if option.value is False:
            return "none"
        wanted = text_of(option).rstrip(":")
        known = {h.lower(): h for h in ENVELOPE_HEADERS}
        if "envskip" in server:
            self.note(
                option.line,
                "changed",
                f"{name}: the envelope skip count was dropped; Postbridge trusts the topmost "
                f"{wanted} that names a local address",
            )
        if wanted.lower() in known:
            return known[wanted.lower()]
        self.note(
            option.line,
            "changed",
            f"{name}: envelope header “{wanted}” is not one Postbridge reads; it will detect "
            "the header by itself (“auto”)",
        )
        return "auto"

    def delivery(self, opts: dict[str, Option]) -> None:
        hosts = list_of(opts.get("smtphost"))
        if not hosts:
            if flag_of(opts.get("lmtp")):
                self.note(opts["lmtp"].line, "todo", "“lmtp” without “smtphost”: enter the host")
            return
        option = opts["smtphost"]
        first = hosts[0]
        if first.startswith("/"):
            self.note(
                option.line,
                "skipped",
                f"“smtphost {first}”: Postbridge delivers over the network, not a local socket",
            )
            return
        host, _, port_text = first.replace("/", ":").partition(":")
        lmtp = flag_of(opts.get("lmtp"))
        port = int(port_text) if port_text.isdigit() else (24 if lmtp else 25)
        security: Security = "none" if host.lower() in LOOPBACK else "starttls"
        wanted = DeliveryConfig(
            kind="lmtp" if lmtp else "smtp", host=host, port=port, security=security
        )
        if self.result.delivery is None:
            self.result.delivery = wanted
            if security == "starttls":
                self.note(
                    option.line,
                    "changed",
                    f"delivery to {host}: fetchmail sent mail unencrypted; Postbridge asks for "
                    "STARTTLS (choose None on the Delivery page if the server has no encryption)",
                )
            if len(hosts) > 1:
                self.note(
                    option.line,
                    "changed",
                    f"only the first SMTP host of {', '.join(hosts)} is used",
                )
        elif self.result.delivery != wanted:
            self.note(
                option.line,
                "skipped",
                f"“smtphost {first}”: Postbridge delivers all mail to one server "
                f"({self.result.delivery.host}); this one was left out",
            )

    def delivery_login(self) -> None:
        """fetchmail's ``esmtpname``/``esmtppassword``: the login at the office server."""
        if self.esmtp is None:
            return
        name, password = self.esmtp
        if self.result.delivery is None:
            self.note(name.line, "skipped", "“esmtpname”: no “smtphost” to log in to was given")
            return
        self.result.delivery = replace(self.result.delivery, username=text_of(name))
        if password is not None and text_of(password):
            self.result.passwords["delivery"] = text_of(password)
        else:
            self.note(name.line, "todo", "delivery: enter the password for the office server")

    def signal(self, entry: Entry) -> None:
        server = {**self.defaults_server, **entry.options}
        protocol = text_of(server.get("protocol")).lower()
        kind: SignalKind = "etrn" if protocol == "etrn" else "atrn"
        if self.result.signal is not None:
            self.note(
                entry.line,
                "skipped",
                f"{entry.name} ({protocol.upper()}): Postbridge sends one online signal; "
                f"{self.result.signal.host} was imported first",
            )
            return
        user = entry.users[0] if entry.users else User(line=entry.line)
        opts = {**self.defaults_user, **user.options}
        domains = list_of(opts.get("fetchdomains")) or list_of(server.get("localdomains"))
        if not domains:
            self.note(entry.line, "todo", f"{entry.name}: enter the domains the ISP holds mail for")
        port = self.port(server.get("port") or server.get("service"))
        self.result.signal = SignalConfig(
            kind=kind,
            host=text_of(server.get("via")) or entry.name,
            port=port or (366 if kind == "atrn" else 25),
            security="tls" if flag_of(opts.get("ssl")) else "starttls",
            domains=tuple(d.lower() for d in domains),
            username=(user.remote or "") if kind == "atrn" else "",
        )
        password = text_of(opts.get("password"))
        if kind == "atrn" and password:
            self.result.passwords["signal"] = password
        elif kind == "atrn":
            self.note(entry.line, "todo", "ATRN: enter the password of the ISP login")
        self.leftovers(server, SIGNAL_USED)
        self.leftovers(opts, SIGNAL_USED)
        for extra in entry.users[1:]:
            self.note(extra.line, "skipped", f"{entry.name}: a second user for the online signal")


def parse(text: str, *, domain: str | None = None) -> ImportDraft:
    """Convert fetchmailrc text; ``domain`` completes bare local names ("alice")."""
    rc = parse_rcfile(text)
    return _Converter(rc, domain=domain).run()


def load(path: Path, *, domain: str | None = None) -> ImportDraft:
    try:
        text = path.read_text(encoding="utf-8", errors="strict")
    except UnicodeDecodeError:
        text = path.read_text(encoding="latin-1")
    except OSError as exc:
        raise ImportFileError(
            f"Postbridge could not read the fetchmail file {path}.", detail=str(exc)
        ) from exc
    return parse(text, domain=domain)
