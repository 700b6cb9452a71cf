/*
 * schannel_suites.c - what an SChannel connection negotiated: the protocol,
 * the cipher suite and its name, whether the session was resumed, the peer's
 * certificate.
 *
 * Windows names the suite in SecPkgContext_CipherInfo.szCipherSuite (IANA
 * names, as Get-TlsCipherSuite shows them) and gives its number.  Wine gives
 * no number and names an AEAD suite's hash "<unknown>"; older Windows may not
 * answer SECPKG_ATTR_CIPHER_INFO at all.  The name comes from the number,
 * else from szCipherSuite (its hash completed from SECPKG_ATTR_CONNECTION_INFO),
 * else from the connection's algorithms alone.
 */
#include "schannel_int.h"

#include <string.h>

/* The suites SChannel offers for TLS 1.2 and 1.3, by IANA number. */
static const struct {
    DWORD id;
    const char *name;
} SUITES[] = {
    {0x1301, "TLS_AES_128_GCM_SHA256"},
    {0x1302, "TLS_AES_256_GCM_SHA384"},
    {0x1303, "TLS_CHACHA20_POLY1305_SHA256"},
    {0xC02B, "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256"},
    {0xC02C, "TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384"},
    {0xC02F, "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256"},
    {0xC030, "TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384"},
    {0xCCA8, "TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256"},
    {0xCCA9, "TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256"},
    {0xC023, "TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA256"},
    {0xC024, "TLS_ECDHE_ECDSA_WITH_AES_256_CBC_SHA384"},
    {0xC027, "TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA256"},
    {0xC028, "TLS_ECDHE_RSA_WITH_AES_256_CBC_SHA384"},
    {0xC009, "TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA"},
    {0xC00A, "TLS_ECDHE_ECDSA_WITH_AES_256_CBC_SHA"},
    {0xC013, "TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA"},
    {0xC014, "TLS_ECDHE_RSA_WITH_AES_256_CBC_SHA"},
    {0x009E, "TLS_DHE_RSA_WITH_AES_128_GCM_SHA256"},
    {0x009F, "TLS_DHE_RSA_WITH_AES_256_GCM_SHA384"},
    {0x0067, "TLS_DHE_RSA_WITH_AES_128_CBC_SHA256"},
    {0x006B, "TLS_DHE_RSA_WITH_AES_256_CBC_SHA256"},
    {0x0033, "TLS_DHE_RSA_WITH_AES_128_CBC_SHA"},
    {0x0039, "TLS_DHE_RSA_WITH_AES_256_CBC_SHA"},
    {0x009C, "TLS_RSA_WITH_AES_128_GCM_SHA256"},
    {0x009D, "TLS_RSA_WITH_AES_256_GCM_SHA384"},
    {0x003C, "TLS_RSA_WITH_AES_128_CBC_SHA256"},
    {0x003D, "TLS_RSA_WITH_AES_256_CBC_SHA256"},
    {0x002F, "TLS_RSA_WITH_AES_128_CBC_SHA"},
    {0x0035, "TLS_RSA_WITH_AES_256_CBC_SHA"},
};

static const char *suite_by_number(DWORD id)
{
    for (size_t i = 0; i < sizeof(SUITES) / sizeof(SUITES[0]); i++)
        if (SUITES[i].id == id)
            return SUITES[i].name;
    return NULL;
}

static const char *exchange_name(ALG_ID alg)
{
    switch (alg) {
    case CALG_ECDH_EPHEM: case CALG_ECDH: return "ECDHE";
    case CALG_DH_EPHEM: return "DHE";
    case CALG_RSA_KEYX: return "RSA";
    default: return NULL;
    }
}

static const char *cipher_name(ALG_ID alg)
{
    switch (alg) {
    case CALG_AES_128: return "AES_128";
    case CALG_AES_256: return "AES_256";
    default: return NULL;
    }
}

static const char *hash_name(ALG_ID alg)
{
    switch (alg) {
    case CALG_SHA1: return "SHA";
    case CALG_SHA_256: return "SHA256";
    case CALG_SHA_384: return "SHA384";
    default: return NULL;
    }
}

/* "ECDHE-AES_256-SHA384"-like, from the algorithms alone: the mode (GCM or
 * CBC) is not among them, so this is said as parts, not as an IANA name. */
