"""A man-in-the-middle relay on loopback for one connection: it forwards
whole TLS records each way, alters one of them (a ``Mutation``), records
what went by, and notes when each end closed, as TCP would show it.

A peer's close is passed on as a half-close, so an end that waits for a
peer that has gone sees the end of the stream, and an end that waits for
a peer that is still there but silent keeps waiting: that is what the
deadlines are measured against.
"""
from __future__ import annotations

import select
import socket
import threading
import time

from .records import DIRECTIONS, Mutation, Record, split_records


class Relay:
    """Listens on loopback, joins the first client to ``target``."""

    def __init__(self, target: tuple[str, int], mutation: Mutation | None = None):
        self.listener = socket.socket()
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(4)
        self.address = self.listener.getsockname()
        self.target = target
        self.mutation = mutation
        self.records: list[Record] = []
        self.mutated_at: float | None = None
        # Per end ("client" faces the client, "server" the server): when the
        # TCP connection started, when the relay wrote to it, when it last
        # sent something, when it closed.
        self.started: dict[str, float] = {}
        self.writes: dict[str, list[float]] = {"client": [], "server": []}
        self.last_read: dict[str, float] = {}
        self.closed: dict[str, float] = {}
        self._stop = False
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        self.listener.settimeout(60)
        try:
            client, _ = self.listener.accept()
        except OSError:
            return
        self.started["client"] = time.monotonic()
        try:
            server = socket.create_connection(self.target, timeout=10)
        except OSError:
            client.close()
            return
        self.started["server"] = time.monotonic()
        for end in (client, server):
            end.setblocking(True)
            end.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        try:
            self._pump({client: "to_server", server: "to_client"},
                       {"to_server": server, "to_client": client})
        finally:
            client.close()
            server.close()

    def _pump(self, source: dict, sink: dict) -> None:
        buffers = {d: bytearray() for d in DIRECTIONS}
        counts = {d: 0 for d in DIRECTIONS}
        raw = {d: False for d in DIRECTIONS}  # framing may be broken after the mutation
        open_ends = dict(source)
        names = {"to_server": "client", "to_client": "server"}  # the end a direction comes from
        while open_ends and not self._stop:
            readable, _, _ = select.select(list(open_ends), [], [], 0.05)
            for sock in readable:
                direction = open_ends[sock]
                try:
                    data = sock.recv(65536)
                except OSError:
                    data = b""
                if not data:
                    self.closed.setdefault(names[direction], time.monotonic())
                    del open_ends[sock]
                    self._send(sink[direction], bytes(buffers[direction]), direction)
                    self._half_close(sink[direction])
                    continue
                self.last_read[names[direction]] = time.monotonic()
                if raw[direction]:
                    self._send(sink[direction], data, direction)
                    continue
                buffers[direction] += data
                for header, body in split_records(buffers[direction]):
                    rec = Record(direction, counts[direction], header, body)
                    counts[direction] += 1
                    self.records.append(rec)
                    out = rec.wire
                    m = self.mutation
                    if m is not None and m.direction == direction and m.index == rec.index:
                        out, raw[direction] = m.apply(header, body), True
                        self.mutated_at = time.monotonic()
                    self._send(sink[direction], out, direction)
                if raw[direction] and buffers[direction]:
                    self._send(sink[direction], bytes(buffers[direction]), direction)
                    buffers[direction].clear()

    def _send(self, sock: socket.socket, data: bytes, direction: str) -> None:
        if not data:
            return
        try:
            sock.sendall(data)
            self.writes["server" if direction == "to_server" else "client"].append(time.monotonic())
        except OSError:
            pass  # that end has gone; its close is seen on its read side

    @staticmethod
    def _half_close(sock: socket.socket) -> None:
        try:
            sock.shutdown(socket.SHUT_WR)
        except OSError:
            pass

    def last_input(self, end: str) -> float | None:
        """When ``end`` last got bytes before it last sent some (a peer's
        answer to its closing alert does not count)."""
        sent = self.last_read.get(end, 0.0)
        return max((t for t in self.writes[end] if t <= sent), default=None)

    def wait_closed(self, end: str, timeout: float) -> float | None:
        """When ``end`` ("client" or "server") closed its connection, or None."""
        deadline = time.monotonic() + timeout
        while end not in self.closed and time.monotonic() < deadline:
            if not self._thread.is_alive():
                break
            time.sleep(0.01)
        return self.closed.get(end)

    def stop(self) -> None:
        self._stop = True
        self.listener.close()
        self._thread.join(5)
