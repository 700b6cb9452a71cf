/*
 * schannel_int.h - private to the SChannel backend of dcxtls.h (Windows): the
 * SDK settings and headers every part of it is compiled with, the context and
 * connection structs, and the functions one part of the backend calls in
 * another.  Nothing here belongs in dcxtls.h.
 *
 *   schannel.c           library facts, credentials, context, connection,
 *                        handshake, read/write/shutdown, attributes
 *   schannel_identity.c  certificates and keys from bytes (PEM, DER, PKCS#8),
 *                        the local identity from bytes or from the My store
 *   schannel_verify.c    the trusted certificates folder, and the peer's
 *                        certificate judged with Crypt32 (revocation by the
 *                        CRLs given and those of the CA store included),
 *                        failures explained
 *   schannel_suites.c    the negotiated cipher suite's name
 */
#ifndef DCX_SCHANNEL_INT_H
#define DCX_SCHANNEL_INT_H

#ifndef _WIN32_WINNT
#define _WIN32_WINNT 0x0A00
#endif
#define SECURITY_WIN32
#define SCHANNEL_USE_BLACKLISTS /* declares SCH_CREDENTIALS (TLS 1.3) */

#include "dcxtls.h"
#include "dcxtls_common.h"

#include <winsock2.h>
#include <ws2tcpip.h>
#include <windows.h>
#include <winternl.h>
#include <wincrypt.h>
#include <ncrypt.h>
#include <bcrypt.h>
#include <sspi.h>
#include <schannel.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#ifndef SECURITY_FLAG_IGNORE_UNKNOWN_CA
#define SECURITY_FLAG_IGNORE_UNKNOWN_CA 0x00000100
#endif
#ifndef SECURITY_FLAG_IGNORE_REVOCATION
#define SECURITY_FLAG_IGNORE_REVOCATION 0x00000080
#endif
#ifndef SECURITY_FLAG_IGNORE_CERT_CN_INVALID
#define SECURITY_FLAG_IGNORE_CERT_CN_INVALID 0x00001000
#endif
#ifndef SP_PROT_TLS1_3_CLIENT
#define SP_PROT_TLS1_3_CLIENT 0x00002000
#define SP_PROT_TLS1_3_SERVER 0x00001000
#endif

struct dcx_ctx {
    dcx_verify verify;
    int check_hostname;
    int check_revocation;
    int use_system_trust;
    int session_cache;
    int lo, hi;                 /* the protocol range actually offered */
    dcx_store cert_store;
    PCCERT_CONTEXT identity;    /* own certificate with its key, or NULL */
    wchar_t key_container[64];  /* the container we created for a key from bytes */
    int key_is_cng;
    HCERTSTORE identity_store;  /* memory store holding the identity and its intermediates */
    HCERTSTORE trusted;         /* extra trusted roots (memory store, possibly empty) */
    HCERTSTORE intermediates;   /* CAs that may complete a peer's chain, not trusted */
    HCERTSTORE crls;            /* CRLs given in the configuration (memory store, possibly empty) */
    size_t crl_count;
    size_t trusted_count;
    CRITICAL_SECTION lock;      /* guards thumbs and the lazy inbound credentials */
    dcx_thumbs thumbs;
    CredHandle cred_out, cred_in;
    int have_cred_out, have_cred_in;
};

