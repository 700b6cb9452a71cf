/*
 * dcxtls_common.c - the parts of the engine that do not depend on the TLS
 * library: errors, deadlines, socket waiting, thumbprints, peer sniffing.
 */
#include "dcxtls_common.h"

#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#ifdef _WIN32
#include <winsock2.h>
#include <ws2tcpip.h>
#include <windows.h>
#else
#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <poll.h>
#include <sys/socket.h>
#endif

int dcx_without(const char *mechanism)
{
    const char *p = getenv("DCXSEC_WITHOUT");
    size_t n = strlen(mechanism);
    while (p && *p) {
        p += strspn(p, ", ");
        size_t k = strcspn(p, ", ");
        if (k == n && strncmp(p, mechanism, n) == 0)
            return 1;
        p += k;
    }
    return 0;
}

#define ERROR_SHELF 64
static dcx_error *_Atomic error_shelf[ERROR_SHELF];

void *dcx_error_alloc(size_t size)
{
    for (int i = 0; size == sizeof(dcx_error) && i < ERROR_SHELF; i++) {
        dcx_error *e = atomic_exchange(&error_shelf[i], NULL);
        if (e)
            return e;
    }
    return malloc(size < sizeof(dcx_error) ? sizeof(dcx_error) : size);
}

void dcx_error_release(void *err)
{
    for (int i = 0; err && i < ERROR_SHELF; i++) {
        dcx_error *empty = NULL;
        if (atomic_compare_exchange_strong(&error_shelf[i], &empty, (dcx_error *)err))
            return;
    }
    free(err);
}

void dcx_error_clear(dcx_error *err)
{
    if (!err)
        return;
    memset(err, 0, sizeof(*err));
    err->alert = -1;
}

int dcx_fail(dcx_error *err, int status, const char *fmt, ...)
{
    if (err) {
        va_list ap;
        err->status = status;
        va_start(ap, fmt);
        vsnprintf(err->reason, sizeof(err->reason), fmt, ap);
        va_end(ap);
    }
    return status;
}

int64_t dcx_now_ms(void)
{
#ifdef _WIN32
    return (int64_t)GetTickCount64();
#else
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
#endif
}

int64_t dcx_deadline(int timeout_ms)
{
    return timeout_ms < 0 ? -1 : dcx_now_ms() + timeout_ms;
}

int dcx_socket_errno(void)
{
#ifdef _WIN32
    return WSAGetLastError();
#else
    return errno;
#endif
}

