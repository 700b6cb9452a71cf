/*
 * schannel.c - the SChannel (SSPI) + Crypt32 backend of dcxtls.h (Windows):
 * library facts, credentials, the context, and the connection with its
 * handshake loop, reads, writes, shutdown and attributes.
 *
 * One context holds an outbound and (lazily) an inbound credentials handle;
 * each connection drives InitializeSecurityContext / AcceptSecurityContext
 * and EncryptMessage / DecryptMessage over its own non-blocking socket,
 * waiting with dcx_wait so every call honours its deadline.  SChannel never
 * validates the peer itself (SCH_CRED_MANUAL_CRED_VALIDATION): after the
 * handshake sch_verify_peer (schannel_verify.c) applies the configured method
 * with Crypt32 and reports with the same dcx_verify_reason codes as the
 * OpenSSL backend.  The identity comes from schannel_identity.c.
 */
#include "schannel_int.h"

#define IN_INITIAL (16384 + 2048)
#define IN_LIMIT (1 << 20) /* no handshake flight or record is larger */

/* Builds with SCH_CREDENTIALS (Windows 10 1809) and TLS 1.3 (build 20348). */
#define BUILD_SCH_CREDENTIALS 17763
#define BUILD_TLS13 20348

/* ---- platform facts ---------------------------------------------------- */

static DWORD windows_build(void)
{
    static DWORD build;
    if (!build) {
        typedef LONG(WINAPI * rtl_get_version)(OSVERSIONINFOW *);
        OSVERSIONINFOW v = {sizeof(v)};
        rtl_get_version get = (rtl_get_version)(void (*)(void))GetProcAddress(
            GetModuleHandleW(L"ntdll.dll"), "RtlGetVersion");
        build = (get && get(&v) == 0) ? v.dwBuildNumber : 1;
    }
    return build;
}

const char *dcx_backend(void)
{
    static char name[96];
    if (!name[0])
        snprintf(name, sizeof(name), "SChannel, Windows build %lu (%s, up to TLS 1.%d)",
                 (unsigned long)windows_build(),
                 windows_build() >= BUILD_SCH_CREDENTIALS ? "SCH_CREDENTIALS" : "SCHANNEL_CRED",
                 dcx_max_supported_version() == DCX_TLS1_3 ? 3 : 2);
    return name;
}

int dcx_max_supported_version(void)
{
    return windows_build() >= BUILD_TLS13 ? DCX_TLS1_3 : DCX_TLS1_2;
}

/* The symbolic name of an SSPI/Crypt32 status, for reasons and logs. */
const char *sch_status_name(SECURITY_STATUS s)
{
    switch ((unsigned long)s) {
#define N(x) case (unsigned long)x: return #x
    N(SEC_E_OK); N(SEC_E_INSUFFICIENT_MEMORY); N(SEC_E_INVALID_HANDLE);
    N(SEC_E_UNSUPPORTED_FUNCTION); N(SEC_E_TARGET_UNKNOWN); N(SEC_E_INTERNAL_ERROR);
    N(SEC_E_SECPKG_NOT_FOUND); N(SEC_E_INVALID_TOKEN); N(SEC_E_MESSAGE_ALTERED);
    N(SEC_E_NO_CREDENTIALS); N(SEC_E_UNKNOWN_CREDENTIALS); N(SEC_E_INCOMPLETE_MESSAGE);
    N(SEC_E_CONTEXT_EXPIRED); N(SEC_E_BUFFER_TOO_SMALL); N(SEC_E_WRONG_PRINCIPAL);
    N(SEC_E_ALGORITHM_MISMATCH); N(SEC_E_CERT_UNKNOWN); N(SEC_E_CERT_EXPIRED);
    N(SEC_E_UNTRUSTED_ROOT); N(SEC_E_ILLEGAL_MESSAGE); N(SEC_E_CERT_WRONG_USAGE);
    N(SEC_E_DECRYPT_FAILURE); N(SEC_E_ENCRYPT_FAILURE); N(SEC_E_LOGON_DENIED);
    N(SEC_E_INCOMPLETE_CREDENTIALS); N(SEC_E_SHUTDOWN_IN_PROGRESS);
    N(SEC_E_NO_AUTHENTICATING_AUTHORITY); N(SEC_E_UNFINISHED_CONTEXT_DELETED);
    N(SEC_E_INVALID_PARAMETER); N(SEC_E_DELEGATION_POLICY); N(SEC_E_ISSUING_CA_UNTRUSTED);
    N(SEC_E_REVOCATION_OFFLINE_C); N(SEC_E_KDC_CERT_REVOKED);
    N(SEC_I_CONTINUE_NEEDED); N(SEC_I_INCOMPLETE_CREDENTIALS); N(SEC_I_RENEGOTIATE);
    N(SEC_I_CONTEXT_EXPIRED);
    N(CERT_E_EXPIRED); N(CERT_E_UNTRUSTEDROOT); N(CERT_E_CHAINING); N(CERT_E_CN_NO_MATCH);
    N(CERT_E_WRONG_USAGE); N(CERT_E_REVOCATION_FAILURE); N(CERT_E_ROLE); N(CERT_E_PURPOSE);
    N(CERT_E_VALIDITYPERIODNESTING); N(CERT_E_UNTRUSTEDTESTROOT); N(CERT_E_INVALID_NAME);
    N(CRYPT_E_REVOKED); N(CRYPT_E_NO_REVOCATION_CHECK); N(CRYPT_E_REVOCATION_OFFLINE);
    N(CRYPT_E_NOT_FOUND); N(CRYPT_E_ASN1_BADTAG); N(CRYPT_E_BAD_ENCODE);
    N(TRUST_E_CERT_SIGNATURE); N(TRUST_E_BASIC_CONSTRAINTS); N(NTE_BAD_KEYSET);
    N(NTE_EXISTS); N(NTE_BAD_DATA); N(NTE_PERM); N(NTE_NOT_SUPPORTED); N(NTE_BAD_KEY);
#undef N
    default: return "unknown status";
    }
}

/* ---- credentials -------------------------------------------------------- */

