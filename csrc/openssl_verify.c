/*
 * openssl_verify.c - the OpenSSL backend's certificates: the local identity
 * (certificate chain and private key), the trust store, and the decision on
 * the peer.  One certificate-verify callback applies the configured method
 * (NONE, TRUST_CHAIN, THUMBPRINT) and records why it refused, in words a
 * person can act on.
 */
#include "openssl_int.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <openssl/decoder.h>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/x509v3.h>

/* ---- certificates and keys ------------------------------------------- */

static int is_pem(const dcx_blob *b)
{
    static const char marker[] = "-----BEGIN";
    size_t n = sizeof(marker) - 1;
    for (size_t i = 0; i + n <= b->len; i++)
        if (memcmp(b->data + i, marker, n) == 0)
            return 1;
    return 0;
}

static int blob_contains(const dcx_blob *b, const char *needle)
{
    size_t n = strlen(needle);
    for (size_t i = 0; i + n <= b->len; i++)
        if (memcmp(b->data + i, needle, n) == 0)
            return 1;
    return 0;
}

/* All certificates in a blob (one DER, or any number of PEM blocks). */
static STACK_OF(X509) *parse_certificates(const dcx_blob *b)
{
    STACK_OF(X509) *certs = sk_X509_new_null();
    if (!certs)
        return NULL;
    if (is_pem(b)) {
        BIO *bio = BIO_new_mem_buf(b->data, (int)b->len);
        X509 *x;
        while (bio && (x = PEM_read_bio_X509(bio, NULL, NULL, NULL)) != NULL)
            sk_X509_push(certs, x);
        BIO_free(bio);
    } else {
        const unsigned char *p = b->data;
        X509 *x = d2i_X509(NULL, &p, (long)b->len);
        if (x)
            sk_X509_push(certs, x);
    }
    ERR_clear_error();
    if (sk_X509_num(certs) == 0) {
        sk_X509_free(certs);
        return NULL;
    }
    return certs;
}

static int no_password(char *buf, int size, int rwflag, void *u)
{
    (void)buf; (void)size; (void)rwflag; (void)u;
    return -1;
}

static EVP_PKEY *parse_private_key(const dcx_blob *b, const char *password, dcx_error *err)
{
    EVP_PKEY *pkey = NULL;
    const unsigned char *p = b->data;
    size_t len = b->len;
    OSSL_DECODER_CTX *dctx = OSSL_DECODER_CTX_new_for_pkey(&pkey, NULL, NULL, NULL,
                                                           EVP_PKEY_KEYPAIR, NULL, NULL);
    if (!dctx) {
        dcx_fail(err, DCX_E_NOMEM, "out of memory reading the private key");
        return NULL;
    }
    if (password)
        OSSL_DECODER_CTX_set_passphrase(dctx, (const unsigned char *)password, strlen(password));
    else
        OSSL_DECODER_CTX_set_pem_password_cb(dctx, no_password, NULL);
    int ok = OSSL_DECODER_from_data(dctx, &p, &len);
    OSSL_DECODER_CTX_free(dctx);
    ERR_clear_error();
    if (ok && pkey)
        return pkey;
    EVP_PKEY_free(pkey);
    if (blob_contains(b, "ENCRYPTED") && !password)
        dcx_fail(err, DCX_E_CONFIG, "the private key is encrypted: give its password");
    else if (password)
        dcx_fail(err, DCX_E_CONFIG,
                 "the private key could not be decrypted: wrong password, or not a "
                 "private key in PEM or DER (PKCS#8, PKCS#1 or SEC1)");
    else
        dcx_fail(err, DCX_E_CONFIG,
                 "the private key is not a key in PEM or DER (PKCS#8, PKCS#1 or SEC1)");
    return NULL;
}

static void describe_cert(X509 *x, char *subject, size_t subject_cap, char *thumb,
                          char *not_after, size_t not_after_cap)
{
    BIO *bio = BIO_new(BIO_s_mem());
    subject[0] = '\0';
    if (bio) {
        X509_NAME_print_ex(bio, X509_get_subject_name(x), 0, XN_FLAG_RFC2253);
        int n = BIO_read(bio, subject, (int)subject_cap - 1);
        subject[n > 0 ? n : 0] = '\0';
        BIO_free(bio);
    }
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned int mdlen = 0;
    if (X509_digest(x, EVP_sha1(), md, &mdlen))
        dcx_hex(md, mdlen, thumb);
    struct tm tm;
    if (ASN1_TIME_to_tm(X509_get0_notAfter(x), &tm))
        strftime(not_after, not_after_cap, "%Y-%m-%d %H:%M:%S UTC", &tm);
    else
        snprintf(not_after, not_after_cap, "?");
}

