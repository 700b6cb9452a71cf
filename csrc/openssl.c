/*
 * openssl.c - the OpenSSL 3 backend of dcxtls.h (Linux, macOS): contexts,
 * connections, the handshake, and application data through OpenSSL's own
 * record layer (SSL_read_ex / SSL_write_ex).
 *
 * OpenSSL owns every key, nonce and sequence number.  The engine only moves
 * ciphertext: each connection reads its non-blocking socket into a receive
 * buffer, and OpenSSL writes records into a send buffer, so that one system
 * call carries many records each way.  Every call waits with poll() and so
 * honours its deadline.  Certificates and the peer decision live in
 * openssl_verify.c, the requesting side's session cache in openssl_session.c.
 */
#include "openssl_int.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include <openssl/err.h>
#include <openssl/x509v3.h>

#define RECORD_MAX 16384                 /* plaintext of one TLS record */
#define WIRE_MAX (5 + RECORD_MAX + 2048) /* one record on the wire, at most (TLS 1.2) */
#define IN_CAP (8 * WIRE_MAX)            /* socket bytes taken per recv(), at most */
#define OUT_SLICE (4 * RECORD_MAX)       /* plaintext encrypted between two sends */
#define RECORD_OVERHEAD 64               /* header, nonce, tag and padding of one record, at most */

int dcx_openssl_conn_index = -1;
static BIO_METHOD *buffers_method;
static pthread_once_t init_once = PTHREAD_ONCE_INIT;

/* ---- outgoing records -------------------------------------------------------
 * OpenSSL writes records into the connection's send buffer; the engine sends
 * it with one system call, so a 16388-byte PDU (two records) leaves in one
 * send() instead of one write() per record. */

/* Room for `need` more bytes in the send buffer. */
static int out_reserve(dcx_conn *c, size_t need)
{
    if (c->out.len + need <= c->out.cap)
        return 1;
    size_t cap = c->out.cap ? c->out.cap : 4096;
    while (cap < c->out.len + need)
        cap *= 2;
    unsigned char *grown = realloc(c->out.data, cap);
    if (!grown)
        return 0;
    c->out.data = grown;
    c->out.cap = cap;
    return 1;
}

/* The send buffer goes once it is sent: an idle connection keeps none, and
 * a malloc per write is small beside the write's system call. */
static void out_trim(dcx_conn *c)
{
    if (c->out.data && c->out.len == 0) {
        free(c->out.data);
        c->out.data = NULL;
        c->out.cap = 0;
    }
}

static int out_write(BIO *bio, const char *data, size_t len, size_t *written)
{
    dcx_conn *c = BIO_get_data(bio);
    if (!out_reserve(c, len))
        return 0;
    memcpy(c->out.data + c->out.len, data, len);
    c->out.len += len;
    *written = len;
    return 1;
}

/* Send what OpenSSL wrote, waiting for room until the deadline. */
static int flush_out(dcx_conn *c, int64_t deadline, dcx_error *err)
{
#ifdef MSG_NOSIGNAL
    const int flags = MSG_NOSIGNAL; /* a closed peer is an error, not a SIGPIPE */
#else
    const int flags = 0;
#endif
    while (c->out.sent < c->out.len) {
        ssize_t n = send(c->fd, c->out.data + c->out.sent, c->out.len - c->out.sent, flags);
        if (n > 0) {
            c->out.sent += (size_t)n;
            continue;
        }
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
            int w = dcx_wait(c->fd, 1, deadline, err);
            if (w != DCX_OK)
                return w;
            continue;
        }
        if (err)
            err->sys_errno = errno;
        return dcx_fail(err, DCX_E_SYSCALL, "socket error while sending: %s", strerror(errno));
    }
    c->out.len = c->out.sent = c->ticket_held = 0;
    return DCX_OK;
}

/* ---- incoming bytes ---------------------------------------------------------
 * The engine reads the socket into its receive buffer, as much as it holds
 * per recv(), and OpenSSL takes records from there. */

static size_t in_avail(const dcx_conn *c)
{
    return c->in.end - c->in.start;
}

/* Receive buffers that connections gave back, for the next one that needs
 * one.  A busy connection catches up after nearly every read, and a buffer
 * handed back to malloc came back as fresh pages whenever the heap had been
 * trimmed meanwhile.  A few slots for the whole process, so idle
 * associations still keep nothing of their own. */
#define SHELF_SLOTS 4
static unsigned char *_Atomic in_shelf[SHELF_SLOTS];

/* DCXSEC_WITHOUT (dcxsec/_without.py), read when the engine is loaded:
 * "shelf", buffers from malloc and back to free; "readahead", a read
 * returns after one record. */
static int without_shelf, without_readahead;

__attribute__((constructor)) static void read_without(void)
{
    without_shelf = dcx_without("shelf");
    without_readahead = dcx_without("readahead");
}

static unsigned char *in_buffer_take(void)
{
    for (int i = 0; !without_shelf && i < SHELF_SLOTS; i++) {
        unsigned char *p = atomic_exchange(&in_shelf[i], NULL);
        if (p)
            return p;
    }
    return malloc(IN_CAP);
}

