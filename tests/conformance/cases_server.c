/*
 * cases_server.c - the server side: the suite's little protocol as this
 * process serves it (serve_conn, and server_thread, which the client cases
 * also use for their plain TCP peers), the `driver serve` mode that the
 * client cases of the other build connect to, and the server-role cases,
 * where this process accepts with the backend under test.
 */
#include "driver.h"

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

THREAD_FN server_thread(void *arg)
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

int cmd_serve(void)
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

int case_server_mutual(void)
{
    server_case sc = {{SERVER_ID, DCX_VERIFY_TRUST_CHAIN, "ca.pem", {NULL, NULL}, 0},
                      {CLIENT_ID, DCX_VERIFY_TRUST_CHAIN, "ca.pem", {NULL, NULL}, 1}, DCX_OK, 0};
    return server_role(&sc);
}

int case_server_no_client_cert(void)
{
    server_case sc = {{SERVER_ID, DCX_VERIFY_TRUST_CHAIN, "ca.pem", {NULL, NULL}, 0},
                      {NULL, NULL, NULL, DCX_VERIFY_NONE, NULL, {NULL, NULL}, 0},
                      DCX_E_VERIFY, DCX_VR_NO_CERTIFICATE};
    return server_role(&sc);
}

int case_server_thumb_accepts(void)
{
    server_case sc = {{SERVER_ID, DCX_VERIFY_THUMBPRINT, NULL, {"client.sha256", NULL}, 0},
                      {CLIENT_ID, DCX_VERIFY_NONE, NULL, {NULL, NULL}, 0}, DCX_OK, 0};
    return server_role(&sc);
}

int case_server_thumb_refuses(void)
{
    server_case sc = {{SERVER_ID, DCX_VERIFY_THUMBPRINT, NULL, {"other.sha1", NULL}, 0},
                      {CLIENT_ID, DCX_VERIFY_NONE, NULL, {NULL, NULL}, 0},
                      DCX_E_VERIFY, DCX_VR_THUMBPRINT};
    return server_role(&sc);
}

int case_server_untrusted_client(void)
{
    server_case sc = {{SERVER_ID, DCX_VERIFY_TRUST_CHAIN, "other_ca.pem", {NULL, NULL}, 0},
                      {CLIENT_ID, DCX_VERIFY_NONE, NULL, {NULL, NULL}, 0},
                      DCX_E_VERIFY, DCX_VR_UNTRUSTED};
    return server_role(&sc);
}