static DWORD protocol_bits(int lo, int hi, int server)
{
    DWORD bits = 0;
    if (lo <= DCX_TLS1_2 && hi >= DCX_TLS1_2)
        bits |= server ? SP_PROT_TLS1_2_SERVER : SP_PROT_TLS1_2_CLIENT;
    if (hi >= DCX_TLS1_3)
        bits |= server ? SP_PROT_TLS1_3_SERVER : SP_PROT_TLS1_3_CLIENT;
    return bits;
}

/* A failure to acquire or use our own credentials, told for a person. */
static int credentials_failure(dcx_ctx *ctx, SECURITY_STATUS s, dcx_error *err)
{
    char thumb[2 * DCX_SHA1_LEN + 1] = "?", subject[256] = "", na[32];
    if (ctx->identity)
        sch_describe_cert(ctx->identity, subject, sizeof(subject), thumb, na, sizeof(na));
    switch ((unsigned long)s) {
    case (unsigned long)SEC_E_UNKNOWN_CREDENTIALS:
        return dcx_fail(err, DCX_E_CONFIG,
                        "the private key of certificate %s ('%s') is not accessible to this "
                        "account: grant the account read access to the key (certlm.msc, "
                        "Manage Private Keys), or import the certificate with its key for it",
                        thumb, subject);
    case (unsigned long)SEC_E_NO_CREDENTIALS:
        return dcx_fail(err, DCX_E_CONFIG,
                        "certificate %s ('%s') has no private key SChannel can use: import it "
                        "with its key (PKCS#12), as a key type this Windows supports for TLS",
                        thumb, subject);
    case (unsigned long)SEC_E_ALGORITHM_MISMATCH:
        return dcx_fail(err, DCX_E_CONFIG,
                        "SChannel refused the protocol or cipher settings (%s): the enabled "
                        "protocols may be disabled by system policy", sch_status_name(s));
    case (unsigned long)SEC_E_INSUFFICIENT_MEMORY:
        return dcx_fail(err, DCX_E_NOMEM, "out of memory acquiring TLS credentials");
    case (unsigned long)SEC_E_SECPKG_NOT_FOUND:
        return dcx_fail(err, DCX_E_UNSUPPORTED, "the SChannel security package is not available");
    default:
        return dcx_fail(err, DCX_E_CONFIG, "SChannel refused the TLS credentials: %s (0x%08lX)",
                        sch_status_name(s), (unsigned long)s);
    }
}

static int acquire(dcx_ctx *ctx, int server, CredHandle *out, dcx_error *err)
{
    PCCERT_CONTEXT certs[1] = {ctx->identity};
    DWORD flags = SCH_USE_STRONG_CRYPTO;
    if (server)
        flags |= SCH_CRED_NO_SYSTEM_MAPPER | (ctx->session_cache ? 0 : SCH_CRED_DISABLE_RECONNECTS);
    else
        flags |= SCH_CRED_MANUAL_CRED_VALIDATION | SCH_CRED_NO_DEFAULT_CREDS;
    HCERTSTORE roots = server && ctx->trusted_count ? ctx->trusted : NULL; /* CAs we name to clients */
    SCH_CREDENTIALS sch = {0};
    TLS_PARAMETERS tls = {0};
    SCHANNEL_CRED old = {0};
    void *auth;
    if (windows_build() >= BUILD_SCH_CREDENTIALS) {
        sch.dwVersion = SCH_CREDENTIALS_VERSION;
        sch.cCreds = ctx->identity ? 1 : 0;
        sch.paCred = ctx->identity ? certs : NULL;
        sch.hRootStore = roots;
        sch.dwFlags = flags;
        tls.grbitDisabledProtocols = ~protocol_bits(ctx->lo, ctx->hi, server);
        sch.cTlsParameters = 1;
        sch.pTlsParameters = &tls;
        auth = &sch;
    } else { /* never negotiates 1.3 */
        old.dwVersion = SCHANNEL_CRED_VERSION;
        old.cCreds = ctx->identity ? 1 : 0;
        old.paCred = ctx->identity ? certs : NULL;
        old.hRootStore = roots;
        old.dwFlags = flags;
        old.grbitEnabledProtocols = protocol_bits(ctx->lo, DCX_TLS1_2, server);
        auth = &old;
    }
    TimeStamp expiry;
    SECURITY_STATUS s = AcquireCredentialsHandleW(NULL, (LPWSTR)UNISP_NAME_W,
                                                  server ? SECPKG_CRED_INBOUND : SECPKG_CRED_OUTBOUND,
                                                  NULL, auth, NULL, NULL, out, &expiry);
    return s == SEC_E_OK ? DCX_OK : credentials_failure(ctx, s, err);
}

/* ---- context ------------------------------------------------------------ */