int dcx_openssl_load_identity(SSL_CTX *sctx, const dcx_config *cfg, dcx_error *err)
{
    STACK_OF(X509) *chain = parse_certificates(&cfg->certificate_chain);
    if (!chain)
        return dcx_fail(err, DCX_E_CONFIG,
                        "the certificate is not an X.509 certificate in PEM or DER");
    X509 *leaf = sk_X509_value(chain, 0);
    if (err)
        describe_cert(leaf, err->subject, sizeof(err->subject), err->thumbprint,
                      err->not_after, sizeof(err->not_after));
    int rc = DCX_OK;
    EVP_PKEY *pkey = NULL;
    if (SSL_CTX_use_certificate(sctx, leaf) != 1) {
        rc = dcx_fail(err, DCX_E_CONFIG, "certificate '%s' cannot be used: %s",
                      err ? err->subject : "", ERR_reason_error_string(ERR_peek_last_error()));
        goto out;
    }
    for (int i = 1; i < sk_X509_num(chain); i++)
        SSL_CTX_add1_chain_cert(sctx, sk_X509_value(chain, i));
    pkey = parse_private_key(&cfg->private_key, cfg->private_key_password, err);
    if (!pkey) {
        rc = err ? err->status : DCX_E_CONFIG;
        goto out;
    }
    if (SSL_CTX_use_PrivateKey(sctx, pkey) != 1 || SSL_CTX_check_private_key(sctx) != 1)
        rc = dcx_fail(err, DCX_E_CONFIG,
                      "the private key does not belong to certificate '%s' (thumbprint %s)",
                      err ? err->subject : "", err ? err->thumbprint : "");
out:
    EVP_PKEY_free(pkey);
    sk_X509_pop_free(chain, X509_free);
    ERR_clear_error();
    return rc;
}

static int add_to_store(X509_STORE *store, const dcx_blob *blobs, size_t count, const char *what,
                        dcx_error *err)
{
    for (size_t i = 0; i < count; i++) {
        STACK_OF(X509) *certs = parse_certificates(&blobs[i]);
        if (!certs)
            return dcx_fail(err, DCX_E_CONFIG,
                            "%s certificate #%zu is not an X.509 certificate in PEM or DER", what,
                            i + 1);
        for (int j = 0; j < sk_X509_num(certs); j++)
            X509_STORE_add_cert(store, sk_X509_value(certs, j)); /* duplicates are fine */
        sk_X509_pop_free(certs, X509_free);
    }
    ERR_clear_error();
    return DCX_OK;
}

/* ---- revocation (CRLs) ------------------------------------------------ */

/* All CRLs in a blob (one DER, or any number of PEM "X509 CRL" blocks). */
static STACK_OF(X509_CRL) *parse_crls(const dcx_blob *b)
{
    STACK_OF(X509_CRL) *crls = sk_X509_CRL_new_null();
    if (!crls)
        return NULL;
    if (is_pem(b)) {
        BIO *bio = BIO_new_mem_buf(b->data, (int)b->len);
        X509_CRL *crl;
        while (bio && (crl = PEM_read_bio_X509_CRL(bio, NULL, NULL, NULL)) != NULL)
            sk_X509_CRL_push(crls, crl);
        BIO_free(bio);
    } else {
        const unsigned char *p = b->data;
        X509_CRL *crl = d2i_X509_CRL(NULL, &p, (long)b->len);
        if (crl)
            sk_X509_CRL_push(crls, crl);
    }
    ERR_clear_error();
    if (sk_X509_CRL_num(crls) == 0) {
        sk_X509_CRL_free(crls);
        return NULL;
    }
    return crls;
}

/* check_revocation off: a certificate with no current CRL at hand passes (as
 * offline does on Windows), but one that a CRL at hand revokes never does. */
