/*
 * openssl_int.h - what the OpenSSL backend's files share: the context and
 * connection structures, and the calls between openssl.c (connections and
 * records), openssl_verify.c (identity, trust, peer verification) and
 * openssl_session.c (the requesting side's session cache).  Internal.
 *
 * OpenSSL does all of TLS: handshake, record protection, keys, nonces,
 * sequence numbers.  The engine only moves ciphertext between the socket
 * and OpenSSL through two buffers of its own, and decides the peer.
 */
#ifndef OPENSSL_INT_H
#define OPENSSL_INT_H

#include "dcxtls.h"
#include "dcxtls_common.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>

#include <openssl/ssl.h>
#include <openssl/x509.h>

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
    int check_revocation; /* a current CRL is required for every certificate of the chain */
    int has_identity;
    pthread_mutex_t lock; /* guards thumbs and sessions, which change while serving */
    dcx_thumbs thumbs;
    int tickets;          /* issue one TLS 1.3 ticket per accepted connection */
    session_slot sessions[SESSION_SLOTS];
    uint64_t session_clock;
};

/* The first failure of something, repeated to later calls.  Its reason is
 * allocated only when there is one: an idle association keeps less. */
/* What verification found about the peer, kept only until the handshake
 * ends: a refusal needs it, an idle association does not. */
typedef struct peer_verdict {
    int reason;           /* a dcx_verify_reason once verification refused */
    char detail[400];
    char subject[256];
    char thumbprint[2 * DCX_SHA1_LEN + 1];
    char not_after[32];
} peer_verdict;

typedef struct failure_record {
    int status;           /* 0 while there is none */
    dcx_error *why;
} failure_record;

struct dcx_conn {
    dcx_ctx *ctx;
    SSL *ssl;
    dcx_socket fd;
    int server_side;
    int handshake_done;
    int eof;              /* the peer has closed; reads keep answering DCX_EOF */
    int dead;             /* a fatal error happened, or the connection was shut down */
    int write_dead;       /* the socket refused our records (the peer has gone); reads go on */
    int closing;          /* close_notify was made: no data may follow it */
    int received_alert;   /* fatal alert from the peer, or -1 */
    unsigned char first[DCX_SNIFF_LEN]; /* the peer's first bytes, to recognise non-TLS */
    size_t first_len;
    /* The handshake's progress, for the reason when it runs out of time. */
    int64_t born_ms;      /* when the connection was made */
    int64_t last_in_ms;   /* when the peer's last handshake byte came */
    size_t hs_received;   /* bytes the peer sent during the handshake */
    int answered;         /* our first flight left */
    peer_verdict *verdict; /* during the handshake, once the peer's certificate came */
    char *server_name;    /* the name the requestor asked for, or NULL */
    char *peer_key;       /* requesting side: the session cache key, "address:port/name" */
    dcx_read_state read_state;
    struct {              /* records OpenSSL wrote, not yet sent: one send() per flush */
        unsigned char *data;
        size_t len, cap, sent;
    } out;
    size_t ticket_held;   /* acceptor: its ticket's bytes at the front of out, for the first write */
    struct {              /* bytes received, not yet taken by OpenSSL: one recv() for many */
        unsigned char *data;
        size_t start, end, cap;
        int eof;          /* the peer closed its side */
        int sys_errno;    /* the socket failed */
    } in;
    failure_record failure;       /* why the connection died */
    failure_record write_failure; /* why the socket refused our records (write_dead) */
    /* One call at a time uses the SSL object (see dcxtls.h). */
    pthread_mutex_t io;
};

extern int dcx_openssl_conn_index; /* SSL ex_data slot holding the dcx_conn */

/* openssl_verify.c */
int dcx_openssl_load_identity(SSL_CTX *sctx, const dcx_config *cfg, dcx_error *err);
int dcx_openssl_load_trust(dcx_ctx *ctx, const dcx_config *cfg, dcx_error *err);
int dcx_openssl_verify_peer(X509_STORE_CTX *sctx, void *arg);
peer_verdict *dcx_openssl_verdict(dcx_conn *c);
int dcx_openssl_recheck_resumed_peer(dcx_conn *c, dcx_error *err);
const char *dcx_openssl_method_name(dcx_verify v);

/* openssl_session.c */
int dcx_openssl_remember_session(SSL *ssl, SSL_SESSION *session);
void dcx_openssl_forget_session(dcx_conn *c);
void dcx_openssl_offer_session(dcx_conn *c);
void dcx_openssl_free_sessions(dcx_ctx *ctx);

#endif /* OPENSSL_INT_H */