dcx_ctx *dcx_ctx_new(const dcx_config *cfg, dcx_error *err)
{
    dcx_error_clear(err);
    int lo = cfg->min_version ? cfg->min_version : DCX_TLS1_2;
    int hi = cfg->max_version ? cfg->max_version : dcx_max_supported_version();
    if (lo < DCX_TLS1_2) {
        dcx_fail(err, DCX_E_CONFIG,
                 "TLS versions below 1.2 are not allowed (RFC 8996, DICOM PS3.15 B.12)");
        return NULL;
    }
    if (hi > DCX_TLS1_3 || lo > hi) {
        dcx_fail(err, DCX_E_CONFIG, "the protocol version range 0x%04x..0x%04x is empty", lo, hi);
        return NULL;
    }
    if (lo > dcx_max_supported_version()) {
        dcx_fail(err, DCX_E_UNSUPPORTED,
                 "TLS 1.3 needs SChannel of Windows 11 or Server 2022 (build %d); this is "
                 "build %lu", BUILD_TLS13, (unsigned long)windows_build());
        return NULL;
    }
    if (hi > dcx_max_supported_version())
        hi = dcx_max_supported_version();
    dcx_ctx *ctx = calloc(1, sizeof(*ctx));
    if (!ctx) {
        dcx_fail(err, DCX_E_NOMEM, "out of memory");
        return NULL;
    }
    InitializeCriticalSection(&ctx->lock);
    ctx->verify = cfg->verify;
    ctx->check_hostname = cfg->check_hostname;
    ctx->check_revocation = cfg->check_revocation;
    ctx->use_system_trust = cfg->use_system_trust;
    ctx->session_cache = cfg->session_cache;
    ctx->cert_store = cfg->cert_store;
    ctx->lo = lo;
    ctx->hi = hi;
    ctx->trusted = CertOpenStore(CERT_STORE_PROV_MEMORY, 0, 0, 0, NULL);
    if (!ctx->trusted) {
        dcx_fail(err, DCX_E_NOMEM, "cannot create a certificate store");
        goto fail;
    }
    for (size_t i = 0; i < cfg->trusted_count; i++) {
        int n = sch_add_certificates(ctx->trusted, &cfg->trusted[i], NULL);
        if (n == 0) {
            dcx_fail(err, DCX_E_CONFIG,
                     "trusted certificate #%lu is not an X.509 certificate in PEM or DER",
                     (unsigned long)(i + 1));
            goto fail;
        }
        ctx->trusted_count += (size_t)n;
    }
    if (cfg->trusted_dir && sch_read_trusted_dir(ctx, cfg->trusted_dir, err) != DCX_OK)
        goto fail;
    ctx->intermediates = CertOpenStore(CERT_STORE_PROV_MEMORY, 0, 0, 0, NULL);
    if (!ctx->intermediates) {
        dcx_fail(err, DCX_E_NOMEM, "cannot create a certificate store");
        goto fail;
    }
    for (size_t i = 0; i < cfg->intermediate_count; i++) {
        if (sch_add_certificates(ctx->intermediates, &cfg->intermediates[i], NULL) == 0) {
            dcx_fail(err, DCX_E_CONFIG,
                     "intermediate certificate #%lu is not an X.509 certificate in PEM or DER",
                     (unsigned long)(i + 1));
            goto fail;
        }
    }
    ctx->crls = CertOpenStore(CERT_STORE_PROV_MEMORY, 0, 0, 0, NULL);
    if (!ctx->crls) {
        dcx_fail(err, DCX_E_NOMEM, "cannot create a certificate store");
        goto fail;
    }
    for (size_t i = 0; i < cfg->crl_count; i++) {
        int n = sch_add_crls(ctx->crls, &cfg->crls[i]);
        if (n == 0) {
            dcx_fail(err, DCX_E_CONFIG,
                     "CRL #%lu is not a certificate revocation list in PEM or DER",
                     (unsigned long)(i + 1));
            goto fail;
        }
        ctx->crl_count += (size_t)n;
    }
    if (cfg->identity_thumbprint) {
        if (sch_identity_from_store(ctx, cfg, err) != DCX_OK)
            goto fail;
    } else if (cfg->certificate_chain.len) {
        if (sch_identity_from_bytes(ctx, cfg, err) != DCX_OK)
            goto fail;
    } else if (cfg->private_key.len) {
        dcx_fail(err, DCX_E_CONFIG, "a private key was given without its certificate");
        goto fail;
    }
    if (dcx_thumbs_set(&ctx->thumbs, cfg->thumbprints, cfg->thumbprint_lens,
                       cfg->thumbprint_count) != DCX_OK) {
        dcx_fail(err, DCX_E_NOMEM, "out of memory");
        goto fail;
    }
    /* the client credentials now, so that an unusable key is a configuration error */
    if (acquire(ctx, 0, &ctx->cred_out, err) != DCX_OK)
        goto fail;
    ctx->have_cred_out = 1;
    if (err)
        dcx_error_clear(err);
    return ctx;
fail:
    dcx_ctx_free(ctx);
    return NULL;
}

int dcx_ctx_set_thumbprints(dcx_ctx *ctx, const unsigned char *thumbprints,
                            const unsigned char *lens, size_t count, dcx_error *err)
{
    EnterCriticalSection(&ctx->lock);
    int rc = dcx_thumbs_set(&ctx->thumbs, thumbprints, lens, count);
    LeaveCriticalSection(&ctx->lock);
    return rc == DCX_OK ? DCX_OK : dcx_fail(err, rc, "out of memory");
}

void dcx_ctx_free(dcx_ctx *ctx)
{
    if (!ctx)
        return;
    if (ctx->have_cred_out)
        FreeCredentialsHandle(&ctx->cred_out);
    if (ctx->have_cred_in)
        FreeCredentialsHandle(&ctx->cred_in);
    if (ctx->identity)
        CertFreeCertificateContext(ctx->identity);
    sch_delete_key_container(ctx);
    if (ctx->identity_store)
        CertCloseStore(ctx->identity_store, 0);
    if (ctx->trusted)
        CertCloseStore(ctx->trusted, 0);
    if (ctx->intermediates)
        CertCloseStore(ctx->intermediates, 0);
    if (ctx->crls)
        CertCloseStore(ctx->crls, 0);
    dcx_thumbs_free(&ctx->thumbs);
    DeleteCriticalSection(&ctx->lock);
    free(ctx);
}

/* ---- socket I/O --------------------------------------------------------- */

static int sys_failure(int code, const char *doing, dcx_error *err)
{
    char text[256] = "";
    FormatMessageA(FORMAT_MESSAGE_FROM_SYSTEM | FORMAT_MESSAGE_IGNORE_INSERTS, NULL, (DWORD)code,
                   0, text, sizeof(text), NULL);
    size_t n = strlen(text);
    while (n && (text[n - 1] == '\r' || text[n - 1] == '\n' || text[n - 1] == '.'))
        text[--n] = '\0';
    if (err)
        err->sys_errno = code;
    return dcx_fail(err, DCX_E_SYSCALL, "socket error while %s: %s (WSA error %d)", doing,
                    n ? text : "unknown error", code);
}

static int send_all(dcx_conn *c, const unsigned char *p, size_t len, int64_t deadline,
                    const char *doing, dcx_error *err)
{
    while (len) {
        int chunk = len > 0x40000000 ? 0x40000000 : (int)len;
        int n = send((SOCKET)c->fd, (const char *)p, chunk, 0);
        if (n > 0) {
            p += n;
            len -= (size_t)n;
            continue;
        }
        int e = WSAGetLastError();
        if (e != WSAEWOULDBLOCK)
            return sys_failure(e, doing, err);
        int w = dcx_wait(c->fd, 1, deadline, err);
        if (w == DCX_E_TIMEOUT && c->keeping_rest) {
            /* a record cut short cannot be made again: its rest goes next call
             * (out holds a whole record, and no data is sent after closing) */
            memmove(c->out, p, len);
            c->out_rest = len;
        }
        if (w != DCX_OK)
            return w;
    }
    return DCX_OK;
}

