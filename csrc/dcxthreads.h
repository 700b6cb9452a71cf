/*
 * dcxthreads.h - engine threads that exist for the caller's sake, apart from
 * the TLS interface (dcxtls.h): they let a caller that holds a global lock
 * (Python's GIL) leave network work to the engine.  pump_posix.c implements
 * them on POSIX, pump_none.c says "unsupported" elsewhere.
 *
 * Handshakes in the background (accepting side): a pump is one engine
 * thread that advances accepted connections' handshakes the moment their
 * bytes arrive, while the caller's threads (and Python's GIL) are busy
 * elsewhere.  It only ever calls dcx_conn_handshake(c, 0, ...): the
 * thread that claims a connection back finishes the handshake with its own
 * deadline, so the pump changes when the work is done, never the outcome. */
#ifndef DCXTHREADS_H
#define DCXTHREADS_H

#include "dcxtls.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct dcx_pump dcx_pump;

/* A running pump, or NULL (err says why: DCX_E_UNSUPPORTED on platforms
 * without one, where the caller handshakes in its own thread). */
dcx_pump *dcx_pump_new(dcx_error *err);
/* Hand c's handshake to the pump for at most timeout_ms; c must not be used
 * until it is claimed back. */
int dcx_pump_add(dcx_pump *p, dcx_conn *c, int timeout_ms, dcx_error *err);
/* 1 when the pump is done with c's handshake (finished, failed, or its time
 * is up), so that a claim returns at once; 0 while it still waits for bytes. */
int dcx_pump_settled(dcx_pump *p, const dcx_conn *c);
/* Take c back, waiting only for a handshake step in progress.  Claiming a
 * connection the pump does not hold does nothing. */
void dcx_pump_claim(dcx_pump *p, dcx_conn *c);
/* Stop the thread; connections still held are let go, not freed. */
void dcx_pump_free(dcx_pump *p);

#ifdef __cplusplus
}
#endif
#endif /* DCXTHREADS_H */
