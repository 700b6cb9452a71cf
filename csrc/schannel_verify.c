/*
 * schannel_verify.c - the peer's certificate judged by the SChannel backend,
 * which SChannel itself never validates (SCH_CRED_MANUAL_CRED_VALIDATION):
 * trusted certificates read from a folder, the thumbprint method, and the
 * trust chain built with CertGetCertificateChain and checked with
 * CertVerifyCertificateChainPolicy (host names and IP addresses included),
 * revocation by CRLs (those given and those of the CA store) with the meaning
 * the OpenSSL backend gives it, every failure explained in the dcx_error with
 * a dcx_verify_reason.
 */
#include "schannel_int.h"

/* ---- trusted certificates ------------------------------------------------ */

int sch_read_trusted_dir(dcx_ctx *ctx, const char *dir, dcx_error *err)
{
    char pattern[MAX_PATH];
    WIN32_FIND_DATAA fd;
    snprintf(pattern, sizeof(pattern), "%s\\*", dir);
    HANDLE h = FindFirstFileA(pattern, &fd);
    if (h == INVALID_HANDLE_VALUE)
        return dcx_fail(err, DCX_E_CONFIG, "cannot read trusted certificates folder '%s'", dir);
    do {
        if (fd.dwFileAttributes & FILE_ATTRIBUTE_DIRECTORY)
            continue;
        char path[MAX_PATH];
        snprintf(path, sizeof(path), "%s\\%s", dir, fd.cFileName);
        FILE *f = fopen(path, "rb");
        if (!f)
            continue;
        unsigned char *buf = malloc(fd.nFileSizeLow + 1);
        size_t n = buf ? fread(buf, 1, fd.nFileSizeLow, f) : 0;
        fclose(f);
        dcx_blob b = {buf, n};
        if (buf) /* other files are skipped, as OpenSSL's hashed folders allow */
            ctx->trusted_count += (size_t)sch_add_certificates(ctx->trusted, &b, NULL);
        free(buf);
    } while (FindNextFileA(h, &fd));
    FindClose(h);
    return DCX_OK;
}

/* ---- verification ------------------------------------------------------- */

static const char *method_name(dcx_verify v)
{
    return v == DCX_VERIFY_THUMBPRINT ? "THUMBPRINT" : v == DCX_VERIFY_NONE ? "NONE" : "TRUST_CHAIN";
}

static int in_store(HCERTSTORE store, PCCERT_CONTEXT cert)
{
    PCCERT_CONTEXT found = CertFindCertificateInStore(store, X509_ASN_ENCODING, 0,
                                                      CERT_FIND_EXISTING, cert, NULL);
    if (found)
        CertFreeCertificateContext(found);
    return found != NULL;
}

int sch_fail_verify(dcx_conn *c, int reason, const char *detail, dcx_error *err)
{
    if (err) {
        snprintf(err->subject, sizeof(err->subject), "%s", c->subject);
        snprintf(err->thumbprint, sizeof(err->thumbprint), "%s", c->thumbprint);
        snprintf(err->not_after, sizeof(err->not_after), "%s", c->not_after);
    }
    return dcx_fail_verify(err, reason, method_name(c->ctx->verify), detail);
}

static void name_of(PCERT_NAME_BLOB blob, char *out, size_t cap)
{
    CertNameToStrA(X509_ASN_ENCODING, blob, CERT_X500_NAME_STR | CERT_NAME_STR_REVERSE_FLAG, out,
                   (DWORD)cap);
}

