/*
 * support.c - what every part of the conformance driver leans on: the
 * threads, clock and sleep of each platform, a SHA-256 of its own (so that
 * checksums need no crypto library) with hex helpers and the reproducible
 * byte pattern, the files of DIR and the contexts made from them (opts and
 * make_ctx), and the socket helpers (loopback connect and listen, read_exact,
 * the 64-bit fields of the suite's little protocol).
 */
#include "driver.h"

#ifdef _WIN32
int thread_start(thread_t *t, unsigned(__stdcall *fn)(void *), void *arg)
{
    *t = (HANDLE)_beginthreadex(NULL, 0, fn, arg, 0, NULL);
    return *t ? 0 : -1;
}
void thread_join(thread_t t)
{
    WaitForSingleObject(t, INFINITE);
    CloseHandle(t);
}
double now_s(void)
{
    return (double)GetTickCount64() / 1000.0;
}
void sleep_ms(int ms)
{
    Sleep((DWORD)ms);
}
#else
int thread_start(thread_t *t, void *(*fn)(void *), void *arg)
{
    return pthread_create(t, NULL, fn, arg);
}
void thread_join(thread_t t)
{
    pthread_join(t, NULL);
}
double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}
void sleep_ms(int ms)
{
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}
#endif

/* ---- SHA-256 (FIPS 180-4), so that checksums need no crypto library ---- */


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

void sha256_init(sha256 *s)
{
    static const uint32_t iv[8] = {0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a,
                                   0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19};
    memcpy(s->h, iv, sizeof(iv));
    s->total = 0;
    s->fill = 0;
}

void sha256_update(sha256 *s, const void *data, size_t len)
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

void sha256_final(sha256 *s, unsigned char out[32])
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

void hex(const unsigned char *b, size_t n, char *out)
{
    for (size_t i = 0; i < n; i++)
        sprintf(out + 2 * i, "%02X", b[i]);
    out[2 * n] = 0;
}

int unhex(const char *s, unsigned char *out, size_t cap)
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
void pattern(uint64_t *state, unsigned char *buf, size_t len)
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

const char *dir;

dcx_blob path_blob(const char *path)
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
dcx_blob file_blob(const char *name)
{
    char path[1024];
    snprintf(path, sizeof(path), "%s/%s", dir, name);
    return path_blob(path);
}

/* The first line of a small text file (thumbprints). */
void file_text(const char *name, char *out, size_t cap)
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


dcx_ctx *make_ctx(const opts *o, dcx_error *err)
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

sock_t tcp_connect(int port)
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

sock_t tcp_listen(int *port)
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
int writable_now(sock_t s)
{
#ifdef _WIN32
    WSAPOLLFD p = {s, POLLWRNORM, 0};
    return WSAPoll(&p, 1, 0) > 0;
#else
    struct pollfd p = {s, POLLOUT, 0};
    return poll(&p, 1, 0) > 0;
#endif
}

int read_exact(dcx_conn *c, void *buf, size_t len, dcx_error *err)
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

void put64(unsigned char *p, uint64_t v)
{
    for (int i = 0; i < 8; i++)
        p[i] = (unsigned char)(v >> (56 - 8 * i));
}

uint64_t get64(const unsigned char *p)
{
    uint64_t v = 0;
    for (int i = 0; i < 8; i++)
        v = v << 8 | p[i];
    return v;
}