static void in_buffer_give(unsigned char *p)
{
    for (int i = 0; p && !without_shelf && i < SHELF_SLOTS; i++) {
        unsigned char *empty = NULL;
        if (atomic_compare_exchange_strong(&in_shelf[i], &empty, p))
            return;
    }
    free(p);
}

/* recv() without waiting.  Returns the bytes added, 0 when none wait,
 * DCX_EOF, or DCX_E_SYSCALL (in.sys_errno). */
static long in_fill(dcx_conn *c)
{
    if (c->in.start == c->in.end)
        c->in.start = c->in.end = 0;
    if (!c->in.data) {
        if (!(c->in.data = in_buffer_take())) {
            c->in.sys_errno = ENOMEM;
            return DCX_E_SYSCALL;
        }
        c->in.cap = IN_CAP;
    }
    if (c->in.cap - c->in.end < WIRE_MAX) {
        /* What is left moves to the front, once per buffer's worth. */
        memmove(c->in.data, c->in.data + c->in.start, in_avail(c));
        c->in.end -= c->in.start;
        c->in.start = 0;
    }
    for (;;) {
        ssize_t n = recv(c->fd, c->in.data + c->in.end, c->in.cap - c->in.end, 0);
        if (n > 0) {
            if (!c->handshake_done) {
                c->hs_received += (size_t)n;
                c->last_in_ms = dcx_now_ms();
            }
            if (!c->handshake_done && c->first_len < DCX_SNIFF_LEN) {
                /* The peer's first bytes, to tell "not TLS" from a TLS failure. */
                size_t k = DCX_SNIFF_LEN - c->first_len < (size_t)n ? DCX_SNIFF_LEN - c->first_len
                                                                    : (size_t)n;
                memcpy(c->first + c->first_len, c->in.data + c->in.end, k);
                c->first_len += k;
            }
            c->in.end += (size_t)n;
            return n;
        }
        if (n == 0) {
            c->in.eof = 1;
            return DCX_EOF;
        }
        if (errno == EINTR)
            continue;
        if (errno == EAGAIN || errno == EWOULDBLOCK)
            return 0;
        c->in.sys_errno = errno;
        return DCX_E_SYSCALL;
    }
}

static int in_read(BIO *bio, char *dst, size_t want, size_t *got)
{
    dcx_conn *c = BIO_get_data(bio);
    BIO_clear_retry_flags(bio);
    *got = 0;
    if (in_avail(c) == 0) {
        long r = in_fill(c);
        if (r == 0) {
            BIO_set_retry_read(bio);
            return 0;
        }
        if (r < 0) {
            errno = r == DCX_EOF ? 0 : c->in.sys_errno;
            return 0;
        }
    }
    size_t n = want < in_avail(c) ? want : in_avail(c);
    memcpy(dst, c->in.data + c->in.start, n);
    c->in.start += n;
    *got = n;
    return 1;
}

/* ---- the BIO -------------------------------------------------------------
 * One BIO over both buffers is OpenSSL's view of the socket. */

static long buffers_ctrl(BIO *bio, int cmd, long num, void *ptr)
{
    dcx_conn *c = BIO_get_data(bio);
    (void)num; (void)ptr;
    switch (cmd) {
    case BIO_CTRL_FLUSH:
        return 1; /* the engine flushes, with its deadline, after each OpenSSL call */
    case BIO_CTRL_EOF:
        return c && c->in.eof && in_avail(c) == 0;
    case BIO_CTRL_PENDING:
        return c ? (long)in_avail(c) : 0;
    case BIO_CTRL_WPENDING:
        return c ? (long)(c->out.len - c->out.sent) : 0;
    default:
        return 0;
    }
}

static int buffers_create(BIO *bio)
{
    BIO_set_init(bio, 1);
    return 1;
}

/* Records read from the socket, or plaintext from them, that select() cannot see. */
static int data_waiting(const dcx_conn *c)
{
    return !c->dead && (in_avail(c) > 0 || SSL_has_pending(c->ssl));
}

/* A connection that has caught up keeps no receive buffers (OpenSSL's, the
 * engine's) until more arrives: an idle association costs little. */
static void release_idle_buffers(dcx_conn *c)
{
    if (c->dead || data_waiting(c))
        return;
    SSL_free_buffers(c->ssl);
    in_buffer_give(c->in.data);
    c->in.data = NULL;
    c->in.start = c->in.end = c->in.cap = 0;
}

static void init_library(void)
{
    OPENSSL_init_ssl(OPENSSL_INIT_LOAD_SSL_STRINGS | OPENSSL_INIT_LOAD_CRYPTO_STRINGS, NULL);
    dcx_openssl_conn_index = SSL_get_ex_new_index(0, "dcx_conn", NULL, NULL, NULL);
    buffers_method = BIO_meth_new(BIO_get_new_index() | BIO_TYPE_SOURCE_SINK, "dcxsec buffers");
    BIO_meth_set_write_ex(buffers_method, out_write);
    BIO_meth_set_read_ex(buffers_method, in_read);
    BIO_meth_set_ctrl(buffers_method, buffers_ctrl);
    BIO_meth_set_create(buffers_method, buffers_create);
}

