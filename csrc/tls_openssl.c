/*
 * tls_openssl.c - the OpenSSL 3 backend of dcxtls.h (Linux, macOS).
 *
 * One SSL_CTX serves both roles.  Each connection reads its non-blocking
 * socket into a receive buffer and writes through a send buffer, one system
 * call for many records each way, and waits with poll(), so every call
 * honours its deadline.  Verification is one certificate-verify callback
 * that applies the configured method and records why it refused.
 *
 * OpenSSL runs the handshake.  On TLS 1.3 the engine then protects the
 * application records itself (tls13_record.h), from the traffic secrets
 * OpenSSL derived, so that records go between the caller's buffer and the
 * socket's buffers without OpenSSL's copies.  It takes each direction over
 * at a record boundary, once OpenSSL holds nothing of it: the writing side
 * after the acceptor's session ticket, the reading side at once (acceptor)
 * or after the first application data, behind the tickets (requestor).
 */
#include "dcxtls.h"
#include "dcxtls_common.h"
#include "tls13_record.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <openssl/decoder.h>
#include <openssl/err.h>
#include <openssl/opensslv.h>
#include <openssl/pem.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>

/* The requesting side's sessions, one per peer, for resumption. */
#define SESSION_SLOTS 64      /* requesting side: one session per peer address and name */
#define SERVER_SESSIONS 4096  /* accepting side: sessions kept for requestors that return */

typedef struct session_slot {
    char peer[320];
    SSL_SESSION *session;
    uint64_t last_used;
} session_slot;

struct dcx_ctx {
    SSL_CTX *ssl_ctx;
    dcx_verify verify;
    int check_hostname;
    int has_identity;
    pthread_mutex_t lock; /* guards thumbs and sessions, which change while serving */
    dcx_thumbs thumbs;
    int tickets;          /* issue one TLS 1.3 ticket per accepted connection */
    session_slot sessions[SESSION_SLOTS];
    uint64_t session_clock;
};

/* The first failure of something, repeated to later calls (under `failing`). */
typedef struct failure_record {
    int status;           /* 0 while there is none */
    dcx_error why;
} failure_record;

/* Follows a stream of records from a record boundary, to count them and to
 * know when the next byte starts a new one. */
typedef struct record_counter {
    uint64_t records;
    size_t body_left;       /* bytes of the current record still to come */
    unsigned char head[5];  /* a header split across calls */
    size_t head_len;
} record_counter;

struct dcx_conn {
    dcx_ctx *ctx;
    SSL *ssl;
    dcx_socket fd;
    int server_side;
    int handshake_done;
    int ticket_due;       /* acceptor: a TLS 1.3 ticket rides on the first write */
    int eof;              /* the peer has closed; reads keep answering DCX_EOF */
    _Atomic int dead;     /* a fatal error happened; the SSL object is unusable */
    _Atomic int write_dead; /* the socket refused our records (the peer has gone); reads go on */
    int closing;          /* close_notify was made: no data may follow it */
    int received_alert;   /* fatal alert from the peer, or -1 */
    int sent_alert;       /* fatal alert OpenSSL sent (or wanted to), or -1 */
    unsigned char first[DCX_SNIFF_LEN]; /* the peer's first bytes, to recognise non-TLS */
    size_t first_len;
    int verify_reason;    /* set by the verify callback when it refuses */
    char verify_detail[256];
    char subject[256];
    char thumbprint[2 * DCX_SHA1_LEN + 1];
    char not_after[32];
    char server_name[256];
    char peer_key[320];   /* requesting side: the session cache key, "address:port/name" */
    dcx_read_state read_state;
    struct {              /* records written, not yet sent: one send() per flush */
        unsigned char *data;
        size_t len, cap, sent;
    } out;
    struct {              /* bytes received, not yet taken by a record layer: one recv() for many */
        unsigned char *data;
        size_t start, end, cap;
        int eof;          /* the peer closed its side */
        int sys_errno;    /* the socket failed */
    } in;
    record_counter taken, written; /* records OpenSSL read and wrote after the handshake */
    /* The engine's own record layer, one direction at a time (see the top). */
    unsigned char client_secret[EVP_MAX_MD_SIZE], server_secret[EVP_MAX_MD_SIZE];
    size_t client_secret_len, server_secret_len;
    const char *suite;
    int own_read, own_write;     /* this direction's records are the engine's */
    int can_own_read, can_own_write;
    _Atomic int key_update_due;  /* the peer asked for our KeyUpdate: it leads the next write */
    tls13_keys rkeys, wkeys;
    struct {              /* content of a record that did not fit the caller's buffer */
        unsigned char *data;
        size_t start, len;
    } spill;
    unsigned char *hs;    /* a post-handshake handshake message, until all of it is here */
    size_t hs_len;
    failure_record failure;       /* why the connection died */
    failure_record write_failure; /* why the socket refused our records (write_dead) */
    /* With a sender (dcxtls.h), records are written in its thread while the
     * caller reads in its own: `writing` guards the write side (out, wkeys,
     * closing), `failing` the failure kept for later calls; the reader's
     * only word to the writer is key_update_due.  Only the engine's own
     * record layer writes that way (dcx_conn_duplex). */
    pthread_mutex_t writing, failing;
};

#define RECORD_MAX 16384              /* plaintext of one TLS record */
#define WIRE_MAX (5 + RECORD_MAX + 2048) /* one record on the wire, at most (TLS 1.2) */
#define IN_CAP (8 * WIRE_MAX)         /* socket bytes taken per recv(), at most */
#define OUT_SLICE (4 * RECORD_MAX)    /* plaintext encrypted between two sends */
#define RECORD_OVERHEAD 64            /* header, nonce, tag and padding of one record, at most */
#define HS_MAX 65536                  /* a post-handshake handshake message, at most */
/* AES-GCM's safety margin (RFC 8446 section 5.5): fresh keys after 2^24 records. */
#define KEY_UPDATE_AFTER ((uint64_t)1 << 24)

/* Alerts the engine's record layer sends. */
#define ALERT_UNEXPECTED_MESSAGE 10
#define ALERT_BAD_RECORD_MAC 20
#define ALERT_RECORD_OVERFLOW 22
#define ALERT_DECODE_ERROR 50
#define ALERT_INTERNAL_ERROR 80

static int conn_index = -1;
static BIO_METHOD *out_method, *in_method;
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

static size_t in_avail(const dcx_conn *c)
{
    return c->in.end - c->in.start;
}

static void count_records(record_counter *rc, const unsigned char *p, size_t n)
{
    while (n) {
        if (rc->body_left) {
            size_t k = n < rc->body_left ? n : rc->body_left;
            rc->body_left -= k;
            p += k;
            n -= k;
            continue;
        }
        size_t k = 5 - rc->head_len < n ? 5 - rc->head_len : n;
        memcpy(rc->head + rc->head_len, p, k);
        rc->head_len += k;
        p += k;
        n -= k;
        if (rc->head_len == 5) {
            rc->body_left = (size_t)rc->head[3] << 8 | rc->head[4];
            rc->head_len = 0;
            rc->records++;
        }
    }
}

static int at_record_boundary(const record_counter *rc)
{
    return rc->body_left == 0 && rc->head_len == 0;
}

/* Plaintext or records held here that select() cannot see. */
static int data_waiting(const dcx_conn *c)
{
    if (c->dead)
        return 0;
    return in_avail(c) > 0 || c->spill.len > 0 || (!c->own_read && SSL_has_pending(c->ssl));
}

/* Receive buffers that connections gave back, for the next one that needs
 * one.  A busy connection catches up after nearly every read, and a buffer
 * handed back to malloc came back as fresh pages whenever the heap had been
 * trimmed meanwhile: about 170 page faults per 512 KiB C-STORE.  A few
 * slots for the whole process, so idle associations still keep nothing of
 * their own. */
#define SHELF_SLOTS 4
static unsigned char *_Atomic in_shelf[SHELF_SLOTS];

static unsigned char *in_buffer_take(void)
{
    for (int i = 0; i < SHELF_SLOTS; i++) {
        unsigned char *p = atomic_exchange(&in_shelf[i], NULL);
        if (p)
            return p;
    }
    return malloc(IN_CAP);
}

static void in_buffer_give(unsigned char *p)
{
    for (int i = 0; p && i < SHELF_SLOTS; i++) {
        unsigned char *empty = NULL;
        if (atomic_compare_exchange_strong(&in_shelf[i], &empty, p))
            return;
    }
    free(p);
}

/* A connection that has caught up keeps no receive buffers (OpenSSL's, the
 * engine's) until more arrives: an idle association costs little. */
static void release_idle_buffers(dcx_conn *c)
{
    if (c->dead || data_waiting(c))
        return;
    SSL_free_buffers(c->ssl); /* also those of the handshake, once the engine has the records */
    in_buffer_give(c->in.data);
    c->in.data = NULL;
    c->in.start = c->in.end = c->in.cap = 0;
    free(c->spill.data);
    c->spill.data = NULL;
    c->spill.start = 0;
}

static int out_write(BIO *bio, const char *data, size_t len, size_t *written)
{
    dcx_conn *c = BIO_get_data(bio);
    if (c->own_write) {
        /* OpenSSL's write keys are behind the engine's: what it writes now (an
         * alert, while it still reads) would reuse a nonce.  The engine sends
         * that alert itself (read_some). */
        *written = len;
        return 1;
    }
    if (!out_reserve(c, len))
        return 0;
    memcpy(c->out.data + c->out.len, data, len);
    c->out.len += len;
    if (c->handshake_done)
        count_records(&c->written, (const unsigned char *)data, len);
    *written = len;
    return 1;
}

static long out_ctrl(BIO *bio, int cmd, long num, void *ptr)
{
    dcx_conn *c = BIO_get_data(bio);
    (void)num; (void)ptr;
    switch (cmd) {
    case BIO_CTRL_FLUSH:
        return 1; /* the engine flushes, with its deadline, after each OpenSSL call */
    case BIO_CTRL_WPENDING:
    case BIO_CTRL_PENDING: /* with the engine's records, OpenSSL writes nothing (out_write) */
        return c && !c->own_write ? (long)(c->out.len - c->out.sent) : 0;
    default:
        return 0;
    }
}

static int bio_create(BIO *bio)
{
    BIO_set_init(bio, 1);
    return 1;
}

/* ---- incoming bytes ---------------------------------------------------------
 * The engine reads the socket into its receive buffer, as much as it holds
 * per recv().  OpenSSL takes the handshake from there, and after it whole
 * records only, so that it never holds half a record when the engine takes
 * the reading side over. */