static void name_from_algorithms(const SecPkgContext_ConnectionInfo *info, char *out, size_t cap)
{
    const char *kx = exchange_name(info->aiExch), *cipher = cipher_name(info->aiCipher);
    const char *hash = hash_name(info->aiHash);
    if (cipher && hash)
        snprintf(out, cap, "%s%s%s-%s", kx ? kx : "", kx ? "-" : "", cipher, hash);
}

/* Wine names an AEAD suite "TLS_ECDHE_RSA_WITH_AES_256_GCM_<unknown>": its
 * last part is the handshake's hash, which the connection's algorithms give. */
static int complete_wine_name(char *name, size_t cap, const SecPkgContext_ConnectionInfo *info)
{
    static const char unknown[] = "_<unknown>";
    size_t len = strlen(name), tail = sizeof(unknown) - 1;
    const char *hash = info ? hash_name(info->aiHash) : NULL;
    if (len <= tail || strcmp(name + len - tail, unknown) != 0)
        return 1;
    if (!hash || strcmp(hash, "SHA") == 0 || len - tail + 1 + strlen(hash) >= cap)
        return 0;
    snprintf(name + len - tail, cap - (len - tail), "_%s", hash);
    return 1;
}

void sch_name_cipher_suite(CtxtHandle *ctxt, const SecPkgContext_ConnectionInfo *info, char *out,
                           size_t cap)
{
    SecPkgContext_CipherInfo ci;
    memset(&ci, 0, sizeof(ci));
    out[0] = '\0';
    if (QueryContextAttributesW(ctxt, SECPKG_ATTR_CIPHER_INFO, &ci) == SEC_E_OK) {
        const char *known = suite_by_number(ci.dwCipherSuite);
        if (known) {
            snprintf(out, cap, "%s", known);
            return;
        }
        if (ci.szCipherSuite[0])
            WideCharToMultiByte(CP_UTF8, 0, ci.szCipherSuite, -1, out, (int)cap, NULL, NULL);
        if (complete_wine_name(out, cap, info) && !strchr(out, '<'))
            return;
        out[0] = '\0'; /* a name with a part unknown: no name beats a wrong one */
    }
    if (info)
        name_from_algorithms(info, out, cap);
}

/* Read once the handshake is done. */
void sch_read_connection_info(dcx_conn *c)
{
    SecPkgContext_ConnectionInfo info;
    int have_info = QueryContextAttributesW(&c->ctxt, SECPKG_ATTR_CONNECTION_INFO, &info) == SEC_E_OK;
    if (have_info) {
        c->version = (info.dwProtocol & (SP_PROT_TLS1_3_CLIENT | SP_PROT_TLS1_3_SERVER)) ? DCX_TLS1_3
                   : (info.dwProtocol & (SP_PROT_TLS1_2_CLIENT | SP_PROT_TLS1_2_SERVER)) ? DCX_TLS1_2
                   : 0;
        c->cipher_bits = (int)info.dwCipherStrength;
    }
    sch_name_cipher_suite(&c->ctxt, have_info ? &info : NULL, c->cipher, sizeof(c->cipher));
    SecPkgContext_SessionInfo si;
    if (QueryContextAttributesW(&c->ctxt, SECPKG_ATTR_SESSION_INFO, &si) == SEC_E_OK)
        c->reused = (si.dwFlags & SSL_SESSION_RECONNECT) != 0;
}

size_t dcx_conn_peer_cert(dcx_conn *c, unsigned char *buf, size_t cap)
{
    if (!c->peer)
        return 0;
    size_t n = c->peer->cbCertEncoded;
    if (buf && n <= cap)
        memcpy(buf, c->peer->pbCertEncoded, n);
    return n;
}

int dcx_conn_version(const dcx_conn *c)
{
    return c->handshake_done ? c->version : 0;
}

const char *dcx_conn_cipher(const dcx_conn *c)
{
    return c->handshake_done ? c->cipher : "";
}

int dcx_conn_cipher_bits(const dcx_conn *c)
{
    return c->handshake_done ? c->cipher_bits : 0;
}

int dcx_conn_session_reused(const dcx_conn *c)
{
    return c->handshake_done && c->reused;
}

dcx_socket dcx_conn_socket(const dcx_conn *c)
{
    return c->fd;
}
