/*
 * driver.c - one conformance suite for every backend of dcxtls.h.
 *
 * Built natively against openssl*.c + store_none.c and with mingw-w64
 * against schannel*.c + store_crypt32.c (run under Wine); it uses the
 * engine headers only, so both builds run exactly the same cases.
 *
 *   driver serve DIR          TLS server for the suite (prints "PORT <n>")
 *   driver import-pfx FILE PW put a PKCS#12 into Cert:\CurrentUser\My (Windows)
 *   driver suite DIR DCX_PORT SSERVER_PORT EXPIRED_PORT TLS13_ONLY_PORT BAD_RECORD_PORT
 *
 * DIR holds the certificates written by tests/test_schannel_wine.py.  The
 * suite prints one line per case (PASS / FAIL / SKIPPED) and then
 * "N passed, N failed, N skipped".  The store.* cases change
 * Cert:\CurrentUser\My, Root and CA, and leave them as they found them.
 */
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
static int thread_start(thread_t *t, unsigned(__stdcall *fn)(void *), void *arg)
{
    *t = (HANDLE)_beginthreadex(NULL, 0, fn, arg, 0, NULL);
    return *t ? 0 : -1;
}
static void thread_join(thread_t t)
{
    WaitForSingleObject(t, INFINITE);
    CloseHandle(t);
}
static double now_s(void)
{
    return (double)GetTickCount64() / 1000.0;
}
static void sleep_ms(int ms)
{
    Sleep((DWORD)ms);
}
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
static int thread_start(thread_t *t, void *(*fn)(void *), void *arg)
{
    return pthread_create(t, NULL, fn, arg);
}
static void thread_join(thread_t t)
{
    pthread_join(t, NULL);
}
static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}
static void sleep_ms(int ms)
{
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}
#endif

#define MB (1024 * 1024)
#define BULK_BYTES (50ull * MB)
#define TIMEOUT_MS 30000

/* ---- SHA-256 (FIPS 180-4), so that checksums need no crypto library ---- */

typedef struct sha256 {
    uint32_t h[8];
    uint64_t total;
    unsigned char block[64];
    size_t fill;
} sha256;

static const uint32_t K256[64] = {
    0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4, 0xab1c5ed5,
    0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe, 0x9bdc06a7, 0xc19bf174,
    0xe49b69c1, 0xefbe4786, 0x0fc19dc6, 0x240ca1cc, 0x2de92c6f, 0x4a7484aa, 0x5cb0a9dc, 0x76f988da,
    0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7, 0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967,
    0x27b70a85, 0x2e1b2138, 0x4d2c6dfc, 0x53380d13, 0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85,
    0xa2bfe8a1, 0xa81a664b, 0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070,
    0x19a4c116, 0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a, 0x5b9cca4f, 0x682e6ff3,
    0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7, 0xc67178f2};

#define ROR(x, n) (((x) >> (n)) | ((x) << (32 - (n))))

static void sha256_block(sha256 *s, const unsigned char *p)
{
    uint32_t w[64], v[8];
    for (int i = 0; i < 16; i++)
        w[i] = (uint32_t)p[4 * i] << 24 | (uint32_t)p[4 * i + 1] << 16 | (uint32_t)p[4 * i + 2] << 8 | p[4 * i + 3];
    for (int i = 16; i < 64; i++) {
        uint32_t s0 = ROR(w[i - 15], 7) ^ ROR(w[i - 15], 18) ^ (w[i - 15] >> 3);
        uint32_t s1 = ROR(w[i - 2], 17) ^ ROR(w[i - 2], 19) ^ (w[i - 2] >> 10);
        w[i] = w[i - 16] + s0 + w[i - 7] + s1;
    }
    uint32_t a = s->h[0], b = s->h[1], c = s->h[2], d = s->h[3];
    uint32_t e = s->h[4], f = s->h[5], g = s->h[6], h = s->h[7];
    for (int i = 0; i < 64; i++) {
        uint32_t t1 = h + (ROR(e, 6) ^ ROR(e, 11) ^ ROR(e, 25)) + ((e & f) ^ (~e & g)) + K256[i] + w[i];
        uint32_t t2 = (ROR(a, 2) ^ ROR(a, 13) ^ ROR(a, 22)) + ((a & b) ^ (a & c) ^ (b & c));
        h = g, g = f, f = e, e = d + t1, d = c, c = b, b = a, a = t1 + t2;
    }
    v[0] = a, v[1] = b, v[2] = c, v[3] = d, v[4] = e, v[5] = f, v[6] = g, v[7] = h;
    for (int i = 0; i < 8; i++)
        s->h[i] += v[i];
}

static void sha256_init(sha256 *s)
{
    static const uint32_t iv[8] = {0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a,
                                   0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19};
    memcpy(s->h, iv, sizeof(iv));
    s->total = 0;
    s->fill = 0;
}

static void sha256_update(sha256 *s, const void *data, size_t len)
{
    const unsigned char *p = data;
    s->total += len;
    while (len) {
        size_t n = 64 - s->fill < len ? 64 - s->fill : len;
        memcpy(s->block + s->fill, p, n);
        s->fill += n;
        p += n;
        len -= n;
        if (s->fill == 64) {
            sha256_block(s, s->block);
            s->fill = 0;
        }
    }
}

static void sha256_final(sha256 *s, unsigned char out[32])
{
    uint64_t bits = s->total * 8;
    unsigned char pad = 0x80, zero = 0, len[8];
    sha256_update(s, &pad, 1);
    while (s->fill != 56)
        sha256_update(s, &zero, 1);
    for (int i = 0; i < 8; i++)
        len[i] = (unsigned char)(bits >> (56 - 8 * i));
    sha256_update(s, len, 8);
    for (int i = 0; i < 8; i++) {
        out[4 * i] = (unsigned char)(s->h[i] >> 24);
        out[4 * i + 1] = (unsigned char)(s->h[i] >> 16);
        out[4 * i + 2] = (unsigned char)(s->h[i] >> 8);
        out[4 * i + 3] = (unsigned char)s->h[i];
    }
}

static void hex(const unsigned char *b, size_t n, char *out)
{
    for (size_t i = 0; i < n; i++)
        sprintf(out + 2 * i, "%02X", b[i]);
    out[2 * n] = 0;
}

static int unhex(const char *s, unsigned char *out, size_t cap)
{
    size_t n = 0;
    while (s[0] && s[1] && n < cap) {
        unsigned v;
        if (sscanf(s, "%2x", &v) != 1)
            break;
        out[n++] = (unsigned char)v;
        s += 2;
    }
    return (int)n;
}

/* A reproducible byte stream, so each side can checksum what the other should send. */
static void pattern(uint64_t *state, unsigned char *buf, size_t len)
{
    uint64_t x = *state;
    for (size_t i = 0; i < len; i += 8) {
        unsigned char word[8];
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        for (int k = 0; k < 8; k++)
            word[k] = (unsigned char)(x >> (8 * k));
        memcpy(buf + i, word, len - i < 8 ? len - i : 8);
    }
    *state = x;
}

/* ---- files and configurations ------------------------------------------- */

static const char *dir;

static dcx_blob path_blob(const char *path)
{
    dcx_blob b = {NULL, 0};
    FILE *f = fopen(path, "rb");
    if (!f)
        return b;
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    unsigned char *p = malloc((size_t)n + 1);
    if (p && fread(p, 1, (size_t)n, f) == (size_t)n) {
        p[n] = 0;
        b.data = p;
        b.len = (size_t)n;
    } else {
        free(p);
    }
    fclose(f);
    return b;
}

/* A file of DIR, NUL-terminated (data is NULL when it cannot be read). */
static dcx_blob file_blob(const char *name)
{
    char path[1024];
    snprintf(path, sizeof(path), "%s/%s", dir, name);
    return path_blob(path);
}

/* The first line of a small text file (thumbprints). */
static void file_text(const char *name, char *out, size_t cap)
{
    dcx_blob b = file_blob(name);
    size_t n = 0;
    while (b.data && n < b.len && n + 1 < cap && b.data[n] != '\n' && b.data[n] != '\r') {
        out[n] = (char)b.data[n];
        n++;
    }
    out[n] = 0;
    free((void *)b.data);
}

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

static dcx_ctx *make_ctx(const opts *o, dcx_error *err)
{
    dcx_config cfg;
    dcx_blob trusted = {NULL, 0}, crl = {NULL, 0};
    unsigned char thumbs[2][32], lens[2], identity[20];
    size_t nthumbs = 0;
    memset(&cfg, 0, sizeof(cfg));
    memset(thumbs, 0, sizeof(thumbs));
    if (o->cert) {
        cfg.certificate_chain = file_blob(o->cert);
        cfg.private_key = file_blob(o->key);
    }
    if (o->store_thumb) {
        char text[128];
        file_text(o->store_thumb, text, sizeof(text));
        unhex(text, identity, sizeof(identity));
        cfg.identity_thumbprint = identity;
        cfg.cert_store = DCX_STORE_CURRENT_USER;
    }
    if (o->store_sha1) {
        cfg.identity_thumbprint = o->store_sha1;
        cfg.cert_store = DCX_STORE_CURRENT_USER;
    }
    if (o->trusted) {
        trusted = file_blob(o->trusted);
        cfg.trusted = &trusted;
        cfg.trusted_count = 1;
    }
    if (o->crl) {
        crl = file_blob(o->crl);
        cfg.crls = &crl;
        cfg.crl_count = 1;
    }
    cfg.check_revocation = o->check_revocation;
    for (int i = 0; i < 2 && o->thumbs[i]; i++) {
        char text[128];
        file_text(o->thumbs[i], text, sizeof(text));
        lens[nthumbs] = (unsigned char)unhex(text, thumbs[nthumbs], 32);
        nthumbs++;
    }
    cfg.thumbprints = thumbs[0];
    cfg.thumbprint_lens = lens;
    cfg.thumbprint_count = nthumbs;
    cfg.verify = o->verify;
    cfg.check_hostname = o->check_hostname;
    cfg.max_version = o->max_version;
    dcx_ctx *ctx = dcx_ctx_new(&cfg, err);
    free((void *)cfg.certificate_chain.data);
    free((void *)cfg.private_key.data);
    free((void *)trusted.data);
    free((void *)crl.data);
    return ctx;
}

