/*
 * dcxthreads.h - engine threads that exist for the caller's sake, apart from
 * the TLS interface (dcxtls.h): they let a caller that holds a global lock
 * (Python's GIL) leave network work to the engine.  pump_posix.c and
 * acceptor_posix.c implement them on POSIX; pump_none.c and acceptor_none.c
 * say "unsupported" elsewhere.
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

/* The acceptor (accepting side): one engine thread owns the listening
 * socket, accepts, and runs each connection's handshake and verification
 * with non-waiting steps, within a deadline counted from the accept.  Only
 * connections whose handshake succeeded are handed to the caller; every
 * other one is closed there and recorded as a refusal.  The caller waits on
 * one descriptor, readable while a connection or a refusal waits to be taken. */
typedef struct dcx_acceptor dcx_acceptor;

typedef struct dcx_acceptor_limits {
    int handshake_timeout_ms;     /* from the accept; bytes trickling in do not extend it */
    int max_pending;              /* handshakes running plus connections not yet taken, in all */
    int max_pending_per_address;  /* the same, from one source address, once max_pending/2
                                     are pending in all */
    int backlog;                  /* listen()'s backlog (the OS may cap it) */
    struct dcx_load_table *loads; /* NULL, or worker processes sharing the listening socket: */
    int worker;                   /* this one's number among them (see dcx_load_table) */
} dcx_acceptor_limits;

/* A connection whose handshake succeeded, the caller's from now on (the
 * socket non-blocking, the engine connection to be freed by the caller). */
typedef struct dcx_accepted {
    dcx_conn *conn;
    dcx_socket fd;
    int family;                   /* AF_INET or AF_INET6 */
    char host[64];                /* the peer's numeric address */
    int port;
} dcx_accepted;

/* A connection refused before it was handed over. */
typedef struct dcx_refusal {
    char host[64];
    int port;
    char stage[16];               /* "limit", "handshake" or "verification" */
    char kind[64];                /* the reason in a few words, to count alike ones */
    char reason[512];             /* the whole reason, for a person */
    char subject[256];            /* the peer certificate's, when there was one */
    char thumbprint[41];          /* its SHA-1, upper-case hex */
    double time;                  /* seconds since the epoch */
} dcx_refusal;

typedef struct dcx_acceptor_stats {
    int pending;                  /* handshakes running */
    int ready;                    /* connections waiting to be taken */
    uint64_t refused;             /* refusals in all */
    uint64_t refusals_dropped;    /* refusals not kept because the caller took none */
} dcx_acceptor_stats;

/* Listen on (a duplicate of) listener and start the thread; NULL with err
 * set on failure (DCX_E_UNSUPPORTED where there is no acceptor).  ctx must
 * outlive the acceptor. */
dcx_acceptor *dcx_acceptor_new(dcx_ctx *ctx, dcx_socket listener,
                               const dcx_acceptor_limits *limits, dcx_error *err);
/* The descriptor to wait on: readable while something waits to be taken. */
dcx_socket dcx_acceptor_wakeup(const dcx_acceptor *a);
/* The next handshaken connection into *out: 1, or 0 when none waits. */
int dcx_acceptor_take(dcx_acceptor *a, dcx_accepted *out);
/* The next refusal into *out: 1, or 0 when none waits. */
int dcx_acceptor_take_refusal(dcx_acceptor *a, dcx_refusal *out);
/* Later connections use ctx (a reloaded identity); it too must outlive the acceptor. */
void dcx_acceptor_set_ctx(dcx_acceptor *a, dcx_ctx *ctx);
void dcx_acceptor_stats_get(dcx_acceptor *a, dcx_acceptor_stats *out);
/* Stop the thread, close the listening socket, and free every connection
 * not taken. */
void dcx_acceptor_free(dcx_acceptor *a);

/* Worker processes sharing one listening socket: how many connections each
 * one holds, in memory they all share (made before fork()).  An acceptor
 * given the table takes a connection only while its worker holds no more
 * than any other, or once the connection has waited DCX_BALANCE_WAIT_MS
 * (a worker that stopped taking any must not stall the port).  A few long
 * associations then spread over the workers, where the kernel alone may
 * give them all to one. */
typedef struct dcx_load_table dcx_load_table;
#define DCX_BALANCE_WAIT_MS 100
/* NULL with err set on failure (DCX_E_UNSUPPORTED where there is no acceptor).
 * It lives as long as the processes: every worker holds it until it exits. */
dcx_load_table *dcx_load_table_new(int workers, dcx_error *err);
int dcx_load_table_count(const dcx_load_table *t, int worker);
/* A connection the worker's acceptor handed over has ended. */
void dcx_load_table_release(dcx_load_table *t, int worker);
/* The worker has ended: the others stop leaving connections to it. */
void dcx_load_table_retire(dcx_load_table *t, int worker);

#ifdef __cplusplus
}
#endif
#endif /* DCXTHREADS_H */