const char *dcx_backend(void)
{
    return OpenSSL_version(OPENSSL_VERSION);
}

int dcx_max_supported_version(void)
{
    return DCX_TLS1_3;
}

/* ---- context ----------------------------------------------------------- */

dcx_ctx *dcx_ctx_new(const dcx_config *cfg, dcx_error *err)
{
    pthread_once(&init_once, init_library);
    dcx_error_clear(err);
    int lo = cfg->min_version ? cfg->min_version : DCX_TLS1_2;
    int hi = cfg->max_version ? cfg->max_version : DCX_TLS1_3;
    if (lo < DCX_TLS1_2) {
        dcx_fail(err, DCX_E_CONFIG,
                 "TLS versions below 1.2 are not allowed (RFC 8996, DICOM PS3.15 B.12)");
        return NULL;
    }
    if (hi > DCX_TLS1_3 || lo > hi) {
        dcx_fail(err, DCX_E_CONFIG, "the protocol version range 0x%04x..0x%04x is empty", lo, hi);
        return NULL;
    }
    if (cfg->identity_thumbprint) {
        dcx_fail(err, DCX_E_UNSUPPORTED,
                 "this platform has no system certificate store: give the certificate and key");
        return NULL;
    }
    dcx_ctx *ctx = calloc(1, sizeof(*ctx));
    if (!ctx) {
        dcx_fail(err, DCX_E_NOMEM, "out of memory");
        return NULL;
    }
    pthread_mutex_init(&ctx->lock, NULL);
    ctx->verify = cfg->verify;
    ctx->check_hostname = cfg->check_hostname;
    ctx->check_revocation = cfg->check_revocation;
    ctx->ssl_ctx = SSL_CTX_new(TLS_method());
    if (!ctx->ssl_ctx) {
        dcx_fail(err, DCX_E_NOMEM, "cannot create an OpenSSL context");
        goto fail;
    }
    SSL_CTX *s = ctx->ssl_ctx;
    SSL_CTX_set_min_proto_version(s, lo);
    SSL_CTX_set_max_proto_version(s, hi);
    SSL_CTX_set_options(s, SSL_OP_NO_COMPRESSION | SSL_OP_NO_RENEGOTIATION |
                               SSL_OP_CIPHER_SERVER_PREFERENCE);
    /* Writes go to the send buffer, which never refuses, so no partial-write modes. */
    SSL_CTX_set_mode(s, SSL_MODE_RELEASE_BUFFERS);
    SSL_CTX_set_session_id_context(s, (const unsigned char *)"dcxsec", 6);
    /* No read-ahead in OpenSSL: the receive buffer already takes what the
     * socket holds in one recv(). */
    SSL_CTX_set_read_ahead(s, 0);
    SSL_CTX_set_session_cache_mode(s, cfg->session_cache ? SSL_SESS_CACHE_BOTH
                                                         : SSL_SESS_CACHE_OFF);
    SSL_CTX_sess_set_new_cb(s, dcx_openssl_remember_session);
    SSL_CTX_sess_set_cache_size(s, SERVER_SESSIONS);
    /* The acceptor's one TLS 1.3 ticket goes out with its first write (queue_ticket). */
    SSL_CTX_set_num_tickets(s, 0);
    ctx->tickets = cfg->session_cache;
    SSL_CTX_set_cert_verify_callback(s, dcx_openssl_verify_peer, NULL);
    if (cfg->certificate_chain.len) {
        if (dcx_openssl_load_identity(s, cfg, err) != DCX_OK)
            goto fail;
        ctx->has_identity = 1;
    } else if (cfg->private_key.len) {
        dcx_fail(err, DCX_E_CONFIG, "a private key was given without its certificate");
        goto fail;
    }
    if (dcx_openssl_load_trust(ctx, cfg, err) != DCX_OK)
        goto fail;
    if (dcx_thumbs_set(&ctx->thumbs, cfg->thumbprints, cfg->thumbprint_lens,
                       cfg->thumbprint_count) != DCX_OK) {
        dcx_fail(err, DCX_E_NOMEM, "out of memory");
        goto fail;
    }
    if (err) /* load_identity describes the certificate; a success reports nothing */
        dcx_error_clear(err);
    return ctx;
fail:
    dcx_ctx_free(ctx);
    return NULL;
}

int dcx_ctx_set_thumbprints(dcx_ctx *ctx, const unsigned char *thumbprints,
                            const unsigned char *lens, size_t count, dcx_error *err)
{
    pthread_mutex_lock(&ctx->lock);
    int rc = dcx_thumbs_set(&ctx->thumbs, thumbprints, lens, count);
    pthread_mutex_unlock(&ctx->lock);
    return rc == DCX_OK ? DCX_OK : dcx_fail(err, rc, "out of memory");
}