/* ---- sockets -------------------------------------------------------------- */

static sock_t tcp_connect(int port)
{
    struct sockaddr_in a;
    sock_t s = socket(AF_INET, SOCK_STREAM, 0);
    memset(&a, 0, sizeof(a));
    a.sin_family = AF_INET;
    a.sin_port = htons((unsigned short)port);
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (s != INVALID_SOCKET && connect(s, (struct sockaddr *)&a, sizeof(a)) != 0) {
        close_socket(s);
        return INVALID_SOCKET;
    }
    return s;
}

static sock_t tcp_listen(int *port)
{
    struct sockaddr_in a;
    socklen_t len = sizeof(a);
    sock_t s = socket(AF_INET, SOCK_STREAM, 0);
    memset(&a, 0, sizeof(a));
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (s == INVALID_SOCKET || bind(s, (struct sockaddr *)&a, sizeof(a)) != 0 || listen(s, 16) != 0 ||
        getsockname(s, (struct sockaddr *)&a, &len) != 0)
        return INVALID_SOCKET;
    *port = ntohs(a.sin_port);
    return s;
}

/* Whether a send on s would go through now. */
static int writable_now(sock_t s)
{
#ifdef _WIN32
    WSAPOLLFD p = {s, POLLWRNORM, 0};
    return WSAPoll(&p, 1, 0) > 0;
#else
    struct pollfd p = {s, POLLOUT, 0};
    return poll(&p, 1, 0) > 0;
#endif
}

static int read_exact(dcx_conn *c, void *buf, size_t len, dcx_error *err)
{
    unsigned char *p = buf;
    while (len) {
        long n = dcx_conn_read(c, p, len, TIMEOUT_MS, err);
        if (n <= 0)
            return n == DCX_EOF ? DCX_E_TRUNCATED : (int)n;
        p += n;
        len -= (size_t)n;
    }
    return DCX_OK;
}

static void put64(unsigned char *p, uint64_t v)
{
    for (int i = 0; i < 8; i++)
        p[i] = (unsigned char)(v >> (56 - 8 * i));
}

static uint64_t get64(const unsigned char *p)
{
    uint64_t v = 0;
    for (int i = 0; i < 8; i++)
        v = v << 8 | p[i];
    return v;
}

/* ---- the server side of the suite's little protocol ----------------------- *
 * 'U' n          : the client sends n bytes; the server answers their SHA-256
 * 'D' n seed     : the server sends n pattern bytes, then their SHA-256
 * 'P'            : the server answers the SHA-256 (hex) of the client's certificate
 * 'R' k          : the server sends k records of 100 bytes, the i-th all 'a' + i
 * 'Q'            : the server sends close_notify
 * 'H'            : the server reads nothing until DIR/held.go exists, then reads
 *                  to the client's close_notify and writes "<bytes> close_notify"
 *                  (or "<bytes> error: <reason>") to DIR/held.txt               */

static void serve_conn(dcx_conn *c)
{
    static unsigned char buf[MB];
    dcx_error err;
    for (;;) {
        unsigned char op[17];
        if (read_exact(c, op, 1, &err) != DCX_OK)
            return;
        if (op[0] == 'U' || op[0] == 'D') {
            if (read_exact(c, op + 1, op[0] == 'U' ? 8 : 16, &err) != DCX_OK)
                return;
            uint64_t n = get64(op + 1), seed = op[0] == 'D' ? get64(op + 9) : 0;
            unsigned char digest[32];
            sha256 s;
            sha256_init(&s);
            while (n) {
                size_t k = n < sizeof(buf) ? (size_t)n : sizeof(buf);
                if (op[0] == 'U') {
                    long r = dcx_conn_read(c, buf, k, TIMEOUT_MS, &err);
                    if (r <= 0)
                        return;
                    k = (size_t)r;
                } else {
                    pattern(&seed, buf, k);
                    if (dcx_conn_write(c, buf, k, TIMEOUT_MS, &err) < 0)
                        return;
                }
                sha256_update(&s, buf, k);
                n -= k;
            }
            sha256_final(&s, digest);
            if (dcx_conn_write(c, digest, 32, TIMEOUT_MS, &err) < 0)
                return;
        } else if (op[0] == 'R') {
            if (read_exact(c, op + 1, 1, &err) != DCX_OK)
                return;
            for (int i = 0; i < op[1]; i++) {
                memset(buf, 'a' + i, 100);
                if (dcx_conn_write(c, buf, 100, TIMEOUT_MS, &err) < 0)
                    return;
            }
        } else if (op[0] == 'H') {
            char go[1024];
            snprintf(go, sizeof(go), "%s/held.go", dir);
            for (int i = 0; i < TIMEOUT_MS / 10; i++) {
                FILE *f = fopen(go, "r");
                if (f) {
                    fclose(f);
                    break;
                }
                sleep_ms(10);
            }
            unsigned long long got = 0;
            long r;
            while ((r = dcx_conn_read(c, buf, sizeof(buf), TIMEOUT_MS, &err)) > 0)
                got += (unsigned long long)r;
            char path[1024], tmp[1040];
            snprintf(path, sizeof(path), "%s/held.txt", dir);
            snprintf(tmp, sizeof(tmp), "%s.part", path);
            FILE *f = fopen(tmp, "w");
            if (f) {
                if (r == DCX_EOF)
                    fprintf(f, "%llu close_notify\n", got);
                else
                    fprintf(f, "%llu error: %s\n", got, err.reason);
                fclose(f);
                rename(tmp, path); /* whole, or not there */
            }
            return;
        } else if (op[0] == 'P') {
            unsigned char der[16384], digest[32];
            char text[65];
            size_t n = dcx_conn_peer_cert(c, der, sizeof(der));
            sha256 s;
            sha256_init(&s);
            sha256_update(&s, der, n);
            sha256_final(&s, digest);
            hex(digest, 32, text);
            if (!n)
                memset(text, '-', 64);
            if (dcx_conn_write(c, text, 64, TIMEOUT_MS, &err) < 0)
                return;
        } else {
            dcx_conn_shutdown(c, 2000, 0, &err);
            return;
        }
    }
}

typedef struct server_job {
    dcx_ctx *ctx;
    sock_t listener;
    int handshake_rc;
    dcx_error err;
    int delay_only;        /* plain TCP: send raw bytes (or nothing) instead of TLS */
    const char *raw;
    size_t raw_len;
} server_job;

static THREAD_FN server_thread(void *arg)
{
    server_job *job = arg;
    sock_t s = accept(job->listener, NULL, NULL);
    if (s == INVALID_SOCKET) {
        job->handshake_rc = -100;
        return 0;
    }
    if (job->delay_only) {
        char sink[512];
        if (job->raw_len)
            send(s, job->raw, (int)job->raw_len, 0);
        recv(s, sink, sizeof(sink), 0);        /* the ClientHello */
        if (!job->raw_len)
            recv(s, sink, sizeof(sink), 0);    /* stays silent until the client gives up */
        close_socket(s);
        return 0;
    }
    dcx_conn *c = dcx_conn_new(job->ctx, (dcx_socket)s, 1, NULL, &job->err);
    job->handshake_rc = c ? dcx_conn_handshake(c, 10000, &job->err) : job->err.status;
    if (job->handshake_rc == DCX_OK)
        serve_conn(c);
    dcx_conn_free(c);
    close_socket(s);
    return 0;
}

static int cmd_serve(void)
{
    opts o = {"server.pem", "server.key", NULL, DCX_VERIFY_TRUST_CHAIN, "ca.pem", {NULL, NULL}, 0};
    dcx_error err;
    dcx_ctx *ctx = make_ctx(&o, &err);
    if (!ctx) {
        fprintf(stderr, "serve: %s\n", err.reason);
        return 2;
    }
    int port = 0;
    sock_t l = tcp_listen(&port);
    if (l == INVALID_SOCKET)
        return 2;
    printf("PORT %d\n", port);
    fflush(stdout);
    for (;;) { /* one connection at a time: the suite's cases run in order */
        server_job job;
        memset(&job, 0, sizeof(job));
        job.ctx = ctx;
        job.listener = l;
        server_thread(&job);
        if (job.handshake_rc == -100)
            return 2;
        if (job.handshake_rc != DCX_OK)
            fprintf(stderr, "serve: handshake refused: %s\n", job.err.reason);
    }
}

/* ---- the suite --------------------------------------------------------------- */

enum { PASS, FAIL, SKIP };
static int counts[3];
static char msg[1024];

static int say(int outcome, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    return outcome;
}

static int dcx_port, sserver_port, expired_port, tls13_port, bad_record_port;

/* Connect and handshake as a client; on failure msg says why. */
static int connect_to(dcx_ctx *ctx, int port, const char *name, sock_t *s, dcx_conn **c,
                      dcx_error *err)
{
    *c = NULL;
    *s = tcp_connect(port);
    if (*s == INVALID_SOCKET) {
        err->status = DCX_E_SYSCALL;
        snprintf(err->reason, sizeof(err->reason), "cannot connect to port %d", port);
        return DCX_E_SYSCALL;
    }
    *c = dcx_conn_new(ctx, (dcx_socket)*s, 0, name, err);
    if (!*c)
        return err->status;
    return dcx_conn_handshake(*c, 10000, err);
}

static void hang_up(sock_t s, dcx_conn *c)
{
    dcx_conn_free(c);
    if (s != INVALID_SOCKET)
        close_socket(s);
}

static const char *version_name(int v)
{
    return v == DCX_TLS1_3 ? "TLS 1.3" : v == DCX_TLS1_2 ? "TLS 1.2" : "?";
}