struct dcx_conn {
    dcx_ctx *ctx;
    dcx_socket fd;
    int server_side;
    CtxtHandle ctxt;
    int have_ctxt;
    int handshake_done;
    int dead;
    int fail_status;            /* why the connection died (0: it did not, or was shut down) */
    dcx_error failure;          /* ... and the whole error, repeated to every later call */
    int peer_closed;            /* close_notify received, or the peer closed at a record boundary */
    int received_alert;
    int asked_for_cert;         /* the server asked for a certificate this side lacks (TLS 1.2) */
    SecPkgContext_StreamSizes sizes;
    unsigned char *in;          /* ciphertext received, not yet decrypted */
    size_t in_len, in_cap;
    struct {                    /* one record decrypted, not yet read */
        unsigned char *data;
        size_t start, end;
    } pt;
    size_t plain_cap;
    dcx_read_state read_state;
    unsigned char *out;         /* one encrypted record being built */
    int closing;                /* close_notify was made: no data may follow it */
    int keeping_rest;           /* sending close_notify: a rest cut short goes to out */
    size_t out_rest;            /* close_notify's rest in out, for the next shutdown call */
    unsigned char first[DCX_SNIFF_LEN];
    size_t first_len;
    /* The handshake's progress, for the reason when it runs out of time. */
    int64_t born_ms;            /* when the connection was made */
    int64_t last_in_ms;         /* when the peer's last handshake byte came */
    size_t hs_received;         /* bytes the peer sent during the handshake */
    int answered;               /* our first flight left */
    PCCERT_CONTEXT peer;
    int version;
    char cipher[96];
    int cipher_bits;
    int reused;
    char server_name[256];
    wchar_t server_name_w[256];
    char subject[256];
    char thumbprint[2 * DCX_SHA1_LEN + 1];
    char not_after[32];
};

/* ---- schannel.c ---------------------------------------------------------- */

/* The symbolic name of an SSPI/Crypt32 status, for reasons and logs. */
const char *sch_status_name(SECURITY_STATUS s);

/* ---- schannel_identity.c ------------------------------------------------- */

/* Adds every certificate of a blob (one DER, or PEM blocks) to store.  Returns
 * how many; *first gets the first one (caller frees) when first is not NULL. */
int sch_add_certificates(HCERTSTORE store, const dcx_blob *b, PCCERT_CONTEXT *first);
/* Adds every CRL of a blob (one DER, or PEM "X509 CRL" blocks) to store; returns how many. */
int sch_add_crls(HCERTSTORE store, const dcx_blob *b);
/* Subject (RFC 2253 spelling), SHA-1 thumbprint (hex) and notAfter of cert. */
void sch_describe_cert(PCCERT_CONTEXT cert, char *subject, size_t subject_cap, char *thumb,
                       char *not_after, size_t not_after_cap);
/* ctx->identity from cfg->certificate_chain and cfg->private_key (the key goes
 * into a container of its own), or from Cert:\...\My by thumbprint. */
int sch_identity_from_bytes(dcx_ctx *ctx, const dcx_config *cfg, dcx_error *err);
int sch_identity_from_store(dcx_ctx *ctx, const dcx_config *cfg, dcx_error *err);
/* Deletes the key container sch_identity_from_bytes created, if any. */
void sch_delete_key_container(dcx_ctx *ctx);

/* ---- schannel_verify.c --------------------------------------------------- */

/* Adds the certificates of the files in dir to ctx->trusted. */
int sch_read_trusted_dir(dcx_ctx *ctx, const char *dir, dcx_error *err);
/* The server name as an IPv4/IPv6 address (4 or 16 bytes), or 0 when it is a host name. */
int sch_ip_literal(const char *name, unsigned char addr[16]);
/* Fails verification of the peer with reason and detail, naming its certificate. */
int sch_fail_verify(dcx_conn *c, int reason, const char *detail, dcx_error *err);
/* After the handshake: takes the peer's certificate into c->peer and applies
 * the context's verification method to it. */
int sch_verify_peer(dcx_conn *c, dcx_error *err);

/* ---- schannel_suites.c --------------------------------------------------- */

/* The protocol, cipher suite and resumption of a connection whose handshake is done, into c. */
void sch_read_connection_info(dcx_conn *c);
/* The negotiated suite's name into out (IANA's, as Windows names it), or ""
 * when neither SChannel's answer nor the connection's algorithms (info, may be
 * NULL) tell it. */
void sch_name_cipher_suite(CtxtHandle *ctxt, const SecPkgContext_ConnectionInfo *info, char *out,
                           size_t cap);

#endif /* DCX_SCHANNEL_INT_H */