static int tolerate_missing_crl(int ok, X509_STORE_CTX *sctx)
{
    int code = X509_STORE_CTX_get_error(sctx);
    if (!ok && (code == X509_V_ERR_UNABLE_TO_GET_CRL || code == X509_V_ERR_CRL_HAS_EXPIRED ||
                code == X509_V_ERR_CRL_NOT_YET_VALID)) {
        X509_STORE_CTX_set_error(sctx, X509_V_OK);
        return 1;
    }
    return ok;
}

/* The CRLs, and how TRUST_CHAIN uses them.  A security officer who gives CRLs
 * expects what they revoke to be refused, so they always apply;
 * check_revocation also demands a current CRL for every certificate of the
 * chain (the root's is the one its intermediates need anyway).  The store's
 * verify callback is each verification's: SSL_set_verify() is given none. */
static int load_revocation(X509_STORE *store, const dcx_config *cfg, dcx_error *err)
{
    for (size_t i = 0; i < cfg->crl_count; i++) {
        STACK_OF(X509_CRL) *crls = parse_crls(&cfg->crls[i]);
        if (!crls)
            return dcx_fail(err, DCX_E_CONFIG,
                            "CRL #%zu is not a certificate revocation list in PEM or DER", i + 1);
        for (int j = 0; j < sk_X509_CRL_num(crls); j++)
            X509_STORE_add_crl(store, sk_X509_CRL_value(crls, j)); /* duplicates are fine */
        sk_X509_CRL_pop_free(crls, X509_CRL_free);
    }
    ERR_clear_error();
    if (!cfg->check_revocation && cfg->crl_count == 0)
        return DCX_OK;
    X509_STORE_set_flags(store, X509_V_FLAG_CRL_CHECK | X509_V_FLAG_CRL_CHECK_ALL);
    if (!cfg->check_revocation)
        X509_STORE_set_verify_cb(store, tolerate_missing_crl);
    return DCX_OK;
}

int dcx_openssl_load_trust(dcx_ctx *ctx, const dcx_config *cfg, dcx_error *err)
{
    X509_STORE *store = SSL_CTX_get_cert_store(ctx->ssl_ctx);
    if (cfg->use_system_trust)
        X509_STORE_set_default_paths(store);
    if (cfg->trusted_dir && !X509_STORE_load_path(store, cfg->trusted_dir))
        return dcx_fail(err, DCX_E_CONFIG, "cannot read trusted certificates folder '%s'",
                        cfg->trusted_dir);
    if (add_to_store(store, cfg->trusted, cfg->trusted_count, "trusted", err) != DCX_OK)
        return err ? err->status : DCX_E_CONFIG;
    if (load_revocation(store, cfg, err) != DCX_OK)
        return err ? err->status : DCX_E_CONFIG;
    /* Without X509_V_FLAG_PARTIAL_CHAIN a store certificate that is not
     * self-signed is a link, never an anchor: intermediates can live here too. */
    return add_to_store(store, cfg->intermediates, cfg->intermediate_count, "intermediate", err);
}

/* ---- verification ---------------------------------------------------- */

