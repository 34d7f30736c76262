"""The ceiling: a bare pipelined POP3S read that delivers nothing.

Run as a child process by the benchmark (``python tests/bench/ceiling.py HOST PORT USER CA``,
password on stdin): it logs in, sends RETR for every message with up to ``WINDOW`` commands in
flight, counts the end-of-message lines and throws the bytes away, then QUITs without DELE.
Standard library only, blocking sockets, no parsing beyond finding terminators, so it shows
what the POP3 server and the line can do at best; nothing that stores mail safely can beat it.
"""

from __future__ import annotations

import socket
import ssl
import sys

WINDOW = 256
READ_SIZE = 256 * 1024
TIMEOUT = 120.0


class Reader:
    def __init__(self, sock: ssl.SSLSocket) -> None:
        self.sock = sock
        self.buf = b""
        self.received = 0

    def more(self) -> None:
        data = self.sock.recv(READ_SIZE)
        if not data:
            raise ConnectionError("server closed the connection")
        self.received += len(data)
        self.buf += data

    def status(self) -> bytes:
        for _ in range(10_000):  # a status line is short; bounded anyway
            end = self.buf.find(b"\r\n")
            if end >= 0:
                line, self.buf = self.buf[:end], self.buf[end + 2 :]
                if not line.startswith(b"+OK"):
                    raise RuntimeError(f"server said {line!r}")
                return line
            self.more()
        raise RuntimeError("no status line")


def read_all(host: str, port: int, user: str, password: str, ca_file: str) -> tuple[int, int]:
    context = ssl.create_default_context(cafile=ca_file)
    raw = socket.create_connection((host, port), timeout=TIMEOUT)
    raw.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    sock = context.wrap_socket(raw, server_hostname=host)
    reader = Reader(sock)
    reader.status()
    sock.sendall(f"USER {user}\r\nPASS {password}\r\nSTAT\r\n".encode())
    reader.status()
    reader.status()
    count = int(reader.status().split()[1])
    sent = done = 0
    in_body = False
    # Bounded: every turn either completes a message or reads a non-empty chunk.
    while done < count:
        if sent < count and sent - done <= WINDOW // 2:
            batch = range(sent + 1, min(count, done + WINDOW) + 1)
            sock.sendall(b"".join(b"RETR %d\r\n" % n for n in batch))
            sent = batch[-1]
        if not in_body:
            end = reader.buf.find(b"\r\n")
            if end < 0:
                reader.more()
                continue
            if not reader.buf.startswith(b"+OK"):
                raise RuntimeError(f"RETR failed: {reader.buf[:80]!r}")
            # Keep the status line's CRLF: an empty body is then CRLF "." CRLF too.
            reader.buf = reader.buf[end:]
            in_body = True
        end = reader.buf.find(b"\r\n.\r\n")
        if end < 0:
            reader.buf = reader.buf[-4:]
            reader.more()
            continue
        reader.buf = reader.buf[end + 5 :]
        in_body = False
        done += 1
    sock.sendall(b"QUIT\r\n")
    reader.status()
    sock.close()
    return done, reader.received


def main(argv: list[str]) -> int:
    host, port, user, ca_file = argv
    password = sys.stdin.readline().strip()
    done, received = read_all(host, int(port), user, password, ca_file)
    print(f"{done} messages, {received} bytes")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