static int ask_peer_sees(dcx_conn *c, const char *expect_file, dcx_error *err)
{
    char got[65] = {0}, want[128];
    file_text(expect_file, want, sizeof(want));
    if (dcx_conn_write(c, "P", 1, TIMEOUT_MS, err) < 0 || read_exact(c, got, 64, err) != DCX_OK)
        return say(FAIL, "asking the server which certificate it saw: %s", err->reason);
    if (strcmp(got, want) != 0)
        return say(FAIL, "the server saw client certificate %s, expected %s", got, want);
    return PASS;
}

static const opts client_dcx = {"client.pem", "client.key", NULL, DCX_VERIFY_TRUST_CHAIN, "ca.pem",
                                {NULL, NULL}, 1};

static int case_dcx_handshake(void)
{
    dcx_error err;
    sock_t s;
    dcx_conn *c;
    dcx_ctx *ctx = make_ctx(&client_dcx, &err);
    if (!ctx)
        return say(FAIL, "%s", err.reason);
    int rc = connect_to(ctx, dcx_port, "localhost", &s, &c, &err);
    int out = FAIL;
    if (rc != DCX_OK) {
        say(FAIL, "handshake: %s", err.reason);
    } else if (ask_peer_sees(c, "client.sha256", &err) == PASS) {
        char eof;
        long n;
        dcx_conn_write(c, "Q", 1, TIMEOUT_MS, &err);
        n = dcx_conn_read(c, &eof, 1, TIMEOUT_MS, &err);
        if (n != DCX_EOF)
            say(FAIL, "after the server's close_notify, read returned %ld (%s)", n, err.reason);
        else
            out = say(PASS, "%s, %s (%d bits), mutual TLS, close_notify seen", version_name(dcx_conn_version(c)),
                      dcx_conn_cipher(c)[0] ? dcx_conn_cipher(c) : "cipher name not reported",
                      dcx_conn_cipher_bits(c));
    }
    hang_up(s, c);
    dcx_ctx_free(ctx);
    return out;
}

/* close_notify behind a socket the peer does not read: the call that never
 * waits gives up and leaves the stream whole, and the waiting shutdown sends
 * it once the peer reads, after every byte of data; no data may follow it.
 * The socket stays open until the server reports, so the EOF it saw can only
 * be close_notify. */
static int case_close_notify_behind_full_socket(void)
{
    static unsigned char data[1024];
    dcx_error err;
    sock_t s;
    dcx_conn *c;
    char path[1024], go[1024], seen[128] = {0}, want[64];
    dcx_ctx *ctx = make_ctx(&client_dcx, &err);
    if (!ctx)
        return say(FAIL, "%s", err.reason);
    snprintf(path, sizeof(path), "%s/held.txt", dir);
    snprintf(go, sizeof(go), "%s/held.go", dir);
    remove(path);
    remove(go);
    memset(data, 'h', sizeof(data));
    unsigned long long sent = 0;
    int out = FAIL;
    if (connect_to(ctx, dcx_port, "localhost", &s, &c, &err) != DCX_OK) {
        say(FAIL, "handshake: %s", err.reason);
        goto done;
    }
    if (dcx_conn_write(c, "H", 1, TIMEOUT_MS, &err) < 0) {
        say(FAIL, "asking the server to hold: %s", err.reason);
        goto done;
    }
    while (writable_now(s) && sent < 256ull * MB) {
        if (dcx_conn_write(c, data, sizeof(data), TIMEOUT_MS, &err) < 0) {
            say(FAIL, "filling the socket: %s", err.reason);
            goto done;
        }
        sent += sizeof(data);
    }
    int now = dcx_conn_close_notify_now(c, &err);
    FILE *f = fopen(go, "w"); /* the server may read now */
    if (f)
        fclose(f);
    int rest = dcx_conn_shutdown(c, TIMEOUT_MS, 0, &err);
    int refused = dcx_conn_write(c, "x", 1, 0, &err) < 0;
    if (now != DCX_E_TIMEOUT || rest != DCX_OK || !refused) {
        say(FAIL, "close_notify_now %d, shutdown %d, data after it %s (expected %d, %d, refused): %s",
            now, rest, refused ? "refused" : "accepted", DCX_E_TIMEOUT, DCX_OK, err.reason);
        goto done;
    }
    for (int i = 0; i < 100 && !seen[0]; i++) {
        sleep_ms(100);
        file_text("held.txt", seen, sizeof(seen));
    }
    snprintf(want, sizeof(want), "%llu close_notify", sent);
    if (strcmp(seen, want) != 0)
        say(FAIL, "the server saw '%s', expected '%s'", seen[0] ? seen : "nothing", want);
    else
        out = say(PASS, "%s: %llu bytes, then close_notify, sent by the waiting path",
                  version_name(dcx_conn_version(c)), sent);
done:
    hang_up(s, c);
    dcx_ctx_free(ctx);
    return out;
}

/* dcx_conn_connect: TCP connect and handshake in one call, then a refused port. */
static int case_connect_in_engine(void)
{
    dcx_error err;
    int connected = 0, out = FAIL;
    dcx_ctx *ctx = make_ctx(&client_dcx, &err);
    if (!ctx)
        return say(FAIL, "%s", err.reason);
    sock_t s = socket(AF_INET, SOCK_STREAM, 0);
    dcx_conn *c = dcx_conn_new(ctx, (dcx_socket)s, 0, "localhost", &err);
    int rc = c ? dcx_conn_connect(c, "127.0.0.1", dcx_port, TIMEOUT_MS, TIMEOUT_MS, &connected, &err)
               : err.status;
    if (rc != DCX_OK || !connected) {
        say(FAIL, "connect and handshake: %s", err.reason);
    } else if (ask_peer_sees(c, "client.sha256", &err) == PASS) {
        int closed_port = 0;
        sock_t held = tcp_listen(&closed_port); /* a port known to be free ... */
        close_socket(held);                       /* ... and now refusing */
        sock_t s2 = socket(AF_INET, SOCK_STREAM, 0);
        dcx_conn *c2 = dcx_conn_new(ctx, (dcx_socket)s2, 0, "localhost", &err);
        rc = c2 ? dcx_conn_connect(c2, "127.0.0.1", closed_port, TIMEOUT_MS, TIMEOUT_MS, &connected,
                                   &err)
                : err.status;
        if (rc != DCX_E_SYSCALL || connected || err.sys_errno == 0)
            say(FAIL, "a refused port gave status %d, connected %d, errno %d: %s", rc, connected,
                err.sys_errno, err.reason);
        else
            out = say(PASS, "%s in one call; a refused port: %s (errno %d)",
                      version_name(dcx_conn_version(c)), err.reason, err.sys_errno);
        hang_up(s2, c2);
    }
    hang_up(s, c);
    dcx_ctx_free(ctx);
    return out;
}

/* dcx_conn_read takes every record already received in one call, as far as
 * the buffer allows, and dcx_conn_read_state tells whether any wait. */
static int case_reads_records_at_hand(void)
{
    enum { RECORDS = 8, SIZE = 100, FIRST = 150 };
    static unsigned char got[RECORDS * SIZE + 1];
    dcx_error err;
    sock_t s;
    dcx_conn *c;
    dcx_ctx *ctx = make_ctx(&client_dcx, &err);
    if (!ctx)
        return say(FAIL, "%s", err.reason);
    int out = FAIL;
    unsigned char op[2] = {'R', RECORDS};
    if (connect_to(ctx, dcx_port, "localhost", &s, &c, &err) != DCX_OK) {
        say(FAIL, "handshake: %s", err.reason);
    } else if (dcx_conn_write(c, op, 2, TIMEOUT_MS, &err) < 0) {
        say(FAIL, "asking for the records: %s", err.reason);
    } else {
        sleep_ms(300); /* all eight records arrive */
        long first = dcx_conn_read(c, got, FIRST, TIMEOUT_MS, &err);
        int waiting = dcx_conn_read_state(c)->data_waiting;
        long rest = first == FIRST ? dcx_conn_read(c, got + FIRST, sizeof(got) - FIRST, TIMEOUT_MS, &err)
                                   : 0;
        int left = dcx_conn_read_state(c)->data_waiting, intact = 1;
        for (int i = 0; i < RECORDS * SIZE; i++)
            intact &= got[i] == 'a' + i / SIZE;
        if (first != FIRST || !waiting)
            say(FAIL, "a read of %d bytes over two records gave %ld, data_waiting %d", FIRST, first,
                waiting);
        else if (rest != RECORDS * SIZE - FIRST || left || !intact)
            say(FAIL, "the next read gave %ld of %d bytes (intact %d), data_waiting %d", rest,
                RECORDS * SIZE - FIRST, intact, left);
        else
            out = say(PASS, "%d records of %d bytes: %ld bytes, then the other %ld in one call",
                      RECORDS, SIZE, first, rest);
    }
    hang_up(s, c);
    dcx_ctx_free(ctx);
    return out;
}

enum { DOWNLOAD, UPLOAD };