void dcx_ctx_free(dcx_ctx *ctx)
{
    if (!ctx)
        return;
    SSL_CTX_free(ctx->ssl_ctx);
    dcx_thumbs_free(&ctx->thumbs);
    dcx_openssl_free_sessions(ctx);
    pthread_mutex_destroy(&ctx->lock);
    free(ctx);
}


/* ---- connection -------------------------------------------------------- */

static void track_alerts(const SSL *ssl, int where, int value)
{
    if ((where & SSL_CB_ALERT) && (where & SSL_CB_READ) && ((value >> 8) & 0xff) == SSL3_AL_FATAL) {
        dcx_conn *c = SSL_get_ex_data(ssl, dcx_openssl_conn_index);
        if (c)
            c->received_alert = value & 0xff;
    }
}

static int is_ip_literal(const char *name)
{
    ASN1_OCTET_STRING *ip = a2i_IPADDRESS(name);
    ASN1_OCTET_STRING_free(ip);
    ERR_clear_error();
    return ip != NULL;
}

dcx_conn *dcx_conn_new(dcx_ctx *ctx, dcx_socket fd, int server_side, const char *server_name,
                       dcx_error *err)
{
    dcx_error_clear(err);
    if (server_side && !ctx->has_identity) {
        dcx_fail(err, DCX_E_CONFIG,
                 "the accepting side needs its own certificate and private key");
        return NULL;
    }
    dcx_conn *c = calloc(1, sizeof(*c));
    if (c)
        pthread_mutex_init(&c->io, NULL);
    BIO *bio = NULL;
    if (!c || !(c->ssl = SSL_new(ctx->ssl_ctx)) || !(bio = BIO_new(buffers_method))) {
        dcx_fail(err, DCX_E_NOMEM, "out of memory");
        goto fail;
    }
    BIO_set_data(bio, c);
    c->ctx = ctx;
    c->fd = fd;
    c->server_side = server_side;
    c->born_ms = dcx_now_ms();
    c->received_alert = -1;
    SSL_set_ex_data(c->ssl, dcx_openssl_conn_index, c);
    SSL_set_bio(c->ssl, bio, bio); /* one reference, for both directions */
    SSL_set_info_callback(c->ssl, track_alerts);

    int mode = SSL_VERIFY_PEER; /* the callback decides; NONE accepts anything */
    if (server_side && ctx->verify != DCX_VERIFY_NONE)
        mode |= SSL_VERIFY_FAIL_IF_NO_PEER_CERT;
    if (!server_side && ctx->verify == DCX_VERIFY_NONE)
        mode = SSL_VERIFY_NONE;
    SSL_set_verify(c->ssl, mode, NULL);

    if (server_name && *server_name) {
        if (!(c->server_name = strdup(server_name))) {
            dcx_fail(err, DCX_E_NOMEM, "out of memory");
            goto fail;
        }
        int ip = is_ip_literal(server_name);
        if (!server_side && !ip)
            SSL_set_tlsext_host_name(c->ssl, server_name);
        if (ctx->check_hostname && ctx->verify == DCX_VERIFY_TRUST_CHAIN) {
            X509_VERIFY_PARAM *param = SSL_get0_param(c->ssl);
            if (ip)
                X509_VERIFY_PARAM_set1_ip_asc(param, server_name);
            else
                SSL_set1_host(c->ssl, server_name);
        }
    }
    if (server_side) {
        SSL_set_accept_state(c->ssl);
        /* Stateful resumption: a repeat peer's session is found in memory.  A
         * ticket would be decoded again on every resumption, with the peer's
         * certificate, which costs OpenSSL 3 more than the rest of the handshake. */
        SSL_set_options(c->ssl, SSL_OP_NO_TICKET);
    } else
        SSL_set_connect_state(c->ssl);
    if (dcx_set_nonblocking(fd, err) != DCX_OK)
        goto fail;
    return c;
fail:
    dcx_conn_free(c);
    return NULL;
}


/* ---- failures -----------------------------------------------------------
 * The first failure is why; one that follows from it is not.  Later calls
 * repeat it.  All of these run with the connection's lock held. */

static void keep_first(failure_record *r, int status, const dcx_error *err)
{
    if (r->status)
        return;
    r->status = status;
    if (err && (r->why = malloc(sizeof(*r->why))) != NULL)
        *r->why = *err;
}

/* The kept failure as this call's result; 0 if there is none. */
static int repeat_failure(const failure_record *r, dcx_error *err)
{
    if (r->status && err) {
        if (r->why)
            *err = *r->why;
        else
            dcx_fail(err, r->status, "the connection failed earlier");
    }
    return r->status;
}

/* The connection cannot go on. */
static int fail_for_good(dcx_conn *c, int status, const dcx_error *err)
{
    keep_first(&c->failure, status, err);
    c->dead = 1;
    return status;
}

/* A call on a dead connection repeats why it died. */
static int failed_before(dcx_conn *c, dcx_error *err)
{
    int status = repeat_failure(&c->failure, err);
    if (status)
        return status;
    return dcx_fail(err, DCX_E_CLOSED, "the connection has already failed or been closed");
}