/* Why the chain of the leaf failed, from its trust status: reason + detail. */
static int explain_chain(dcx_conn *c, PCCERT_CHAIN_CONTEXT chain, DWORD errors, int root_is_ours,
                         dcx_error *err)
{
    PCERT_SIMPLE_CHAIN simple = chain->rgpChain[0];
    char detail[384], name[256];
    for (DWORD i = 0; i < simple->cElement; i++) {
        PCERT_CHAIN_ELEMENT el = simple->rgpElement[i];
        if (!(el->TrustStatus.dwErrorStatus & CERT_TRUST_IS_NOT_TIME_VALID))
            continue;
        FILETIME now;
        GetSystemTimeAsFileTime(&now);
        int early = CompareFileTime(&now, &el->pCertContext->pCertInfo->NotBefore) < 0;
        if (i == 0) {
            SYSTEMTIME st;
            FileTimeToSystemTime(&el->pCertContext->pCertInfo->NotBefore, &st);
            snprintf(detail, sizeof(detail), "valid from %04u-%02u-%02u %02u:%02u:%02u UTC",
                     st.wYear, st.wMonth, st.wDay, st.wHour, st.wMinute, st.wSecond);
            return sch_fail_verify(c, early ? DCX_VR_NOT_YET_VALID : DCX_VR_EXPIRED, detail, err);
        }
        char thumb[41], na[32];
        sch_describe_cert(el->pCertContext, name, sizeof(name), thumb, na, sizeof(na));
        snprintf(detail, sizeof(detail), "issuing CA '%s' %s (valid until %s)", name,
                 early ? "is not yet valid" : "has expired", na);
        return sch_fail_verify(c, DCX_VR_OTHER, detail, err);
    }
    if (errors & CERT_TRUST_IS_NOT_SIGNATURE_VALID)
        return sch_fail_verify(c, DCX_VR_BAD_SIGNATURE,
                               "a signature in its chain does not verify", err);
    if (errors & CERT_TRUST_IS_PARTIAL_CHAIN) {
        PCCERT_CONTEXT top = simple->rgpElement[simple->cElement - 1]->pCertContext;
        name_of(&top->pCertInfo->Issuer, name, sizeof(name));
        snprintf(detail, sizeof(detail), "its issuer '%s' is unknown", name);
        return sch_fail_verify(c, DCX_VR_UNTRUSTED, detail, err);
    }
    if ((errors & CERT_TRUST_IS_UNTRUSTED_ROOT) || !root_is_ours) {
        PCCERT_CONTEXT top = simple->rgpElement[simple->cElement - 1]->pCertContext;
        if (simple->cElement == 1) {
            snprintf(detail, sizeof(detail), "it is self-signed and not among the trusted certificates");
        } else {
            name_of(&top->pCertInfo->Subject, name, sizeof(name));
            snprintf(detail, sizeof(detail), "its root CA '%s' is not among the trusted certificates%s",
                     name, (errors & CERT_TRUST_IS_UNTRUSTED_ROOT) ? "" :
                     " (Windows trusts it, but use_system_trust is off)");
        }
        return sch_fail_verify(c, DCX_VR_UNTRUSTED, detail, err);
    }
    if (errors & (CERT_TRUST_IS_NOT_VALID_FOR_USAGE | CERT_TRUST_INVALID_BASIC_CONSTRAINTS |
                  CERT_TRUST_INVALID_EXTENSION | CERT_TRUST_INVALID_NAME_CONSTRAINTS)) {
        snprintf(detail, sizeof(detail), "not valid for TLS %s authentication (key usage, extended "
                 "key usage or basic constraints)", c->server_side ? "client" : "server");
        return sch_fail_verify(c, DCX_VR_PURPOSE, detail, err);
    }
    snprintf(detail, sizeof(detail), "chain trust status 0x%08lX", (unsigned long)errors);
    return sch_fail_verify(c, DCX_VR_OTHER, detail, err);
}

/* ---- revocation ---------------------------------------------------------- */

#define REVOCATION_BITS (CERT_TRUST_IS_REVOKED | CERT_TRUST_REVOCATION_STATUS_UNKNOWN | \
                         CERT_TRUST_IS_OFFLINE_REVOCATION)

/* A name as the OpenSSL backend shows it (RFC 2253: "CN=a,O=b"). */
static void name_2253(PCERT_NAME_BLOB blob, char *out, size_t cap)
{
    char name[512] = "";
    size_t j = 0;
    CertNameToStrA(X509_ASN_ENCODING, blob, CERT_X500_NAME_STR | CERT_NAME_STR_REVERSE_FLAG, name,
                   sizeof(name));
    for (size_t i = 0; name[i] && j + 1 < cap; i++) {
        if (name[i] == ' ' && i > 0 && name[i - 1] == ',')
            continue;
        out[j++] = name[i];
    }
    out[j] = '\0';
}

static void time_text(const FILETIME *t, char *out, size_t cap)
{
    SYSTEMTIME st;
    if (t && (t->dwLowDateTime || t->dwHighDateTime) && FileTimeToSystemTime(t, &st))
        snprintf(out, cap, "%04u-%02u-%02u %02u:%02u:%02u UTC", st.wYear, st.wMonth, st.wDay,
                 st.wHour, st.wMinute, st.wSecond);
    else
        snprintf(out, cap, "?");
}