/* Receive more ciphertext into c->in.  Returns bytes read, 0 at end of stream,
 * or a negative status. */
static long recv_more(dcx_conn *c, int64_t deadline, const char *doing, dcx_error *err)
{
    if (c->in_len == c->in_cap) {
        size_t cap = c->in_cap ? 2 * c->in_cap : IN_INITIAL;
        unsigned char *in = cap <= IN_LIMIT ? realloc(c->in, cap) : NULL;
        if (!in)
            return dcx_fail(err, DCX_E_PROTOCOL, "the peer sent a TLS message larger than %d bytes",
                            IN_LIMIT);
        c->in = in;
        c->in_cap = cap;
    }
    for (;;) {
        int n = recv((SOCKET)c->fd, (char *)c->in + c->in_len, (int)(c->in_cap - c->in_len), 0);
        if (n >= 0) {
            if (!c->handshake_done && n > 0) {
                c->hs_received += (size_t)n;
                c->last_in_ms = dcx_now_ms();
            }
            if (!c->handshake_done && c->first_len < DCX_SNIFF_LEN) {
                size_t k = (size_t)n < DCX_SNIFF_LEN - c->first_len ? (size_t)n
                                                                    : DCX_SNIFF_LEN - c->first_len;
                memcpy(c->first + c->first_len, c->in + c->in_len, k);
                c->first_len += k;
            }
            c->in_len += (size_t)n;
            return n;
        }
        int e = WSAGetLastError();
        if (e != WSAEWOULDBLOCK)
            return sys_failure(e, doing, err);
        int w = dcx_wait(c->fd, 0, deadline, err);
        if (w != DCX_OK)
            return w;
    }
}

/* A fatal alert in the clear at the head of c->in (TLS 1.2 handshakes). */
static void note_plain_alert(dcx_conn *c)
{
    const unsigned char *p = c->in;
    if (c->in_len >= 7 && p[0] == 21 && p[1] == 3 && p[3] == 0 && p[4] == 2 && p[5] == 2)
        c->received_alert = p[6];
}

/* A CertificateRequest among the handshake messages in the clear in c->in
 * (TLS 1.2; whole records only, each walked from its first message), seen
 * by a client that has no certificate to give. */
static void note_certificate_request(dcx_conn *c)
{
    const unsigned char *p = c->in, *end = c->in + c->in_len;
    if (c->server_side || c->ctx->identity)
        return;
    while (end - p >= 5) {
        size_t len = ((size_t)p[3] << 8) | p[4];
        if ((size_t)(end - p - 5) < len)
            return;
        const unsigned char *m = p + 5, *record_end = m + len;
        while (p[0] == 22 && record_end - m >= 4) {
            if (m[0] == 13) /* certificate_request */
                c->asked_for_cert = 1;
            m += 4 + (((size_t)m[1] << 16) | ((size_t)m[2] << 8) | m[3]);
        }
        p = record_end;
    }
}

/* ---- connection ---------------------------------------------------------- */

dcx_conn *dcx_conn_new(dcx_ctx *ctx, dcx_socket fd, int server_side, const char *server_name,
                       dcx_error *err)
{
    dcx_error_clear(err);
    if (server_side && !ctx->identity) {
        dcx_fail(err, DCX_E_CONFIG, "the accepting side needs its own certificate and private key");
        return NULL;
    }
    if (server_side) {
        int rc = DCX_OK;
        EnterCriticalSection(&ctx->lock);
        if (!ctx->have_cred_in) {
            rc = acquire(ctx, 1, &ctx->cred_in, err);
            ctx->have_cred_in = rc == DCX_OK;
        }
        LeaveCriticalSection(&ctx->lock);
        if (rc != DCX_OK)
            return NULL;
    }
    dcx_conn *c = calloc(1, sizeof(*c));
    if (!c) {
        dcx_fail(err, DCX_E_NOMEM, "out of memory");
        return NULL;
    }
    c->ctx = ctx;
    c->fd = fd;
    c->server_side = server_side;
    c->received_alert = -1;
    c->born_ms = dcx_now_ms();
    if (server_name && *server_name) {
        snprintf(c->server_name, sizeof(c->server_name), "%s", server_name);
        MultiByteToWideChar(CP_UTF8, 0, server_name, -1, c->server_name_w,
                            sizeof(c->server_name_w) / sizeof(wchar_t));
    }
    if (dcx_set_nonblocking(fd, err) != DCX_OK) {
        free(c);
        return NULL;
    }
    return c;
}

