/*
 * dcxtls.h - the backend-neutral TLS engine of dcxsec.
 *
 * One configuration, one context built from it that serves both roles, and
 * connections bound to a socket descriptor.  Exactly one backend implements
 * this header per platform: openssl.c with its openssl_*.c parts (Linux,
 * macOS) or schannel.c with its schannel_*.c parts (Windows).  No backend
 * type appears here, and nothing here knows Python.  Threads that exist for
 * the caller's sake (the handshake pump) are declared apart, in dcxthreads.h.
 *
 * All calls that touch the network block for at most their timeout
 * (milliseconds, negative = no deadline) and never longer.  Every failure
 * returns a negative dcx_status and fills a dcx_error with a reason a person
 * can act on.
 */
#ifndef DCXTLS_H
#define DCXTLS_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#ifdef _WIN32
typedef uintptr_t dcx_socket; /* a SOCKET */
#else
typedef int dcx_socket;
#endif

/* Protocol versions, numbered as on the wire (and as Python's ssl.TLSVersion). */
#define DCX_TLS1_2 0x0303
#define DCX_TLS1_3 0x0304

typedef enum dcx_verify {
    DCX_VERIFY_NONE = 0,        /* any certificate is accepted */
    DCX_VERIFY_TRUST_CHAIN = 1, /* the chain must end in a trusted root and be valid now */
    DCX_VERIFY_THUMBPRINT = 2   /* the leaf's SHA-1 or SHA-256 must be in the accepted list */
} dcx_verify;

typedef enum dcx_status {
    DCX_OK = 0,
    DCX_EOF = -1,           /* the peer closed the connection cleanly (close_notify, or at a record boundary) */
    DCX_E_TIMEOUT = -2,     /* the deadline passed */
    DCX_E_SYSCALL = -3,     /* the socket failed; dcx_error.sys_errno says how */
    DCX_E_CONFIG = -4,      /* the configuration is unusable (bad certificate, key, version range) */
    DCX_E_VERIFY = -5,      /* the peer's certificate was refused by the verification method */
    DCX_E_NOT_TLS = -6,     /* the peer is not speaking TLS */
    DCX_E_PROTOCOL = -7,    /* TLS protocol failure: no shared version or cipher, bad record, ... */
    DCX_E_PEER_ALERT = -8,  /* the peer refused us with a TLS alert (dcx_error.alert) */
    DCX_E_TRUNCATED = -9,   /* the connection ended in the middle of a TLS record */
    DCX_E_CLOSED = -10,     /* the connection was already shut down or failed before */
    DCX_E_NOMEM = -11,
    DCX_E_UNSUPPORTED = -12 /* the platform cannot do what was asked */
} dcx_status;

/* Why a peer certificate was refused (dcx_error.verify_reason). */
typedef enum dcx_verify_reason {
    DCX_VR_NONE = 0,
    DCX_VR_NO_CERTIFICATE = 1,   /* the peer presented no certificate */
    DCX_VR_UNTRUSTED = 2,        /* the chain does not end in a trusted root */
    DCX_VR_EXPIRED = 3,
    DCX_VR_NOT_YET_VALID = 4,
    DCX_VR_THUMBPRINT = 5,       /* not in the accepted thumbprints */
    DCX_VR_HOSTNAME = 6,         /* does not name the host asked for */
    DCX_VR_REVOKED = 7,
    DCX_VR_BAD_SIGNATURE = 8,
    DCX_VR_PURPOSE = 9,          /* not fit for TLS (key usage, basic constraints) */
    DCX_VR_OTHER = 10,
    DCX_VR_REVOCATION = 11       /* revocation cannot be checked: no current CRL */
} dcx_verify_reason;

typedef struct dcx_error {
    int status;            /* a dcx_status */
    int sys_errno;         /* errno / WSAGetLastError() for DCX_E_SYSCALL, else 0 */
    int alert;             /* TLS alert number sent or received, or -1 */
    int verify_reason;     /* a dcx_verify_reason for DCX_E_VERIFY */
    char subject[256];     /* the certificate concerned, when there is one */
    char thumbprint[41];   /* its SHA-1, upper-case hex */
    char not_after[32];    /* its expiry, "YYYY-MM-DD HH:MM:SS UTC" */
    char reason[512];      /* the whole story, for a person */
} dcx_error;