/* RFC 5280 CRLReason of a CRL entry, spelled as the OpenSSL backend does, or "". */
static const char *crl_reason_text(const CRL_ENTRY *entry)
{
    static const char *const names[] = {
        "unspecified", "keyCompromise", "cACompromise", "affiliationChanged", "superseded",
        "cessationOfOperation", "certificateHold", "", "removeFromCRL", "privilegeWithdrawn",
        "aACompromise"};
    PCERT_EXTENSION ext = CertFindExtension(szOID_CRL_REASON_CODE, entry->cExtension,
                                            entry->rgExtension);
    int code = -1;
    DWORD n = sizeof(code);
    if (!ext || !CryptDecodeObjectEx(X509_ASN_ENCODING, X509_CRL_REASON_CODE, ext->Value.pbData,
                                     ext->Value.cbData, 0, NULL, &code, &n))
        return "";
    return code >= 0 && code < (int)(sizeof(names) / sizeof(names[0])) ? names[code] : "";
}

/* What the CRLs at hand (those given, and the CA store's) say of cert: the
 * CRLs are those its issuer signed (Crypt32 checks the signature). */
typedef struct crl_word {
    int found;           /* a CRL of the issuer is at hand */
    int current;         /* ... and one of them is current */
    int revoked;         /* one of them lists cert */
    FILETIME revoked_on;
    const char *reason;  /* CRLReason of that entry, or "" */
    FILETIME expired_on; /* the latest nextUpdate of those that expired (zero: none did) */
    FILETIME valid_from; /* the earliest thisUpdate of those not yet valid (zero: none) */
} crl_word;

static void crls_on(HCERTSTORE crls, PCCERT_CONTEXT cert, PCCERT_CONTEXT issuer, crl_word *w)
{
    FILETIME now;
    GetSystemTimeAsFileTime(&now);
    memset(w, 0, sizeof(*w));
    w->reason = "";
    PCCRL_CONTEXT crl = NULL;
    /* those in the issuer's name; only those it signed speak for cert */
    while ((crl = CertFindCRLInStore(crls, X509_ASN_ENCODING, 0, CRL_FIND_ISSUED_BY, issuer,
                                     crl)) != NULL) {
        PCRL_INFO info = crl->pCrlInfo;
        PCRL_ENTRY entry = NULL;
        if (!CryptVerifyCertificateSignatureEx(0, X509_ASN_ENCODING,
                                               CRYPT_VERIFY_CERT_SIGN_SUBJECT_CRL, (void *)crl,
                                               CRYPT_VERIFY_CERT_SIGN_ISSUER_CERT, (void *)issuer,
                                               0, NULL))
            continue; /* not the issuer's: it says nothing (as on OpenSSL) */
        w->found = 1;
        if (CertFindCertificateInCRL(cert, crl, 0, NULL, &entry) && entry && !w->revoked) {
            w->revoked = 1;
            w->revoked_on = entry->RevocationDate;
            w->reason = crl_reason_text(entry);
        }
        int has_next = info->NextUpdate.dwLowDateTime || info->NextUpdate.dwHighDateTime;
        if (CompareFileTime(&now, &info->ThisUpdate) < 0) {
            if ((!w->valid_from.dwLowDateTime && !w->valid_from.dwHighDateTime) ||
                CompareFileTime(&info->ThisUpdate, &w->valid_from) < 0)
                w->valid_from = info->ThisUpdate;
        } else if (has_next && CompareFileTime(&now, &info->NextUpdate) >= 0) {
            if (CompareFileTime(&info->NextUpdate, &w->expired_on) > 0)
                w->expired_on = info->NextUpdate;
        } else {
            w->current = 1;
        }
    }
}

/* The CRLs Windows keeps for everyone: the CA store of the configured scope,
 * where `certutil -addstore CA FILE.crl` puts them.  NULL when it cannot be opened. */
static HCERTSTORE open_ca_store(dcx_store scope)
{
    DWORD where = scope == DCX_STORE_LOCAL_COMPUTER ? CERT_SYSTEM_STORE_LOCAL_MACHINE
                                                    : CERT_SYSTEM_STORE_CURRENT_USER;
    return CertOpenStore(CERT_STORE_PROV_SYSTEM_W, 0, 0,
                         where | CERT_STORE_READONLY_FLAG | CERT_STORE_OPEN_EXISTING_FLAG, L"CA");
}

