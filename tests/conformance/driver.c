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
 *
 * This file holds main, the argument parsing, the table of cases and the
 * harness (say, connect_to, ...); driver.h says what the other files hold:
 * support.c, cases_client.c, cases_verify.c, cases_store.c,
 * cases_revocation.c and cases_server.c.
 */
#include "driver.h"

/* ---- the suite --------------------------------------------------------------- */

static int counts[3];
char msg[1024];

int say(int outcome, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    return outcome;
}

int dcx_port, sserver_port, expired_port, tls13_port, bad_record_port;

/* Connect and handshake as a client; on failure msg says why. */
int connect_to(dcx_ctx *ctx, int port, const char *name, sock_t *s, dcx_conn **c,
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

void hang_up(sock_t s, dcx_conn *c)
{
    dcx_conn_free(c);
    if (s != INVALID_SOCKET)
        close_socket(s);
}

const char *version_name(int v)
{
    return v == DCX_TLS1_3 ? "TLS 1.3" : v == DCX_TLS1_2 ? "TLS 1.2" : "?";
}

int ask_peer_sees(dcx_conn *c, const char *expect_file, dcx_error *err)
{
    char got[65] = {0}, want[128];
    file_text(expect_file, want, sizeof(want));
    if (dcx_conn_write(c, "P", 1, TIMEOUT_MS, err) < 0 || read_exact(c, got, 64, err) != DCX_OK)
        return say(FAIL, "asking the server which certificate it saw: %s", err->reason);
    if (strcmp(got, want) != 0)
        return say(FAIL, "the server saw client certificate %s, expected %s", got, want);
    return PASS;
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