/* Our records could not all be sent.  When the socket refused them (the
 * peer has gone), nothing more is written, but what the peer sent before is
 * still read: its alert tells why better than a broken pipe does. */
static int send_failed(dcx_conn *c, int status, dcx_error *err)
{
    if (status != DCX_E_SYSCALL)
        return fail_for_good(c, status, err);
    keep_first(&c->write_failure, status, err);
    c->write_dead = 1;
    return status;
}

/* ---- handshake ----------------------------------------------------------- */

static int has_reason(unsigned long e, int reason)
{
    return ERR_GET_LIB(e) == ERR_LIB_SSL && ERR_GET_REASON(e) == reason;
}

/* How far the handshake got, for the reason it failed. */
static dcx_handshake_progress progress(const dcx_conn *c)
{
    int64_t now = dcx_now_ms();
    dcx_handshake_progress p = {c->server_side, now - c->born_ms,
                                now - (c->hs_received ? c->last_in_ms : c->born_ms),
                                c->hs_received, c->answered, c->first, c->first_len};
    return p;
}

/* Turn a failed handshake into the one reason a person needs. */
static int handshake_failure(dcx_conn *c, int ssl_error, dcx_error *err)
{
    unsigned long e = ERR_peek_error();
    int sys = dcx_socket_errno();
    char what[128];
    const char *role = c->server_side ? "client" : "server";
    c->dead = 1;
    const peer_verdict *v = c->verdict;
    if (err && v) {
        snprintf(err->subject, sizeof(err->subject), "%s", v->subject);
        snprintf(err->thumbprint, sizeof(err->thumbprint), "%s", v->thumbprint);
        snprintf(err->not_after, sizeof(err->not_after), "%s", v->not_after);
    }
    if (err)
        err->alert = c->received_alert;
    int rc;
    if (v && v->reason) {
        rc = dcx_fail_verify(err, v->reason, dcx_openssl_method_name(c->ctx->verify), v->detail);
    } else if (has_reason(e, SSL_R_PEER_DID_NOT_RETURN_A_CERTIFICATE)) {
        rc = dcx_fail_verify(err, DCX_VR_NO_CERTIFICATE, dcx_openssl_method_name(c->ctx->verify), "");
    } else if (dcx_sniff_not_tls(c->first, c->first_len, what, sizeof(what))) {
        rc = c->server_side
                 ? dcx_fail(err, DCX_E_NOT_TLS, "%s on the TLS port: the peer is not speaking TLS", what)
                 : dcx_fail(err, DCX_E_NOT_TLS,
                            "the peer answered with %s: it is not speaking TLS on this port "
                            "(is this its plain DICOM port?)", what);
    } else if (c->received_alert >= 0) {
        const char *advice = dcx_alert_advice(c->received_alert);
        rc = dcx_fail(err, DCX_E_PEER_ALERT, "the %s refused the handshake with TLS alert '%s' (%d)%s%s",
                      role, dcx_alert_text(c->received_alert), c->received_alert,
                      *advice ? ": " : "", advice);
    } else if (has_reason(e, SSL_R_UNEXPECTED_EOF_WHILE_READING) ||
               (ssl_error == SSL_ERROR_SYSCALL && e == 0 && sys == 0) ||
               ssl_error == SSL_ERROR_ZERO_RETURN) {
        dcx_handshake_progress p = progress(c);
        rc = dcx_fail_handshake_closed(err, &p);
    } else if (ssl_error == SSL_ERROR_SYSCALL && e == 0) {
        if (err)
            err->sys_errno = sys;
        rc = dcx_fail(err, DCX_E_SYSCALL, "socket error during the handshake: %s", strerror(sys));
    } else if (has_reason(e, SSL_R_UNSUPPORTED_PROTOCOL) ||
               has_reason(e, SSL_R_NO_PROTOCOLS_AVAILABLE) ||
               has_reason(e, SSL_R_UNSUPPORTED_SSL_VERSION) ||
               has_reason(e, SSL_R_WRONG_SSL_VERSION)) {
        rc = dcx_fail(err, DCX_E_PROTOCOL,
                      "no TLS version in common with the %s (this side allows TLS %s to %s)",
                      role, SSL_get_min_proto_version(c->ssl) == TLS1_3_VERSION ? "1.3" : "1.2",
                      SSL_get_max_proto_version(c->ssl) == TLS1_2_VERSION ? "1.2" : "1.3");
    } else if (has_reason(e, SSL_R_NO_SHARED_CIPHER)) {
        rc = dcx_fail(err, DCX_E_PROTOCOL, "no cipher suite in common with the %s", role);
    } else {
        rc = dcx_fail(err, DCX_E_PROTOCOL, "TLS handshake failed: %s",
                      e ? ERR_reason_error_string(e) : "unknown error");
    }
    ERR_clear_error();
    return rc;
}