/* Revocation with the OpenSSL backend's meaning.  A CRL at hand that revokes
 * a certificate of the chain refuses it, always; check_revocation also
 * refuses a certificate below the root that no current CRL speaks for.  The
 * chain engine was asked too (cache only, nothing fetched): its "revoked"
 * counts, and so does its "good" (a CRL it holds, OCSP), but Wine's engine
 * never says "good" of a certificate without CRL distribution points, nor
 * reads the CA store, so the CRLs at hand are read here as well. */
static int judge_revocation(dcx_conn *c, PCCERT_CHAIN_CONTEXT chain, HCERTSTORE crls,
                            dcx_error *err)
{
    PCERT_SIMPLE_CHAIN simple = chain->rgpChain[0];
    char detail[512], issuer[256], name[256], thumb[41], na[32], when[32];
    const char *advice = "import the CA's current CRL with `certutil -addstore CA FILE.crl` (or "
                         "give it in crl_files)";
    for (DWORD i = 0; i + 1 < simple->cElement; i++) {
        PCERT_CHAIN_ELEMENT el = simple->rgpElement[i];
        PCCERT_CONTEXT cert = el->pCertContext;
        DWORD status = el->TrustStatus.dwErrorStatus;
        crl_word w;
        crls_on(crls, cert, simple->rgpElement[i + 1]->pCertContext, &w);
        name_2253(&cert->pCertInfo->Issuer, issuer, sizeof(issuer));
        if (w.revoked || (status & CERT_TRUST_IS_REVOKED)) {
            const char *why = w.reason;
            PCERT_REVOCATION_CRL_INFO info =
                el->pRevocationInfo ? el->pRevocationInfo->pCrlInfo : NULL;
            if (w.revoked)
                time_text(&w.revoked_on, when, sizeof(when));
            else if (info && info->pCrlEntry) { /* the engine's own CRL (real Windows says which) */
                time_text(&info->pCrlEntry->RevocationDate, when, sizeof(when));
                why = crl_reason_text(info->pCrlEntry);
            } else
                snprintf(when, sizeof(when), "?");
            if (i == 0) {
                snprintf(detail, sizeof(detail), "revoked on %s by '%s'%s%s%s; the peer needs a "
                         "new certificate", when, issuer, *why ? " (" : "", why, *why ? ")" : "");
            } else {
                sch_describe_cert(cert, name, sizeof(name), thumb, na, sizeof(na));
                snprintf(detail, sizeof(detail), "its CA certificate '%s' (thumbprint %s) was "
                         "revoked on %s by '%s'%s%s%s; the peer needs a new chain", name, thumb,
                         when, issuer, *why ? " (" : "", why, *why ? ")" : "");
            }
            return sch_fail_verify(c, DCX_VR_REVOKED, detail, err);
        }
        if (!c->ctx->check_revocation || w.current)
            continue;
        if (!(status & (CERT_TRUST_REVOCATION_STATUS_UNKNOWN | CERT_TRUST_IS_OFFLINE_REVOCATION)))
            continue; /* the chain engine vouches for it */
        if (w.expired_on.dwLowDateTime || w.expired_on.dwHighDateTime) {
            time_text(&w.expired_on, when, sizeof(when));
            snprintf(detail, sizeof(detail), "the CRL from '%s' expired on %s: %s", issuer, when,
                     advice);
        } else if (w.valid_from.dwLowDateTime || w.valid_from.dwHighDateTime) {
            time_text(&w.valid_from, when, sizeof(when));
            snprintf(detail, sizeof(detail), "the CRL from '%s' is not valid before %s: check the "
                     "clocks", issuer, when);
        } else {
            if (i)
                sch_describe_cert(cert, name, sizeof(name), thumb, na, sizeof(na));
            snprintf(detail, sizeof(detail), "no current CRL from '%s'%s%s%s: %s", issuer,
                     i ? " for its CA '" : "", i ? name : "", i ? "'" : "", advice);
        }
        return sch_fail_verify(c, DCX_VR_REVOCATION, detail, err);
    }
    return DCX_OK;
}

