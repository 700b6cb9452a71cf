/*
 * driver.h - what the files of the conformance driver share: the engine
 * headers and the platform (sockets, threads), the suite's constants, the
 * SHA-256 state, the configuration of a case (opts) and make_ctx, the file
 * and socket helpers (support.c), the harness that reports a case's outcome
 * and connects as a client (driver.c), the in-process server (cases_server.c),
 * the verification helpers (cases_verify.c), and every case that driver.c's
 * table runs (cases_*.c).
 */
#ifndef DCX_CONFORMANCE_DRIVER_H
#define DCX_CONFORMANCE_DRIVER_H

#include "dcxtls.h"
#include "dcxstore.h"

#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#ifdef _WIN32
#include <winsock2.h>
#include <ws2tcpip.h>
#include <windows.h>
#include <wincrypt.h>
#include <process.h>
typedef SOCKET sock_t;
#define close_socket closesocket
typedef HANDLE thread_t;
#define THREAD_FN unsigned __stdcall
int thread_start(thread_t *t, unsigned(__stdcall *fn)(void *), void *arg);
#else
#include <arpa/inet.h>
#include <netinet/in.h>
#include <pthread.h>
#include <sys/socket.h>
#include <poll.h>
#include <time.h>
#include <unistd.h>
typedef int sock_t;
#define INVALID_SOCKET (-1)
#define close_socket close
typedef pthread_t thread_t;
#define THREAD_FN void *
int thread_start(thread_t *t, void *(*fn)(void *), void *arg);
#endif
void thread_join(thread_t t);
double now_s(void);
void sleep_ms(int ms);

#define MB (1024 * 1024)
#define BULK_BYTES (50ull * MB)
#define TIMEOUT_MS 30000

/* ---- support.c: SHA-256, hex, the byte pattern ---------------------------- */

typedef struct sha256 {
    uint32_t h[8];
    uint64_t total;
    unsigned char block[64];
    size_t fill;
} sha256;

void sha256_init(sha256 *s);
void sha256_update(sha256 *s, const void *data, size_t len);
void sha256_final(sha256 *s, unsigned char out[32]);
void hex(const unsigned char *b, size_t n, char *out);
int unhex(const char *s, unsigned char *out, size_t cap);
void pattern(uint64_t *state, unsigned char *buf, size_t len);

/* ---- support.c: files and configurations ---------------------------------- */

extern const char *dir; /* DIR of the command line */

typedef struct opts {
    const char *cert, *key;       /* identity files, or NULL */
    const char *store_thumb;      /* identity from Cert:\CurrentUser\My, SHA-1 hex file */
    dcx_verify verify;
    const char *trusted;          /* one trusted root file, or NULL */
    const char *thumbs[2];        /* accepted thumbprint files (hex) */
    int check_hostname;
    int max_version;              /* 0: the newest */
    const unsigned char *store_sha1; /* identity from Cert:\CurrentUser\My, SHA-1 bytes */
    const char *crl;              /* one CRL file (PEM or DER), or NULL */
    int check_revocation;
} opts;

dcx_blob path_blob(const char *path);
dcx_blob file_blob(const char *name);
void file_text(const char *name, char *out, size_t cap);
dcx_ctx *make_ctx(const opts *o, dcx_error *err);

/* ---- support.c: sockets ---------------------------------------------------- */

sock_t tcp_connect(int port);
sock_t tcp_listen(int *port);
int writable_now(sock_t s);
int read_exact(dcx_conn *c, void *buf, size_t len, dcx_error *err);
void put64(unsigned char *p, uint64_t v);
uint64_t get64(const unsigned char *p);

/* ---- driver.c: the harness ------------------------------------------------- */

enum { PASS, FAIL, SKIP };
extern char msg[1024]; /* why the last case came out as it did */
extern int dcx_port, sserver_port, expired_port, tls13_port, bad_record_port;

int say(int outcome, const char *fmt, ...);
int connect_to(dcx_ctx *ctx, int port, const char *name, sock_t *s, dcx_conn **c,
               dcx_error *err);
void hang_up(sock_t s, dcx_conn *c);
const char *version_name(int v);
int ask_peer_sees(dcx_conn *c, const char *expect_file, dcx_error *err);

/* ---- cases_server.c: the server side --------------------------------------- */

typedef struct server_job {
    dcx_ctx *ctx;
    sock_t listener;
    int handshake_rc;
    dcx_error err;
    int delay_only;        /* plain TCP: send raw bytes (or nothing) instead of TLS */
    const char *raw;
    size_t raw_len;
} server_job;

THREAD_FN server_thread(void *arg);
int cmd_serve(void);

/* ---- cases_client.c: a client identity the server must see ---------------- */

int identity_case(const opts *o, const char *seen_file, const char *unsupported,
                  const char *what);

/* ---- cases_verify.c: accepting and refusing -------------------------------- */

extern const char *const reason_names[];
int expect_accept(const opts *o, int port, const char *name);
int expect_refusal(const opts *o, int port, const char *name, int reason);
int expect_refusal_saying(const opts *o, int port, const char *name, int reason, ...);

/* ---- the cases (driver.c's table runs them in its own order) --------------- */

/* cases_client.c */
int case_dcx_handshake(void);
int case_close_notify_behind_full_socket(void);
int case_connect_in_engine(void);
int case_reads_records_at_hand(void);
int case_upload(void);
int case_download(void);
int case_no_common_version(void);
int case_dcx_requires_client_cert(void);
int case_store_identity(void);
int case_der_identity(void);
int case_ec_identity(void);
int case_store_unknown_thumbprint(void);
int case_repeat_after_refusal(void);
int case_repeat_after_bad_record(void);
int case_not_tls(void);
int case_timeout(void);
int case_handshake_in_steps(void);

/* cases_verify.c */
int case_none_accepts(void);
int case_chain_accepts(void);
int case_chain_accepts_ip(void);
int case_chain_wrong_ip(void);
int case_chain_unknown_ca(void);
int case_chain_hostname(void);
int case_chain_expired(void);
int case_thumb_sha1(void);
int case_thumb_sha256(void);
int case_thumb_refuses(void);

/* cases_store.c */
int case_store_wrong_password(void);
int case_store_import_pfx(void);
int case_store_enumerate_my(void);
int case_store_export_der(void);
int case_store_add_root_ca(void);
int case_store_remove_root_ca(void);
int case_store_remove_identity(void);
int case_store_chosen_identity(void);

/* cases_revocation.c */
int case_crl_revokes(void);
int case_crl_current_accepts(void);
int case_crl_required_missing(void);
int case_crl_not_required_missing(void);
int case_crl_expired(void);
int case_crl_forged(void);
int case_crl_in_ca_store(void);

/* cases_server.c */
int case_server_mutual(void);
int case_server_no_client_cert(void);
int case_server_thumb_accepts(void);
int case_server_thumb_refuses(void);
int case_server_untrusted_client(void);

#endif