int dcx_set_nonblocking(dcx_socket fd, dcx_error *err)
{
#ifdef _WIN32
    u_long on = 1;
    if (ioctlsocket((SOCKET)fd, FIONBIO, &on) != 0) {
#else
    int flags = fcntl(fd, F_GETFL);
    if (flags < 0 || fcntl(fd, F_SETFL, flags | O_NONBLOCK) < 0) {
#endif
        if (err)
            err->sys_errno = dcx_socket_errno();
        return dcx_fail(err, DCX_E_SYSCALL, "cannot make the socket non-blocking");
    }
    return DCX_OK;
}

/* One poll of fd: >0 ready (or an error the next I/O call reports), 0 not
 * within timeout_ms, <0 failed. */
static int poll_once(dcx_socket fd, int want_write, int timeout_ms)
{
#ifdef _WIN32
    WSAPOLLFD p = {(SOCKET)fd, want_write ? POLLWRNORM : POLLRDNORM, 0};
    return WSAPoll(&p, 1, timeout_ms);
#else
    struct pollfd p = {fd, want_write ? POLLOUT : POLLIN, 0};
    return poll(&p, 1, timeout_ms);
#endif
}

int dcx_wait(dcx_socket fd, int want_write, int64_t deadline, dcx_error *err)
{
    for (;;) {
        int timeout = -1;
        if (deadline >= 0) {
            int64_t left = deadline - dcx_now_ms();
            if (left <= 0)
                return dcx_fail(err, DCX_E_TIMEOUT, "timed out");
            timeout = left > 0x7fffffff ? 0x7fffffff : (int)left;
        }
        int n = poll_once(fd, want_write, timeout);
        if (n > 0)
            return DCX_OK; /* readable, writable, or an error the next I/O call reports */
        if (n == 0)
            continue;      /* recheck the deadline */
#ifndef _WIN32
        if (errno == EINTR)
            continue;
#endif
        if (err)
            err->sys_errno = dcx_socket_errno();
        return dcx_fail(err, DCX_E_SYSCALL, "waiting on the socket failed");
    }
}

/* TCP connect to a numeric address within the deadline, on a non-blocking socket. */
static int connect_socket(dcx_socket fd, const char *host, int port, int64_t deadline,
                          dcx_error *err)
{
    struct addrinfo hints, *ai = NULL;
    char service[16];
    memset(&hints, 0, sizeof(hints));
    hints.ai_flags = AI_NUMERICHOST | AI_NUMERICSERV;
    hints.ai_socktype = SOCK_STREAM;
    snprintf(service, sizeof(service), "%d", port);
    if (getaddrinfo(host, service, &hints, &ai) != 0 || !ai)
        return dcx_fail(err, DCX_E_CONFIG, "'%s' is not a numeric IP address", host);
    int r = connect(fd, ai->ai_addr, (int)ai->ai_addrlen);
    freeaddrinfo(ai);
    if (r == 0)
        return DCX_OK;
    int e = dcx_socket_errno();
#ifdef _WIN32
    int in_progress = e == WSAEWOULDBLOCK;
#else
    int in_progress = e == EINPROGRESS || e == EINTR; /* EINTR: it goes on regardless */
#endif
    if (in_progress) {
        int w = dcx_wait(fd, 1, deadline, err);
        if (w != DCX_OK)
            return w;
        int so_error = 0;
        socklen_t len = sizeof(so_error);
        if (getsockopt(fd, SOL_SOCKET, SO_ERROR, (char *)&so_error, &len) != 0)
            so_error = dcx_socket_errno();
        if (so_error == 0)
            return DCX_OK;
        e = so_error;
    }
    if (err)
        err->sys_errno = e;
    return dcx_fail(err, DCX_E_SYSCALL, "cannot connect to %s port %d", host, port);
}

int dcx_conn_connect(dcx_conn *c, const char *host, int port, int connect_timeout_ms,
                     int handshake_timeout_ms, int *connected, dcx_error *err)
{
    dcx_error_clear(err);
    *connected = 0;
    int rc = connect_socket(dcx_conn_socket(c), host, port, dcx_deadline(connect_timeout_ms), err);
    if (rc != DCX_OK)
        return rc;
    *connected = 1;
    return dcx_conn_handshake(c, handshake_timeout_ms, err);
}

int dcx_conn_close_notify_now(dcx_conn *c, dcx_error *err)
{
    dcx_error_clear(err);
    /* a writable socket takes a record of a few dozen bytes whole; a failed
     * poll leaves the send, and its error, to the waiting path */
    if (poll_once(dcx_conn_socket(c), 1, 0) <= 0)
        return dcx_fail(err, DCX_E_TIMEOUT, "the socket cannot take close_notify without waiting");
    return dcx_conn_shutdown(c, 0, 0, err);
}

int dcx_thumbs_set(dcx_thumbs *t, const unsigned char *digests,
                   const unsigned char *lens, size_t count)
{
    dcx_thumbs fresh = {NULL, NULL, count};
    if (count) {
        fresh.digest = malloc(count * sizeof(*fresh.digest));
        fresh.len = malloc(count);
        if (!fresh.digest || !fresh.len) {
            free(fresh.digest);
            free(fresh.len);
            return DCX_E_NOMEM;
        }
        memcpy(fresh.digest, digests, count * DCX_SHA256_LEN);
        memcpy(fresh.len, lens, count);
    }
    dcx_thumbs_free(t);
    *t = fresh;
    return DCX_OK;
}

void dcx_thumbs_free(dcx_thumbs *t)
{
    free(t->digest);
    free(t->len);
    t->digest = NULL;
    t->len = NULL;
    t->count = 0;
}

int dcx_thumbs_match(const dcx_thumbs *t, const unsigned char sha1[DCX_SHA1_LEN],
                     const unsigned char sha256[DCX_SHA256_LEN])
{
    for (size_t i = 0; i < t->count; i++) {
        if (t->len[i] == DCX_SHA1_LEN && memcmp(t->digest[i], sha1, DCX_SHA1_LEN) == 0)
            return 1;
        if (t->len[i] == DCX_SHA256_LEN && memcmp(t->digest[i], sha256, DCX_SHA256_LEN) == 0)
            return 1;
    }
    return 0;
}

void dcx_hex(const unsigned char *bytes, size_t len, char *out)
{
    static const char digits[] = "0123456789ABCDEF";
    for (size_t i = 0; i < len; i++) {
        out[2 * i] = digits[bytes[i] >> 4];
        out[2 * i + 1] = digits[bytes[i] & 15];
    }
    out[2 * len] = '\0';
}

static const char *const dicom_pdu_names[] = {
    NULL, "A-ASSOCIATE-RQ", "A-ASSOCIATE-AC", "A-ASSOCIATE-RJ", "P-DATA-TF",
    "A-RELEASE-RQ", "A-RELEASE-RP", "A-ABORT"};

static int starts_with(const unsigned char *b, size_t len, const char *prefix)
{
    size_t n = strlen(prefix);
    return len >= n && memcmp(b, prefix, n) == 0;
}

int dcx_sniff_not_tls(const unsigned char *b, size_t len, char *what, size_t cap)
{
    static const char *const http_methods[] = {"GET ", "POST ", "HEAD ", "PUT ", "OPTIONS ",
                                               "DELETE ", "CONNECT ", "PATCH ", "TRACE "};
    if (len == 0)
        return 0;
    /* A TLS record: content type 20..24, then major version 3. */
    if (b[0] >= 0x14 && b[0] <= 0x18 && (len < 2 || b[1] == 0x03))
        return 0;
    if (b[0] >= 1 && b[0] <= 7 && (len < 2 || b[1] == 0x00)) {
        snprintf(what, cap, "a plain DICOM %s PDU", dicom_pdu_names[b[0]]);
        return 1;
    }
    for (size_t i = 0; i < sizeof(http_methods) / sizeof(http_methods[0]); i++) {
        if (starts_with(b, len, http_methods[i])) {
            snprintf(what, cap, "an HTTP request");
            return 1;
        }
    }
    if (starts_with(b, len, "HTTP/")) {
        snprintf(what, cap, "an HTTP response");
        return 1;
    }
    if (starts_with(b, len, "SSH-")) {
        snprintf(what, cap, "an SSH banner");
        return 1;
    }
    if ((b[0] & 0x80) && len >= 3 && b[2] == 0x01) {
        snprintf(what, cap, "an SSLv2-format ClientHello (obsolete and refused)");
        return 1;
    }
    {
        char hex[3 * 8 + 1] = "";
        size_t n = len < 8 ? len : 8;
        for (size_t i = 0; i < n; i++)
            snprintf(hex + 3 * i, sizeof(hex) - 3 * i, "%02x%s", b[i], i + 1 < n ? " " : "");
        snprintf(what, cap, "data that is not TLS (first bytes: %s)", hex);
    }
    return 1;
}

const char *dcx_alert_text(int alert)
{
    switch (alert) {
    case 0: return "close notify";
    case 10: return "unexpected message";
    case 20: return "bad record MAC";
    case 22: return "record overflow";
    case 40: return "handshake failure";
    case 42: return "bad certificate";
    case 43: return "unsupported certificate";
    case 44: return "certificate revoked";
    case 45: return "certificate expired";
    case 46: return "certificate unknown";
    case 47: return "illegal parameter";
    case 48: return "unknown CA";
    case 49: return "access denied";
    case 50: return "decode error";
    case 51: return "decrypt error";
    case 70: return "protocol version";
    case 71: return "insufficient security";
    case 80: return "internal error";
    case 86: return "inappropriate fallback";
    case 90: return "user canceled";
    case 109: return "missing extension";
    case 110: return "unsupported extension";
    case 112: return "unrecognized name";
    case 116: return "certificate required";
    case 120: return "no application protocol";
    default: return "unknown alert";
    }
}

const char *dcx_alert_advice(int alert)
{
    switch (alert) {
    case 42: case 46: case 48:
        return "the peer does not trust our certificate: give the peer our issuing CA "
               "(TRUST_CHAIN) or our thumbprint (THUMBPRINT)";
    case 45:
        return "the peer says our certificate has expired: renew it";
    case 44:
        return "the peer says our certificate is revoked";
    case 116:
        return "the peer requires a client certificate: configure our certificate and key";
    case 70:
        return "no protocol version in common: check minimum_version/maximum_version on both sides";
    case 40: case 71:
        return "no cipher suite or parameters in common, or the peer refused our certificate";
    case 49:
        return "the peer denied access";
    default:
        return "";
    }
}

int dcx_fail_verify(dcx_error *err, int verify_reason, const char *method, const char *detail)
{
    const char *subject = err && err->subject[0] ? err->subject : "(no subject)";
    const char *thumb = err && err->thumbprint[0] ? err->thumbprint : "?";
    if (err)
        err->verify_reason = verify_reason;
    switch (verify_reason) {
    case DCX_VR_NO_CERTIFICATE:
        return dcx_fail(err, DCX_E_VERIFY,
                        "the peer presented no certificate, but %s requires one (mutual TLS): "
                        "configure the peer with a certificate and key", method);
    case DCX_VR_EXPIRED:
        return dcx_fail(err, DCX_E_VERIFY,
                        "peer certificate '%s' (thumbprint %s) expired on %s: renew it, "
                        "or check the clocks", subject, thumb, err ? err->not_after : "?");
    case DCX_VR_NOT_YET_VALID:
        return dcx_fail(err, DCX_E_VERIFY,
                        "peer certificate '%s' (thumbprint %s) is not yet valid (%s): "
                        "check the clocks", subject, thumb, detail);
    case DCX_VR_UNTRUSTED:
        return dcx_fail(err, DCX_E_VERIFY,
                        "peer certificate '%s' (thumbprint %s) is not trusted: %s; add the "
                        "issuing root CA to the trusted certificates if this peer is to be "
                        "accepted", subject, thumb, detail);
    case DCX_VR_THUMBPRINT:
        return dcx_fail(err, DCX_E_VERIFY,
                        "peer certificate '%s' (thumbprint %s) is not in the accepted "
                        "thumbprints; add it if this peer is to be accepted", subject, thumb);
    case DCX_VR_HOSTNAME:
        return dcx_fail(err, DCX_E_VERIFY,
                        "peer certificate '%s' (thumbprint %s) does not name host '%s'",
                        subject, thumb, detail);
    default:
        return dcx_fail(err, DCX_E_VERIFY,
                        "peer certificate '%s' (thumbprint %s) refused by %s: %s",
                        subject, thumb, method, detail);
    }
}

/* ---- a handshake out of time ------------------------------------------------
 * Silence is told from slowness by how long the peer has been quiet: a peer
 * quiet for two seconds, or for two thirds of the time, stopped; one whose
 * bytes were still coming was too slow.  A trickle never extends the deadline. */

static int went_quiet(const dcx_handshake_progress *p)
{
    return p->quiet_ms >= 2000 || 3 * p->quiet_ms >= 2 * p->elapsed_ms;
}

/* "N of the M bytes its record announced" for a partial TLS hello, else "N bytes". */
static void hello_size(const dcx_handshake_progress *p, char *out, size_t cap)
{
    if (p->first_len >= 5 && p->first[0] == 0x16) {
        size_t announced = 5 + ((size_t)p->first[3] << 8 | p->first[4]);
        if (announced > p->received) {
            snprintf(out, cap, "%zu of the %zu bytes its record announced", p->received, announced);
            return;
        }
    }
    snprintf(out, cap, "%zu byte%s", p->received, p->received == 1 ? "" : "s");
}

int dcx_fail_handshake_timeout(dcx_error *err, const dcx_handshake_progress *p)
{
    double secs = (double)p->elapsed_ms / 1000.0, quiet = (double)p->quiet_ms / 1000.0;
    const char *peer = p->server_side ? "client" : "server";
    char what[128], size[96];
    if (p->received == 0)
        return p->server_side
                   ? dcx_fail(err, DCX_E_TIMEOUT,
                              "no TLS handshake within %.1f s: the client connected and sent nothing",
                              secs)
                   : dcx_fail(err, DCX_E_TIMEOUT,
                              "TLS handshake timed out after %.1f s: the server never answered our "
                              "ClientHello (is this a TLS port?)", secs);
    hello_size(p, size, sizeof(size));
    if (dcx_sniff_not_tls(p->first, p->first_len, what, sizeof(what)))
        return dcx_fail(err, DCX_E_TIMEOUT,
                        "no TLS handshake within %.1f s: the %s sent %zu byte%s of %s, the last "
                        "%.1f s before the deadline: it is not speaking TLS",
                        secs, peer, p->received, p->received == 1 ? "" : "s", what, quiet);
    if (!p->answered && p->server_side)
        return went_quiet(p)
                   ? dcx_fail(err, DCX_E_TIMEOUT,
                              "no TLS handshake within %.1f s: the client sent a partial ClientHello "
                              "(%s), then nothing for %.1f s", secs, size, quiet)
                   : dcx_fail(err, DCX_E_TIMEOUT,
                              "no TLS handshake within %.1f s: the client was too slow, its "
                              "ClientHello was still arriving (%s, the last %.1f s before the "
                              "deadline)", secs, size, quiet);
    return went_quiet(p)
               ? dcx_fail(err, DCX_E_TIMEOUT,
                          "no TLS handshake within %.1f s: the %s stopped answering (%zu bytes "
                          "received from it, then nothing for %.1f s)",
                          secs, peer, p->received, quiet)
               : dcx_fail(err, DCX_E_TIMEOUT,
                          "no TLS handshake within %.1f s: the %s was too slow, its part of the "
                          "handshake was still arriving (%zu bytes, the last %.1f s before the "
                          "deadline)", secs, peer, p->received, quiet);
}

int dcx_fail_handshake_closed(dcx_error *err, const dcx_handshake_progress *p)
{
    char size[96];
    if (p->received == 0)
        return p->server_side
                   ? dcx_fail(err, DCX_E_PROTOCOL,
                              "the client closed the connection before sending anything")
                   : dcx_fail(err, DCX_E_NOT_TLS,
                              "the server closed the connection without answering the TLS "
                              "ClientHello: it is probably not speaking TLS on this port, or it "
                              "refused us without saying why");
    hello_size(p, size, sizeof(size));
    if (p->server_side && !p->answered)
        return dcx_fail(err, DCX_E_PROTOCOL,
                        "the client closed the connection after a partial ClientHello (%s)", size);
    return dcx_fail(err, DCX_E_PROTOCOL,
                    "the %s closed the connection during the handshake (%zu bytes received from it)",
                    p->server_side ? "client" : "server", p->received);
}