static int reason_of_x509_error(int code)
{
    switch (code) {
    case X509_V_ERR_CERT_HAS_EXPIRED:
        return DCX_VR_EXPIRED;
    case X509_V_ERR_CERT_NOT_YET_VALID:
        return DCX_VR_NOT_YET_VALID;
    case X509_V_ERR_UNABLE_TO_GET_ISSUER_CERT:
    case X509_V_ERR_UNABLE_TO_GET_ISSUER_CERT_LOCALLY:
    case X509_V_ERR_UNABLE_TO_VERIFY_LEAF_SIGNATURE:
    case X509_V_ERR_DEPTH_ZERO_SELF_SIGNED_CERT:
    case X509_V_ERR_SELF_SIGNED_CERT_IN_CHAIN:
    case X509_V_ERR_CERT_UNTRUSTED:
        return DCX_VR_UNTRUSTED;
    case X509_V_ERR_HOSTNAME_MISMATCH:
    case X509_V_ERR_IP_ADDRESS_MISMATCH:
        return DCX_VR_HOSTNAME;
    case X509_V_ERR_CERT_REVOKED:
        return DCX_VR_REVOKED;
    case X509_V_ERR_UNABLE_TO_GET_CRL:
    case X509_V_ERR_CRL_HAS_EXPIRED:
    case X509_V_ERR_CRL_NOT_YET_VALID:
    case X509_V_ERR_UNABLE_TO_GET_CRL_ISSUER:
    case X509_V_ERR_CRL_SIGNATURE_FAILURE:
    case X509_V_ERR_UNABLE_TO_DECRYPT_CRL_SIGNATURE:
    case X509_V_ERR_ERROR_IN_CRL_LAST_UPDATE_FIELD:
    case X509_V_ERR_ERROR_IN_CRL_NEXT_UPDATE_FIELD:
    case X509_V_ERR_DIFFERENT_CRL_SCOPE:
    case X509_V_ERR_UNHANDLED_CRITICAL_CRL_EXTENSION:
    case X509_V_ERR_CRL_PATH_VALIDATION_ERROR:
    case X509_V_ERR_KEYUSAGE_NO_CRL_SIGN:
        return DCX_VR_REVOCATION;
    case X509_V_ERR_CERT_SIGNATURE_FAILURE:
        return DCX_VR_BAD_SIGNATURE;
    case X509_V_ERR_INVALID_PURPOSE:
    case X509_V_ERR_INVALID_CA:
    case X509_V_ERR_KEYUSAGE_NO_CERTSIGN:
        return DCX_VR_PURPOSE;
    default:
        return DCX_VR_OTHER;
    }
}

static void name_of(X509_NAME *name, char *out, size_t cap)
{
    BIO *bio = BIO_new(BIO_s_mem());
    out[0] = '\0';
    if (!bio)
        return;
    X509_NAME_print_ex(bio, name, 0, XN_FLAG_RFC2253);
    int n = BIO_read(bio, out, (int)cap - 1);
    out[n > 0 ? n : 0] = '\0';
    BIO_free(bio);
}

static void time_text(const ASN1_TIME *t, char *out, size_t cap)
{
    struct tm tm;
    if (t && ASN1_TIME_to_tm(t, &tm))
        strftime(out, cap, "%Y-%m-%d %H:%M:%S UTC", &tm);
    else
        snprintf(out, cap, "?");
}

/* RFC 5280 CRLReason, as written in a CRL entry. */
static const char *crl_reason_text(const X509_REVOKED *rev)
{
    static const char *const names[] = {
        "unspecified", "keyCompromise", "cACompromise", "affiliationChanged", "superseded",
        "cessationOfOperation", "certificateHold", "", "removeFromCRL", "privilegeWithdrawn",
        "aACompromise"};
    ASN1_ENUMERATED *e = X509_REVOKED_get_ext_d2i(rev, NID_crl_reason, NULL, NULL);
    long code = e ? ASN1_ENUMERATED_get(e) : -1;
    ASN1_ENUMERATED_free(e);
    return code >= 0 && code < (long)(sizeof(names) / sizeof(names[0])) ? names[code] : "";
}

/* Why revocation refused the chain's certificate at depth: which CRL said
 * what, and what to do.  OpenSSL forgets the CRL it used once verification
 * ends, so the store's CRLs from the certificate's issuer are looked at again. */