static int bulk(int mode)
{
    static unsigned char buf[MB];
    int upload = mode != DOWNLOAD;
    dcx_error err;
    sock_t s;
    dcx_conn *c;
    dcx_ctx *ctx = make_ctx(&client_dcx, &err);
    if (!ctx)
        return say(FAIL, "%s", err.reason);
    int out = FAIL;
    if (connect_to(ctx, dcx_port, "localhost", &s, &c, &err) != DCX_OK) {
        say(FAIL, "handshake: %s", err.reason);
        goto done;
    }
    unsigned char op[17], mine[32], theirs[32];
    uint64_t seed = upload ? 0x0123456789abcdefull : 0xfedcba9876543210ull, left = BULK_BYTES;
    sha256 h;
    sha256_init(&h);
    op[0] = upload ? 'U' : 'D';
    put64(op + 1, BULK_BYTES);
    put64(op + 9, seed);
    double t0 = now_s();
    if (dcx_conn_write(c, op, upload ? 9 : 17, TIMEOUT_MS, &err) < 0) {
        say(FAIL, "%s", err.reason);
        goto done;
    }
    while (left) {
        size_t k = left < sizeof(buf) ? (size_t)left : sizeof(buf);
        if (upload) {
            pattern(&seed, buf, k);
            if (dcx_conn_write(c, buf, k, TIMEOUT_MS, &err) < 0) {
                say(FAIL, "writing: %s", err.reason);
                goto done;
            }
        } else {
            long n = dcx_conn_read(c, buf, k, TIMEOUT_MS, &err);
            if (n <= 0) {
                say(FAIL, "reading after %llu bytes: %s", (unsigned long long)(BULK_BYTES - left),
                    n == DCX_EOF ? "unexpected EOF" : err.reason);
                goto done;
            }
            k = (size_t)n;
        }
        sha256_update(&h, buf, k);
        left -= k;
    }
    sha256_final(&h, mine);
    if (read_exact(c, theirs, 32, &err) != DCX_OK) {
        say(FAIL, "reading the checksum: %s", err.reason);
        goto done;
    }
    double secs = now_s() - t0;
    if (!upload) { /* also what the pattern should have been */
        unsigned char expect[32];
        uint64_t seed2 = 0xfedcba9876543210ull;
        sha256 e;
        sha256_init(&e);
        for (left = BULK_BYTES; left; left -= sizeof(buf)) {
            pattern(&seed2, buf, sizeof(buf));
            sha256_update(&e, buf, sizeof(buf));
        }
        sha256_final(&e, expect);
        if (memcmp(expect, mine, 32) != 0) {
            say(FAIL, "the data received differs from the data sent");
            goto done;
        }
    }
    if (memcmp(mine, theirs, 32) != 0) {
        say(FAIL, "SHA-256 mismatch between the two ends");
        goto done;
    }
    char hx[65];
    hex(mine, 32, hx);
    out = say(PASS, "50 MB in %.2f s, %.1f MB/s, SHA-256 %.16s... on both ends", secs,
              50.0 / (secs > 0 ? secs : 1e-9), hx);
    dcx_conn_write(c, "Q", 1, TIMEOUT_MS, &err);
done:
    hang_up(s, c);
    dcx_ctx_free(ctx);
    return out;
}

static int case_upload(void) { return bulk(UPLOAD); }
static int case_download(void) { return bulk(DOWNLOAD); }

/* A client case against openssl s_server -rev: expect success and an echo. */
static int expect_accept(const opts *o, int port, const char *name)
{
    dcx_error err;
    sock_t s;
    dcx_conn *c;
    dcx_ctx *ctx = make_ctx(o, &err);
    if (!ctx)
        return say(FAIL, "%s", err.reason);
    int out = FAIL;
    if (connect_to(ctx, port, name, &s, &c, &err) != DCX_OK) {
        say(FAIL, "handshake: %s", err.reason);
    } else {
        const char line[] = "dcxsec conformance\n", want[] = "ecnamrofnoc cesxcd\n";
        char got[sizeof(want)] = {0};
        if (dcx_conn_write(c, line, strlen(line), TIMEOUT_MS, &err) < 0 ||
            read_exact(c, got, strlen(want), &err) != DCX_OK)
            say(FAIL, "echo: %s", err.reason);
        else if (strcmp(got, want) != 0)
            say(FAIL, "echo: got '%s'", got);
        else
            out = say(PASS, "%s, peer '%s' accepted", version_name(dcx_conn_version(c)), name ? name : "");
        dcx_conn_shutdown(c, 2000, 0, &err);
    }
    hang_up(s, c);
    dcx_ctx_free(ctx);
    return out;
}

static const char *const reason_names[] = {"NONE", "NO_CERTIFICATE", "UNTRUSTED", "EXPIRED",
                                           "NOT_YET_VALID", "THUMBPRINT", "HOSTNAME", "REVOKED",
                                           "BAD_SIGNATURE", "PURPOSE", "OTHER", "REVOCATION"};

static int expect_refusal(const opts *o, int port, const char *name, int reason);

/* As expect_refusal, and the reason must say each of the words given (NULL-ended). */
static int expect_refusal_saying(const opts *o, int port, const char *name, int reason, ...)
{
    int out = expect_refusal(o, port, name, reason);
    va_list ap;
    va_start(ap, reason);
    for (const char *word; out == PASS && (word = va_arg(ap, const char *)) != NULL;) {
        if (!strstr(msg, word)) {
            char said[sizeof(msg)];
            snprintf(said, sizeof(said), "%s", msg);
            out = say(FAIL, "the reason does not say \"%s\": %s", word, said);
        }
    }
    va_end(ap);
    return out;
}

static int expect_refusal(const opts *o, int port, const char *name, int reason)
{
    dcx_error err;
    sock_t s;
    dcx_conn *c;
    dcx_ctx *ctx = make_ctx(o, &err);
    if (!ctx)
        return say(FAIL, "%s", err.reason);
    int rc = connect_to(ctx, port, name, &s, &c, &err), out;
    if (rc == DCX_OK)
        out = say(FAIL, "the handshake succeeded; expected a %s refusal", reason_names[reason]);
    else if (rc != DCX_E_VERIFY || err.verify_reason != reason)
        out = say(FAIL, "expected DCX_E_VERIFY/%s, got status %d reason %d: %s", reason_names[reason],
                  rc, err.verify_reason, err.reason);
    else
        out = say(PASS, "refused (%s): %s", reason_names[reason], err.reason);
    hang_up(s, c);
    dcx_ctx_free(ctx);
    return out;
}

static int case_none_accepts(void)
{
    opts o = {NULL, NULL, NULL, DCX_VERIFY_NONE, NULL, {NULL, NULL}, 0};
    return expect_accept(&o, sserver_port, NULL);
}

static int case_chain_accepts(void)
{
    opts o = {NULL, NULL, NULL, DCX_VERIFY_TRUST_CHAIN, "ca.pem", {NULL, NULL}, 1};
    return expect_accept(&o, sserver_port, "localhost");
}

static int case_chain_accepts_ip(void)
{
    opts o = {NULL, NULL, NULL, DCX_VERIFY_TRUST_CHAIN, "ca.pem", {NULL, NULL}, 1};
    return expect_accept(&o, sserver_port, "127.0.0.1");
}

static int case_chain_wrong_ip(void)
{
    opts o = {NULL, NULL, NULL, DCX_VERIFY_TRUST_CHAIN, "ca.pem", {NULL, NULL}, 1};
    return expect_refusal(&o, sserver_port, "127.0.0.2", DCX_VR_HOSTNAME);
}

static int case_chain_unknown_ca(void)
{
    opts o = {NULL, NULL, NULL, DCX_VERIFY_TRUST_CHAIN, "other_ca.pem", {NULL, NULL}, 1};
    return expect_refusal(&o, sserver_port, "localhost", DCX_VR_UNTRUSTED);
}

static int case_chain_hostname(void)
{
    opts o = {NULL, NULL, NULL, DCX_VERIFY_TRUST_CHAIN, "ca.pem", {NULL, NULL}, 1};
    return expect_refusal(&o, sserver_port, "wrong.example", DCX_VR_HOSTNAME);
}

static int case_chain_expired(void)
{
    opts o = {NULL, NULL, NULL, DCX_VERIFY_TRUST_CHAIN, "ca.pem", {NULL, NULL}, 1};
    return expect_refusal(&o, expired_port, "localhost", DCX_VR_EXPIRED);
}

static int case_thumb_sha1(void)
{
    opts o = {NULL, NULL, NULL, DCX_VERIFY_THUMBPRINT, NULL, {"other.sha1", "server.sha1"}, 0};
    return expect_accept(&o, sserver_port, NULL);
}

static int case_thumb_sha256(void)
{
    opts o = {NULL, NULL, NULL, DCX_VERIFY_THUMBPRINT, NULL, {"server.sha256", NULL}, 0};
    return expect_accept(&o, sserver_port, NULL);
}

static int case_thumb_refuses(void)
{
    opts o = {NULL, NULL, NULL, DCX_VERIFY_THUMBPRINT, NULL, {"other.sha1", "client.sha256"}, 0};
    return expect_refusal(&o, sserver_port, NULL, DCX_VR_THUMBPRINT);
}

static int case_no_common_version(void)
{
    opts o = {NULL, NULL, NULL, DCX_VERIFY_NONE, NULL, {NULL, NULL}, 0, DCX_TLS1_2};
    dcx_error err;
    sock_t s;
    dcx_conn *c;
    dcx_ctx *ctx = make_ctx(&o, &err);
    if (!ctx)
        return say(FAIL, "%s", err.reason);
    int rc = connect_to(ctx, tls13_port, "localhost", &s, &c, &err), out;
    if (rc == DCX_E_PEER_ALERT && err.alert == 70)
        out = say(PASS, "%s", err.reason);
    else
        out = say(FAIL, "expected the protocol_version alert, got status %d alert %d: %s", rc,
                  err.alert, err.reason);
    hang_up(s, c);
    dcx_ctx_free(ctx);
    return out;
}

static int case_dcx_requires_client_cert(void)
{
    opts o = {NULL, NULL, NULL, DCX_VERIFY_TRUST_CHAIN, "ca.pem", {NULL, NULL}, 1};
    dcx_error err;
    sock_t s;
    dcx_conn *c;
    dcx_ctx *ctx = make_ctx(&o, &err);
    if (!ctx)
        return say(FAIL, "%s", err.reason);
    int rc = connect_to(ctx, dcx_port, "localhost", &s, &c, &err), out;
    if (rc == DCX_OK) { /* in TLS 1.3 the refusal arrives after our side is done */
        char got[1]; /* reading, not writing, so that the alert comes before any reset */
        rc = read_exact(c, got, 1, &err);
    }
    if (rc == DCX_OK)
        out = say(FAIL, "the server accepted a client without certificate");
    else if (rc == DCX_E_PEER_ALERT || rc == DCX_E_PROTOCOL || rc == DCX_E_TRUNCATED)
        out = say(PASS, "refused by the server (status %d): %s", rc, err.reason);
    else
        out = say(FAIL, "unexpected status %d: %s", rc, err.reason);
    hang_up(s, c);
    dcx_ctx_free(ctx);
    return out;
}

/* Connect with the identity in `o`; the server must see the certificate whose
 * SHA-256 is in `seen_file`.  A backend that cannot load it (`unsupported`
 * set) reports SKIP with that reason. */