/* Turn a failed handshake status into the one reason a person needs. */
static int handshake_failure(dcx_conn *c, SECURITY_STATUS s, dcx_error *err)
{
    const char *role = c->server_side ? "client" : "server";
    char what[128];
    c->dead = 1;
    if (err)
        err->alert = c->received_alert;
    if (c->received_alert >= 0) {
        /* TLS 1.2 has no certificate_required alert: a server that asked for our
         * certificate, got none and then refused means that, as 116 does */
        const char *advice = dcx_alert_advice(c->asked_for_cert && c->received_alert == 40
                                                  ? 116 : c->received_alert);
        return dcx_fail(err, DCX_E_PEER_ALERT,
                        "the %s refused the handshake with TLS alert '%s' (%d)%s%s", role,
                        dcx_alert_text(c->received_alert), c->received_alert, *advice ? ": " : "",
                        advice);
    }
    if (dcx_sniff_not_tls(c->first, c->first_len, what, sizeof(what)))
        return c->server_side
                   ? dcx_fail(err, DCX_E_NOT_TLS, "%s on the TLS port: the peer is not speaking TLS", what)
                   : dcx_fail(err, DCX_E_NOT_TLS,
                              "the peer answered with %s: it is not speaking TLS on this port "
                              "(is this its plain DICOM port?)", what);
    switch ((unsigned long)s) {
    case (unsigned long)SEC_E_UNSUPPORTED_FUNCTION:
        if (c->server_side)
            return dcx_fail(err, DCX_E_UNSUPPORTED,
                            "AcceptSecurityContext unsupported (SEC_E_UNSUPPORTED_FUNCTION): this "
                            "SChannel cannot act as a TLS server (Wine has no server role)");
        return dcx_fail(err, DCX_E_PROTOCOL,
                        "no TLS version in common with the server (this side allows TLS %s to %s)",
                        c->ctx->lo == DCX_TLS1_3 ? "1.3" : "1.2",
                        c->ctx->hi == DCX_TLS1_2 ? "1.2" : "1.3");
    case (unsigned long)SEC_E_ALGORITHM_MISMATCH:
        return dcx_fail(err, DCX_E_PROTOCOL,
                        "no cipher suite or protocol version in common with the %s", role);
    case (unsigned long)SEC_E_UNKNOWN_CREDENTIALS:
    case (unsigned long)SEC_E_NO_CREDENTIALS:
        return credentials_failure(c->ctx, s, err);
    case (unsigned long)SEC_E_INTERNAL_ERROR:
        return dcx_fail(err, DCX_E_PROTOCOL,
                        "SChannel failed during the handshake (SEC_E_INTERNAL_ERROR): the %s may "
                        "have refused us, or our private key is of a kind SChannel cannot use",
                        role);
    case (unsigned long)SEC_E_INVALID_TOKEN:
    case (unsigned long)SEC_E_ILLEGAL_MESSAGE:
        return dcx_fail(err, DCX_E_PROTOCOL,
                        "the %s sent a TLS message SChannel refused (%s): it may have refused us "
                        "with an alert, or it does not speak TLS correctly", role,
                        sch_status_name(s));
    case (unsigned long)SEC_E_MESSAGE_ALTERED:
    case (unsigned long)SEC_E_DECRYPT_FAILURE:
        return dcx_fail(err, DCX_E_PROTOCOL,
                        "a handshake message failed its integrity check (%s): the connection is "
                        "corrupt or tampered with", sch_status_name(s));
    case (unsigned long)SEC_E_CERT_EXPIRED:
        return sch_fail_verify(c, DCX_VR_EXPIRED, "", err);
    case (unsigned long)SEC_E_UNTRUSTED_ROOT:
        return sch_fail_verify(c, DCX_VR_UNTRUSTED, "SChannel does not trust its root", err);
    case (unsigned long)SEC_E_WRONG_PRINCIPAL:
        return sch_fail_verify(c, DCX_VR_HOSTNAME, c->server_name, err);
    case (unsigned long)SEC_E_CERT_WRONG_USAGE:
        return sch_fail_verify(c, DCX_VR_PURPOSE, "SChannel says it is not valid for this use",
                               err);
    case (unsigned long)SEC_E_CERT_UNKNOWN:
        return sch_fail_verify(c, DCX_VR_OTHER,
                               "SChannel could not process it (SEC_E_CERT_UNKNOWN)", err);
    case (unsigned long)SEC_E_INSUFFICIENT_MEMORY:
        return dcx_fail(err, DCX_E_NOMEM, "out of memory during the TLS handshake");
    case (unsigned long)SEC_E_TARGET_UNKNOWN:
        return dcx_fail(err, DCX_E_CONFIG, "SChannel does not accept server name '%s'",
                        c->server_name);
    default:
        return dcx_fail(err, DCX_E_PROTOCOL, "TLS handshake failed: %s (0x%08lX)",
                        sch_status_name(s), (unsigned long)s);
    }
}

/* How far the handshake got, for the reason it failed. */
static dcx_handshake_progress progress(const dcx_conn *c)
{
    int64_t now = dcx_now_ms();
    dcx_handshake_progress p = {c->server_side, now - c->born_ms,
                                now - (c->hs_received ? c->last_in_ms : c->born_ms),
                                c->hs_received, c->answered, c->first, c->first_len};
    return p;
}

static int handshake_eof(dcx_conn *c, dcx_error *err)
{
    c->dead = 1;
    dcx_handshake_progress p = progress(c);
    if (c->first_len == 0)
        return dcx_fail_handshake_closed(err, &p);
    char what[128];
    if (dcx_sniff_not_tls(c->first, c->first_len, what, sizeof(what)))
        return handshake_failure(c, SEC_E_INVALID_TOKEN, err);
    note_plain_alert(c);
    if (c->received_alert >= 0)
        return handshake_failure(c, SEC_E_ILLEGAL_MESSAGE, err);
    return dcx_fail_handshake_closed(err, &p);
}

/* The handshake's time is up: why, from what the peer sent by then. */
static int handshake_timeout(dcx_conn *c, dcx_error *err)
{
    dcx_handshake_progress p = progress(c);
    c->dead = 1;
    return dcx_fail_handshake_timeout(err, &p);
}