static void explain_revocation(peer_verdict *v, X509_STORE_CTX *sctx, int code, int depth)
{
    STACK_OF(X509) *chain = X509_STORE_CTX_get0_chain(sctx);
    X509 *cert = chain && depth >= 0 && depth < sk_X509_num(chain) ? sk_X509_value(chain, depth)
                                                                   : X509_STORE_CTX_get_current_cert(sctx);
    char issuer[256] = "", name[256] = "", thumb[41] = "", not_after[32], when[32] = "?";
    const char *why = "";
    if (!cert) {
        snprintf(v->detail, sizeof(v->detail), "%s",
                 X509_verify_cert_error_string(code));
        return;
    }
    name_of(X509_get_issuer_name(cert), issuer, sizeof(issuer));
    describe_cert(cert, name, sizeof(name), thumb, not_after, sizeof(not_after));
    STACK_OF(X509_CRL) *crls = X509_STORE_CTX_get1_crls(sctx, X509_get_issuer_name(cert));
    X509_CRL *newest = NULL;
    for (int i = 0; crls && i < sk_X509_CRL_num(crls); i++) {
        X509_CRL *crl = sk_X509_CRL_value(crls, i);
        X509_REVOKED *rev = NULL;
        if (code == X509_V_ERR_CERT_REVOKED && X509_CRL_get0_by_cert(crl, &rev, cert) == 1) {
            time_text(X509_REVOKED_get0_revocationDate(rev), when, sizeof(when));
            why = crl_reason_text(rev);
        }
        if (!newest || ASN1_TIME_compare(X509_CRL_get0_lastUpdate(crl),
                                         X509_CRL_get0_lastUpdate(newest)) > 0)
            newest = crl;
    }
    char *d = v->detail;
    size_t cap = sizeof(v->detail);
    switch (code) {
    case X509_V_ERR_CERT_REVOKED:
        if (depth == 0)
            snprintf(d, cap, "revoked on %s by '%s'%s%s%s; the peer needs a new certificate", when,
                     issuer, *why ? " (" : "", why, *why ? ")" : "");
        else
            snprintf(d, cap, "its CA certificate '%s' (thumbprint %s) was revoked on %s by "
                     "'%s'%s%s%s; the peer needs a new chain", name, thumb, when, issuer,
                     *why ? " (" : "", why, *why ? ")" : "");
        break;
    case X509_V_ERR_CRL_HAS_EXPIRED:
        time_text(newest ? X509_CRL_get0_nextUpdate(newest) : NULL, when, sizeof(when));
        snprintf(d, cap, "the CRL from '%s' expired on %s: import the CA's current CRL with "
                 "`dcxsec cert import FILE` (or give it in crl_files)", issuer, when);
        break;
    case X509_V_ERR_CRL_NOT_YET_VALID:
        time_text(newest ? X509_CRL_get0_lastUpdate(newest) : NULL, when, sizeof(when));
        snprintf(d, cap, "the CRL from '%s' is not valid before %s: check the clocks", issuer, when);
        break;
    case X509_V_ERR_UNABLE_TO_GET_CRL:
        snprintf(d, cap, "no current CRL from '%s'%s%s%s: import the CA's current CRL with "
                 "`dcxsec cert import FILE` (or give it in crl_files)", issuer,
                 depth ? " for its CA '" : "", depth ? name : "", depth ? "'" : "");
        break;
    default:
        snprintf(d, cap, "the CRL from '%s' cannot be used: %s", issuer,
                 X509_verify_cert_error_string(code));
    }
    sk_X509_CRL_pop_free(crls, X509_CRL_free);
}

static void explain_chain_failure(dcx_conn *c, peer_verdict *v, X509_STORE_CTX *sctx)
{
    int code = X509_STORE_CTX_get_error(sctx);
    int depth = X509_STORE_CTX_get_error_depth(sctx);
    X509 *bad = X509_STORE_CTX_get_current_cert(sctx);
    char name[256] = "";
    v->reason = reason_of_x509_error(code);
    switch (v->reason) {
    case DCX_VR_UNTRUSTED:
        if (code == X509_V_ERR_DEPTH_ZERO_SELF_SIGNED_CERT) {
            snprintf(v->detail, sizeof(v->detail),
                     "it is self-signed and not among the trusted certificates");
        } else {
            if (bad)
                name_of(X509_get_issuer_name(bad), name, sizeof(name));
            snprintf(v->detail, sizeof(v->detail), "its issuer '%s' is unknown",
                     name);
        }
        break;
    case DCX_VR_EXPIRED:
    case DCX_VR_NOT_YET_VALID:
        if (bad && depth > 0) { /* an issuer, not the leaf, is out of date */
            char thumb[41], not_after[32];
            describe_cert(bad, name, sizeof(name), thumb, not_after, sizeof(not_after));
            v->reason = DCX_VR_OTHER;
            snprintf(v->detail, sizeof(v->detail),
                     "issuing CA '%s' %s (valid until %s)", name,
                     code == X509_V_ERR_CERT_HAS_EXPIRED ? "has expired" : "is not yet valid",
                     not_after);
        } else if (bad) {
            struct tm tm;
            if (ASN1_TIME_to_tm(X509_get0_notBefore(bad), &tm))
                strftime(v->detail, sizeof(v->detail),
                         "valid from %Y-%m-%d %H:%M:%S UTC", &tm);
        }
        break;
    case DCX_VR_HOSTNAME:
        snprintf(v->detail, sizeof(v->detail), "%s", c->server_name ? c->server_name : "");
        break;
    case DCX_VR_REVOKED:
    case DCX_VR_REVOCATION:
        explain_revocation(v, sctx, code, depth);
        break;
    default:
        snprintf(v->detail, sizeof(v->detail), "%s (depth %d)",
                 X509_verify_cert_error_string(code), depth);
    }
}