static int identity_case(const opts *o, const char *seen_file, const char *unsupported,
                         const char *what)
{
    dcx_error err;
    sock_t s;
    dcx_conn *c;
    dcx_ctx *ctx = make_ctx(o, &err);
    if (!ctx && unsupported && err.status == DCX_E_UNSUPPORTED)
        return say(SKIP, "%s: %s", unsupported, err.reason);
    if (!ctx)
        return say(FAIL, "%s", err.reason);
    int out = FAIL;
    if (connect_to(ctx, dcx_port, "localhost", &s, &c, &err) != DCX_OK)
        say(FAIL, "handshake: %s", err.reason);
    else if ((out = ask_peer_sees(c, seen_file, &err)) == PASS)
        say(PASS, "%s", what);
    hang_up(s, c);
    dcx_ctx_free(ctx);
    return out;
}

static int case_store_identity(void)
{
    opts o = {NULL, NULL, "store_client.sha1", DCX_VERIFY_TRUST_CHAIN, "ca.pem", {NULL, NULL}, 1};
    return identity_case(&o, "store_client.sha256", "no system certificate store in this backend",
                         "the server saw the certificate from Cert:\\CurrentUser\\My");
}

static int case_der_identity(void)
{
    opts o = {"client.der", "client.key.der", NULL, DCX_VERIFY_TRUST_CHAIN, "ca.pem", {NULL, NULL}, 1};
    return identity_case(&o, "client.sha256", NULL, "certificate and PKCS#8 key given as DER");
}

static int case_ec_identity(void)
{
    opts o = {"ecclient.pem", "ecclient.key", NULL, DCX_VERIFY_TRUST_CHAIN, "ca.pem", {NULL, NULL}, 1};
    return identity_case(&o, "ecclient.sha256", "EC client keys unsupported here",
                         "P-256 client certificate and key");
}

static int case_store_unknown_thumbprint(void)
{
    opts o = {NULL, NULL, "other.sha1", DCX_VERIFY_TRUST_CHAIN, "ca.pem", {NULL, NULL}, 1};
    char want[64];
    dcx_error err;
    dcx_ctx *ctx = make_ctx(&o, &err);
    file_text("other.sha1", want, sizeof(want));
    if (ctx) {
        dcx_ctx_free(ctx);
        return say(FAIL, "a context was made from a thumbprint that is not in the store");
    }
    if (err.status == DCX_E_UNSUPPORTED)
        return say(SKIP, "no system certificate store in this backend: %s", err.reason);
    if (err.status != DCX_E_CONFIG || !strstr(err.reason, want))
        return say(FAIL, "expected DCX_E_CONFIG naming %s, got %d: %s", want, err.status, err.reason);
    return say(PASS, "%s", err.reason);
}

/* ---- the system certificate store (dcxstore.h) ------------------------------ *
 * Under Wine: Cert:\CurrentUser\My, Root and CA through Crypt32.  Natively
 * there is no system store: every case must come back SKIPPED with the
 * backend's reason, never passed. */

#define CU DCX_STORE_CURRENT_USER

static int store_trouble(int rc, const dcx_error *err, const char *doing)
{
    if (rc == DCX_E_UNSUPPORTED)
        return say(SKIP, "%s", err->reason);
    return say(FAIL, "%s: status %d: %s", doing, rc, err->reason);
}

/* The SHA-1 in a .sha1 file, as 20 bytes. */
static void file_sha1(const char *name, unsigned char out[DCX_THUMBPRINT_LEN])
{
    char text[128];
    memset(out, 0, DCX_THUMBPRINT_LEN);
    file_text(name, text, sizeof(text));
    unhex(text, out, DCX_THUMBPRINT_LEN);
}

static const dcx_store_entry *list_find(const dcx_store_list *list, const unsigned char *sha1)
{
    for (size_t i = 0; i < dcx_store_list_count(list); i++) {
        const dcx_store_entry *e = dcx_store_list_get(list, i);
        if (memcmp(e->thumbprint, sha1, DCX_THUMBPRINT_LEN) == 0)
            return e;
    }
    return NULL;
}

static int import_pfx_file(const char *name, const char *password, unsigned char *sha1,
                           dcx_error *err)
{
    dcx_blob pfx = file_blob(name);
    if (!pfx.data) {
        snprintf(err->reason, sizeof(err->reason), "cannot read %s", name);
        return err->status = DCX_E_CONFIG;
    }
    int rc = dcx_store_import_pfx(CU, pfx, password, 1, sha1, err);
    free((void *)pfx.data);
    return rc;
}

static int case_store_wrong_password(void)
{
    unsigned char sha1[DCX_THUMBPRINT_LEN];
    dcx_error err;
    int rc = import_pfx_file("store_second.pfx", "not the password", sha1, &err);
    if (rc == DCX_OK) {
        dcx_store_remove(CU, "My", sha1, 1, &err);
        return say(FAIL, "a PKCS#12 file was imported with a wrong password");
    }
    if (rc == DCX_E_CONFIG && strstr(err.reason, "wrong password"))
        return say(PASS, "%s", err.reason);
    return store_trouble(rc, &err, "expected DCX_E_CONFIG saying 'wrong password'");
}

static int case_store_import_pfx(void)
{
    unsigned char got[DCX_THUMBPRINT_LEN], want[DCX_THUMBPRINT_LEN];
    char password[128], hx[41];
    dcx_error err;
    file_text("pfx.password", password, sizeof(password));
    file_sha1("store_second.sha1", want);
    int rc = import_pfx_file("store_second.pfx", password, got, &err);
    if (rc != DCX_OK)
        return store_trouble(rc, &err, "importing store_second.pfx");
    hex(got, DCX_THUMBPRINT_LEN, hx);
    if (memcmp(got, want, DCX_THUMBPRINT_LEN) != 0)
        return say(FAIL, "the import reported thumbprint %s, not the file's certificate", hx);
    return say(PASS, "imported %s with its key into Cert:\\CurrentUser\\My", hx);
}

static int case_store_enumerate_my(void)
{
    unsigned char first[DCX_THUMBPRINT_LEN], second[DCX_THUMBPRINT_LEN], digest[32];
    char want[128], got[65];
    dcx_error err;
    file_sha1("store_client.sha1", first);
    file_sha1("store_second.sha1", second);
    dcx_store_list *my = dcx_store_list_open(CU, "my", &err); /* names match without case */
    if (!my)
        return store_trouble(err.status, &err, "listing My");
    const dcx_store_entry *a = list_find(my, first), *b = list_find(my, second);
    int out;
    if (!a || !b) {
        out = say(FAIL, "My (%lu certificates) lacks %s", (unsigned long)dcx_store_list_count(my),
                  !a ? "the certificate of store_client.pfx" : "the certificate of store_second.pfx");
    } else if (!a->has_key || !b->has_key) {
        out = say(FAIL, "has_key is %d and %d; both PKCS#12 imports have their key", a->has_key,
                  b->has_key);
    } else {
        sha256 h;
        sha256_init(&h);
        sha256_update(&h, b->der, b->der_len);
        sha256_final(&h, digest);
        hex(digest, 32, got);
        file_text("store_second.sha256", want, sizeof(want));
        if (strcmp(got, want) != 0)
            out = say(FAIL, "the DER listed for %s has SHA-256 %s, expected %s", b->thumbprint_hex,
                      got, want);
        else
            out = say(PASS, "%lu certificates in My; %s and %s both with has_key=1",
                      (unsigned long)dcx_store_list_count(my), a->thumbprint_hex, b->thumbprint_hex);
    }
    dcx_store_list_free(my);
    return out;
}

static int case_store_export_der(void)
{
    unsigned char sha1[DCX_THUMBPRINT_LEN];
    dcx_error err;
    file_sha1("store_second.sha1", sha1);
    long n = dcx_store_export(CU, "My", sha1, NULL, 0, &err);
    if (n < 0)
        return store_trouble((int)n, &err, "exporting from My");
    unsigned char *der = malloc((size_t)n);
    long m = der ? dcx_store_export(CU, "My", sha1, der, (size_t)n, &err) : -1;
    dcx_blob file = file_blob("store_second.der");
    int out;
    if (m != n)
        out = say(FAIL, "the second export returned %ld, the first %ld: %s", m, n, err.reason);
    else if (!file.data || file.len != (size_t)n || memcmp(file.data, der, (size_t)n) != 0)
        out = say(FAIL, "the exported DER (%ld bytes) differs from store_second.der (%lu bytes)", n,
                  (unsigned long)file.len);
    else
        out = say(PASS, "exported %ld bytes of DER, identical to the certificate in the PKCS#12 file", n);
    free(der);
    free((void *)file.data);
    return out;
}

/* Is the certificate with this SHA-1 in a logical store (1), not (0), or failed (<0)? */
static int store_holds(const char *logical, const unsigned char *sha1, int *has_key, dcx_error *err)
{
    dcx_store_list *list = dcx_store_list_open(CU, logical, err);
    if (!list)
        return err->status;
    const dcx_store_entry *e = list_find(list, sha1);
    if (e && has_key)
        *has_key = e->has_key;
    dcx_store_list_free(list);
    return e != NULL;
}

static int case_store_add_root_ca(void)
{
    static const char *const logical[] = {"Root", "CA"};
    unsigned char want[DCX_THUMBPRINT_LEN], got[DCX_THUMBPRINT_LEN];
    dcx_blob der = file_blob("store_ca.der");
    dcx_error err;
    int out = PASS;
    file_sha1("store_ca.sha1", want);
    for (int i = 0; i < 2 && out == PASS; i++) {
        int rc = dcx_store_add(CU, logical[i], der, got, &err), key = -1;
        if (rc != DCX_OK) {
            out = store_trouble(rc, &err, logical[i]);
        } else if (memcmp(got, want, DCX_THUMBPRINT_LEN) != 0) {
            out = say(FAIL, "adding to %s reported another thumbprint", logical[i]);
        } else if ((rc = store_holds(logical[i], want, &key, &err)) != 1) {
            out = rc < 0 ? store_trouble(rc, &err, "listing") : say(FAIL, "%s does not list it", logical[i]);
        } else if (key != 0) {
            out = say(FAIL, "%s lists it with has_key=%d; it was added without a key", logical[i], key);
        }
    }
    free((void *)der.data);
    if (out == PASS) {
        char hx[41];
        hex(want, DCX_THUMBPRINT_LEN, hx);
        say(PASS, "CA certificate %s added to Root and CA, listed in both with has_key=0", hx);
    }
    return out;
}

