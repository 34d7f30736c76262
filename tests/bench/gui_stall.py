"""How long the tray app's GUI thread goes unresponsive while the worker collects a big mailbox.

Run it as root (the private Dovecot needs it), from the repository::

    uv run python tests/bench/gui_stall.py                 # 1,000 messages, tmpfs and disk
    uv run python tests/bench/gui_stall.py --messages 3000 --where disk

For each data folder (tmpfs: the worker is CPU-bound, the hardest case for the GUI, which shares
the interpreter lock with it; disk: fsync-bound, as on an office PC) it fills a fresh ISP mailbox,
starts the real TrayApp on the offscreen platform with the Activity window open, presses
"Poll now" and runs a precise 5 ms timer on the GUI thread until the cycle has been reported and
the window has refreshed. It prints the longest gap between two ticks (less the 5 ms), the 99th
percentile, and the poll's duration. Target: longest stall under 50 ms. A second run without
the Activity window shows what the window itself costs.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")


def _isolate(home: Path) -> None:
    """A throw-away HOME and a file keyring, as the test suite uses."""
    for name, sub in {
        "HOME": "",
        "XDG_DATA_HOME": ".local/share",
        "XDG_CONFIG_HOME": ".config",
        "XDG_CACHE_HOME": ".cache",
        "XDG_STATE_HOME": ".local/state",
    }.items():
        path = home / sub
        path.mkdir(parents=True, exist_ok=True)
        os.environ[name] = str(path)
    os.environ["PYTHON_KEYRING_BACKEND"] = "keyrings.alt.file.PlaintextKeyring"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--messages", type=int, default=1000)
    parser.add_argument("--where", choices=("tmpfs", "disk", "both"), default="both")
    args = parser.parse_args()
    if os.geteuid() != 0:
        print("Run as root: the private Dovecot binds ports and switches users.", file=sys.stderr)
        return 2

    scratch = Path(tempfile.mkdtemp(prefix="pb-gui-stall-"))
    _isolate(scratch / "home")

    from postbridge.app.autostart import XdgAutostart
    from postbridge.app.controller import TrayApp
    from postbridge.app.main import make_application
    from postbridge.app.worker import Timing
    from tests.app.conftest import RecordingNotifier, add_user, user_mailbox, write_config
    from tests.app.stall import TARGET_MS, big_message, count_files, measure_poll
    from tests.servers.certs import make_certificates
    from tests.servers.common import make_root, remove_tree
    from tests.servers.dovecot import Dovecot

    qapp = make_application()  # as the app runs: with its GUI-thread garbage collector
    places = ["tmpfs", "disk"] if args.where == "both" else [args.where]
    certs_root = make_root("pb-gui-stall-certs-")
    dovecot = Dovecot(certificates=make_certificates(certs_root))
    dovecot.start()
    print(
        f"{args.messages:,} messages of ~{len(big_message(0)):,} bytes; target {TARGET_MS:.0f} ms"
    )
    print(f"{'data folder':<12} {'Activity':<9} {'poll s':>7} {'longest ms':>11} {'p99 ms':>7}")
    worst_overall = 0.0
    try:
        add_user(dovecot, "alice")
        for place in places:
            for with_window in (True, False):
                base = Path("/dev/shm") if place == "tmpfs" and Path("/dev/shm").is_dir() else None
                data = Path(tempfile.mkdtemp(prefix="pb-gui-stall-data-", dir=base))
                run_dir = Path(tempfile.mkdtemp(prefix="run-", dir=scratch))
                dovecot.add_messages("alice", [big_message(n) for n in range(args.messages)])
                mailbox = user_mailbox(dovecot, "alice", "alice@example.com")
                app = TrayApp(
                    config_path=write_config(run_dir, mailbox, data_dir=data),
                    timing=Timing(first_delay=3600),
                    notifier=RecordingNotifier(),
                    autostart=XdgAutostart(["postbridge", "--hidden"]),
                    tray_wait=0.0,
                    open_url=lambda _url: True,
                    quit_app=lambda: None,
                )
                app.start()
                if not with_window:
                    app.show_activity = lambda: None  # type: ignore[method-assign]
                new = data / "Mail" / "alice@example.com" / "new"

                def delivered(folder: Path = new) -> int:
                    return count_files(folder)

                try:
                    result = measure_poll(app, expected=args.messages, delivered=delivered)
                finally:
                    app.shutdown()
                    shutil.rmtree(data, ignore_errors=True)
                mark = "" if result.worst_ms < TARGET_MS else "  over target"
                print(
                    f"{place:<12} {'open' if with_window else 'closed':<9} {result.seconds:7.1f} "
                    f"{result.worst_ms:11.1f} {result.p99_ms:7.1f}{mark}",
                    flush=True,
                )
                worst_overall = max(worst_overall, result.worst_ms)
    finally:
        dovecot.stop()
        remove_tree(certs_root)
        shutil.rmtree(scratch, ignore_errors=True)
        del qapp
    print(f"longest stall overall: {worst_overall:.1f} ms (target < {TARGET_MS:.0f} ms)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