/* recv() without waiting, so that `need` bytes can be at hand.  Returns the
 * bytes added, 0 when none wait, DCX_EOF, or DCX_E_SYSCALL (in.sys_errno). */
static long in_fill(dcx_conn *c, size_t need)
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
    if (c->in.cap - c->in.start < need || c->in.cap - c->in.end < WIRE_MAX) {
        /* A partial record moves to the front, once per buffer's worth. */
        memmove(c->in.data, c->in.data + c->in.start, in_avail(c));
        c->in.end -= c->in.start;
        c->in.start = 0;
    }
    size_t room = c->in.cap - c->in.end;
    for (;;) {
        ssize_t n = recv(c->fd, c->in.data + c->in.end, room, 0);
        if (n > 0) {
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

/* The length on the wire of the record that starts the receive buffer, or
 * TLS13_HEADER while its header is incomplete. */
static size_t next_record_len(const dcx_conn *c)
{
    const unsigned char *p = c->in.data + c->in.start;
    return in_avail(c) < TLS13_HEADER ? TLS13_HEADER : TLS13_HEADER + ((size_t)p[3] << 8 | p[4]);
}

static int in_read(BIO *bio, char *dst, size_t want, size_t *got)
{
    dcx_conn *c = BIO_get_data(bio);
    BIO_clear_retry_flags(bio);
    *got = 0;
    size_t need = 1;
    if (c->handshake_done && at_record_boundary(&c->taken)) {
        need = next_record_len(c);
        if (need > WIRE_MAX)
            need = 1; /* an oversized record: OpenSSL refuses it from its header */
    }
    while (in_avail(c) < need) {
        long r = in_fill(c, need);
        if (r > 0)
            continue;
        if (r == 0) {
            BIO_set_retry_read(bio);
            return 0;
        }
        if (r == DCX_EOF && in_avail(c) > 0)
            break; /* what there is; OpenSSL then finds the record cut short */
        errno = r == DCX_EOF ? 0 : c->in.sys_errno;
        return 0;
    }
    size_t n = want < in_avail(c) ? want : in_avail(c);
    memcpy(dst, c->in.data + c->in.start, n);
    if (c->handshake_done)
        count_records(&c->taken, c->in.data + c->in.start, n);
    c->in.start += n;
    *got = n;
    return 1;
}

static long in_ctrl(BIO *bio, int cmd, long num, void *ptr)
{
    dcx_conn *c = BIO_get_data(bio);
    (void)num; (void)ptr;
    switch (cmd) {
    case BIO_CTRL_EOF:
        return c && c->in.eof && in_avail(c) == 0;
    case BIO_CTRL_PENDING:
        return c ? (long)in_avail(c) : 0;
    case BIO_CTRL_FLUSH:
        return 1;
    default:
        return 0;
    }
}

static void init_library(void)
{
    OPENSSL_init_ssl(OPENSSL_INIT_LOAD_SSL_STRINGS | OPENSSL_INIT_LOAD_CRYPTO_STRINGS, NULL);
    conn_index = SSL_get_ex_new_index(0, "dcx_conn", NULL, NULL, NULL);
    out_method = BIO_meth_new(BIO_get_new_index() | BIO_TYPE_SOURCE_SINK, "dcxsec send buffer");
    BIO_meth_set_write_ex(out_method, out_write);
    BIO_meth_set_ctrl(out_method, out_ctrl);
    BIO_meth_set_create(out_method, bio_create);
    in_method = BIO_meth_new(BIO_get_new_index() | BIO_TYPE_SOURCE_SINK, "dcxsec receive buffer");
    BIO_meth_set_read_ex(in_method, in_read);
    BIO_meth_set_ctrl(in_method, in_ctrl);
    BIO_meth_set_create(in_method, bio_create);
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
    c->out.len = c->out.sent = 0;
    return DCX_OK;
}

const char *dcx_backend(void)
{
    return OpenSSL_version(OPENSSL_VERSION);
}

int dcx_max_supported_version(void)
{
    return DCX_TLS1_3;
}

/* ---- certificates and keys ------------------------------------------- */

static int is_pem(const dcx_blob *b)
{
    static const char marker[] = "-----BEGIN";
    size_t n = sizeof(marker) - 1;
    for (size_t i = 0; i + n <= b->len; i++)
        if (memcmp(b->data + i, marker, n) == 0)
            return 1;
    return 0;
}

static int blob_contains(const dcx_blob *b, const char *needle)
{
    size_t n = strlen(needle);
    for (size_t i = 0; i + n <= b->len; i++)
        if (memcmp(b->data + i, needle, n) == 0)
            return 1;
    return 0;
}

/* All certificates in a blob (one DER, or any number of PEM blocks). */
static STACK_OF(X509) *parse_certificates(const dcx_blob *b)
{
    STACK_OF(X509) *certs = sk_X509_new_null();
    if (!certs)
        return NULL;
    if (is_pem(b)) {
        BIO *bio = BIO_new_mem_buf(b->data, (int)b->len);
        X509 *x;
        while (bio && (x = PEM_read_bio_X509(bio, NULL, NULL, NULL)) != NULL)
            sk_X509_push(certs, x);
        BIO_free(bio);
    } else {
        const unsigned char *p = b->data;
        X509 *x = d2i_X509(NULL, &p, (long)b->len);
        if (x)
            sk_X509_push(certs, x);
    }
    ERR_clear_error();
    if (sk_X509_num(certs) == 0) {
        sk_X509_free(certs);
        return NULL;
    }
    return certs;
}

static int no_password(char *buf, int size, int rwflag, void *u)
{
    (void)buf; (void)size; (void)rwflag; (void)u;
    return -1;
}

static EVP_PKEY *parse_private_key(const dcx_blob *b, const char *password, dcx_error *err)
{
    EVP_PKEY *pkey = NULL;
    const unsigned char *p = b->data;
    size_t len = b->len;
    OSSL_DECODER_CTX *dctx = OSSL_DECODER_CTX_new_for_pkey(&pkey, NULL, NULL, NULL,
                                                           EVP_PKEY_KEYPAIR, NULL, NULL);
    if (!dctx) {
        dcx_fail(err, DCX_E_NOMEM, "out of memory reading the private key");
        return NULL;
    }
    if (password)
        OSSL_DECODER_CTX_set_passphrase(dctx, (const unsigned char *)password, strlen(password));
    else
        OSSL_DECODER_CTX_set_pem_password_cb(dctx, no_password, NULL);
    int ok = OSSL_DECODER_from_data(dctx, &p, &len);
    OSSL_DECODER_CTX_free(dctx);
    ERR_clear_error();
    if (ok && pkey)
        return pkey;
    EVP_PKEY_free(pkey);
    if (blob_contains(b, "ENCRYPTED") && !password)
        dcx_fail(err, DCX_E_CONFIG, "the private key is encrypted: give its password");
    else if (password)
        dcx_fail(err, DCX_E_CONFIG,
                 "the private key could not be decrypted: wrong password, or not a "
                 "private key in PEM or DER (PKCS#8, PKCS#1 or SEC1)");
    else
        dcx_fail(err, DCX_E_CONFIG,
                 "the private key is not a key in PEM or DER (PKCS#8, PKCS#1 or SEC1)");
    return NULL;
}

static void describe_cert(X509 *x, char *subject, size_t subject_cap, char *thumb,
                          char *not_after, size_t not_after_cap)
{
    BIO *bio = BIO_new(BIO_s_mem());
    subject[0] = '\0';
    if (bio) {
        X509_NAME_print_ex(bio, X509_get_subject_name(x), 0, XN_FLAG_RFC2253);
        int n = BIO_read(bio, subject, (int)subject_cap - 1);
        subject[n > 0 ? n : 0] = '\0';
        BIO_free(bio);
    }
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned int mdlen = 0;
    if (X509_digest(x, EVP_sha1(), md, &mdlen))
        dcx_hex(md, mdlen, thumb);
    struct tm tm;
    if (ASN1_TIME_to_tm(X509_get0_notAfter(x), &tm))
        strftime(not_after, not_after_cap, "%Y-%m-%d %H:%M:%S UTC", &tm);
    else
        snprintf(not_after, not_after_cap, "?");
}

static int load_identity(SSL_CTX *sctx, const dcx_config *cfg, dcx_error *err)
{
    STACK_OF(X509) *chain = parse_certificates(&cfg->certificate_chain);
    if (!chain)
        return dcx_fail(err, DCX_E_CONFIG,
                        "the certificate is not an X.509 certificate in PEM or DER");
    X509 *leaf = sk_X509_value(chain, 0);
    if (err)
        describe_cert(leaf, err->subject, sizeof(err->subject), err->thumbprint,
                      err->not_after, sizeof(err->not_after));
    int rc = DCX_OK;
    EVP_PKEY *pkey = NULL;
    if (SSL_CTX_use_certificate(sctx, leaf) != 1) {
        rc = dcx_fail(err, DCX_E_CONFIG, "certificate '%s' cannot be used: %s",
                      err ? err->subject : "", ERR_reason_error_string(ERR_peek_last_error()));
        goto out;
    }
    for (int i = 1; i < sk_X509_num(chain); i++)
        SSL_CTX_add1_chain_cert(sctx, sk_X509_value(chain, i));
    pkey = parse_private_key(&cfg->private_key, cfg->private_key_password, err);
    if (!pkey) {
        rc = err ? err->status : DCX_E_CONFIG;
        goto out;
    }
    if (SSL_CTX_use_PrivateKey(sctx, pkey) != 1 || SSL_CTX_check_private_key(sctx) != 1)
        rc = dcx_fail(err, DCX_E_CONFIG,
                      "the private key does not belong to certificate '%s' (thumbprint %s)",
                      err ? err->subject : "", err ? err->thumbprint : "");
out:
    EVP_PKEY_free(pkey);
    sk_X509_pop_free(chain, X509_free);
    ERR_clear_error();
    return rc;
}

static int add_to_store(X509_STORE *store, const dcx_blob *blobs, size_t count, const char *what,
                        dcx_error *err)
{
    for (size_t i = 0; i < count; i++) {
        STACK_OF(X509) *certs = parse_certificates(&blobs[i]);
        if (!certs)
            return dcx_fail(err, DCX_E_CONFIG,
                            "%s certificate #%zu is not an X.509 certificate in PEM or DER", what,
                            i + 1);
        for (int j = 0; j < sk_X509_num(certs); j++)
            X509_STORE_add_cert(store, sk_X509_value(certs, j)); /* duplicates are fine */
        sk_X509_pop_free(certs, X509_free);
    }
    ERR_clear_error();
    return DCX_OK;
}

/* ---- revocation (CRLs) ------------------------------------------------ */

/* All CRLs in a blob (one DER, or any number of PEM "X509 CRL" blocks). */
static STACK_OF(X509_CRL) *parse_crls(const dcx_blob *b)
{
    STACK_OF(X509_CRL) *crls = sk_X509_CRL_new_null();
    if (!crls)
        return NULL;
    if (is_pem(b)) {
        BIO *bio = BIO_new_mem_buf(b->data, (int)b->len);
        X509_CRL *crl;
        while (bio && (crl = PEM_read_bio_X509_CRL(bio, NULL, NULL, NULL)) != NULL)
            sk_X509_CRL_push(crls, crl);
        BIO_free(bio);
    } else {
        const unsigned char *p = b->data;
        X509_CRL *crl = d2i_X509_CRL(NULL, &p, (long)b->len);
        if (crl)
            sk_X509_CRL_push(crls, crl);
    }
    ERR_clear_error();
    if (sk_X509_CRL_num(crls) == 0) {
        sk_X509_CRL_free(crls);
        return NULL;
    }
    return crls;
}

/* check_revocation off: a certificate with no current CRL at hand passes (as
 * offline does on Windows), but one that a CRL at hand revokes never does. */
static int tolerate_missing_crl(int ok, X509_STORE_CTX *sctx)
{
    int code = X509_STORE_CTX_get_error(sctx);
    if (!ok && (code == X509_V_ERR_UNABLE_TO_GET_CRL || code == X509_V_ERR_CRL_HAS_EXPIRED ||
                code == X509_V_ERR_CRL_NOT_YET_VALID)) {
        X509_STORE_CTX_set_error(sctx, X509_V_OK);
        return 1;
    }
    return ok;
}

/* The CRLs, and how TRUST_CHAIN uses them.  A security officer who gives CRLs
 * expects what they revoke to be refused, so they always apply;
 * check_revocation also demands a current CRL for every certificate of the
 * chain (the root's is the one its intermediates need anyway).  The store's
 * verify callback is each verification's: SSL_set_verify() is given none. */
static int load_revocation(X509_STORE *store, const dcx_config *cfg, dcx_error *err)
{
    for (size_t i = 0; i < cfg->crl_count; i++) {
        STACK_OF(X509_CRL) *crls = parse_crls(&cfg->crls[i]);
        if (!crls)
            return dcx_fail(err, DCX_E_CONFIG,
                            "CRL #%zu is not a certificate revocation list in PEM or DER", i + 1);
        for (int j = 0; j < sk_X509_CRL_num(crls); j++)
            X509_STORE_add_crl(store, sk_X509_CRL_value(crls, j)); /* duplicates are fine */
        sk_X509_CRL_pop_free(crls, X509_CRL_free);
    }
    ERR_clear_error();
    if (!cfg->check_revocation && cfg->crl_count == 0)
        return DCX_OK;
    X509_STORE_set_flags(store, X509_V_FLAG_CRL_CHECK | X509_V_FLAG_CRL_CHECK_ALL);
    if (!cfg->check_revocation)
        X509_STORE_set_verify_cb(store, tolerate_missing_crl);
    return DCX_OK;
}

static int load_trust(SSL_CTX *sctx, const dcx_config *cfg, dcx_error *err)
{
    X509_STORE *store = SSL_CTX_get_cert_store(sctx);
    if (cfg->use_system_trust)
        X509_STORE_set_default_paths(store);
    if (cfg->trusted_dir && !X509_STORE_load_path(store, cfg->trusted_dir))
        return dcx_fail(err, DCX_E_CONFIG, "cannot read trusted certificates folder '%s'",
                        cfg->trusted_dir);
    if (add_to_store(store, cfg->trusted, cfg->trusted_count, "trusted", err) != DCX_OK)
        return err ? err->status : DCX_E_CONFIG;
    if (load_revocation(store, cfg, err) != DCX_OK)
        return err ? err->status : DCX_E_CONFIG;
    /* Without X509_V_FLAG_PARTIAL_CHAIN a store certificate that is not
     * self-signed is a link, never an anchor: intermediates can live here too. */
    return add_to_store(store, cfg->intermediates, cfg->intermediate_count, "intermediate", err);
}

/* ---- verification ---------------------------------------------------- */

static int reason_of_x509_error(int code)
{
    switch (code) {
    case X509_V_ERR_CERT_HAS_EXPIRED:
        return DCX_VR_EXPIRED;
    case X509_V_ERR_CERT_NOT_YET_VALID:
        return DCX_VR_NOT_YET_VALID;
    case X509_V_ERR_UNABLE_TO_GET_ISSUER_CERT:
    case X509_V_ERR_UNABLE_TO_GET_ISSUER_CERT_LOCALLY:
    case X509_V_ERR_UNABLE_TO_VERIFY_LEAF_SIGNATURE:
    case X509_V_ERR_DEPTH_ZERO_SELF_SIGNED_CERT:
    case X509_V_ERR_SELF_SIGNED_CERT_IN_CHAIN:
    case X509_V_ERR_CERT_UNTRUSTED:
        return DCX_VR_UNTRUSTED;
    case X509_V_ERR_HOSTNAME_MISMATCH:
    case X509_V_ERR_IP_ADDRESS_MISMATCH:
        return DCX_VR_HOSTNAME;
    case X509_V_ERR_CERT_REVOKED:
        return DCX_VR_REVOKED;
    case X509_V_ERR_UNABLE_TO_GET_CRL:
    case X509_V_ERR_CRL_HAS_EXPIRED:
    case X509_V_ERR_CRL_NOT_YET_VALID:
    case X509_V_ERR_UNABLE_TO_GET_CRL_ISSUER:
    case X509_V_ERR_CRL_SIGNATURE_FAILURE:
    case X509_V_ERR_UNABLE_TO_DECRYPT_CRL_SIGNATURE:
    case X509_V_ERR_ERROR_IN_CRL_LAST_UPDATE_FIELD:
    case X509_V_ERR_ERROR_IN_CRL_NEXT_UPDATE_FIELD:
    case X509_V_ERR_DIFFERENT_CRL_SCOPE:
    case X509_V_ERR_UNHANDLED_CRITICAL_CRL_EXTENSION:
    case X509_V_ERR_CRL_PATH_VALIDATION_ERROR:
    case X509_V_ERR_KEYUSAGE_NO_CRL_SIGN:
        return DCX_VR_REVOCATION;
    case X509_V_ERR_CERT_SIGNATURE_FAILURE:
        return DCX_VR_BAD_SIGNATURE;
    case X509_V_ERR_INVALID_PURPOSE:
    case X509_V_ERR_INVALID_CA:
    case X509_V_ERR_KEYUSAGE_NO_CERTSIGN:
        return DCX_VR_PURPOSE;
    default:
        return DCX_VR_OTHER;
    }
}

static void name_of(X509_NAME *name, char *out, size_t cap)
{
    BIO *bio = BIO_new(BIO_s_mem());
    out[0] = '\0';
    if (!bio)
        return;
    X509_NAME_print_ex(bio, name, 0, XN_FLAG_RFC2253);
    int n = BIO_read(bio, out, (int)cap - 1);
    out[n > 0 ? n : 0] = '\0';
    BIO_free(bio);
}

static void time_text(const ASN1_TIME *t, char *out, size_t cap)
{
    struct tm tm;
    if (t && ASN1_TIME_to_tm(t, &tm))
        strftime(out, cap, "%Y-%m-%d %H:%M:%S UTC", &tm);
    else
        snprintf(out, cap, "?");
}

/* RFC 5280 CRLReason, as written in a CRL entry. */
static const char *crl_reason_text(const X509_REVOKED *rev)
{
    static const char *const names[] = {
        "unspecified", "keyCompromise", "cACompromise", "affiliationChanged", "superseded",
        "cessationOfOperation", "certificateHold", "", "removeFromCRL", "privilegeWithdrawn",
        "aACompromise"};
    ASN1_ENUMERATED *e = X509_REVOKED_get_ext_d2i(rev, NID_crl_reason, NULL, NULL);
    long code = e ? ASN1_ENUMERATED_get(e) : -1;
    ASN1_ENUMERATED_free(e);
    return code >= 0 && code < (long)(sizeof(names) / sizeof(names[0])) ? names[code] : "";
}

/* Why revocation refused the chain's certificate at depth: which CRL said
 * what, and what to do.  OpenSSL forgets the CRL it used once verification
 * ends, so the store's CRLs from the certificate's issuer are looked at again. */
static void explain_revocation(dcx_conn *c, X509_STORE_CTX *sctx, int code, int depth)
{
    STACK_OF(X509) *chain = X509_STORE_CTX_get0_chain(sctx);
    X509 *cert = chain && depth >= 0 && depth < sk_X509_num(chain) ? sk_X509_value(chain, depth)
                                                                   : X509_STORE_CTX_get_current_cert(sctx);
    char issuer[256] = "", name[256] = "", thumb[41] = "", not_after[32], when[32] = "?";
    const char *why = "";
    if (!cert) {
        snprintf(c->verify_detail, sizeof(c->verify_detail), "%s",
                 X509_verify_cert_error_string(code));
        return;
    }
    name_of(X509_get_issuer_name(cert), issuer, sizeof(issuer));
    describe_cert(cert, name, sizeof(name), thumb, not_after, sizeof(not_after));
    STACK_OF(X509_CRL) *crls = X509_STORE_CTX_get1_crls(sctx, X509_get_issuer_name(cert));
    X509_CRL *newest = NULL;
    for (int i = 0; crls && i < sk_X509_CRL_num(crls); i++) {
        X509_CRL *crl = sk_X509_CRL_value(crls, i);
        X509_REVOKED *rev = NULL;
        if (code == X509_V_ERR_CERT_REVOKED && X509_CRL_get0_by_cert(crl, &rev, cert) == 1) {
            time_text(X509_REVOKED_get0_revocationDate(rev), when, sizeof(when));
            why = crl_reason_text(rev);
        }
        if (!newest || ASN1_TIME_compare(X509_CRL_get0_lastUpdate(crl),
                                         X509_CRL_get0_lastUpdate(newest)) > 0)
            newest = crl;
    }
    char *d = c->verify_detail;
    size_t cap = sizeof(c->verify_detail);
    switch (code) {
    case X509_V_ERR_CERT_REVOKED:
        if (depth == 0)
            snprintf(d, cap, "revoked on %s by '%s'%s%s%s; the peer needs a new certificate", when,
                     issuer, *why ? " (" : "", why, *why ? ")" : "");
        else
            snprintf(d, cap, "its CA certificate '%s' (thumbprint %s) was revoked on %s by "
                     "'%s'%s%s%s; the peer needs a new chain", name, thumb, when, issuer,
                     *why ? " (" : "", why, *why ? ")" : "");
        break;
    case X509_V_ERR_CRL_HAS_EXPIRED:
        time_text(newest ? X509_CRL_get0_nextUpdate(newest) : NULL, when, sizeof(when));
        snprintf(d, cap, "the CRL from '%s' expired on %s: import the CA's current CRL with "
                 "`dcxsec cert import FILE` (or give it in crl_files)", issuer, when);
        break;
    case X509_V_ERR_CRL_NOT_YET_VALID:
        time_text(newest ? X509_CRL_get0_lastUpdate(newest) : NULL, when, sizeof(when));
        snprintf(d, cap, "the CRL from '%s' is not valid before %s: check the clocks", issuer, when);
        break;
    case X509_V_ERR_UNABLE_TO_GET_CRL:
        snprintf(d, cap, "no current CRL from '%s'%s%s%s: import the CA's current CRL with "
                 "`dcxsec cert import FILE` (or give it in crl_files)", issuer,
                 depth ? " for its CA '" : "", depth ? name : "", depth ? "'" : "");
        break;
    default:
        snprintf(d, cap, "the CRL from '%s' cannot be used: %s", issuer,
                 X509_verify_cert_error_string(code));
    }
    sk_X509_CRL_pop_free(crls, X509_CRL_free);
}

static void explain_chain_failure(dcx_conn *c, X509_STORE_CTX *sctx)
{
    int code = X509_STORE_CTX_get_error(sctx);
    int depth = X509_STORE_CTX_get_error_depth(sctx);
    X509 *bad = X509_STORE_CTX_get_current_cert(sctx);
    char name[256] = "";
    c->verify_reason = reason_of_x509_error(code);
    switch (c->verify_reason) {
    case DCX_VR_UNTRUSTED:
        if (code == X509_V_ERR_DEPTH_ZERO_SELF_SIGNED_CERT) {
            snprintf(c->verify_detail, sizeof(c->verify_detail),
                     "it is self-signed and not among the trusted certificates");
        } else {
            if (bad)
                name_of(X509_get_issuer_name(bad), name, sizeof(name));
            snprintf(c->verify_detail, sizeof(c->verify_detail), "its issuer '%s' is unknown",
                     name);
        }
        break;
    case DCX_VR_EXPIRED:
    case DCX_VR_NOT_YET_VALID:
        if (bad && depth > 0) { /* an issuer, not the leaf, is out of date */
            char thumb[41], not_after[32];
            describe_cert(bad, name, sizeof(name), thumb, not_after, sizeof(not_after));
            c->verify_reason = DCX_VR_OTHER;
            snprintf(c->verify_detail, sizeof(c->verify_detail),
                     "issuing CA '%s' %s (valid until %s)", name,
                     code == X509_V_ERR_CERT_HAS_EXPIRED ? "has expired" : "is not yet valid",
                     not_after);
        } else if (bad) {
            struct tm tm;
            if (ASN1_TIME_to_tm(X509_get0_notBefore(bad), &tm))
                strftime(c->verify_detail, sizeof(c->verify_detail),
                         "valid from %Y-%m-%d %H:%M:%S UTC", &tm);
        }
        break;
    case DCX_VR_HOSTNAME:
        snprintf(c->verify_detail, sizeof(c->verify_detail), "%s", c->server_name);
        break;
    case DCX_VR_REVOKED:
    case DCX_VR_REVOCATION:
        explain_revocation(c, sctx, code, depth);
        break;
    default:
        snprintf(c->verify_detail, sizeof(c->verify_detail), "%s (depth %d)",
                 X509_verify_cert_error_string(code), depth);
    }
}

/* Is the certificate's SHA-1 or SHA-256 among the accepted thumbprints now? */
static int thumbprint_accepted(dcx_ctx *ctx, X509 *cert)
{
    unsigned char sha1[EVP_MAX_MD_SIZE], sha256[EVP_MAX_MD_SIZE];
    unsigned int n1 = 0, n256 = 0;
    if (!X509_digest(cert, EVP_sha1(), sha1, &n1) || !X509_digest(cert, EVP_sha256(), sha256, &n256))
        return 0;
    pthread_mutex_lock(&ctx->lock);
    int ok = dcx_thumbs_match(&ctx->thumbs, sha1, sha256);
    pthread_mutex_unlock(&ctx->lock);
    return ok;
}

/* Replaces OpenSSL's chain check, so that one place decides every method. */
static int verify_peer(X509_STORE_CTX *sctx, void *arg)
{
    (void)arg;
    SSL *ssl = X509_STORE_CTX_get_ex_data(sctx, SSL_get_ex_data_X509_STORE_CTX_idx());
    dcx_conn *c = SSL_get_ex_data(ssl, conn_index);
    X509 *leaf = X509_STORE_CTX_get0_cert(sctx);
    if (!c || !leaf)
        return 0;
    describe_cert(leaf, c->subject, sizeof(c->subject), c->thumbprint, c->not_after,
                  sizeof(c->not_after));
    switch (c->ctx->verify) {
    case DCX_VERIFY_NONE:
        return 1;
    case DCX_VERIFY_THUMBPRINT: {
        int ok = thumbprint_accepted(c->ctx, leaf);
        if (!ok) {
            c->verify_reason = DCX_VR_THUMBPRINT;
            X509_STORE_CTX_set_error(sctx, X509_V_ERR_CERT_REJECTED); /* "bad certificate" */
        }
        return ok;
    }
    case DCX_VERIFY_TRUST_CHAIN:
    default:
        if (X509_verify_cert(sctx) == 1)
            return 1;
        explain_chain_failure(c, sctx);
        return 0;
    }
}

static const char *method_name(dcx_verify v)
{
    return v == DCX_VERIFY_THUMBPRINT ? "THUMBPRINT" : v == DCX_VERIFY_NONE ? "NONE" : "TRUST_CHAIN";
}

/* ---- session cache (requesting side) ----------------------------------- */

/* Called with ctx->lock held. */
static session_slot *session_slot_for(dcx_ctx *ctx, const char *peer, int create)
{
    session_slot *victim = NULL; /* an empty slot, else the least recently used */
    for (int i = 0; i < SESSION_SLOTS; i++) {
        session_slot *slot = &ctx->sessions[i];
        if (slot->session && strcmp(slot->peer, peer) == 0)
            return slot;
        if (!victim || (victim->session && (!slot->session || slot->last_used < victim->last_used)))
            victim = slot;
    }
    if (!create)
        return NULL;
    SSL_SESSION_free(victim->session);
    victim->session = NULL;
    snprintf(victim->peer, sizeof(victim->peer), "%s", peer);
    return victim;
}

/* OpenSSL hands over each new session (TLS 1.3: each ticket); keep the latest. */
static int remember_session(SSL *ssl, SSL_SESSION *session)
{
    dcx_conn *c = SSL_get_ex_data(ssl, conn_index);
    if (!c || c->server_side || !c->peer_key[0])
        return 0;
    pthread_mutex_lock(&c->ctx->lock);
    session_slot *slot = session_slot_for(c->ctx, c->peer_key, 1);
    SSL_SESSION_free(slot->session);
    slot->session = session; /* returning 1 hands our reference over */
    slot->last_used = ++c->ctx->session_clock;
    pthread_mutex_unlock(&c->ctx->lock);
    return 1;
}

static void forget_session(dcx_conn *c)
{
    if (c->server_side || !c->peer_key[0])
        return;
    pthread_mutex_lock(&c->ctx->lock);
    session_slot *slot = session_slot_for(c->ctx, c->peer_key, 0);
    if (slot) {
        SSL_SESSION_free(slot->session);
        slot->session = NULL;
    }
    pthread_mutex_unlock(&c->ctx->lock);
}

/* Offer the session last agreed with this peer (address, port and name). */
static void offer_session(dcx_conn *c)
{
    struct sockaddr_storage addr;
    socklen_t len = sizeof(addr);
    char host[INET6_ADDRSTRLEN] = "";
    int port = 0;
    if (getpeername(c->fd, (struct sockaddr *)&addr, &len) != 0)
        return;
    if (addr.ss_family == AF_INET) {
        struct sockaddr_in *in = (struct sockaddr_in *)&addr;
        inet_ntop(AF_INET, &in->sin_addr, host, sizeof(host));
        port = ntohs(in->sin_port);
    } else if (addr.ss_family == AF_INET6) {
        struct sockaddr_in6 *in6 = (struct sockaddr_in6 *)&addr;
        inet_ntop(AF_INET6, &in6->sin6_addr, host, sizeof(host));
        port = ntohs(in6->sin6_port);
    }
    snprintf(c->peer_key, sizeof(c->peer_key), "%s:%d/%s", host, port, c->server_name);
    pthread_mutex_lock(&c->ctx->lock);
    session_slot *slot = session_slot_for(c->ctx, c->peer_key, 0);
    if (slot && SSL_SESSION_is_resumable(slot->session)) {
        SSL_set_session(c->ssl, slot->session);
        slot->last_used = ++c->ctx->session_clock;
    }
    pthread_mutex_unlock(&c->ctx->lock);
}

/* A resumed session skips certificate verification: hold the peer's
 * certificate, kept in the session, to today's rules again. */
static int recheck_resumed_peer(dcx_conn *c, dcx_error *err)
{
    X509 *peer = SSL_get0_peer_certificate(c->ssl);
    if (c->ctx->verify == DCX_VERIFY_NONE)
        return DCX_OK;
    if (!peer)
        return dcx_fail_verify(err, DCX_VR_NO_CERTIFICATE, method_name(c->ctx->verify), "");
    describe_cert(peer, c->subject, sizeof(c->subject), c->thumbprint, c->not_after,
                  sizeof(c->not_after));
    if (err) {
        snprintf(err->subject, sizeof(err->subject), "%s", c->subject);
        snprintf(err->thumbprint, sizeof(err->thumbprint), "%s", c->thumbprint);
        snprintf(err->not_after, sizeof(err->not_after), "%s", c->not_after);
    }
    if (c->ctx->verify == DCX_VERIFY_THUMBPRINT)
        return thumbprint_accepted(c->ctx, peer)
                   ? DCX_OK : dcx_fail_verify(err, DCX_VR_THUMBPRINT, "THUMBPRINT", "");
    if (X509_cmp_current_time(X509_get0_notAfter(peer)) < 0)
        return dcx_fail_verify(err, DCX_VR_EXPIRED, "TRUST_CHAIN", "");
    return DCX_OK;
}

/* ---- context ----------------------------------------------------------- */

/* TLS 1.3's first application traffic secrets, for the engine's record layer. */
static void keep_traffic_secret(const SSL *ssl, const char *line)
{
    dcx_conn *c = SSL_get_ex_data(ssl, conn_index);
    unsigned char *secret;
    size_t *len;
    if (!c)
        return;
    if (strncmp(line, "CLIENT_TRAFFIC_SECRET_0 ", 24) == 0) {
        secret = c->client_secret;
        len = &c->client_secret_len;
    } else if (strncmp(line, "SERVER_TRAFFIC_SECRET_0 ", 24) == 0) {
        secret = c->server_secret;
        len = &c->server_secret_len;
    } else
        return;
    const char *hex = strrchr(line, ' ') + 1; /* label, client random, secret */
    size_t n = strlen(hex) / 2;
    *len = 0;
    if (n > EVP_MAX_MD_SIZE)
        return;
    for (size_t i = 0; i < n; i++) {
        int hi = OPENSSL_hexchar2int((unsigned char)hex[2 * i]);
        int lo = OPENSSL_hexchar2int((unsigned char)hex[2 * i + 1]);
        if (hi < 0 || lo < 0)
            return;
        secret[i] = (unsigned char)(hi << 4 | lo);
    }
    *len = n;
}

/* A KeyUpdate that OpenSSL sends or receives moves its keys past the secrets
 * the engine holds: that direction then stays with OpenSSL. */
static void watch_key_updates(int write_p, int version, int content_type, const void *buf,
                              size_t len, SSL *ssl, void *arg)
{
    const unsigned char *msg = buf;
    (void)version; (void)arg;
    if (content_type != SSL3_RT_HANDSHAKE || len < 5 || msg[0] != SSL3_MT_KEY_UPDATE)
        return;
    dcx_conn *c = SSL_get_ex_data(ssl, conn_index);
    if (!c)
        return;
    if (write_p) {
        c->can_own_write = 0;
    } else {
        c->can_own_read = 0;
        if (msg[4] == SSL_KEY_UPDATE_REQUESTED && c->own_write)
            c->key_update_due = 1; /* OpenSSL cannot answer on the engine's keys */
    }
}

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
    /* No read-ahead: the receive buffer already takes what the socket holds in
     * one recv(), and OpenSSL must take no more than whole records from it. */
    SSL_CTX_set_read_ahead(s, 0);
    SSL_CTX_set_keylog_callback(s, keep_traffic_secret);
    SSL_CTX_set_session_cache_mode(s, cfg->session_cache ? SSL_SESS_CACHE_BOTH
                                                         : SSL_SESS_CACHE_OFF);
    SSL_CTX_sess_set_new_cb(s, remember_session);
    SSL_CTX_sess_set_cache_size(s, SERVER_SESSIONS);
    /* TLS 1.3 tickets go out with the acceptor's first write, not alone after the
     * handshake: a lone ticket makes the requestor's socket readable with no data
     * behind it, and pynetdicom would block in recv() on it. */
    SSL_CTX_set_num_tickets(s, 0);
    ctx->tickets = cfg->session_cache;
    SSL_CTX_set_cert_verify_callback(s, verify_peer, NULL);
    if (cfg->certificate_chain.len) {
        if (load_identity(s, cfg, err) != DCX_OK)
            goto fail;
        ctx->has_identity = 1;
    } else if (cfg->private_key.len) {
        dcx_fail(err, DCX_E_CONFIG, "a private key was given without its certificate");
        goto fail;
    }
    if (load_trust(s, cfg, err) != DCX_OK)
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
    for (int i = 0; i < SESSION_SLOTS; i++)
        SSL_SESSION_free(ctx->sessions[i].session);
    pthread_mutex_destroy(&ctx->lock);
    free(ctx);
}

/* ---- the engine's own TLS 1.3 record layer ------------------------------------
 * Records between the caller's buffer and the socket's buffers, sealed and
 * opened by tls13_record.c.  OpenSSL keeps the handshake, and the records of
 * a direction until the engine takes it over (see the top of this file). */

static void keep_first(dcx_conn *c, failure_record *r, int status, const dcx_error *err);
static int repeat_failure(dcx_conn *c, const failure_record *r, dcx_error *err);
static void remember_failure(dcx_conn *c, int status, const dcx_error *err);
static int failed_before(dcx_conn *c, dcx_error *err);

static void forget_secrets(dcx_conn *c)
{
    OPENSSL_cleanse(c->client_secret, sizeof(c->client_secret));
    OPENSSL_cleanse(c->server_secret, sizeof(c->server_secret));
    c->client_secret_len = c->server_secret_len = 0;
}

/* After the handshake: can the engine carry this connection's records? */
static void prepare_own_records(dcx_conn *c)
{
    const SSL_CIPHER *cipher = SSL_get_current_cipher(c->ssl);
    c->suite = cipher ? SSL_CIPHER_standard_name(cipher) : NULL;
    int able = SSL_version(c->ssl) == TLS1_3_VERSION && c->client_secret_len &&
               c->server_secret_len && tls13_suite_supported(c->suite);
    c->can_own_read = c->can_own_write = able;
    memset(&c->taken, 0, sizeof(c->taken));
    memset(&c->written, 0, sizeof(c->written));
    if (able) /* only then, and only from now: OpenSSL calls it for every record */
        SSL_set_msg_callback(c->ssl, watch_key_updates);
    else
        forget_secrets(c);
}

/* One direction's keys from its traffic secret (the client's or the
 * server's), which is then forgotten: it is needed only once. */
static int keys_from_secret(dcx_conn *c, tls13_keys *k, int client, uint64_t seq, int encrypt)
{
    unsigned char *secret = client ? c->client_secret : c->server_secret;
    size_t *len = client ? &c->client_secret_len : &c->server_secret_len;
    int ok = tls13_keys_init(k, c->suite, secret, *len, seq, encrypt);
    OPENSSL_cleanse(secret, EVP_MAX_MD_SIZE);
    *len = 0;
    return ok;
}

/* The engine reads from here on, if OpenSSL holds nothing of the stream. */
static void take_reading_side(dcx_conn *c)
{
    if (c->own_read || !c->can_own_read || !at_record_boundary(&c->taken) ||
        SSL_has_pending(c->ssl))
        return;
    c->own_read = keys_from_secret(c, &c->rkeys, c->server_side, c->taken.records, 0);
    c->can_own_read = c->own_read;
}

/* The engine writes from here on, after the records OpenSSL wrote. */
static void take_writing_side(dcx_conn *c)
{
    if (c->own_write || !c->can_own_write || !at_record_boundary(&c->written))
        return;
    c->own_write = keys_from_secret(c, &c->wkeys, !c->server_side, c->written.records, 1);
    c->can_own_write = c->own_write;
}

/* Seal one record of `type` into the send buffer. */
static int seal_record(dcx_conn *c, unsigned char type, const unsigned char *p, size_t n,
                       dcx_error *err)
{
    if (!out_reserve(c, n + RECORD_OVERHEAD))
        return dcx_fail(err, DCX_E_NOMEM, "out of memory for the send buffer");
    size_t sealed = tls13_seal(&c->wkeys, type, p, n, c->out.data + c->out.len);
    if (!sealed)
        return dcx_fail(err, DCX_E_PROTOCOL, "TLS error while writing: a record could not be sealed");
    c->out.len += sealed;
    return DCX_OK;
}

/* Our KeyUpdate, then our next keys: asked for by the peer, or due. */
static int seal_key_update(dcx_conn *c, dcx_error *err)
{
    static const unsigned char key_update[5] = {SSL3_MT_KEY_UPDATE, 0, 0, 1,
                                                SSL_KEY_UPDATE_NOT_REQUESTED};
    int rc = seal_record(c, TLS13_HANDSHAKE, key_update, sizeof(key_update), err);
    if (rc != DCX_OK)
        return rc;
    if (!tls13_keys_update(&c->wkeys))
        return dcx_fail(err, DCX_E_PROTOCOL, "TLS error while writing: the key update failed");
    return DCX_OK;
}

/* A fatal alert on the engine's keys, if the socket takes it at once.  An
 * acceptor that has not written yet takes its writing side over for it. */
static void send_alert(dcx_conn *c, int alert)
{
    const unsigned char body[2] = {SSL3_AL_FATAL, (unsigned char)alert};
    if (pthread_mutex_trylock(&c->writing) != 0)
        return; /* a sender is writing: the alert is a courtesy, the failure is kept anyway */
    take_writing_side(c);
    if (c->own_write && c->out.sent == c->out.len &&
        seal_record(c, TLS13_ALERT, body, sizeof(body), NULL) == DCX_OK)
        flush_out(c, dcx_deadline(100), NULL);
    pthread_mutex_unlock(&c->writing);
}

/* The connection cannot go on: tell the peer why (alert >= 0), keep the reason. */
static int fatal(dcx_conn *c, int status, int alert, dcx_error *err)
{
    remember_failure(c, status, err); /* before `dead`: a thread that sees it finds why */
    c->dead = 1; /* before the alert: a sender seals nothing behind it */
    if (alert >= 0)
        send_alert(c, alert);
    return status;
}

/* Write lock held: the engine's records could not all be sent.  When the
 * socket refused them (the peer has gone), nothing more is written, but what
 * the peer sent before is still read: its alert tells why better than a
 * broken pipe does.  Anything else ends the connection. */
static int send_failed(dcx_conn *c, int status, dcx_error *err)
{
    if (status != DCX_E_SYSCALL)
        return fatal(c, status, -1, err);
    keep_first(c, &c->write_failure, status, err); /* before the flag, which writers test */
    c->write_dead = 1;
    return status;
}

/* Handshake messages after the handshake, from one record.  A KeyUpdate moves
 * the peer's keys on; a NewSessionTicket this late is let go (the requestor
 * offers sessions from the tickets that come before the first data). */
static int take_handshake(dcx_conn *c, const unsigned char *p, size_t n, dcx_error *err)
{
    if (c->hs_len + n > HS_MAX)
        return fatal(c, dcx_fail(err, DCX_E_PROTOCOL, "the peer sent a handshake message of "
                                 "more than %d bytes after the handshake", HS_MAX),
                     ALERT_UNEXPECTED_MESSAGE, err);
    if (!c->hs && !(c->hs = malloc(HS_MAX)))
        return fatal(c, dcx_fail(err, DCX_E_NOMEM, "out of memory"), ALERT_INTERNAL_ERROR, err);
    memcpy(c->hs + c->hs_len, p, n);
    c->hs_len += n;
    size_t at = 0;
    while (c->hs_len - at >= 4) {
        const unsigned char *m = c->hs + at;
        size_t body = (size_t)m[1] << 16 | (size_t)m[2] << 8 | m[3];
        if (body > HS_MAX - 4)
            return fatal(c, dcx_fail(err, DCX_E_PROTOCOL, "the peer sent a handshake message of "
                                     "%zu bytes after the handshake", body),
                         ALERT_UNEXPECTED_MESSAGE, err);
        if (c->hs_len - at < 4 + body)
            break;
        if (m[0] == SSL3_MT_KEY_UPDATE) {
            if (body != 1 || m[4] > SSL_KEY_UPDATE_REQUESTED)
                return fatal(c, dcx_fail(err, DCX_E_PROTOCOL, "the peer sent a malformed KeyUpdate"),
                             ALERT_DECODE_ERROR, err);
            if (at + 5 != c->hs_len) /* new keys start with the next record (RFC 8446 5.1) */
                return fatal(c, dcx_fail(err, DCX_E_PROTOCOL, "the peer's KeyUpdate does not end "
                                         "its record"), ALERT_UNEXPECTED_MESSAGE, err);
            if (!tls13_keys_update(&c->rkeys))
                return fatal(c, dcx_fail(err, DCX_E_PROTOCOL, "TLS error while reading: the key "
                                         "update failed"), ALERT_INTERNAL_ERROR, err);
            if (m[4] == SSL_KEY_UPDATE_REQUESTED) {
                /* An acceptor that has not written yet takes its writing side
                 * now (its ticket is let go): OpenSSL cannot answer while it
                 * does not read. */
                take_writing_side(c);
                c->ticket_due = 0;
                if (c->own_write)
                    c->key_update_due = 1; /* leads our next write, perhaps a sender's */
            }
        } else if (!(m[0] == SSL3_MT_NEWSESSION_TICKET && !c->server_side)) {
            return fatal(c, dcx_fail(err, DCX_E_PROTOCOL, "the peer sent an unexpected handshake "
                                     "message (type %d) after the handshake", m[0]),
                         ALERT_UNEXPECTED_MESSAGE, err);
        }
        at += 4 + body;
    }
    memmove(c->hs, c->hs + at, c->hs_len - at);
    c->hs_len -= at;
    if (!c->hs_len) {
        free(c->hs);
        c->hs = NULL;
    }
    return DCX_OK;
}

/* The alert the peer sent in a record: close_notify ends the stream. */
static int take_alert(dcx_conn *c, const unsigned char *p, size_t n, dcx_error *err)
{
    if (n != 2)
        return fatal(c, dcx_fail(err, DCX_E_PROTOCOL, "the peer sent a malformed TLS alert"),
                     ALERT_DECODE_ERROR, err);
    if (p[1] == SSL_AD_CLOSE_NOTIFY) {
        c->eof = 1;
        SSL_set_shutdown(c->ssl, SSL_get_shutdown(c->ssl) | SSL_RECEIVED_SHUTDOWN);
        return DCX_OK;
    }
    if (p[1] == SSL_AD_USER_CANCELLED) /* a close_notify follows */
        return DCX_OK;
    c->received_alert = p[1];
    if (err)
        err->alert = p[1];
    const char *advice = dcx_alert_advice(p[1]);
    return fatal(c, dcx_fail(err, DCX_E_PEER_ALERT,
                             "the peer ended the connection with TLS alert '%s' (%d)%s%s",
                             dcx_alert_text(p[1]), p[1], *advice ? ": " : "", advice),
                 -1, err);
}

/* Open the whole record at the front of the receive buffer into dst.
 * Returns the application data put there (what does not fit waits in
 * spill), 0 for a record without any, or a negative status. */
static long open_record(dcx_conn *c, unsigned char *dst, size_t room, dcx_error *err)
{
    unsigned char *record = c->in.data + c->in.start;
    size_t body = next_record_len(c) - TLS13_HEADER;
    if (record[0] != TLS13_APPLICATION_DATA) /* alerts too: one on-path could forge (RFC 8446 6) */
        return fatal(c, dcx_fail(err, DCX_E_PROTOCOL, "the peer sent an unprotected TLS record "
                                 "(type %d) after the handshake", record[0]),
                     ALERT_UNEXPECTED_MESSAGE, err);
    if (!c->spill.data && !(c->spill.data = malloc(TLS13_MAX_CIPHER)))
        return fatal(c, dcx_fail(err, DCX_E_NOMEM, "out of memory"), ALERT_INTERNAL_ERROR, err);
    long inner = tls13_open(&c->rkeys, record, record + TLS13_HEADER, body, dst, room,
                            c->spill.data);
    c->in.start += TLS13_HEADER + body;
    if (inner < 0)
        return fatal(c, dcx_fail(err, DCX_E_PROTOCOL, "TLS error while reading: bad record mac "
                                 "(a record was altered on the way, or was not sealed for this "
                                 "connection)"), ALERT_BAD_RECORD_MAC, err);
    if (inner > TLS13_MAX_PLAIN + 1) /* content, type and padding (RFC 8446 5.4) */
        return fatal(c, dcx_fail(err, DCX_E_PROTOCOL, "the peer sent a TLS record of more than "
                                 "%d bytes", TLS13_MAX_PLAIN), ALERT_RECORD_OVERFLOW, err);
    /* The content type is the last byte that is not zero; zeros after it pad. */
    size_t first = (size_t)inner < room ? (size_t)inner : room;
    size_t end = (size_t)inner;
    unsigned char type = 0;
    while (end > 0 && !type) {
        end--;
        type = end >= first ? c->spill.data[end - first] : dst[end];
    }
    if (!type)
        return fatal(c, dcx_fail(err, DCX_E_PROTOCOL, "the peer sent a TLS record without a "
                                 "content type"), ALERT_UNEXPECTED_MESSAGE, err);
    if (end > TLS13_MAX_PLAIN)
        return fatal(c, dcx_fail(err, DCX_E_PROTOCOL, "the peer sent a TLS record of more than "
                                 "%d bytes", TLS13_MAX_PLAIN), ALERT_RECORD_OVERFLOW, err);
    if (type != TLS13_HANDSHAKE && c->hs_len) /* a message split across records must end first */
        return fatal(c, dcx_fail(err, DCX_E_PROTOCOL, "the peer interleaved a record (type %d) "
                                 "with a handshake message", type), ALERT_UNEXPECTED_MESSAGE, err);
    if (type == TLS13_APPLICATION_DATA) {
        if (end <= first)
            return (long)end;
        c->spill.start = 0;
        c->spill.len = end - first;
        return (long)first;
    }
    const unsigned char *content = dst;
    if (end > first) { /* gather what is split between dst and spill */
        memmove(c->spill.data + first, c->spill.data, end - first);
        memcpy(c->spill.data, dst, first);
        content = c->spill.data;
    }
    int rc;
    if (type == TLS13_HANDSHAKE && end > 0)
        rc = take_handshake(c, content, end, err);
    else if (type == TLS13_ALERT)
        rc = take_alert(c, content, end, err);
    else
        rc = fatal(c, dcx_fail(err, DCX_E_PROTOCOL, "the peer sent an unexpected TLS record "
                               "(type %d) after the handshake", type),
                   ALERT_UNEXPECTED_MESSAGE, err);
    return rc == DCX_OK ? 0 : rc;
}

/* Read with the engine's record layer: every whole record at hand is opened
 * straight into dst, as far as it goes.  Waits (until the deadline) only
 * when `wait` is set and nothing came yet.  Returns the bytes read, 0 when
 * nothing is at hand and `wait` is not set, DCX_EOF or a negative status;
 * a failure after some bytes is kept for the next call. */
static long own_read(dcx_conn *c, unsigned char *dst, size_t len, int wait, int64_t deadline,
                     dcx_error *err)
{
    size_t got = 0;
    if (c->spill.len) {
        got = len < c->spill.len ? len : c->spill.len;
        memcpy(dst, c->spill.data + c->spill.start, got);
        c->spill.start += got;
        c->spill.len -= got;
    }
    while (got < len && !c->eof && !c->dead) {
        size_t need = next_record_len(c);
        if (need > TLS13_HEADER + TLS13_MAX_CIPHER) {
            int rc = fatal(c, dcx_fail(err, DCX_E_PROTOCOL, "the peer sent a TLS record of %zu "
                                       "bytes, more than TLS 1.3 allows", need - TLS13_HEADER),
                           ALERT_RECORD_OVERFLOW, err);
            return got ? (long)got : rc;
        }
        if (in_avail(c) < need) {
            long r = in_fill(c, need);
            if (r > 0)
                continue;
            if (r == 0) {
                if (got)
                    break;
                if (!wait)
                    return 0;
                int w = dcx_wait(c->fd, 0, deadline, err);
                if (w != DCX_OK)
                    return w;
                continue;
            }
            if (r == DCX_EOF && in_avail(c) == 0) {
                c->eof = 1; /* at a record boundary: DICOM frames its own PDUs */
                break;
            }
            int rc;
            if (r == DCX_EOF) {
                rc = fatal(c, dcx_fail(err, DCX_E_TRUNCATED, "the peer closed the connection in "
                                       "the middle of a TLS record (truncated data)"), -1, err);
            } else {
                if (err)
                    err->sys_errno = c->in.sys_errno;
                rc = fatal(c, dcx_fail(err, DCX_E_SYSCALL, "socket error while reading: %s",
                                       strerror(c->in.sys_errno)), -1, err);
            }
            return got ? (long)got : rc; /* the failure is kept for the next call */
        }
        long n = open_record(c, dst + got, len - got, err);
        if (n < 0)
            return got ? (long)got : n;
        got += (size_t)n;
    }
    if (got)
        return (long)got;
    if (c->eof)
        return DCX_EOF;
    return c->dead ? failed_before(c, err) : 0; /* perhaps a sender's failure meanwhile */
}

/* Seal `len` bytes of data as records into the send buffer, which has room;
 * a KeyUpdate leads them when the peer asked for one or the keys are due. */
static int seal_data(dcx_conn *c, const unsigned char *p, size_t len, dcx_error *err)
{
    for (size_t off = 0; off < len;) {
        size_t n = len - off < RECORD_MAX ? len - off : RECORD_MAX;
        int rc = DCX_OK;
        if (atomic_exchange(&c->key_update_due, 0) || c->wkeys.seq >= KEY_UPDATE_AFTER)
            rc = seal_key_update(c, err);
        if (rc == DCX_OK)
            rc = seal_record(c, TLS13_APPLICATION_DATA, p + off, n, err);
        if (rc != DCX_OK)
            return rc;
        off += n;
    }
    return DCX_OK;
}

/* Write with the engine's record layer: a slice of records per send(). */
static long own_write(dcx_conn *c, const unsigned char *p, size_t len, int64_t deadline,
                      dcx_error *err)
{
    size_t done = 0;
    while (done < len) {
        size_t slice = len - done < OUT_SLICE ? len - done : OUT_SLICE;
        if (!out_reserve(c, slice + (slice / RECORD_MAX + 2) * RECORD_OVERHEAD))
            return dcx_fail(err, DCX_E_NOMEM, "out of memory for the send buffer");
        int rc = seal_data(c, p + done, slice, err);
        if (rc != DCX_OK)
            return fatal(c, rc, -1, err);
        done += slice;
        int w = flush_out(c, deadline, err);
        if (w != DCX_OK) /* part of a record may have left: the stream is unusable */
            return send_failed(c, w, err);
    }
    return (long)len;
}

/* ---- connection -------------------------------------------------------- */

static void track_alerts(const SSL *ssl, int where, int value)
{
    if ((where & SSL_CB_ALERT) && ((value >> 8) & 0xff) == SSL3_AL_FATAL) {
        dcx_conn *c = SSL_get_ex_data(ssl, conn_index);
        if (c && (where & SSL_CB_READ))
            c->received_alert = value & 0xff;
        else if (c && (where & SSL_CB_WRITE))
            c->sent_alert = value & 0xff;
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
    if (c) {
        pthread_mutex_init(&c->writing, NULL);
        pthread_mutex_init(&c->failing, NULL);
    }
    BIO *bio = NULL, *out = NULL;
    if (!c || !(c->ssl = SSL_new(ctx->ssl_ctx)) ||
        !(bio = BIO_new(in_method)) || !(out = BIO_new(out_method))) {
        BIO_free(bio);
        dcx_fail(err, DCX_E_NOMEM, "out of memory");
        goto fail;
    }
    BIO_set_data(bio, c);
    BIO_set_data(out, c);
    c->ctx = ctx;
    c->fd = fd;
    c->server_side = server_side;
    c->received_alert = -1;
    c->sent_alert = -1;
    SSL_set_ex_data(c->ssl, conn_index, c);
    SSL_set_bio(c->ssl, bio, out);
    SSL_set_info_callback(c->ssl, track_alerts);

    int mode = SSL_VERIFY_PEER; /* the callback decides; NONE accepts anything */
    if (server_side && ctx->verify != DCX_VERIFY_NONE)
        mode |= SSL_VERIFY_FAIL_IF_NO_PEER_CERT;
    if (!server_side && ctx->verify == DCX_VERIFY_NONE)
        mode = SSL_VERIFY_NONE;
    SSL_set_verify(c->ssl, mode, NULL);

    if (server_name && *server_name) {
        snprintf(c->server_name, sizeof(c->server_name), "%s", server_name);
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

static int has_reason(unsigned long e, int reason)
{
    return ERR_GET_LIB(e) == ERR_LIB_SSL && ERR_GET_REASON(e) == reason;
}

/* Turn a failed handshake into the one reason a person needs. */
static int handshake_failure(dcx_conn *c, int ssl_error, dcx_error *err)
{
    unsigned long e = ERR_peek_error();
    int sys = dcx_socket_errno();
    char what[128];
    const char *role = c->server_side ? "client" : "server";
    c->dead = 1;
    if (err) {
        snprintf(err->subject, sizeof(err->subject), "%s", c->subject);
        snprintf(err->thumbprint, sizeof(err->thumbprint), "%s", c->thumbprint);
        snprintf(err->not_after, sizeof(err->not_after), "%s", c->not_after);
        err->alert = c->received_alert;
    }
    int rc;
    if (c->verify_reason) {
        rc = dcx_fail_verify(err, c->verify_reason, method_name(c->ctx->verify), c->verify_detail);
    } else if (has_reason(e, SSL_R_PEER_DID_NOT_RETURN_A_CERTIFICATE)) {
        rc = dcx_fail_verify(err, DCX_VR_NO_CERTIFICATE, method_name(c->ctx->verify), "");
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
        if (c->first_len == 0)
            rc = c->server_side
                     ? dcx_fail(err, DCX_E_PROTOCOL,
                                "the client closed the connection before sending anything")
                     : dcx_fail(err, DCX_E_NOT_TLS,
                                "the server closed the connection without answering the TLS "
                                "ClientHello: it is probably not speaking TLS on this port, or "
                                "it refused us without saying why");
        else
            rc = dcx_fail(err, DCX_E_PROTOCOL, "the %s closed the connection during the handshake",
                          role);
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

/* Wait for what OpenSSL asked for; returns DCX_OK to retry. */
static int wait_for(dcx_conn *c, int ssl_error, int64_t deadline, dcx_error *err)
{
    return dcx_wait(c->fd, ssl_error == SSL_ERROR_WANT_WRITE, deadline, err);
}

static int run_handshake(dcx_conn *c, int timeout_ms, dcx_error *err);
static void remember_failure(dcx_conn *c, int status, const dcx_error *err);

int dcx_conn_handshake(dcx_conn *c, int timeout_ms, dcx_error *err)
{
    dcx_error scratch; /* the reason is kept even when the caller does not ask for it */
    if (!err)
        err = &scratch;
    dcx_error_clear(err);
    if (c->dead)
        return failed_before(c, err);
    if (c->handshake_done)
        return DCX_OK;
    int rc = run_handshake(c, timeout_ms, err);
    if (rc != DCX_OK && c->dead)
        remember_failure(c, rc, err);
    return rc;
}

static int run_handshake(dcx_conn *c, int timeout_ms, dcx_error *err)
{
    int64_t deadline = dcx_deadline(timeout_ms);
    ERR_clear_error();
    if (!c->server_side && !c->peer_key[0] && SSL_CTX_get_session_cache_mode(c->ctx->ssl_ctx))
        offer_session(c);
    for (;;) {
        int r = SSL_do_handshake(c->ssl);
        int e = r == 1 ? SSL_ERROR_NONE : SSL_get_error(c->ssl, r);
        if (e != SSL_ERROR_NONE && e != SSL_ERROR_WANT_READ && e != SSL_ERROR_WANT_WRITE) {
            flush_out(c, dcx_deadline(100), NULL); /* our alert tells the peer why */
            forget_session(c);
            return handshake_failure(c, e, err);
        }
        int w = flush_out(c, deadline, err); /* this flight, in one send() */
        if (w == DCX_OK && r == 1)
            break;
        if (w == DCX_OK)
            w = wait_for(c, e, deadline, err);
        if (w == DCX_E_TIMEOUT && timeout_ms == 0)
            return dcx_fail(err, DCX_E_TIMEOUT, "the TLS handshake waits for the peer");
        if (w == DCX_E_TIMEOUT) {
            c->dead = 1;
            if (c->first_len > 0)
                return dcx_fail(err, DCX_E_TIMEOUT,
                                "TLS handshake timed out after %d ms: the peer stopped answering",
                                timeout_ms);
            return c->server_side
                       ? dcx_fail(err, DCX_E_TIMEOUT,
                                  "TLS handshake timed out after %d ms: the client sent nothing",
                                  timeout_ms)
                       : dcx_fail(err, DCX_E_TIMEOUT,
                                  "TLS handshake timed out after %d ms: the server never answered "
                                  "our ClientHello (is this a TLS port?)", timeout_ms);
        }
        if (w != DCX_OK) {
            c->dead = 1;
            return w;
        }
    }
    if (SSL_session_reused(c->ssl)) {
        int rc = recheck_resumed_peer(c, err);
        if (rc != DCX_OK) {
            forget_session(c);
            SSL_CTX_remove_session(c->ctx->ssl_ctx, SSL_get0_session(c->ssl));
            c->dead = 1;
            return rc;
        }
    }
    c->handshake_done = 1;
    out_trim(c);
    c->ticket_due = c->server_side && c->ctx->tickets && SSL_version(c->ssl) == TLS1_3_VERSION;
    prepare_own_records(c);
    if (c->server_side) /* no tickets come from a requestor: its records are all data */
        take_reading_side(c);
    if (!c->ticket_due)
        take_writing_side(c);
    c->read_state.data_waiting = data_waiting(c); /* records that came behind the handshake */
    release_idle_buffers(c);
    return DCX_OK;
}

/* The first failure is why; one that follows from it is not. */
static void keep_first(dcx_conn *c, failure_record *r, int status, const dcx_error *err)
{
    pthread_mutex_lock(&c->failing);
    if (!r->status) {
        r->status = status;
        if (err)
            r->why = *err;
        else
            dcx_fail(&r->why, status, "the connection failed earlier");
    }
    pthread_mutex_unlock(&c->failing);
}

/* The kept failure as this call's result; 0 if there is none. */
static int repeat_failure(dcx_conn *c, const failure_record *r, dcx_error *err)
{
    pthread_mutex_lock(&c->failing);
    int status = r->status;
    if (status && err)
        *err = r->why;
    pthread_mutex_unlock(&c->failing);
    return status;
}

static void remember_failure(dcx_conn *c, int status, const dcx_error *err)
{
    keep_first(c, &c->failure, status, err);
}

/* A call on a dead connection repeats why it died. */
static int failed_before(dcx_conn *c, dcx_error *err)
{
    int status = repeat_failure(c, &c->failure, err);
    if (status)
        return status;
    return dcx_fail(err, DCX_E_CLOSED, "the connection has already failed or been closed");
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
        rc = dcx_fail(err, DCX_E_PROTOCOL, "TLS error while %s: %s", doing,
                      e ? ERR_reason_error_string(e) : "unknown error");
    }
    ERR_clear_error();
    remember_failure(c, rc, err);
    c->dead = 1;
    return rc;
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
        if (!c->own_write && c->out.len) { /* else c->out is the engine's, perhaps a sender's */
            if (flush_out(c, deadline, NULL) != DCX_OK)
                ERR_clear_error(); /* an alert OpenSSL wrote while reading: the failure says why */
            out_trim(c);
        }
        if (ok == 1)
            return (long)n;
        int e = SSL_get_error(c->ssl, 0);
        if (e == SSL_ERROR_ZERO_RETURN) {
            c->eof = 1;
            return DCX_EOF;
        }
        if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE) {
            if (!wait)
                return 0;
            int w = wait_for(c, e, deadline, err);
            if (w != DCX_OK)
                return w;
            continue;
        }
        /* EOF at a record boundary without close_notify: the DICOM layer frames
         * its own PDUs, and peers that never send close_notify are common. */
        if ((has_reason(ERR_peek_error(), SSL_R_UNEXPECTED_EOF_WHILE_READING) ||
             (e == SSL_ERROR_SYSCALL && ERR_peek_error() == 0 && dcx_socket_errno() == 0)) &&
            !SSL_has_pending(c->ssl)) {
            ERR_clear_error();
            c->eof = 1;
            return DCX_EOF;
        }
        int rc = io_failure(c, e, "reading", err); /* dead first: a sender seals nothing after */
        if (c->own_write && c->sent_alert >= 0)
            send_alert(c, c->sent_alert); /* OpenSSL's copy was dropped: see out_write */
        return rc;
    }
}

const dcx_read_state *dcx_conn_read_state(const dcx_conn *c)
{
    return &c->read_state;
}

/* Read with whichever record layer has this direction now. */
static long read_records(dcx_conn *c, unsigned char *dst, size_t len, int wait, int64_t deadline,
                         dcx_error *err)
{
    return c->own_read ? own_read(c, dst, len, wait, deadline, err)
                       : read_some(c, dst, len, wait, deadline, err);
}

long dcx_conn_read(dcx_conn *c, void *buf, size_t len, int timeout_ms, dcx_error *err)
{
    unsigned char *dst = buf;
    size_t got = 0;
    if (c->dead)
        return failed_before(c, err);
    int64_t deadline = dcx_deadline(timeout_ms);
    /* Take every record already at hand, but wait only for the first byte. */
    while (got < len && !c->dead) {
        long n = read_records(c, dst + got, len - got, got == 0, deadline, err);
        if (n <= 0) {
            if (got == 0) {
                c->read_state.data_waiting = data_waiting(c);
                return n == 0 ? DCX_E_TIMEOUT : n;
            }
            break; /* what was read goes back now; an EOF or error comes next call */
        }
        got += (size_t)n;
        if (c->own_read)
            break; /* it took every record at hand */
        take_reading_side(c); /* requestor: once the tickets are in, behind the first data */
    }
    if (!got && c->dead) /* a sender's failure came between the check above and the loop */
        return failed_before(c, err);
    c->read_state.data_waiting = data_waiting(c);
    release_idle_buffers(c);
    return (long)got;
}

/* Write with OpenSSL's record layer: a slice of records per send(). */
static long openssl_write(dcx_conn *c, const unsigned char *p, size_t len, int64_t deadline,
                          dcx_error *err)
{
    size_t done = 0;
    size_t first = len < OUT_SLICE ? len : OUT_SLICE;
    /* One allocation for the whole write: records of a slice, with their headers and tags. */
    if (!out_reserve(c, first + (first / RECORD_MAX + 1) * RECORD_OVERHEAD))
        return dcx_fail(err, DCX_E_NOMEM, "out of memory for the send buffer");
    while (done < len) {
        size_t n = 0, slice = len - done < OUT_SLICE ? len - done : OUT_SLICE;
        if (SSL_write_ex(c->ssl, p + done, slice, &n) != 1)
            return io_failure(c, SSL_get_error(c->ssl, 0), "writing", err);
        done += n;
        int w = flush_out(c, deadline, err);
        if (w != DCX_OK) { /* part of a record may have left: the stream is unusable */
            c->dead = 1;
            remember_failure(c, w, err);
            return w;
        }
    }
    return (long)len;
}

long dcx_conn_write(dcx_conn *c, const void *buf, size_t len, int timeout_ms, dcx_error *err)
{
    if (c->dead || c->closing)
        return failed_before(c, err);
    if (c->write_dead)
        return repeat_failure(c, &c->write_failure, err);
    int64_t deadline = dcx_deadline(timeout_ms);
    int ticket = c->ticket_due;
    if (ticket) {
        c->ticket_due = 0;
        SSL_new_session_ticket(c->ssl);
        if (c->can_own_write) {
            /* OpenSSL writes the ticket, the engine the data behind it: one send(). */
            if (SSL_do_handshake(c->ssl) == 1)
                take_writing_side(c);
            else
                ERR_clear_error(); /* the ticket goes with OpenSSL's first record instead */
        }
    }
    pthread_mutex_lock(&c->writing);
    long n = c->own_write ? own_write(c, buf, len, deadline, err)
                          : openssl_write(c, buf, len, deadline, err);
    out_trim(c);
    pthread_mutex_unlock(&c->writing);
    if (ticket) /* OpenSSL set up its read buffer to send the ticket */
        release_idle_buffers(c);
    return n;
}

/* ---- writing from a sender's thread --------------------------------------
 * Only the engine's own record layer: OpenSSL's SSL object must not be
 * written in one thread while it is read in another. */

int dcx_conn_duplex(const dcx_conn *c)
{
    if (!c->handshake_done)
        return 0;
    if (c->dead || c->closing || c->write_dead)
        return -1;
    if (c->own_write)
        return 1; /* OpenSSL, if it still reads, drops what it would write (out_write) */
    return c->ticket_due && c->can_own_write ? 0 : -1; /* an acceptor's first write decides */
}

/* Write lock held.  Sends the rest of earlier records, then seals one slice. */
static long own_write_some(dcx_conn *c, const unsigned char *p, size_t len, dcx_error *err)
{
    int w = flush_out(c, dcx_deadline(0), err);
    if (w == DCX_E_TIMEOUT)
        return 0; /* the socket is still busy with earlier records */
    if (w != DCX_OK)
        return send_failed(c, w, err);
    size_t slice = len < OUT_SLICE ? len : OUT_SLICE;
    if (slice == 0) {
        out_trim(c);
        return 0;
    }
    if (!out_reserve(c, slice + (slice / RECORD_MAX + 2) * RECORD_OVERHEAD))
        return fatal(c, dcx_fail(err, DCX_E_NOMEM, "out of memory for the send buffer"), -1, err);
    int rc = seal_data(c, p, slice, err);
    if (rc != DCX_OK)
        return fatal(c, rc, -1, err);
    w = flush_out(c, dcx_deadline(0), err);
    if (w != DCX_OK && w != DCX_E_TIMEOUT) /* what the socket did not take waits in c->out */
        return send_failed(c, w, err);
    out_trim(c);
    return (long)slice;
}

long dcx_conn_write_some(dcx_conn *c, const void *buf, size_t len, dcx_error *err)
{
    dcx_error_clear(err);
    if (c->dead)
        return failed_before(c, err);
    pthread_mutex_lock(&c->writing);
    long n;
    if (c->dead) /* our own fatal alert may have gone out meanwhile: nothing follows it */
        n = failed_before(c, err);
    else if (c->write_dead)
        n = repeat_failure(c, &c->write_failure, err);
    else if (c->closing)
        n = dcx_fail(err, DCX_E_CLOSED, "the connection is being closed: no data may follow");
    else if (!c->own_write)
        n = dcx_fail(err, DCX_E_UNSUPPORTED, "this connection's records are OpenSSL's: "
                     "write them with dcx_conn_write()");
    else
        n = own_write_some(c, buf, len, err);
    pthread_mutex_unlock(&c->writing);
    return n;
}

size_t dcx_conn_unsent(dcx_conn *c)
{
    pthread_mutex_lock(&c->writing);
    size_t n = c->out.len - c->out.sent;
    pthread_mutex_unlock(&c->writing);
    return n;
}

/* close_notify on the engine's keys; with wait_peer, read until the peer's. */
static int own_shutdown(dcx_conn *c, int64_t deadline, int wait_peer, dcx_error *err)
{
    const unsigned char close_notify[2] = {SSL3_AL_WARNING, SSL_AD_CLOSE_NOTIFY};
    int w = DCX_OK;
    if (!c->closing) {
        w = seal_record(c, TLS13_ALERT, close_notify, 2, err);
        c->closing = w == DCX_OK;
    }
    if (w == DCX_OK)
        w = flush_out(c, deadline, err);
    if (w == DCX_E_TIMEOUT)
        return w; /* the record waits in c->out: a later call sends the rest */
    /* OpenSSL drops a session from the caches when a connection ends without
     * its close_notify: this one was sent, so the session stays resumable. */
    if (w == DCX_OK)
        SSL_set_shutdown(c->ssl, SSL_get_shutdown(c->ssl) | SSL_SENT_SHUTDOWN);
    unsigned char sink[4096];
    while (w == DCX_OK && wait_peer && !c->dead &&
           read_records(c, sink, sizeof(sink), 1, deadline, NULL) > 0)
        ;
    c->dead = 1;
    ERR_clear_error();
    return w;
}

static int shutdown_locked(dcx_conn *c, int64_t deadline, int wait_peer, dcx_error *err);

int dcx_conn_shutdown(dcx_conn *c, int timeout_ms, int wait_peer, dcx_error *err)
{
    dcx_error_clear(err);
    if (!c->handshake_done || c->dead || c->write_dead) /* no close_notify can go: nothing to do */
        return DCX_OK;
    pthread_mutex_lock(&c->writing);
    int rc = shutdown_locked(c, dcx_deadline(timeout_ms), wait_peer, err);
    pthread_mutex_unlock(&c->writing);
    return rc;
}

static int shutdown_locked(dcx_conn *c, int64_t deadline, int wait_peer, dcx_error *err)
{
    if (c->own_read) /* OpenSSL's read keys are behind: it must not read again */
        take_writing_side(c);
    if (c->own_write) /* OpenSSL's write keys are behind: it must not write again */
        return own_shutdown(c, deadline, wait_peer, err);
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
        w = wait_for(c, e, deadline, err);
        if (w != DCX_OK)
            return w;
    }
    c->dead = 1;
    return DCX_OK;
}

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
    tls13_keys_clear(&c->rkeys);
    tls13_keys_clear(&c->wkeys);
    forget_secrets(c);
    free(c->out.data);
    in_buffer_give(c->in.data);
    free(c->spill.data);
    free(c->hs);
    pthread_mutex_destroy(&c->writing);
    pthread_mutex_destroy(&c->failing);
    free(c);
}