/* One SSPI handshake call on what c->in holds; sends what it produces. */
static SECURITY_STATUS handshake_call(dcx_conn *c, int64_t deadline, int *io_rc, dcx_error *err)
{
    SecBuffer in[2] = {{(unsigned long)c->in_len, SECBUFFER_TOKEN, c->in},
                       {0, SECBUFFER_EMPTY, NULL}};
    SecBuffer out[2] = {{0, SECBUFFER_TOKEN, NULL}, {0, SECBUFFER_ALERT, NULL}};
    SecBufferDesc in_desc = {SECBUFFER_VERSION, 2, in}, out_desc = {SECBUFFER_VERSION, 2, out};
    SecBufferDesc *input = c->in_len ? &in_desc : NULL; /* none when we speak first (shutdown, alert) */
    ULONG attrs = 0;
    SECURITY_STATUS s;
    int first = !c->have_ctxt;
    if (c->server_side) {
        ULONG req = ASC_REQ_SEQUENCE_DETECT | ASC_REQ_REPLAY_DETECT | ASC_REQ_CONFIDENTIALITY |
                    ASC_REQ_EXTENDED_ERROR | ASC_REQ_ALLOCATE_MEMORY | ASC_REQ_STREAM;
        if (c->ctx->verify != DCX_VERIFY_NONE)
            req |= ASC_REQ_MUTUAL_AUTH;
        s = AcceptSecurityContext(&c->ctx->cred_in, first ? NULL : &c->ctxt, input, req, 0,
                                  first ? &c->ctxt : NULL, &out_desc, &attrs, NULL);
    } else {
        ULONG req = ISC_REQ_SEQUENCE_DETECT | ISC_REQ_REPLAY_DETECT | ISC_REQ_CONFIDENTIALITY |
                    ISC_REQ_EXTENDED_ERROR | ISC_REQ_ALLOCATE_MEMORY | ISC_REQ_STREAM |
                    ISC_REQ_USE_SUPPLIED_CREDS | ISC_REQ_MANUAL_CRED_VALIDATION;
        unsigned char addr[16];
        /* the target name becomes SNI, which must not carry an address (RFC 6066) */
        SEC_WCHAR *target = c->server_name_w[0] && !sch_ip_literal(c->server_name, addr)
                                ? c->server_name_w : NULL;
        s = InitializeSecurityContextW(&c->ctx->cred_out, first ? NULL : &c->ctxt, target, req, 0,
                                       0, first ? NULL : input, 0, first ? &c->ctxt : NULL,
                                       &out_desc, &attrs, NULL);
    }
    if (first && (s == SEC_E_OK || s == SEC_I_CONTINUE_NEEDED || s == SEC_I_INCOMPLETE_CREDENTIALS ||
                  (!c->server_side && out[0].cbBuffer)))
        c->have_ctxt = 1;
    /* the token may also be an alert that tells the peer why we stopped */
    *io_rc = DCX_OK;
    if (out[0].pvBuffer && out[0].cbBuffer) {
        if (s == SEC_E_OK || s == SEC_I_CONTINUE_NEEDED)
            c->answered = 1; /* a flight, not an alert */
        *io_rc = send_all(c, out[0].pvBuffer, out[0].cbBuffer, deadline, "handshaking", err);
    }
    if (out[0].pvBuffer)
        FreeContextBuffer(out[0].pvBuffer);
    if (out[1].pvBuffer)
        FreeContextBuffer(out[1].pvBuffer);
    if (input && s != SEC_E_INCOMPLETE_MESSAGE && !FAILED(s)) {
        if (in[1].BufferType == SECBUFFER_EXTRA && in[1].cbBuffer) {
            memmove(c->in, c->in + c->in_len - in[1].cbBuffer, in[1].cbBuffer);
            c->in_len = in[1].cbBuffer;
        } else {
            c->in_len = 0;
        }
    }
    return s;
}

/* Runs handshake calls until SChannel is done with what the peer sends. */
static int run_handshake(dcx_conn *c, int64_t deadline, int timeout_ms, dcx_error *err)
{
    int need_input = c->server_side ? c->in_len == 0 : (c->have_ctxt && c->in_len == 0);
    for (;;) {
        if (need_input) {
            long n = recv_more(c, deadline, "handshaking", err);
            if (n == DCX_E_TIMEOUT && timeout_ms == 0) /* a step: call again later */
                return dcx_fail(err, DCX_E_TIMEOUT, "the TLS handshake waits for the peer");
            if (n == DCX_E_TIMEOUT)
                return handshake_timeout(c, err);
            if (n < 0) {
                c->dead = 1;
                return (int)n;
            }
            if (n == 0)
                return handshake_eof(c, err);
        }
        if (!c->handshake_done) {
            note_plain_alert(c);
            note_certificate_request(c);
        }
        int io_rc;
        SECURITY_STATUS s = handshake_call(c, deadline, &io_rc, err);
        if (s == SEC_E_INCOMPLETE_MESSAGE) {
            need_input = 1;
            continue;
        }
        if (FAILED(s))
            return handshake_failure(c, s, err);
        if (io_rc != DCX_OK) {
            c->dead = 1;
            return io_rc == DCX_E_TIMEOUT ? handshake_timeout(c, err) : io_rc;
        }
        if (s == SEC_E_OK)
            return DCX_OK;
        /* SEC_I_INCOMPLETE_CREDENTIALS: the server asked for a certificate we do
         * not have; calling again goes on without one. */
        need_input = s == SEC_I_CONTINUE_NEEDED && c->in_len == 0;
    }
}

/* Tell the peer why we refuse it; best effort, the connection is over anyway. */
static void send_alert(dcx_conn *c, DWORD alert, int64_t deadline)
{
    SCHANNEL_ALERT_TOKEN token = {SCHANNEL_ALERT, TLS1_ALERT_FATAL, alert};
    SecBuffer b = {sizeof(token), SECBUFFER_TOKEN, &token};
    SecBufferDesc d = {SECBUFFER_VERSION, 1, &b};
    if (ApplyControlToken(&c->ctxt, &d) != SEC_E_OK)
        return;
    size_t keep = c->in_len;
    c->in_len = 0;
    int io_rc;
    handshake_call(c, deadline, &io_rc, NULL);
    c->in_len = keep;
}

/* A connection that has died keeps why: every later call repeats the same
 * status and reason (and alert, verification reason, certificate). */
static int remember(dcx_conn *c, int rc, const dcx_error *err)
{
    if (rc < 0 && rc != DCX_EOF && c->dead && !c->fail_status) {
        c->fail_status = rc;
        c->failure = *err;
        c->failure.status = rc;
    }
    return rc;
}

static int failed_before(dcx_conn *c, dcx_error *err)
{
    if (!c->fail_status)
        return dcx_fail(err, DCX_E_CLOSED, "the connection has already failed or been closed");
    if (err)
        *err = c->failure;
    return c->fail_status;
}

