/*
 * cases_client.c - the client cases against the dcxsec server (`driver
 * serve`) and in-process peers: handshake, close_notify, connect in the
 * engine, records at hand, 50 MB each way, no common version, the client
 * certificate the server requires, identities (DER, EC, the My store), a
 * connection that failed repeating why, peers that are not TLS or stay
 * silent, and the handshake in steps.
 */
#include "driver.h"

static const opts client_dcx = {"client.pem", "client.key", NULL, DCX_VERIFY_TRUST_CHAIN, "ca.pem",
                                {NULL, NULL}, 1};

int case_dcx_handshake(void)
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
int case_close_notify_behind_full_socket(void)
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
int case_connect_in_engine(void)
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
int case_reads_records_at_hand(void)
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

int case_upload(void) { return bulk(UPLOAD); }
int case_download(void) { return bulk(DOWNLOAD); }

int case_no_common_version(void)
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

int case_dcx_requires_client_cert(void)
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
int identity_case(const opts *o, const char *seen_file, const char *unsupported,
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

int case_store_identity(void)
{
    opts o = {NULL, NULL, "store_client.sha1", DCX_VERIFY_TRUST_CHAIN, "ca.pem", {NULL, NULL}, 1};
    return identity_case(&o, "store_client.sha256", "no system certificate store in this backend",
                         "the server saw the certificate from Cert:\\CurrentUser\\My");
}

int case_der_identity(void)
{
    opts o = {"client.der", "client.key.der", NULL, DCX_VERIFY_TRUST_CHAIN, "ca.pem", {NULL, NULL}, 1};
    return identity_case(&o, "client.sha256", NULL, "certificate and PKCS#8 key given as DER");
}

int case_ec_identity(void)
{
    opts o = {"ecclient.pem", "ecclient.key", NULL, DCX_VERIFY_TRUST_CHAIN, "ca.pem", {NULL, NULL}, 1};
    return identity_case(&o, "ecclient.sha256", "EC client keys unsupported here",
                         "P-256 client certificate and key");
}

int case_store_unknown_thumbprint(void)
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

int case_repeat_after_refusal(void)
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

int case_repeat_after_bad_record(void)
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

int case_not_tls(void)
{
    static const char rj[] = "\x03\x00\x00\x00\x00\x04\x00\x01\x01\x01"; /* A-ASSOCIATE-RJ */
    return plain_peer(rj, 10, 10000, DCX_E_NOT_TLS);
}

int case_timeout(void)
{
    return plain_peer(NULL, 0, 700, DCX_E_TIMEOUT);
}

/* timeout 0 advances the handshake without waiting and leaves the connection
 * usable (an acceptor answers a waiting ClientHello this way): against a
 * silent peer each step comes back at once, and the connection lives on to
 * time out properly; against the dcxsec server, steps make a handshake. */
int case_handshake_in_steps(void)
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