/* The server name as an IPv4/IPv6 address (4 or 16 bytes), or 0 when it is a host name. */
int sch_ip_literal(const char *name, unsigned char addr[16])
{
    struct sockaddr_storage ss;
    int len = sizeof(ss);
    wchar_t wide[64];
    if (!name[0] || !MultiByteToWideChar(CP_UTF8, 0, name, -1, wide, 64))
        return 0;
    memset(&ss, 0, sizeof(ss));
    if (WSAStringToAddressW(wide, AF_INET, NULL, (struct sockaddr *)&ss, &len) == 0) {
        memcpy(addr, &((struct sockaddr_in *)&ss)->sin_addr, 4);
        return 4;
    }
    len = sizeof(ss);
    if (WSAStringToAddressW(wide, AF_INET6, NULL, (struct sockaddr *)&ss, &len) == 0) {
        memcpy(addr, &((struct sockaddr_in6 *)&ss)->sin6_addr, 16);
        return 16;
    }
    return 0;
}

/* An address is matched against the iPAddress entries of subjectAltName only
 * (RFC 6125), by us: the SSL policy of older Windows knows host names only. */
static int names_ip(PCCERT_CONTEXT leaf, const unsigned char *addr, int addr_len)
{
    PCERT_EXTENSION ext = CertFindExtension(szOID_SUBJECT_ALT_NAME2, leaf->pCertInfo->cExtension,
                                            leaf->pCertInfo->rgExtension);
    CERT_ALT_NAME_INFO *names = NULL;
    DWORD n = 0;
    int found = 0;
    if (!ext || !CryptDecodeObjectEx(X509_ASN_ENCODING, X509_ALTERNATE_NAME, ext->Value.pbData,
                                     ext->Value.cbData, CRYPT_DECODE_ALLOC_FLAG, NULL, &names, &n))
        return 0;
    for (DWORD i = 0; i < names->cAltEntry && !found; i++) {
        CERT_ALT_NAME_ENTRY *e = &names->rgAltEntry[i];
        found = e->dwAltNameChoice == CERT_ALT_NAME_IP_ADDRESS &&
                e->IPAddress.cbData == (DWORD)addr_len &&
                memcmp(e->IPAddress.pbData, addr, (size_t)addr_len) == 0;
    }
    LocalFree(names);
    return found;
}