int dcx_conn_handshake(dcx_conn *c, int timeout_ms, dcx_error *err)
{
    dcx_error scratch; /* the failure is kept even when the caller does not ask for it */
    if (!err)
        err = &scratch;
    dcx_error_clear(err);
    if (c->fail_status) /* also after the handshake: the connection is not usable */
        return failed_before(c, err);
    if (c->handshake_done)
        return DCX_OK;
    if (c->dead)
        return failed_before(c, err);
    int64_t deadline = dcx_deadline(timeout_ms);
    int rc = run_handshake(c, deadline, timeout_ms, err);
    if (rc == DCX_E_TIMEOUT && timeout_ms == 0 && !c->dead)
        return rc; /* not a failure: the handshake goes on with the next call */
    if (rc != DCX_OK)
        return remember(c, rc, err);
    if (QueryContextAttributesW(&c->ctxt, SECPKG_ATTR_STREAM_SIZES, &c->sizes) != SEC_E_OK ||
        !(c->out = malloc(c->sizes.cbHeader + c->sizes.cbMaximumMessage + c->sizes.cbTrailer)) ||
        !(c->pt.data = malloc(c->sizes.cbMaximumMessage + 2048))) {
        c->dead = 1;
        return remember(c, dcx_fail(err, DCX_E_NOMEM, "cannot set up the TLS record buffers"), err);
    }
    c->plain_cap = c->sizes.cbMaximumMessage + 2048;
    rc = sch_verify_peer(c, err);
    if (rc != DCX_OK) {
        DWORD alert = err && err->verify_reason == DCX_VR_NO_CERTIFICATE ? 116 /* certificate required */
                    : err && err->verify_reason == DCX_VR_EXPIRED ? TLS1_ALERT_CERTIFICATE_EXPIRED
                    : err && err->verify_reason == DCX_VR_UNTRUSTED ? TLS1_ALERT_UNKNOWN_CA
                    : TLS1_ALERT_BAD_CERTIFICATE;
        send_alert(c, alert, dcx_deadline(1000));
        c->dead = 1;
        return remember(c, rc, err);
    }
    sch_read_connection_info(c);
    c->handshake_done = 1;
    return DCX_OK;
}

/* Hand out plaintext already decrypted. */
static size_t take_plain(dcx_conn *c, void *buf, size_t len)
{
    size_t n = c->pt.end - c->pt.start;
    if (n > len)
        n = len;
    memcpy(buf, c->pt.data + c->pt.start, n);
    c->pt.start += n;
    if (c->pt.start == c->pt.end)
        c->pt.start = c->pt.end = 0;
    return n;
}

static int io_failure(dcx_conn *c, SECURITY_STATUS s, const char *doing, dcx_error *err)
{
    c->dead = 1;
    switch ((unsigned long)s) {
    case (unsigned long)SEC_E_MESSAGE_ALTERED:
    case (unsigned long)SEC_E_DECRYPT_FAILURE:
        return dcx_fail(err, DCX_E_PROTOCOL,
                        "a TLS record failed its integrity check while %s (%s): the data was "
                        "altered or the connection is corrupt", doing, sch_status_name(s));
    case (unsigned long)SEC_E_CONTEXT_EXPIRED:
        return dcx_fail(err, DCX_E_CLOSED, "the TLS session has ended");
    default:
        return dcx_fail(err, DCX_E_PROTOCOL, "TLS error while %s: %s (0x%08lX); the peer may "
                        "have ended the connection with an alert", doing, sch_status_name(s),
                        (unsigned long)s);
    }
}

/* Decrypt records from c->in into c->pt until some plaintext, EOF, or error. */
static int decrypt_some(dcx_conn *c, int64_t deadline, dcx_error *err)
{
    for (;;) {
        if (c->in_len) {
            /* exactly one DATA buffer plus three EMPTY ones, as every SChannel accepts */
            SecBuffer b[4] = {{(unsigned long)c->in_len, SECBUFFER_DATA, c->in},
                              {0, SECBUFFER_EMPTY, NULL}, {0, SECBUFFER_EMPTY, NULL},
                              {0, SECBUFFER_EMPTY, NULL}};
            SecBufferDesc d = {SECBUFFER_VERSION, 4, b};
            SECURITY_STATUS s = DecryptMessage(&c->ctxt, &d, 0, NULL);
            if (s == SEC_E_OK || s == SEC_I_RENEGOTIATE || s == SEC_I_CONTEXT_EXPIRED) {
                SecBuffer *data = NULL, *extra = NULL;
                for (int i = 1; i < 4; i++) {
                    if (b[i].BufferType == SECBUFFER_DATA && !data)
                        data = &b[i];
                    else if (b[i].BufferType == SECBUFFER_EXTRA && !extra)
                        extra = &b[i];
                }
                size_t got = data ? data->cbBuffer : 0;
                if (got) { /* plain is empty whenever we decrypt */
                    if (got > c->plain_cap) {
                        unsigned char *p = realloc(c->pt.data, got);
                        if (!p)
                            return dcx_fail(err, DCX_E_NOMEM, "out of memory");
                        c->pt.data = p;
                        c->plain_cap = got;
                    }
                    memcpy(c->pt.data, data->pvBuffer, got);
                    c->pt.start = 0;
                    c->pt.end = got;
                }
                if (extra && extra->cbBuffer) {
                    memmove(c->in, c->in + c->in_len - extra->cbBuffer, extra->cbBuffer);
                    c->in_len = extra->cbBuffer;
                } else {
                    c->in_len = 0;
                }
                /* Wine reports close_notify as an empty SEC_E_OK record */
                if (s == SEC_I_CONTEXT_EXPIRED || (s == SEC_E_OK && !got && !c->in_len)) {
                    c->peer_closed = 1;
                    return DCX_OK;
                }
                if (s == SEC_I_RENEGOTIATE) {
                    /* TLS 1.3 post-handshake message (ticket, key update): the
                     * handshake call consumes it; any data after it stays in c->in */
                    int rc = run_handshake(c, deadline, -1, err);
                    if (rc != DCX_OK)
                        return rc;
                }
                if (c->pt.end)
                    return DCX_OK;
                continue;
            }
            if (s != SEC_E_INCOMPLETE_MESSAGE)
                return io_failure(c, s, "reading", err);
        }
        long n = recv_more(c, deadline, "reading", err);
        if (n < 0) {
            if (n != DCX_E_TIMEOUT)
                c->dead = 1;
            return (int)n;
        }
        if (n == 0) {
            c->dead = 1;
            if (c->in_len == 0) { /* EOF at a record boundary: DICOM frames its own PDUs */
                c->peer_closed = 1; /* later reads answer DCX_EOF again */
                return DCX_EOF;
            }
            return dcx_fail(err, DCX_E_TRUNCATED,
                            "the peer closed the connection in the middle of a TLS record "
                            "(truncated data)");
        }
    }
}