/* Is the certificate's SHA-1 or SHA-256 among the accepted thumbprints now? */
static int thumbprint_accepted(dcx_ctx *ctx, X509 *cert)
{
    unsigned char sha1[EVP_MAX_MD_SIZE], sha256[EVP_MAX_MD_SIZE];
    unsigned int n1 = 0, n256 = 0;
    if (!X509_digest(cert, EVP_sha1(), sha1, &n1) || !X509_digest(cert, EVP_sha256(), sha256, &n256))
        return 0;
    pthread_mutex_lock(&ctx->lock);
    int ok = dcx_thumbs_match(&ctx->thumbs, sha1, sha256);
    pthread_mutex_unlock(&ctx->lock);
    return ok;
}

peer_verdict *dcx_openssl_verdict(dcx_conn *c)
{
    if (!c->verdict)
        c->verdict = calloc(1, sizeof(*c->verdict));
    return c->verdict;
}

/* Replaces OpenSSL's chain check, so that one place decides every method. */
int dcx_openssl_verify_peer(X509_STORE_CTX *sctx, void *arg)
{
    (void)arg;
    SSL *ssl = X509_STORE_CTX_get_ex_data(sctx, SSL_get_ex_data_X509_STORE_CTX_idx());
    dcx_conn *c = SSL_get_ex_data(ssl, dcx_openssl_conn_index);
    X509 *leaf = X509_STORE_CTX_get0_cert(sctx);
    peer_verdict *v = c ? dcx_openssl_verdict(c) : NULL;
    if (!v || !leaf)
        return 0;
    describe_cert(leaf, v->subject, sizeof(v->subject), v->thumbprint, v->not_after,
                  sizeof(v->not_after));
    switch (c->ctx->verify) {
    case DCX_VERIFY_NONE:
        return 1;
    case DCX_VERIFY_THUMBPRINT: {
        int ok = thumbprint_accepted(c->ctx, leaf);
        if (!ok) {
            v->reason = DCX_VR_THUMBPRINT;
            X509_STORE_CTX_set_error(sctx, X509_V_ERR_CERT_REJECTED); /* "bad certificate" */
        }
        return ok;
    }
    case DCX_VERIFY_TRUST_CHAIN:
    default:
        if (X509_verify_cert(sctx) == 1)
            return 1;
        explain_chain_failure(c, v, sctx);
        return 0;
    }
}

const char *dcx_openssl_method_name(dcx_verify v)
{
    return v == DCX_VERIFY_THUMBPRINT ? "THUMBPRINT" : v == DCX_VERIFY_NONE ? "NONE" : "TRUST_CHAIN";
}

/* A resumed session skips certificate verification: hold the peer's
 * certificate, kept in the session, to today's rules again. */
int dcx_openssl_recheck_resumed_peer(dcx_conn *c, dcx_error *err)
{
    X509 *peer = SSL_get0_peer_certificate(c->ssl);
    if (c->ctx->verify == DCX_VERIFY_NONE)
        return DCX_OK;
    if (!peer)
        return dcx_fail_verify(err, DCX_VR_NO_CERTIFICATE, dcx_openssl_method_name(c->ctx->verify), "");
    if (err)
        describe_cert(peer, err->subject, sizeof(err->subject), err->thumbprint, err->not_after,
                      sizeof(err->not_after));
    if (c->ctx->verify == DCX_VERIFY_THUMBPRINT)
        return thumbprint_accepted(c->ctx, peer)
                   ? DCX_OK : dcx_fail_verify(err, DCX_VR_THUMBPRINT, "THUMBPRINT", "");
    if (X509_cmp_current_time(X509_get0_notAfter(peer)) < 0)
        return dcx_fail_verify(err, DCX_VR_EXPIRED, "TRUST_CHAIN", "");
    return DCX_OK;
}