/* The acceptor's TLS 1.3 ticket is made here, in the handshake's thread, and
 * waits in the send buffer for the first write.  Alone, it would make the
 * requestor's socket readable with no data behind it, and pynetdicom would
 * block in recv() on it.  Made in the first write's thread instead, its
 * session ID would cost that thread a random generator of its own (OpenSSL
 * keeps one per thread, about 4 KiB), and pynetdicom runs a thread per
 * association. */
static void queue_ticket(dcx_conn *c)
{
    if (SSL_new_session_ticket(c->ssl) != 1 || SSL_do_handshake(c->ssl) != 1)
        ERR_clear_error(); /* no ticket: the requestor's next visit is a full handshake */
    c->ticket_held = c->out.len;
}

/* The handshake's time is up: why, from what the peer sent by then. */
static int handshake_timed_out(dcx_conn *c, dcx_error *err)
{
    dcx_handshake_progress p = progress(c);
    return dcx_fail_handshake_timeout(err, &p);
}

static int run_handshake(dcx_conn *c, int timeout_ms, dcx_error *err)
{
    int64_t deadline = dcx_deadline(timeout_ms);
    ERR_clear_error();
    if (!c->server_side && !c->peer_key && SSL_CTX_get_session_cache_mode(c->ctx->ssl_ctx))
        dcx_openssl_offer_session(c);
    for (;;) {
        int r = SSL_do_handshake(c->ssl);
        int e = r == 1 ? SSL_ERROR_NONE : SSL_get_error(c->ssl, r);
        if (e != SSL_ERROR_NONE && e != SSL_ERROR_WANT_READ && e != SSL_ERROR_WANT_WRITE) {
            flush_out(c, dcx_deadline(100), NULL); /* our alert tells the peer why */
            dcx_openssl_forget_session(c);
            return handshake_failure(c, e, err);
        }
        if (c->out.len > c->out.sent)
            c->answered = 1; /* a flight, not an alert: those are sent above */
        int w = flush_out(c, deadline, err); /* this flight, in one send() */
        if (w == DCX_OK && r == 1)
            break;
        if (w == DCX_OK)
            w = dcx_wait(c->fd, e == SSL_ERROR_WANT_WRITE, deadline, err);
        if (w == DCX_E_TIMEOUT && timeout_ms == 0)
            return dcx_fail(err, DCX_E_TIMEOUT, "the TLS handshake waits for the peer");
        if (w == DCX_E_TIMEOUT) {
            c->dead = 1;
            return handshake_timed_out(c, err);
        }
        if (w != DCX_OK) {
            c->dead = 1;
            return w;
        }
    }
    if (SSL_session_reused(c->ssl)) {
        int rc = dcx_openssl_recheck_resumed_peer(c, err);
        if (rc != DCX_OK) {
            dcx_openssl_forget_session(c);
            SSL_CTX_remove_session(c->ctx->ssl_ctx, SSL_get0_session(c->ssl));
            c->dead = 1;
            return rc;
        }
    }
    c->handshake_done = 1;
    free(c->verdict); /* only a refusal needed it */
    c->verdict = NULL;
    out_trim(c);
    if (c->server_side && c->ctx->tickets && SSL_version(c->ssl) == TLS1_3_VERSION)
        queue_ticket(c);
    c->read_state.data_waiting = data_waiting(c); /* records that came behind the handshake */
    release_idle_buffers(c);
    return DCX_OK;
}

int dcx_conn_handshake(dcx_conn *c, int timeout_ms, dcx_error *err)
{
    dcx_error scratch; /* the reason is kept even when the caller does not ask for it */
    if (!err)
        err = &scratch;
    dcx_error_clear(err);
    pthread_mutex_lock(&c->io);
    int rc = DCX_OK;
    if (c->dead)
        rc = failed_before(c, err);
    else if (!c->handshake_done) {
        rc = run_handshake(c, timeout_ms, err);
        if (rc != DCX_OK && c->dead)
            keep_first(&c->failure, rc, err);
    }
    pthread_mutex_unlock(&c->io);
    return rc;
}

/* ---- application data ---------------------------------------------------- */

/* What OpenSSL's refusal of a record after the handshake means, for a person. */
static const char *record_advice(unsigned long e)
{
    if (ERR_GET_LIB(e) != ERR_LIB_SSL)
        return "";
    switch (ERR_GET_REASON(e)) {
    case SSL_R_DECRYPTION_FAILED_OR_BAD_RECORD_MAC:
    case SSL_R_DECRYPTION_FAILED:
        return " (a record was altered on the way, or was not sealed for this connection)";
    case SSL_R_UNEXPECTED_RECORD:
    case SSL_R_UNEXPECTED_MESSAGE:
    case SSL_R_BAD_RECORD_TYPE:
        return " (the peer sent a record TLS does not allow after the handshake, or one "
               "not protected by the connection's keys)";
    case SSL_R_PACKET_LENGTH_TOO_LONG:
    case SSL_R_ENCRYPTED_LENGTH_TOO_LONG:
    case SSL_R_DATA_LENGTH_TOO_LONG:
        return " (the peer sent a record larger than TLS allows)";
    default:
        return "";
    }
}

