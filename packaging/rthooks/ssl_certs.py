"""PyInstaller runtime hook: point OpenSSL at the system's CA certificates when it cannot see them.

The frozen app carries the OpenSSL library of the machine it was built on, and that library looks
for CA certificates where the build machine keeps them (Debian: ``/usr/lib/ssl``). Another Linux
distribution keeps them elsewhere (Fedora: ``/etc/pki/tls``), and python.org's macOS build looks
inside its own framework, which the bundle does not have. Without CAs every TLS connection to the
ISP fails verification. So, before any of the app runs: if OpenSSL's default file and folder are
both missing and the user set neither ``SSL_CERT_FILE`` nor ``SSL_CERT_DIR``, use the first
system bundle found. Windows needs none of this: Python's ``ssl`` reads the Windows certificate
store itself.
"""

from __future__ import annotations


def _point_openssl_at_system_cas() -> None:
    import os
    import ssl
    import sys

    if sys.platform == "win32":
        return
    paths = ssl.get_default_verify_paths()
    if os.environ.get(paths.openssl_cafile_env) or os.environ.get(paths.openssl_capath_env):
        return
    if (paths.cafile and os.path.isfile(paths.cafile)) or (
        paths.capath and os.path.isdir(paths.capath) and os.listdir(paths.capath)
    ):
        return
    candidates = (
        "/etc/ssl/certs/ca-certificates.crt",  # Debian, Ubuntu, Arch, Gentoo
        "/etc/pki/tls/certs/ca-bundle.crt",  # Fedora, RHEL
        "/etc/pki/ca-trust/extracted/pem/tls-ca-bundle.pem",  # RHEL, CentOS 7+
        "/etc/ssl/ca-bundle.pem",  # openSUSE
        "/etc/ssl/cert.pem",  # macOS, Alpine
    )
    for candidate in candidates:
        if os.path.isfile(candidate):
            os.environ[paths.openssl_cafile_env] = candidate
            return


_point_openssl_at_system_cas()