static int case_store_remove_root_ca(void)
{
    static const char *const logical[] = {"Root", "CA"};
    unsigned char sha1[DCX_THUMBPRINT_LEN];
    dcx_error err;
    file_sha1("store_ca.sha1", sha1);
    for (int i = 0; i < 2; i++) {
        int rc = dcx_store_remove(CU, logical[i], sha1, 0, &err);
        if (rc != DCX_OK)
            return store_trouble(rc, &err, logical[i]);
        if ((rc = store_holds(logical[i], sha1, NULL, &err)) != 0)
            return rc < 0 ? store_trouble(rc, &err, "listing") : say(FAIL, "%s still lists it", logical[i]);
    }
    int rc = dcx_store_remove(CU, "Root", sha1, 0, &err);
    if (rc != DCX_E_CONFIG || !strstr(err.reason, "no certificate with thumbprint"))
        return say(FAIL, "removing it again: expected DCX_E_CONFIG 'no certificate with thumbprint', "
                   "got %d: %s", rc, err.reason);
    return say(PASS, "removed from Root and CA, listed in neither; again: %s", err.reason);
}

static int case_store_remove_identity(void)
{
    unsigned char gone[DCX_THUMBPRINT_LEN], kept[DCX_THUMBPRINT_LEN];
    dcx_error err;
    int key = 0;
    file_sha1("store_client.sha1", gone);
    file_sha1("store_second.sha1", kept);
    int rc = dcx_store_remove(CU, "My", gone, 1, &err);
    if (rc != DCX_OK)
        return store_trouble(rc, &err, "removing store_client from My");
    if ((rc = store_holds("My", gone, NULL, &err)) != 0)
        return rc < 0 ? store_trouble(rc, &err, "listing") : say(FAIL, "My still lists it");
    if ((rc = store_holds("My", kept, &key, &err)) != 1 || !key)
        return rc < 0 ? store_trouble(rc, &err, "listing")
                      : say(FAIL, "the other identity lost its place or its key (listed %d, has_key %d)", rc, key);
    return say(PASS, "removed with its key; the other identity in My keeps its own");
}

/* The local identity as dcxsec chooses it when no thumbprint is configured:
 * the only certificate in My with a private key.  My also holds one without. */
static int case_store_chosen_identity(void)
{
    unsigned char without[DCX_THUMBPRINT_LEN], chosen[DCX_THUMBPRINT_LEN];
    dcx_blob der = file_blob("client.der");
    dcx_error err;
    int rc = dcx_store_add(CU, "My", der, without, &err);
    free((void *)der.data);
    if (rc != DCX_OK)
        return store_trouble(rc, &err, "adding a certificate without key to My");
    dcx_store_list *my = dcx_store_list_open(CU, "My", &err);
    if (!my)
        return store_trouble(err.status, &err, "listing My");
    size_t with_key = 0, total = dcx_store_list_count(my);
    for (size_t i = 0; i < total; i++) {
        const dcx_store_entry *e = dcx_store_list_get(my, i);
        if (e->has_key && with_key++ == 0)
            memcpy(chosen, e->thumbprint, DCX_THUMBPRINT_LEN);
    }
    dcx_store_list_free(my);
    int out;
    if (with_key != 1) {
        out = say(FAIL, "expected exactly one certificate with a key among the %lu in My, found %lu",
                  (unsigned long)total, (unsigned long)with_key);
    } else {
        opts o = {NULL, NULL, NULL, DCX_VERIFY_TRUST_CHAIN, "ca.pem", {NULL, NULL}, 1, 0, chosen};
        char hx[41];
        hex(chosen, DCX_THUMBPRINT_LEN, hx);
        out = identity_case(&o, "store_second.sha256", NULL, "");
        if (out == PASS)
            say(PASS, "chose %s, the only one of %lu certificates in My with a key; the server saw it",
                hx, (unsigned long)total);
    }
    dcx_store_remove(CU, "My", without, 0, &err);
    return out;
}

/* ---- a connection that failed repeats why ------------------------------------ */

/* After a failure, later calls ("r"ead, "w"rite, "h"andshake, in the order
 * given) must each answer the same status and reason (and, for a refusal,
 * the same verification reason). */
static int repeats(dcx_conn *c, int rc, const dcx_error *first, const char *what,
                   const char *calls, int in_handshake)
{
    for (const char *call = calls; *call; call++) {
        const char *name = *call == 'r' ? "read" : *call == 'w' ? "write" : "handshake";
        dcx_error again;
        char buf[16];
        memset(&again, 0, sizeof(again));
        long r = *call == 'r' ? dcx_conn_read(c, buf, sizeof(buf), 2000, &again)
               : *call == 'w' ? dcx_conn_write(c, "x", 1, 2000, &again)
                              : dcx_conn_handshake(c, 2000, &again);
        if (r != rc || strcmp(again.reason, first->reason) != 0 ||
            (rc == DCX_E_VERIFY && again.verify_reason != first->verify_reason))
            return say(FAIL, "after %s (status %d: %s), a %s answered %ld: %s", what, rc,
                       first->reason, name, r, again.reason);
    }
    return say(PASS, "after %s, each later call (%s) repeated status %d: %s", what,
               in_handshake ? "read, write, handshake" : "read, read, write", rc, first->reason);
}

static int case_repeat_after_refusal(void)
{
    opts o = {NULL, NULL, NULL, DCX_VERIFY_TRUST_CHAIN, "other_ca.pem", {NULL, NULL}, 1};
    dcx_error err;
    sock_t s;
    dcx_conn *c;
    dcx_ctx *ctx = make_ctx(&o, &err);
    if (!ctx)
        return say(FAIL, "%s", err.reason);
    int rc = connect_to(ctx, sserver_port, "localhost", &s, &c, &err), out;
    if (rc != DCX_E_VERIFY || err.verify_reason != DCX_VR_UNTRUSTED)
        out = say(FAIL, "expected the handshake refused as UNTRUSTED, got %d: %s", rc, err.reason);
    else
        out = repeats(c, rc, &err, "the refused handshake", "rwh", 1);
    hang_up(s, c);
    dcx_ctx_free(ctx);
    return out;
}

static int case_repeat_after_bad_record(void)
{
    opts o = {NULL, NULL, NULL, DCX_VERIFY_NONE, NULL, {NULL, NULL}, 0};
    dcx_error err;
    sock_t s;
    dcx_conn *c;
    char buf[64];
    dcx_ctx *ctx = make_ctx(&o, &err);
    if (!ctx)
        return say(FAIL, "%s", err.reason);
    int rc = connect_to(ctx, bad_record_port, NULL, &s, &c, &err), out;
    long n = rc == DCX_OK ? dcx_conn_read(c, buf, sizeof(buf), TIMEOUT_MS, &err) : rc;
    if (rc != DCX_OK)
        out = say(FAIL, "handshake: %s", err.reason);
    else if (n >= 0 || n == DCX_EOF || n == DCX_E_TIMEOUT)
        out = say(FAIL, "reading an altered record returned %ld (%s)", n, n < 0 ? err.reason : "data");
    else
        out = repeats(c, (int)n, &err, "the altered record", "rrw", 0);
    hang_up(s, c);
    dcx_ctx_free(ctx);
    return out;
}

/* A plain TCP peer in this process: raw bytes, or silence. */
static int plain_peer(const char *raw, size_t raw_len, int timeout_ms, int expect_status)
{
    server_job job;
    thread_t t;
    int port = 0;
    memset(&job, 0, sizeof(job));
    job.listener = tcp_listen(&port);
    job.delay_only = 1;
    job.raw = raw;
    job.raw_len = raw_len;
    thread_start(&t, server_thread, &job);
    opts o = {NULL, NULL, NULL, DCX_VERIFY_NONE, NULL, {NULL, NULL}, 0};
    dcx_error err;
    dcx_ctx *ctx = make_ctx(&o, &err);
    sock_t s = tcp_connect(port);
    dcx_conn *c = dcx_conn_new(ctx, (dcx_socket)s, 0, NULL, &err);
    double t0 = now_s();
    int rc = c ? dcx_conn_handshake(c, timeout_ms, &err) : err.status;
    double secs = now_s() - t0;
    hang_up(s, c);
    thread_join(t);
    close_socket(job.listener);
    dcx_ctx_free(ctx);
    if (rc != expect_status)
        return say(FAIL, "expected status %d, got %d: %s", expect_status, rc, err.reason);
    if (expect_status == DCX_E_TIMEOUT && (secs < timeout_ms / 1000.0 - 0.05 || secs > timeout_ms / 1000.0 + 2))
        return say(FAIL, "timed out after %.2f s, asked for %d ms", secs, timeout_ms);
    return say(PASS, "%s", err.reason);
}

static int case_not_tls(void)
{
    static const char rj[] = "\x03\x00\x00\x00\x00\x04\x00\x01\x01\x01"; /* A-ASSOCIATE-RJ */
    return plain_peer(rj, 10, 10000, DCX_E_NOT_TLS);
}

static int case_timeout(void)
{
    return plain_peer(NULL, 0, 700, DCX_E_TIMEOUT);
}

/* timeout 0 advances the handshake without waiting and leaves the connection
 * usable (an acceptor answers a waiting ClientHello this way): against a
 * silent peer each step comes back at once, and the connection lives on to
 * time out properly; against the dcxsec server, steps make a handshake. */
