/*
 * dcxtls_common.h - what every backend shares: error filling, deadlines and
 * waiting on the socket, thumbprint matching, and recognising a peer that is
 * not speaking TLS.  Internal to the C layer.
 */
#ifndef DCXTLS_COMMON_H
#define DCXTLS_COMMON_H

#include "dcxtls.h"

#include <stdarg.h>

#define DCX_SHA1_LEN 20
#define DCX_SHA256_LEN 32
#define DCX_SNIFF_LEN 16

/* Whether DCXSEC_WITHOUT (a comma-separated list) names `mechanism`: the
 * benchmark's ablation switches (dcxsec/_without.py). */
int dcx_without(const char *mechanism);

/* Fill err (which may be NULL) and return status. */
int dcx_fail(dcx_error *err, int status, const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 3, 4)))
#endif
    ;
void dcx_error_clear(dcx_error *err);

/* Monotonic milliseconds, and a deadline from a timeout (-1: none). */
int64_t dcx_now_ms(void);
int64_t dcx_deadline(int timeout_ms);

/* Wait until fd is readable (want_write 0) or writable (1) or the deadline
 * passes.  Returns DCX_OK, DCX_E_TIMEOUT or DCX_E_SYSCALL (err filled). */
int dcx_wait(dcx_socket fd, int want_write, int64_t deadline, dcx_error *err);
/* Put the socket in non-blocking mode; the engine waits with dcx_wait. */
int dcx_set_nonblocking(dcx_socket fd, dcx_error *err);
int dcx_socket_errno(void);

/* A list of accepted thumbprints, compared against a leaf's digests. */
typedef struct dcx_thumbs {
    unsigned char (*digest)[DCX_SHA256_LEN];
    unsigned char *len;
    size_t count;
} dcx_thumbs;

int dcx_thumbs_set(dcx_thumbs *t, const unsigned char *digests,
                   const unsigned char *lens, size_t count);
void dcx_thumbs_free(dcx_thumbs *t);
int dcx_thumbs_match(const dcx_thumbs *t, const unsigned char sha1[DCX_SHA1_LEN],
                     const unsigned char sha256[DCX_SHA256_LEN]);

/* Upper-case hex, as Windows shows thumbprints; out needs 2*len+1 bytes. */
void dcx_hex(const unsigned char *bytes, size_t len, char *out);

/* If the first bytes a peer sent are not a TLS record, describe what they
 * are ("plain DICOM A-ASSOCIATE-RQ", "an HTTP request", ...) and return 1. */
int dcx_sniff_not_tls(const unsigned char *bytes, size_t len, char *what, size_t cap);

/* How far a handshake got when its deadline passed, for the reason. */
typedef struct dcx_handshake_progress {
    int server_side;
    int64_t elapsed_ms;         /* since the connection was made */
    int64_t quiet_ms;           /* since the peer's last byte (elapsed_ms if none came) */
    size_t received;            /* bytes the peer sent during the handshake */
    int answered;               /* our side sent its first flight */
    const unsigned char *first; /* the peer's first bytes (DCX_SNIFF_LEN at most) */
    size_t first_len;
} dcx_handshake_progress;

/* Compose the reason of a handshake that ran out of time into err and return
 * DCX_E_TIMEOUT: nothing sent, a partial hello then silence, too slow, or not
 * TLS, with what was seen. */
int dcx_fail_handshake_timeout(dcx_error *err, const dcx_handshake_progress *p);
/* The same for a peer that closed the connection during the handshake:
 * before sending anything, after a partial ClientHello, or later. */
int dcx_fail_handshake_closed(dcx_error *err, const dcx_handshake_progress *p);

/* The reason text of a TLS alert number ("unknown CA", ...). */
const char *dcx_alert_text(int alert);
/* What a received alert most likely means, for a person; "" if nothing useful. */
const char *dcx_alert_advice(int alert);

/* Compose the refusal reason of a verification failure into err. */
int dcx_fail_verify(dcx_error *err, int verify_reason, const char *method,
                    const char *detail);

#endif /* DCXTLS_COMMON_H */