static int verify_chain(dcx_conn *c, PCCERT_CONTEXT leaf, dcx_error *err)
{
    dcx_ctx *ctx = c->ctx;
    static LPSTR server_auth[] = {szOID_PKIX_KP_SERVER_AUTH};
    static LPSTR client_auth[] = {szOID_PKIX_KP_CLIENT_AUTH};
    CERT_CHAIN_PARA para = {sizeof(para)};
    para.RequestedUsage.dwType = USAGE_MATCH_TYPE_AND;
    para.RequestedUsage.Usage.cUsageIdentifier = 1;
    para.RequestedUsage.Usage.rgpszUsageIdentifier = c->server_side ? client_auth : server_auth;

    /* the CRLs at hand: those given, and those of the CA store (read at each
     * verification, so that a CRL imported while we run counts) */
    HCERTSTORE crls = CertOpenStore(CERT_STORE_PROV_COLLECTION, 0, 0, 0, NULL);
    HCERTSTORE ca = open_ca_store(ctx->cert_store);
    if (!crls) {
        if (ca)
            CertCloseStore(ca, 0);
        return dcx_fail(err, DCX_E_NOMEM, "cannot create a certificate store");
    }
    CertAddStoreToCollection(crls, ctx->crls, 0, 0);
    if (ca)
        CertAddStoreToCollection(crls, ca, 0, 0);
    PCCRL_CONTEXT any_crl = CertEnumCRLsInStore(crls, NULL);
    int judge = ctx->check_revocation || any_crl;
    if (any_crl)
        CertFreeCRLContext(any_crl);
    /* the chain engine checks what it holds, and fetches nothing (as OpenSSL does not) */
    DWORD flags = judge ? CERT_CHAIN_REVOCATION_CHECK_CHAIN_EXCLUDE_ROOT |
                          CERT_CHAIN_REVOCATION_CHECK_CACHE_ONLY : 0;

    /* what the peer sent, plus our trusted roots and the CRLs, so the chain can be built */
    HCERTSTORE extra = CertOpenStore(CERT_STORE_PROV_COLLECTION, 0, 0, 0, NULL);
    if (!extra) {
        CertCloseStore(crls, 0);
        if (ca)
            CertCloseStore(ca, 0);
        return dcx_fail(err, DCX_E_NOMEM, "cannot create a certificate store");
    }
    if (leaf->hCertStore)
        CertAddStoreToCollection(extra, leaf->hCertStore, 0, 0);
    CertAddStoreToCollection(extra, ctx->trusted, 0, 0);
    CertAddStoreToCollection(extra, ctx->intermediates, 0, 0);
    CertAddStoreToCollection(extra, crls, 0, 0);
    PCCERT_CHAIN_CONTEXT chain = NULL;
    HCERTCHAINENGINE engine = ctx->cert_store == DCX_STORE_LOCAL_COMPUTER ? HCCE_LOCAL_MACHINE
                                                                           : HCCE_CURRENT_USER;
    int rc = DCX_OK;
    if (!CertGetCertificateChain(engine, leaf, NULL, extra, &para, flags, NULL, &chain)) {
        rc = sch_fail_verify(c, DCX_VR_OTHER, "Windows could not build its certificate chain", err);
        goto out;
    }
    PCERT_SIMPLE_CHAIN simple = chain->rgpChain[0];
    PCCERT_CONTEXT top = simple->rgpElement[simple->cElement - 1]->pCertContext;
    int root_is_ours = in_store(ctx->trusted, top);
    int partial = (chain->TrustStatus.dwErrorStatus & CERT_TRUST_IS_PARTIAL_CHAIN) != 0;
    DWORD errors = chain->TrustStatus.dwErrorStatus;
    if (root_is_ours && !partial)
        errors &= ~CERT_TRUST_IS_UNTRUSTED_ROOT;
    errors &= ~(DWORD)REVOCATION_BITS; /* judged below, with the CRLs at hand */
    /* The SSL policy below ignores a partial chain: judge the trust status first. */
    if (errors || partial || (!root_is_ours && !ctx->use_system_trust)) {
        rc = explain_chain(c, chain, errors, root_is_ours && !partial, err);
        goto out;
    }
    if (judge && (rc = judge_revocation(c, chain, crls, err)) != DCX_OK)
        goto out;
    SSL_EXTRA_CERT_CHAIN_POLICY_PARA ssl = {{sizeof(ssl)}};
    ssl.dwAuthType = c->server_side ? AUTHTYPE_CLIENT : AUTHTYPE_SERVER;
    if (root_is_ours)
        ssl.fdwChecks |= SECURITY_FLAG_IGNORE_UNKNOWN_CA;
    if (judge) /* judged above; Wine's SSL policy reads only this flag for it */
        ssl.fdwChecks |= SECURITY_FLAG_IGNORE_REVOCATION;
    unsigned char addr[16];
    int addr_len = sch_ip_literal(c->server_name, addr);
    int check_name = !c->server_side && ctx->check_hostname && c->server_name[0];
    if (check_name && addr_len && !names_ip(leaf, addr, addr_len)) {
        rc = sch_fail_verify(c, DCX_VR_HOSTNAME, c->server_name, err);
        goto out;
    }
    if (check_name && !addr_len)
        ssl.pwszServerName = c->server_name_w;
    else
        ssl.fdwChecks |= SECURITY_FLAG_IGNORE_CERT_CN_INVALID;
    CERT_CHAIN_POLICY_PARA policy = {sizeof(policy)};
    /* revocation is judged above: what the engine could not check is no failure here */
    policy.dwFlags = (root_is_ours ? CERT_CHAIN_POLICY_ALLOW_UNKNOWN_CA_FLAG : 0) |
                     CERT_CHAIN_POLICY_IGNORE_ALL_REV_UNKNOWN_FLAGS;
    policy.pvExtraPolicyPara = &ssl;
    CERT_CHAIN_POLICY_STATUS status = {sizeof(status)};
    if (!CertVerifyCertificateChainPolicy(CERT_CHAIN_POLICY_SSL, chain, &policy, &status)) {
        rc = sch_fail_verify(c, DCX_VR_OTHER, "Windows could not apply the TLS chain policy", err);
        goto out;
    }
    char detail[128];
    switch ((unsigned long)status.dwError) {
    case 0:
        break;
    case (unsigned long)CERT_E_CN_NO_MATCH:
        rc = sch_fail_verify(c, DCX_VR_HOSTNAME, c->server_name, err);
        break;
    case (unsigned long)CERT_E_UNTRUSTEDROOT:
    case (unsigned long)CERT_E_CHAINING:
        rc = sch_fail_verify(c, DCX_VR_UNTRUSTED, "its chain does not end in a trusted root", err);
        break;
    case (unsigned long)CERT_E_EXPIRED:
        rc = sch_fail_verify(c, DCX_VR_EXPIRED, "", err);
        break;
    case (unsigned long)CERT_E_WRONG_USAGE:
    case (unsigned long)CERT_E_PURPOSE:
    case (unsigned long)CERT_E_ROLE:
    case (unsigned long)TRUST_E_BASIC_CONSTRAINTS:
        snprintf(detail, sizeof(detail), "not valid for TLS %s authentication (%s)",
                 c->server_side ? "client" : "server", sch_status_name((SECURITY_STATUS)status.dwError));
        rc = sch_fail_verify(c, DCX_VR_PURPOSE, detail, err);
        break;
    case (unsigned long)CRYPT_E_REVOKED:
        rc = sch_fail_verify(c, DCX_VR_REVOKED, "revoked by its issuer", err);
        break;
    case (unsigned long)TRUST_E_CERT_SIGNATURE:
        rc = sch_fail_verify(c, DCX_VR_BAD_SIGNATURE, "a signature in its chain does not verify",
                             err);
        break;
    case (unsigned long)CERT_E_REVOCATION_FAILURE:
    case (unsigned long)CRYPT_E_REVOCATION_OFFLINE:
    case (unsigned long)CRYPT_E_NO_REVOCATION_CHECK:
        snprintf(detail, sizeof(detail), "its revocation status cannot be checked (%s)",
                 sch_status_name((SECURITY_STATUS)status.dwError));
        rc = sch_fail_verify(c, DCX_VR_REVOCATION, detail, err);
        break;
    default:
        snprintf(detail, sizeof(detail), "the TLS chain policy refused it: %s (0x%08lX)",
                 sch_status_name((SECURITY_STATUS)status.dwError), (unsigned long)status.dwError);
        rc = sch_fail_verify(c, DCX_VR_OTHER, detail, err);
    }
out:
    if (chain)
        CertFreeCertificateChain(chain);
    CertCloseStore(extra, 0);
    CertCloseStore(crls, 0);
    if (ca)
        CertCloseStore(ca, 0);
    return rc;
}