static int case_handshake_in_steps(void)
{
    server_job job;
    thread_t t;
    int port = 0;
    memset(&job, 0, sizeof(job));
    job.listener = tcp_listen(&port);
    job.delay_only = 1;
    thread_start(&t, server_thread, &job);
    opts o = {NULL, NULL, NULL, DCX_VERIFY_NONE, NULL, {NULL, NULL}, 0};
    dcx_error err;
    dcx_ctx *ctx = make_ctx(&o, &err);
    sock_t s = tcp_connect(port);
    dcx_conn *c = dcx_conn_new(ctx, (dcx_socket)s, 0, NULL, &err);
    double t0 = now_s();
    int first = c ? dcx_conn_handshake(c, 0, &err) : err.status;
    int second = c ? dcx_conn_handshake(c, 0, &err) : err.status;
    double secs = now_s() - t0;
    int last = c ? dcx_conn_handshake(c, 700, &err) : err.status;
    hang_up(s, c);
    thread_join(t);
    close_socket(job.listener);
    dcx_ctx_free(ctx);
    if (first != DCX_E_TIMEOUT || second != DCX_E_TIMEOUT)
        return say(FAIL, "steps against a silent peer returned %d and %d: %s", first, second, err.reason);
    if (secs > 0.5)
        return say(FAIL, "two steps took %.2f s: a step must not wait", secs);
    if (last != DCX_E_TIMEOUT || !strstr(err.reason, "never answered"))
        return say(FAIL, "after two steps, a 700 ms handshake returned %d: %s", last, err.reason);

    ctx = make_ctx(&client_dcx, &err);
    if (!ctx)
        return say(FAIL, "%s", err.reason);
    s = tcp_connect(dcx_port);
    c = s == INVALID_SOCKET ? NULL : dcx_conn_new(ctx, (dcx_socket)s, 0, "localhost", &err);
    int out = FAIL, steps = 0, rc = DCX_E_TIMEOUT;
    double give_up = now_s() + 10;
    while (c && rc == DCX_E_TIMEOUT && now_s() < give_up) {
        rc = dcx_conn_handshake(c, 0, &err);
        steps++;
        if (rc == DCX_E_TIMEOUT)
            sleep_ms(5);
    }
    if (!c)
        say(FAIL, "cannot connect: %s", err.reason);
    else if (rc != DCX_OK)
        say(FAIL, "after %d steps: %s", steps, err.reason);
    else if (ask_peer_sees(c, "client.sha256", &err) == PASS)
        out = say(PASS, "steps return at once and keep the connection; %s in %d step(s)",
                  version_name(dcx_conn_version(c)), steps);
    if (c)
        hang_up(s, c);
    else if (s != INVALID_SOCKET)
        close_socket(s);
    dcx_ctx_free(ctx);
    return out;
}

/* Server role: this process accepts with the backend under test. */
typedef struct server_case {
    opts server, client;
    int expect_rc, expect_reason;
} server_case;

static int server_role(const server_case *sc)
{
    server_job job;
    thread_t t;
    int port = 0, out;
    dcx_error err;
    memset(&job, 0, sizeof(job));
    job.ctx = make_ctx(&sc->server, &job.err);
    if (!job.ctx)
        return say(FAIL, "server context: %s", job.err.reason);
    job.listener = tcp_listen(&port);
    thread_start(&t, server_thread, &job);
    dcx_ctx *ctx = make_ctx(&sc->client, &err);
    sock_t s;
    dcx_conn *c = NULL;
    int rc = ctx ? connect_to(ctx, port, "localhost", &s, &c, &err) : err.status;
    if (rc == DCX_OK && sc->expect_rc == DCX_OK) {
        out = ask_peer_sees(c, "client.sha256", &err);
        dcx_conn_write(c, "Q", 1, TIMEOUT_MS, &err);
    } else {
        out = PASS;
    }
    hang_up(s, c);
    thread_join(t);
    close_socket(job.listener);
    dcx_ctx_free(ctx);
    dcx_ctx_free(job.ctx);
    /* Wine's SChannel has no server role; that is a skip, never a pass */
    if (job.handshake_rc == DCX_E_UNSUPPORTED && strstr(job.err.reason, "SEC_E_UNSUPPORTED_FUNCTION"))
        return say(SKIP, "AcceptSecurityContext unsupported under Wine (%s)", job.err.reason);
    if (job.handshake_rc != sc->expect_rc ||
        (sc->expect_rc == DCX_E_VERIFY && job.err.verify_reason != sc->expect_reason))
        return say(FAIL, "server handshake: expected %d/%s, got %d: %s", sc->expect_rc,
                   reason_names[sc->expect_reason], job.handshake_rc, job.err.reason);
    if (out != PASS)
        return FAIL;
    return sc->expect_rc == DCX_OK ? say(PASS, "accepted, client certificate verified")
                                   : say(PASS, "refused: %s", job.err.reason);
}

#define SERVER_ID "server.pem", "server.key", NULL
#define CLIENT_ID "client.pem", "client.key", NULL

static int case_server_mutual(void)
{
    server_case sc = {{SERVER_ID, DCX_VERIFY_TRUST_CHAIN, "ca.pem", {NULL, NULL}, 0},
                      {CLIENT_ID, DCX_VERIFY_TRUST_CHAIN, "ca.pem", {NULL, NULL}, 1}, DCX_OK, 0};
    return server_role(&sc);
}

static int case_server_no_client_cert(void)
{
    server_case sc = {{SERVER_ID, DCX_VERIFY_TRUST_CHAIN, "ca.pem", {NULL, NULL}, 0},
                      {NULL, NULL, NULL, DCX_VERIFY_NONE, NULL, {NULL, NULL}, 0},
                      DCX_E_VERIFY, DCX_VR_NO_CERTIFICATE};
    return server_role(&sc);
}

static int case_server_thumb_accepts(void)
{
    server_case sc = {{SERVER_ID, DCX_VERIFY_THUMBPRINT, NULL, {"client.sha256", NULL}, 0},
                      {CLIENT_ID, DCX_VERIFY_NONE, NULL, {NULL, NULL}, 0}, DCX_OK, 0};
    return server_role(&sc);
}

static int case_server_thumb_refuses(void)
{
    server_case sc = {{SERVER_ID, DCX_VERIFY_THUMBPRINT, NULL, {"other.sha1", NULL}, 0},
                      {CLIENT_ID, DCX_VERIFY_NONE, NULL, {NULL, NULL}, 0},
                      DCX_E_VERIFY, DCX_VR_THUMBPRINT};
    return server_role(&sc);
}

static int case_server_untrusted_client(void)
{
    server_case sc = {{SERVER_ID, DCX_VERIFY_TRUST_CHAIN, "other_ca.pem", {NULL, NULL}, 0},
                      {CLIENT_ID, DCX_VERIFY_NONE, NULL, {NULL, NULL}, 0},
                      DCX_E_VERIFY, DCX_VR_UNTRUSTED};
    return server_role(&sc);
}

/* ---- revocation (CRLs) ----------------------------------------------------
 * s_server presents server.pem, issued by ca.pem.  server_revoked.crl (PEM)
 * revokes it (keyCompromise, on the day in server_revoked.date);
 * current.crl.der (DER) is a current CRL of the same CA that does not;
 * expired.crl's nextUpdate has passed.  ca.name is the CA's name (RFC 2253). */

static int case_crl_revokes(void)
{
    char date[32], ca[300], by[320];
    file_text("server_revoked.date", date, sizeof(date));
    file_text("ca.name", ca, sizeof(ca));
    char on[48];
    snprintf(on, sizeof(on), "revoked on %s", date);
    snprintf(by, sizeof(by), "by '%s'", ca);
    opts o = {NULL, NULL, NULL, DCX_VERIFY_TRUST_CHAIN, "ca.pem", {NULL, NULL}, 1, 0, NULL,
              "server_revoked.crl", 0};
    return expect_refusal_saying(&o, sserver_port, "localhost", DCX_VR_REVOKED, on, by,
                                 "(keyCompromise)", (const char *)NULL);
}

static int case_crl_current_accepts(void)
{
    opts o = {NULL, NULL, NULL, DCX_VERIFY_TRUST_CHAIN, "ca.pem", {NULL, NULL}, 1, 0, NULL,
              "current.crl.der", 1};
    return expect_accept(&o, sserver_port, "localhost");
}

static int case_crl_required_missing(void)
{
    char ca[300], want[340];
    file_text("ca.name", ca, sizeof(ca));
    snprintf(want, sizeof(want), "no current CRL from '%s'", ca);
    opts o = {NULL, NULL, NULL, DCX_VERIFY_TRUST_CHAIN, "ca.pem", {NULL, NULL}, 1, 0, NULL, NULL, 1};
    return expect_refusal_saying(&o, sserver_port, "localhost", DCX_VR_REVOCATION, want,
                                 (const char *)NULL);
}

static int case_crl_not_required_missing(void)
{
    opts o = {NULL, NULL, NULL, DCX_VERIFY_TRUST_CHAIN, "ca.pem", {NULL, NULL}, 1, 0, NULL, NULL, 0};
    return expect_accept(&o, sserver_port, "localhost");
}

static int case_crl_expired(void)
{
    char ca[300], want[340];
    file_text("ca.name", ca, sizeof(ca));
    snprintf(want, sizeof(want), "the CRL from '%s' expired on ", ca);
    opts o = {NULL, NULL, NULL, DCX_VERIFY_TRUST_CHAIN, "ca.pem", {NULL, NULL}, 1, 0, NULL,
              "expired.crl", 1};
    return expect_refusal_saying(&o, sserver_port, "localhost", DCX_VR_REVOCATION, want,
                                 (const char *)NULL);
}

/* forged.crl names the CA as its issuer and revokes the server, but another
 * key signed it: it says nothing, so the server passes without
 * check_revocation, and with it has no current CRL. */
static int case_crl_forged(void)
{
    char ca[300], want[340];
    file_text("ca.name", ca, sizeof(ca));
    snprintf(want, sizeof(want), "no current CRL from '%s'", ca);
    opts o = {NULL, NULL, NULL, DCX_VERIFY_TRUST_CHAIN, "ca.pem", {NULL, NULL}, 1, 0, NULL,
              "forged.crl", 0};
    if (expect_accept(&o, sserver_port, "localhost") != PASS)
        return FAIL;
    o.check_revocation = 1;
    if (expect_refusal_saying(&o, sserver_port, "localhost", DCX_VR_REVOCATION, want,
                              (const char *)NULL) != PASS)
        return FAIL;
    char said[sizeof(msg)];
    snprintf(said, sizeof(said), "%s", msg);
    return say(PASS, "accepted without check_revocation; with it %s", said);
}