/* A failure after the handshake: alert, truncation, socket error. */
static int io_failure(dcx_conn *c, int ssl_error, const char *doing, dcx_error *err)
{
    unsigned long e = ERR_peek_error();
    int sys = dcx_socket_errno();
    int rc;
    if (err)
        err->alert = c->received_alert;
    if (c->received_alert >= 0) {
        const char *advice = dcx_alert_advice(c->received_alert);
        rc = dcx_fail(err, DCX_E_PEER_ALERT, "the peer ended the connection with TLS alert '%s' (%d)%s%s",
                      dcx_alert_text(c->received_alert), c->received_alert,
                      *advice ? ": " : "", advice);
    } else if (has_reason(e, SSL_R_UNEXPECTED_EOF_WHILE_READING) ||
               (ssl_error == SSL_ERROR_SYSCALL && e == 0 && sys == 0)) {
        rc = dcx_fail(err, DCX_E_TRUNCATED,
                      "the peer closed the connection in the middle of a TLS record "
                      "(truncated data)");
    } else if (ssl_error == SSL_ERROR_SYSCALL && e == 0) {
        if (err)
            err->sys_errno = sys;
        rc = dcx_fail(err, DCX_E_SYSCALL, "socket error while %s: %s", doing, strerror(sys));
    } else {
        rc = dcx_fail(err, DCX_E_PROTOCOL, "TLS error while %s: %s%s", doing,
                      e ? ERR_reason_error_string(e) : "unknown error", record_advice(e));
    }
    ERR_clear_error();
    return fail_for_good(c, rc, err);
}

/* One SSL_read_ex into dst.  Waits for data (until the deadline) only when
 * `wait` is set; otherwise returns 0 when nothing more is at hand. */
static long read_some(dcx_conn *c, unsigned char *dst, size_t len, int wait, int64_t deadline,
                      dcx_error *err)
{
    for (;;) {
        size_t n = 0;
        if (c->eof)
            return DCX_EOF;
        int ok = SSL_read_ex(c->ssl, dst, len, &n);
        int e = ok == 1 ? SSL_ERROR_NONE : SSL_get_error(c->ssl, 0);
        if (c->out.len > c->ticket_held) { /* OpenSSL answered: a KeyUpdate, or an alert */
            if (c->write_dead || flush_out(c, deadline, NULL) != DCX_OK)
                c->out.len = c->out.sent = c->ticket_held = 0; /* the failure says why */
            out_trim(c);
        }
        if (ok == 1)
            return (long)n;
        if (e == SSL_ERROR_ZERO_RETURN) {
            c->eof = 1;
            return DCX_EOF;
        }
        if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE) {
            if (!wait)
                return 0;
            int w = dcx_wait(c->fd, e == SSL_ERROR_WANT_WRITE, deadline, err);
            if (w != DCX_OK)
                return w;
            continue;
        }
        /* EOF at a record boundary without close_notify: the DICOM layer frames
         * its own PDUs, and peers that never send close_notify are common. */
        if ((has_reason(ERR_peek_error(), SSL_R_UNEXPECTED_EOF_WHILE_READING) ||
             (e == SSL_ERROR_SYSCALL && ERR_peek_error() == 0 && dcx_socket_errno() == 0)) &&
            in_avail(c) == 0 && !SSL_has_pending(c->ssl)) {
            ERR_clear_error();
            c->eof = 1;
            return DCX_EOF;
        }
        return io_failure(c, e, "reading", err);
    }
}

const dcx_read_state *dcx_conn_read_state(const dcx_conn *c)
{
    return &c->read_state;
}

long dcx_conn_read(dcx_conn *c, void *buf, size_t len, int timeout_ms, dcx_error *err)
{
    unsigned char *dst = buf;
    size_t got = 0;
    pthread_mutex_lock(&c->io);
    if (c->dead) {
        long rc = failed_before(c, err);
        pthread_mutex_unlock(&c->io);
        return rc;
    }
    int64_t deadline = dcx_deadline(timeout_ms);
    /* Take every record already at hand, but wait only for the first byte:
     * several small PDUs in one call. */
    while (got < len) {
        long n = read_some(c, dst + got, len - got, got == 0, deadline, err);
        if (n <= 0) {
            if (got == 0) {
                c->read_state.data_waiting = data_waiting(c);
                pthread_mutex_unlock(&c->io);
                return n == 0 ? DCX_E_TIMEOUT : n;
            }
            break; /* what was read goes back now; an EOF or error comes next call */
        }
        got += (size_t)n;
        if (without_readahead)
            break;
    }
    c->read_state.data_waiting = data_waiting(c);
    release_idle_buffers(c);
    pthread_mutex_unlock(&c->io);
    return (long)got;
}