int sch_verify_peer(dcx_conn *c, dcx_error *err)
{
    dcx_ctx *ctx = c->ctx;
    PCCERT_CONTEXT leaf = NULL;
    if (QueryContextAttributesW(&c->ctxt, SECPKG_ATTR_REMOTE_CERT_CONTEXT, &leaf) != SEC_E_OK)
        leaf = NULL;
    c->peer = leaf;
    if (!leaf) {
        if (ctx->verify == DCX_VERIFY_NONE)
            return DCX_OK;
        return sch_fail_verify(c, DCX_VR_NO_CERTIFICATE, "", err);
    }
    sch_describe_cert(leaf, c->subject, sizeof(c->subject), c->thumbprint, c->not_after,
                      sizeof(c->not_after));
    switch (ctx->verify) {
    case DCX_VERIFY_NONE:
        return DCX_OK;
    case DCX_VERIFY_THUMBPRINT: {
        unsigned char sha1[DCX_SHA1_LEN], sha256[DCX_SHA256_LEN];
        DWORD n1 = sizeof(sha1), n256 = sizeof(sha256);
        int ok = CertGetCertificateContextProperty(leaf, CERT_HASH_PROP_ID, sha1, &n1) &&
                 CryptHashCertificate2(L"SHA256", 0, NULL, leaf->pbCertEncoded,
                                       leaf->cbCertEncoded, sha256, &n256);
        EnterCriticalSection(&ctx->lock);
        ok = ok && dcx_thumbs_match(&ctx->thumbs, sha1, sha256);
        LeaveCriticalSection(&ctx->lock);
        return ok ? DCX_OK : sch_fail_verify(c, DCX_VR_THUMBPRINT, "", err);
    }
    case DCX_VERIFY_TRUST_CHAIN:
    default:
        return verify_chain(c, leaf, err);
    }
}