/* dcx_error structs for callers that make one per call: kept on a shelf for
 * the next call instead of going back to malloc, whose per-thread cache would
 * keep one in every thread that ever let one go. */
void *dcx_error_alloc(size_t size);
void dcx_error_release(void *err);

/* A certificate or key as bytes: PEM (possibly several blocks) or DER. */
typedef struct dcx_blob {
    const unsigned char *data;
    size_t len;
} dcx_blob;

/* The platform certificate store (Windows system stores); see dcx_config. */
typedef enum dcx_store {
    DCX_STORE_CURRENT_USER = 0,
    DCX_STORE_LOCAL_COMPUTER = 1
} dcx_store;

typedef struct dcx_config {
    dcx_blob certificate_chain;      /* own certificate, leaf first, then intermediates */
    dcx_blob private_key;            /* its key: PKCS#8, PKCS#1 or SEC1, PEM or DER */
    const char *private_key_password;/* NULL if the key is not encrypted */
    const dcx_blob *trusted;         /* extra trusted roots, each PEM or DER */
    size_t trusted_count;
    const dcx_blob *intermediates;   /* intermediate CAs that may complete a peer's chain */
    size_t intermediate_count;
    const char *trusted_dir;         /* a folder of trusted roots (hashed), or NULL */
    int use_system_trust;            /* also trust the platform's store */
    dcx_verify verify;
    const unsigned char *thumbprints;/* accepted digests, each 32 bytes: SHA-256, or SHA-1 zero-padded */
    const unsigned char *thumbprint_lens; /* 20 or 32 for each entry */
    size_t thumbprint_count;
    int min_version;                 /* DCX_TLS1_2 .. DCX_TLS1_3; 0 = the floor (1.2) */
    int max_version;                 /* 0 = the newest the platform has */
    int check_hostname;              /* check server_name against the peer's certificate */
    int session_cache;               /* keep sessions for resumption */
    /* The identity from the platform's system store instead of bytes: the
     * certificate whose SHA-1 is identity_thumbprint (20 bytes) in "My" of
     * cert_store, with its private key.  Backends without system stores
     * (OpenSSL) answer DCX_E_UNSUPPORTED; there dcxsec's Python layer reads its
     * own store folders and passes certificate_chain/private_key instead. */
    dcx_store cert_store;
    const unsigned char *identity_thumbprint;
    /* TRUST_CHAIN on system stores: the platform's roots plus those of cert_store. */
    int check_revocation;            /* demand a current CRL for the chain (off: a missing CRL is fine) */
    /* Certificate revocation lists for TRUST_CHAIN, each PEM (possibly several)
     * or DER.  CRLs given are always applied, so a certificate they revoke is
     * refused (DCX_VR_REVOKED); check_revocation additionally refuses a
     * certificate of the chain that has no current CRL (DCX_VR_REVOCATION).
     * OpenSSL checks every certificate of the chain, SChannel every one below
     * the root (the root's own CRL is the one its intermediates need anyway).
     * SChannel also counts the CRLs in the CA store of cert_store (where
     * `certutil -addstore CA FILE.crl` puts them) and what the chain engine
     * holds itself, and fetches nothing. */
    const dcx_blob *crls;
    size_t crl_count;
} dcx_config;

typedef struct dcx_ctx dcx_ctx;
/* Calls on one connection do not overlap: the caller makes one at a time
 * (a backend may also take turns itself, but must not be relied on to). */
typedef struct dcx_conn dcx_conn;

/* The backend's name and version, e.g. "OpenSSL 3.0.19 27 Jan 2026". */
const char *dcx_backend(void);
/* The newest protocol version the platform can negotiate. */
int dcx_max_supported_version(void);