/* A slice of records per send(). */
static long write_locked(dcx_conn *c, const unsigned char *p, size_t len, int64_t deadline,
                         dcx_error *err)
{
    if (c->dead || c->closing)
        return failed_before(c, err);
    if (c->write_dead)
        return repeat_failure(&c->write_failure, err);
    size_t done = 0;
    size_t first = len < OUT_SLICE ? len : OUT_SLICE;
    /* One allocation for the whole write: records of a slice, with their headers and tags. */
    if (!out_reserve(c, first + (first / RECORD_MAX + 2) * RECORD_OVERHEAD))
        return dcx_fail(err, DCX_E_NOMEM, "out of memory for the send buffer");
    while (done < len) {
        size_t n = 0, slice = len - done < OUT_SLICE ? len - done : OUT_SLICE;
        if (SSL_write_ex(c->ssl, p + done, slice, &n) != 1)
            return io_failure(c, SSL_get_error(c->ssl, 0), "writing", err);
        done += n;
        int w = flush_out(c, deadline, err);
        if (w == DCX_E_TIMEOUT) /* part of a record may have left: the stream is unusable */
            return fail_for_good(c, w, err);
        if (w != DCX_OK)
            return send_failed(c, w, err);
    }
    return (long)len;
}

long dcx_conn_write(dcx_conn *c, const void *buf, size_t len, int timeout_ms, dcx_error *err)
{
    dcx_error_clear(err);
    pthread_mutex_lock(&c->io);
    long n = write_locked(c, buf, len, dcx_deadline(timeout_ms), err);
    out_trim(c);
    pthread_mutex_unlock(&c->io);
    return n;
}

/* ---- closing -------------------------------------------------------------- */

static int shutdown_locked(dcx_conn *c, int64_t deadline, int wait_peer, dcx_error *err)
{
    if (c->closing && !wait_peer) {
        /* an earlier call queued close_notify and timed out: only its rest is due */
        int w = flush_out(c, deadline, err);
        if (w != DCX_E_TIMEOUT)
            c->dead = 1;
        return w;
    }
    c->closing = 1; /* the first SSL_shutdown() below queues close_notify */
    for (;;) {
        int r = SSL_shutdown(c->ssl);
        int w = flush_out(c, deadline, err);
        if (w != DCX_OK)
            return w;
        if (r == 1 || (r == 0 && !wait_peer))
            break;
        if (r == 0)
            continue;
        int e = SSL_get_error(c->ssl, r);
        if (e != SSL_ERROR_WANT_READ && e != SSL_ERROR_WANT_WRITE) {
            ERR_clear_error();
            break; /* the peer is gone; nothing more to say to it */
        }
        w = dcx_wait(c->fd, e == SSL_ERROR_WANT_WRITE, deadline, err);
        if (w != DCX_OK)
            return w;
    }
    c->dead = 1;
    return DCX_OK;
}

int dcx_conn_shutdown(dcx_conn *c, int timeout_ms, int wait_peer, dcx_error *err)
{
    dcx_error_clear(err);
    pthread_mutex_lock(&c->io);
    int rc = DCX_OK;
    /* no close_notify can go after a failure or before the handshake: nothing to do */
    if (c->handshake_done && !c->dead && !c->write_dead)
        rc = shutdown_locked(c, dcx_deadline(timeout_ms), wait_peer, err);
    out_trim(c);
    pthread_mutex_unlock(&c->io);
    return rc;
}

/* ---- what the connection is ------------------------------------------------ */

size_t dcx_conn_peer_cert(dcx_conn *c, unsigned char *buf, size_t cap)
{
    X509 *peer = SSL_get0_peer_certificate(c->ssl);
    if (!peer)
        return 0;
    int n = i2d_X509(peer, NULL);
    if (n <= 0)
        return 0;
    if (buf && (size_t)n <= cap) {
        unsigned char *p = buf;
        i2d_X509(peer, &p);
    }
    return (size_t)n;
}

int dcx_conn_version(const dcx_conn *c)
{
    return c->handshake_done ? SSL_version(c->ssl) : 0;
}

const char *dcx_conn_cipher(const dcx_conn *c)
{
    const SSL_CIPHER *cipher = c->handshake_done ? SSL_get_current_cipher(c->ssl) : NULL;
    return cipher ? SSL_CIPHER_get_name(cipher) : "";
}

int dcx_conn_cipher_bits(const dcx_conn *c)
{
    const SSL_CIPHER *cipher = c->handshake_done ? SSL_get_current_cipher(c->ssl) : NULL;
    return cipher ? SSL_CIPHER_get_bits(cipher, NULL) : 0;
}

int dcx_conn_session_reused(const dcx_conn *c)
{
    return c->handshake_done && SSL_session_reused(c->ssl);
}

dcx_socket dcx_conn_socket(const dcx_conn *c)
{
    return c->fd;
}

void dcx_conn_free(dcx_conn *c)
{
    if (!c)
        return;
    SSL_free(c->ssl);
    free(c->failure.why);
    free(c->write_failure.why);
    free(c->verdict);
    free(c->server_name);
    free(c->peer_key);
    free(c->out.data);
    in_buffer_give(c->in.data);
    pthread_mutex_destroy(&c->io);
    free(c);
}