const dcx_read_state *dcx_conn_read_state(const dcx_conn *c)
{
    return &c->read_state;
}

/* Decrypt the next record into c->pt, unless it holds plaintext already. */
static long fill(dcx_conn *c, int timeout_ms, dcx_error *err)
{
    if (c->pt.end > c->pt.start)
        return (long)(c->pt.end - c->pt.start);
    c->pt.start = c->pt.end = 0;
    if (c->peer_closed)
        return DCX_EOF;
    if (c->dead || !c->handshake_done)
        return failed_before(c, err);
    dcx_error scratch;
    if (!err)
        err = &scratch;
    int rc = decrypt_some(c, dcx_deadline(timeout_ms), err);
    if (rc != DCX_OK)
        return remember(c, rc, err);
    return c->pt.end ? (long)c->pt.end : DCX_EOF;
}

long dcx_conn_read(dcx_conn *c, void *buf, size_t len, int timeout_ms, dcx_error *err)
{
    long n = fill(c, timeout_ms, err);
    size_t got = n > 0 ? take_plain(c, buf, len) : 0;
    /* Then the records already received, without waiting for more; an EOF or
     * error among them is kept for the next call. */
    while (n > 0 && got < len && c->in_len && !c->dead) {
        dcx_error scratch;
        n = fill(c, 0, &scratch);
        if (n > 0)
            got += take_plain(c, (unsigned char *)buf + got, len - got);
    }
    c->read_state.data_waiting = c->pt.end > c->pt.start || c->in_len > 0;
    return got ? (long)got : n;
}

long dcx_conn_write(dcx_conn *c, const void *buf, size_t len, int timeout_ms, dcx_error *err)
{
    if (c->dead || c->closing || !c->handshake_done)
        return failed_before(c, err);
    dcx_error scratch;
    if (!err)
        err = &scratch;
    int64_t deadline = dcx_deadline(timeout_ms);
    const unsigned char *p = buf;
    size_t left = len;
    const size_t hdr = c->sizes.cbHeader, max = c->sizes.cbMaximumMessage;
    while (left) {
        size_t n = left < max ? left : max;
        memcpy(c->out + hdr, p, n);
        SecBuffer b[4] = {{(unsigned long)hdr, SECBUFFER_STREAM_HEADER, c->out},
                          {(unsigned long)n, SECBUFFER_DATA, c->out + hdr},
                          {c->sizes.cbTrailer, SECBUFFER_STREAM_TRAILER, c->out + hdr + n},
                          {0, SECBUFFER_EMPTY, NULL}};
        SecBufferDesc d = {SECBUFFER_VERSION, 4, b};
        SECURITY_STATUS s = EncryptMessage(&c->ctxt, 0, &d, 0);
        if (s != SEC_E_OK)
            return remember(c, io_failure(c, s, "writing", err), err);
        /* header, data and trailer are contiguous unless SChannel shrank one */
        size_t total = b[0].cbBuffer;
        if (b[1].pvBuffer != c->out + total)
            memmove(c->out + total, b[1].pvBuffer, b[1].cbBuffer);
        total += b[1].cbBuffer;
        if (b[2].pvBuffer != c->out + total)
            memmove(c->out + total, b[2].pvBuffer, b[2].cbBuffer);
        total += b[2].cbBuffer;
        int rc = send_all(c, c->out, total, deadline, "writing", err);
        if (rc != DCX_OK) {
            c->dead = 1; /* part of a record may be on the wire: the stream is unusable */
            return remember(c, rc, err);
        }
        p += n;
        left -= n;
    }
    return (long)len;
}

int dcx_conn_shutdown(dcx_conn *c, int timeout_ms, int wait_peer, dcx_error *err)
{
    dcx_error_clear(err);
    if (!c->handshake_done || c->dead)
        return DCX_OK;
    int64_t deadline = dcx_deadline(timeout_ms);
    int rc = DCX_OK;
    c->keeping_rest = 1;
    if (c->out_rest) { /* an earlier call made close_notify and ran out of time sending it */
        size_t rest = c->out_rest;
        c->out_rest = 0;
        rc = send_all(c, c->out, rest, deadline, "closing", err);
    } else if (!c->closing) {
        DWORD type = SCHANNEL_SHUTDOWN;
        SecBuffer b = {sizeof(type), SECBUFFER_TOKEN, &type};
        SecBufferDesc d = {SECBUFFER_VERSION, 1, &b};
        c->closing = 1;
        if (ApplyControlToken(&c->ctxt, &d) == SEC_E_OK) {
            /* the next handshake call produces the close_notify record */
            size_t keep = c->in_len;
            c->in_len = 0;
            handshake_call(c, deadline, &rc, err);
            c->in_len = keep;
        }
    }
    c->keeping_rest = 0;
    if (rc == DCX_E_TIMEOUT)
        return rc; /* the rest of the record waits in out: a later call sends it */
    rc = DCX_OK;   /* or the peer is gone: nothing more to say to it */
    if (wait_peer && !c->peer_closed) {
        c->pt.start = c->pt.end = 0;
        while (!c->peer_closed) {
            int r = decrypt_some(c, deadline, NULL);
            c->pt.start = c->pt.end = 0; /* data after our close_notify is dropped */
            if (r == DCX_E_TIMEOUT) {
                rc = dcx_fail(err, DCX_E_TIMEOUT, "timed out waiting for the peer's close_notify");
                break;
            }
            if (r != DCX_OK)
                break; /* the peer is gone; nothing more to say to it */
        }
    }
    c->dead = 1;
    return rc;
}

dcx_handshake_progress dcx_conn_progress(const dcx_conn *c)
{
    return progress(c);
}

void dcx_conn_free(dcx_conn *c)
{
    if (!c)
        return;
    if (c->have_ctxt)
        DeleteSecurityContext(&c->ctxt);
    if (c->peer)
        CertFreeCertificateContext(c->peer);
    free(c->in);
    free(c->pt.data);
    free(c->out);
    free(c);
}
