"""dcxsec.requestor: a quick response is not lost to pynetdicom's reactor.

pynetdicom's reactor loses a response when it is stopped just after its
checkpoint's ``wait()`` returns while the peer answers, and the requesting
thread is slow to take the answer: two threads preempted on a busy machine.
These tests make both moments last (10 ms and 20 ms), on real associations
over dcxsec, with pynetdicom's own reactor and ``send_c_echo``.
"""
from __future__ import annotations

import threading
import time

from conftest import requestor

from dcxsec.requestor import ReactorCheckpoint, steady

WINDOW = 0.01  # seconds the reactor stays stopped after its checkpoint lets it go
TAKE = 0.02  # seconds before the requesting thread takes its answer off the queue
BETWEEN = 0.005  # seconds between one answer and the next request, as a sender reads its next file
ECHOES = 20


class SlowToWake(threading.Event):
    """pynetdicom's own checkpoint, with the reactor preempted after each wait()."""

    def wait(self, timeout: float | None = None) -> bool:
        flag = super().wait(timeout)
        time.sleep(WINDOW)
        return flag


class SteadySlowToWake(ReactorCheckpoint):
    """dcxsec's checkpoint, with the reactor preempted the same way."""

    def wait(self, timeout: float | None = None) -> bool:
        flag = super().wait(timeout)
        time.sleep(WINDOW)
        return flag


def slow_to_take(assoc) -> None:
    """The requesting thread waits TAKE before it looks for its answer."""
    get_msg = assoc.dimse.get_msg

    def late_get_msg(block: bool = False):
        if block:
            time.sleep(TAKE)
        return get_msg(block)

    assoc.dimse.get_msg = late_get_msg


def answered_echoes(assoc) -> int:
    """C-ECHOs answered in a row, up to ECHOES; pynetdicom aborts at the first lost one."""
    slow_to_take(assoc)
    for count in range(ECHOES):
        time.sleep(BETWEEN)  # the reactor wakes meanwhile
        status = assoc.send_c_echo()
        if not status or status.Status != 0x0000:
            return count
    return ECHOES


def test_pynetdicom_alone_loses_a_response_in_that_moment(scp_factory, server_ctx, client_ctx):
    """The moment is real: without dcxsec's checkpoint a response is taken by
    the reactor, and the request waits out its DIMSE timeout."""
    scp = scp_factory(server_ctx)
    assoc = requestor(dimse_timeout=2).associate("127.0.0.1", scp.port, ae_title="DCXSEC-SCP",
                                                 tls_args=(client_ctx, None))
    assert assoc.is_established
    checkpoint = SlowToWake()
    checkpoint.set()
    assoc._reactor_checkpoint = checkpoint
    try:
        assert answered_echoes(assoc) < ECHOES
    finally:
        assoc.abort()


def test_every_response_reaches_its_request(scp_factory, server_ctx, client_ctx):
    scp = scp_factory(server_ctx)
    assoc = steady(requestor().associate("127.0.0.1", scp.port, ae_title="DCXSEC-SCP",
                                         tls_args=(client_ctx, None)))
    assert isinstance(assoc._reactor_checkpoint, ReactorCheckpoint)
    assoc._reactor_checkpoint = SteadySlowToWake(assoc)
    try:
        assert answered_echoes(assoc) == ECHOES
    finally:
        assoc.release()
    assert not assoc.is_alive() or assoc.join(5) is None
    assert assoc.is_released


def test_a_pause_ends_when_the_reactor_has_ended(scp_factory, server_ctx, client_ctx):
    """clear() after the association ended returns at once, never waits for a
    reactor that will not come back."""
    scp = scp_factory(server_ctx)
    assoc = steady(requestor().associate("127.0.0.1", scp.port, ae_title="DCXSEC-SCP",
                                         tls_args=(client_ctx, None)))
    assoc.release()
    assoc.join(5)
    start = time.monotonic()
    assoc._reactor_checkpoint.clear()
    assert time.monotonic() - start < 1


def test_an_association_that_did_not_establish_is_left_alone(client_ctx):
    from conftest import free_port

    assoc = requestor(connection_timeout=2).associate("127.0.0.1", free_port(),
                                                      tls_args=(client_ctx, None))
    checkpoint = assoc._reactor_checkpoint
    assert steady(assoc) is assoc and assoc._reactor_checkpoint is checkpoint
