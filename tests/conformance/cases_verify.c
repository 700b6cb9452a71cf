/*
 * cases_verify.c - how the client verifies the server, against openssl
 * s_server: expect_accept and expect_refusal (with the names of the
 * verification reasons, which the server and revocation cases use too), and
 * the cases of no verification, the trust chain (hostnames, IP addresses, an
 * unknown CA, an expired certificate) and thumbprints.
 */
#include "driver.h"

/* A client case against openssl s_server -rev: expect success and an echo. */
int expect_accept(const opts *o, int port, const char *name)
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

const char *const reason_names[] = {"NONE", "NO_CERTIFICATE", "UNTRUSTED", "EXPIRED",
                                           "NOT_YET_VALID", "THUMBPRINT", "HOSTNAME", "REVOKED",
                                           "BAD_SIGNATURE", "PURPOSE", "OTHER", "REVOCATION"};

/* As expect_refusal, and the reason must say each of the words given (NULL-ended). */
int expect_refusal_saying(const opts *o, int port, const char *name, int reason, ...)
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

int expect_refusal(const opts *o, int port, const char *name, int reason)
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

int case_none_accepts(void)
{
    opts o = {NULL, NULL, NULL, DCX_VERIFY_NONE, NULL, {NULL, NULL}, 0};
    return expect_accept(&o, sserver_port, NULL);
}

int case_chain_accepts(void)
{
    opts o = {NULL, NULL, NULL, DCX_VERIFY_TRUST_CHAIN, "ca.pem", {NULL, NULL}, 1};
    return expect_accept(&o, sserver_port, "localhost");
}

int case_chain_accepts_ip(void)
{
    opts o = {NULL, NULL, NULL, DCX_VERIFY_TRUST_CHAIN, "ca.pem", {NULL, NULL}, 1};
    return expect_accept(&o, sserver_port, "127.0.0.1");
}

int case_chain_wrong_ip(void)
{
    opts o = {NULL, NULL, NULL, DCX_VERIFY_TRUST_CHAIN, "ca.pem", {NULL, NULL}, 1};
    return expect_refusal(&o, sserver_port, "127.0.0.2", DCX_VR_HOSTNAME);
}

int case_chain_unknown_ca(void)
{
    opts o = {NULL, NULL, NULL, DCX_VERIFY_TRUST_CHAIN, "other_ca.pem", {NULL, NULL}, 1};
    return expect_refusal(&o, sserver_port, "localhost", DCX_VR_UNTRUSTED);
}

int case_chain_hostname(void)
{
    opts o = {NULL, NULL, NULL, DCX_VERIFY_TRUST_CHAIN, "ca.pem", {NULL, NULL}, 1};
    return expect_refusal(&o, sserver_port, "wrong.example", DCX_VR_HOSTNAME);
}

int case_chain_expired(void)
{
    opts o = {NULL, NULL, NULL, DCX_VERIFY_TRUST_CHAIN, "ca.pem", {NULL, NULL}, 1};
    return expect_refusal(&o, expired_port, "localhost", DCX_VR_EXPIRED);
}

int case_thumb_sha1(void)
{
    opts o = {NULL, NULL, NULL, DCX_VERIFY_THUMBPRINT, NULL, {"other.sha1", "server.sha1"}, 0};
    return expect_accept(&o, sserver_port, NULL);
}

int case_thumb_sha256(void)
{
    opts o = {NULL, NULL, NULL, DCX_VERIFY_THUMBPRINT, NULL, {"server.sha256", NULL}, 0};
    return expect_accept(&o, sserver_port, NULL);
}

int case_thumb_refuses(void)
{
    opts o = {NULL, NULL, NULL, DCX_VERIFY_THUMBPRINT, NULL, {"other.sha1", "client.sha256"}, 0};
    return expect_refusal(&o, sserver_port, NULL, DCX_VR_THUMBPRINT);
}