#ifdef _WIN32
/* Puts a CRL file into Cert:\CurrentUser\CA (as `certutil -user -addstore CA`
 * does), or with name NULL removes every CRL from it.  Removing goes by the
 * registry key that holds them: Wine 8.0's CertDeleteCRLFromStore on a system
 * store releases the CRL once too often ("Assertion failed: ref >= 0" in
 * crypt32/context.c) and the process dies. */
static int ca_store_crl(const char *name)
{
    if (!name) {
        LSTATUS rc = RegDeleteTreeW(HKEY_CURRENT_USER,
                                    L"Software\\Microsoft\\SystemCertificates\\CA\\CRLs");
        return rc == ERROR_SUCCESS || rc == ERROR_FILE_NOT_FOUND;
    }
    HCERTSTORE ca = CertOpenStore(CERT_STORE_PROV_SYSTEM_W, 0, 0, CERT_SYSTEM_STORE_CURRENT_USER,
                                  L"CA");
    dcx_blob b = file_blob(name);
    int ok = ca && b.data && CertAddEncodedCRLToStore(ca, X509_ASN_ENCODING, b.data, (DWORD)b.len,
                                                      CERT_STORE_ADD_REPLACE_EXISTING, NULL);
    free((void *)b.data);
    if (ca)
        CertCloseStore(ca, 0);
    return ok;
}

/* How many CRLs Cert:\CurrentUser\CA holds (-1: it cannot be opened). */
static int ca_store_crl_count(void)
{
    HCERTSTORE ca = CertOpenStore(CERT_STORE_PROV_SYSTEM_W, 0, 0,
                                  CERT_SYSTEM_STORE_CURRENT_USER | CERT_STORE_READONLY_FLAG, L"CA");
    int n = 0;
    PCCRL_CONTEXT crl = NULL;
    if (!ca)
        return -1;
    while ((crl = CertEnumCRLsInStore(ca, crl)) != NULL)
        n++;
    CertCloseStore(ca, 0);
    return n;
}
#endif

/* CRLs in the CA store count as the CRLs given do. */
static int case_crl_in_ca_store(void)
{
#ifndef _WIN32
    return say(SKIP, "no system certificate store on this platform");
#else
    char date[32], on[48];
    file_text("server_revoked.date", date, sizeof(date));
    snprintf(on, sizeof(on), "revoked on %s", date);
    opts revoking = {NULL, NULL, NULL, DCX_VERIFY_TRUST_CHAIN, "ca.pem", {NULL, NULL}, 1, 0, NULL,
                     NULL, 0};
    opts required = revoking;
    required.check_revocation = 1;
    if (!ca_store_crl(NULL) || !ca_store_crl("server_revoked.der") || ca_store_crl_count() != 1)
        return say(FAIL, "cannot put a CRL into Cert:\\CurrentUser\\CA: 0x%08lX",
                   (unsigned long)GetLastError());
    int out = expect_refusal_saying(&revoking, sserver_port, "localhost", DCX_VR_REVOKED, on,
                                    (const char *)NULL);
    char first[1024];
    snprintf(first, sizeof(first), "%s", msg);
    if (out == PASS && ca_store_crl(NULL) && ca_store_crl("current.crl.der"))
        out = expect_accept(&required, sserver_port, "localhost");
    if ((!ca_store_crl(NULL) || ca_store_crl_count() != 0) && out == PASS)
        out = say(FAIL, "cannot empty Cert:\\CurrentUser\\CA of its CRLs again");
    if (out == PASS)
        say(PASS, "a revoking CRL in CA: %s; a current one there with check_revocation: accepted",
            first);
    return out;
#endif
}

static const struct {
    const char *name;
    int (*run)(void);
} cases[] = {
    {"client.handshake_dcxsec_server", case_dcx_handshake},
    {"client.handshake_in_steps", case_handshake_in_steps},
    {"client.connect_in_engine", case_connect_in_engine},
    {"client.close_notify_behind_full_socket", case_close_notify_behind_full_socket},
    {"client.reads_records_at_hand", case_reads_records_at_hand},
    {"client.upload_50MB_sha256", case_upload},
    {"client.download_50MB_sha256", case_download},
    {"client.none_accepts", case_none_accepts},
    {"client.trust_chain_accepts", case_chain_accepts},
    {"client.trust_chain_accepts_ip_address", case_chain_accepts_ip},
    {"client.trust_chain_refuses_wrong_ip_address", case_chain_wrong_ip},
    {"client.trust_chain_refuses_unknown_ca", case_chain_unknown_ca},
    {"client.trust_chain_refuses_hostname", case_chain_hostname},
    {"client.trust_chain_refuses_expired", case_chain_expired},
    {"client.thumbprint_accepts_sha1", case_thumb_sha1},
    {"client.thumbprint_accepts_sha256", case_thumb_sha256},
    {"client.thumbprint_refuses", case_thumb_refuses},
    {"client.refused_without_client_cert", case_dcx_requires_client_cert},
    {"client.no_common_version", case_no_common_version},
    {"client.identity_from_der", case_der_identity},
    {"client.identity_ec_p256", case_ec_identity},
    {"client.revocation_refuses_revoked_server", case_crl_revokes},
    {"client.revocation_accepts_current_crl", case_crl_current_accepts},
    {"client.revocation_required_without_crl", case_crl_required_missing},
    {"client.revocation_not_required_without_crl", case_crl_not_required_missing},
    {"client.revocation_refuses_expired_crl", case_crl_expired},
    {"client.revocation_ignores_forged_crl", case_crl_forged},
    {"client.revocation_crl_in_ca_store", case_crl_in_ca_store},
    {"store.wrong_pfx_password", case_store_wrong_password},
    {"store.import_pfx_into_my", case_store_import_pfx},
    {"store.enumerate_my_with_keys", case_store_enumerate_my},
    /* the identity imported before the second PKCS#12 still has its own key */
    {"client.identity_from_my_store", case_store_identity},
    {"client.unknown_thumbprint_in_my_store", case_store_unknown_thumbprint},
    {"store.export_der_matches_file", case_store_export_der},
    {"store.add_to_root_and_ca", case_store_add_root_ca},
    {"store.remove_from_root_and_ca", case_store_remove_root_ca},
    {"store.remove_identity_with_key", case_store_remove_identity},
    {"client.identity_chosen_from_my", case_store_chosen_identity},
    {"client.peer_not_tls", case_not_tls},
    {"client.handshake_timeout", case_timeout},
    {"client.failure_repeats_after_refusal", case_repeat_after_refusal},
    {"client.failure_repeats_after_bad_record", case_repeat_after_bad_record},
    {"server.mutual_tls", case_server_mutual},
    {"server.refuses_missing_client_cert", case_server_no_client_cert},
    {"server.refuses_untrusted_client", case_server_untrusted_client},
    {"server.thumbprint_accepts", case_server_thumb_accepts},
    {"server.thumbprint_refuses", case_server_thumb_refuses},
};

static int cmd_suite(int argc, char **argv)
{
    if (argc < 5)
        return 2;
    dcx_port = atoi(argv[0]);
    sserver_port = atoi(argv[1]);
    expired_port = atoi(argv[2]);
    tls13_port = atoi(argv[3]);
    bad_record_port = atoi(argv[4]);
    printf("backend: %s\n", dcx_backend());
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        if (argc > 5 && !strstr(cases[i].name, argv[5]))
            continue;
        msg[0] = 0;
        int r = cases[i].run();
        counts[r]++;
        printf("%s %s: %s\n", r == PASS ? "PASS" : r == FAIL ? "FAIL" : "SKIPPED", cases[i].name, msg);
        fflush(stdout);
    }
    printf("%d passed, %d failed, %d skipped\n", counts[PASS], counts[FAIL], counts[SKIP]);
    return counts[FAIL] ? 1 : 0;
}

/* Put a PKCS#12 file into Cert:\CurrentUser\My with the store API. */
static int cmd_import_pfx(const char *path, const char *password)
{
    dcx_error err;
    unsigned char sha1[DCX_THUMBPRINT_LEN];
    char hx[41];
    dcx_blob pfx = path_blob(path);
    if (!pfx.data) {
        fprintf(stderr, "cannot read %s\n", path);
        return 2;
    }
    int rc = dcx_store_import_pfx(DCX_STORE_CURRENT_USER, pfx, password, 1, sha1, &err);
    free((void *)pfx.data);
    if (rc != DCX_OK) {
        fprintf(stderr, "import-pfx: %s\n", err.reason);
        return rc == DCX_E_UNSUPPORTED ? 3 : 2;
    }
    hex(sha1, DCX_THUMBPRINT_LEN, hx);
    printf("imported %s with its key into Cert:\\CurrentUser\\My\n", hx);
    return 0;
}

int main(int argc, char **argv)
{
#ifdef _WIN32
    WSADATA wsa;
    WSAStartup(MAKEWORD(2, 2), &wsa);
#endif
    setvbuf(stdout, NULL, _IOLBF, 0);
    if (argc >= 4 && strcmp(argv[1], "import-pfx") == 0)
        return cmd_import_pfx(argv[2], argv[3]);
    if (argc >= 3 && strcmp(argv[1], "serve") == 0) {
        dir = argv[2];
        return cmd_serve();
    }
    if (argc >= 8 && strcmp(argv[1], "suite") == 0) {
        dir = argv[2];
        return cmd_suite(argc - 3, argv + 3);
    }
    fprintf(stderr, "usage: driver serve DIR | import-pfx FILE PASSWORD | "
                    "suite DIR DCX_PORT SSERVER_PORT EXPIRED_PORT TLS13_PORT BAD_RECORD_PORT [FILTER]\n");
    return 2;
}