dcx_ctx *dcx_ctx_new(const dcx_config *cfg, dcx_error *err);
/* Replace the accepted thumbprints; connections that start later see the new list. */
int dcx_ctx_set_thumbprints(dcx_ctx *ctx, const unsigned char *thumbprints,
                            const unsigned char *lens, size_t count, dcx_error *err);
void dcx_ctx_free(dcx_ctx *ctx);

/* Bind a connection to a connected (or about to be connected) socket.  The
 * socket stays owned by the caller.  server_name may be NULL. */
dcx_conn *dcx_conn_new(dcx_ctx *ctx, dcx_socket fd, int server_side,
                       const char *server_name, dcx_error *err);
/* Run the handshake within timeout_ms (-1: no limit); a timeout is fatal.
 * With timeout_ms == 0 it only advances with what the peer has already sent,
 * never waiting: DCX_E_TIMEOUT then means "call again", and the connection
 * stays usable.  An acceptor answers a waiting ClientHello this way at once. */
int dcx_conn_handshake(dcx_conn *c, int timeout_ms, dcx_error *err);
/* Requesting side: TCP connect to host (a numeric IPv4 or IPv6 address) and
 * port, then the handshake, in one call, so the ClientHello leaves the moment
 * the connection is up.  *connected tells a connect failure (sys_errno set,
 * or DCX_E_TIMEOUT) from a handshake failure. */
int dcx_conn_connect(dcx_conn *c, const char *host, int port, int connect_timeout_ms,
                     int handshake_timeout_ms, int *connected, dcx_error *err);
/* Read into buf every record already at hand, as far as len allows, waiting
 * only for the first byte: one call then takes several small PDUs, and the
 * caller answers the small reads that follow from buf.  Returns bytes read
 * (>0), DCX_EOF, or a negative status. */
long dcx_conn_read(dcx_conn *c, void *buf, size_t len, int timeout_ms, dcx_error *err);
/* What the engine holds that select() cannot see, readable between calls on
 * the connection without calling in: data_waiting is set when records read
 * from the socket, or plaintext from them, wait for the next dcx_conn_read. */
typedef struct dcx_read_state {
    int data_waiting;
} dcx_read_state;

const dcx_read_state *dcx_conn_read_state(const dcx_conn *c);
/* Writes all of buf; returns len or a negative status.  When the socket
 * refuses the records (the peer has gone), this write and every later one
 * fail, while reads may still return what the peer sent before, such as
 * the alert that says why it went. */
long dcx_conn_write(dcx_conn *c, const void *buf, size_t len, int timeout_ms, dcx_error *err);
/* Send close_notify (and wait for the peer's when wait_peer is set).  No data
 * may be written after the first call.  DCX_E_TIMEOUT when the record did not
 * leave in time: the next call sends what is left of it. */
int dcx_conn_shutdown(dcx_conn *c, int timeout_ms, int wait_peer, dcx_error *err);
/* close_notify if the socket takes it now: DCX_OK when it went (or none was
 * due), DCX_E_TIMEOUT when the socket is not writable (nothing is made then)
 * or the record did not leave whole, for dcx_conn_shutdown() to finish.  It
 * never blocks, so it can be called holding a lock other threads wait for
 * (Python's GIL). */
int dcx_conn_close_notify_now(dcx_conn *c, dcx_error *err);
/* The peer's leaf certificate in DER: its length, or 0 if none.  Copies at
 * most cap bytes; call with cap 0 to learn the size. */
size_t dcx_conn_peer_cert(dcx_conn *c, unsigned char *buf, size_t cap);
int dcx_conn_version(const dcx_conn *c);          /* DCX_TLS1_2, DCX_TLS1_3 or 0 */
const char *dcx_conn_cipher(const dcx_conn *c);   /* IANA/OpenSSL name, or "" */
int dcx_conn_cipher_bits(const dcx_conn *c);
int dcx_conn_session_reused(const dcx_conn *c);
void dcx_conn_free(dcx_conn *c);
/* The socket the connection was bound to. */
dcx_socket dcx_conn_socket(const dcx_conn *c);

#ifdef __cplusplus
}
#endif
#endif /* DCXTLS_H */
