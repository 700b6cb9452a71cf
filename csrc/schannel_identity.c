/*
 * schannel_identity.c - certificates and keys for the SChannel backend: PEM
 * and DER certificates into Crypt32 stores, a certificate described for
 * reasons (subject, thumbprint, expiry), and the local identity, either from
 * bytes (the private key, PEM or DER as PKCS#8, PKCS#1 or SEC1, imported into
 * a named CryptoAPI container for RSA or a CNG key for EC, and attached to its
 * certificate) or found by thumbprint in the My system store.
 */
#include "schannel_int.h"

#define ENC (X509_ASN_ENCODING | PKCS_7_ASN_ENCODING)

/* ---- certificates and keys ------------------------------------------- */

static const unsigned char *find_bytes(const unsigned char *p, size_t len, const char *needle)
{
    size_t n = strlen(needle);
    for (size_t i = 0; i + n <= len; i++)
        if (memcmp(p + i, needle, n) == 0)
            return p + i;
    return NULL;
}

/* The DER inside the next PEM block whose label is `label` (e.g. "CERTIFICATE").
 * *pos advances past it.  Returns a malloc'd buffer, or NULL when no block is left. */
static unsigned char *pem_next(const dcx_blob *b, size_t *pos, const char *label, DWORD *der_len)
{
    char begin[64], end[64];
    snprintf(begin, sizeof(begin), "-----BEGIN %s-----", label);
    snprintf(end, sizeof(end), "-----END %s-----", label);
    const unsigned char *start = find_bytes(b->data + *pos, b->len - *pos, begin);
    if (!start)
        return NULL;
    const unsigned char *stop = find_bytes(start, b->len - (size_t)(start - b->data), end);
    if (!stop)
        return NULL;
    stop += strlen(end);
    *pos = (size_t)(stop - b->data);
    DWORD n = 0;
    if (!CryptStringToBinaryA((const char *)start, (DWORD)(stop - start), CRYPT_STRING_BASE64HEADER,
                              NULL, &n, NULL, NULL))
        return NULL;
    unsigned char *der = malloc(n ? n : 1);
    if (der && !CryptStringToBinaryA((const char *)start, (DWORD)(stop - start),
                                     CRYPT_STRING_BASE64HEADER, der, &n, NULL, NULL)) {
        free(der);
        return NULL;
    }
    *der_len = n;
    return der;
}

static int is_pem(const dcx_blob *b)
{
    return find_bytes(b->data, b->len, "-----BEGIN") != NULL;
}

/* Adds every certificate of a blob (one DER, or PEM blocks) to store.  Returns
 * how many; *first gets the first one (caller frees) when first is not NULL. */
int sch_add_certificates(HCERTSTORE store, const dcx_blob *b, PCCERT_CONTEXT *first)
{
    int count = 0;
    if (first)
        *first = NULL;
    if (!b->len)
        return 0;
    if (!is_pem(b)) {
        PCCERT_CONTEXT added = NULL;
        if (CertAddEncodedCertificateToStore(store, X509_ASN_ENCODING, b->data, (DWORD)b->len,
                                             CERT_STORE_ADD_USE_EXISTING, first ? &added : NULL)) {
            if (first)
                *first = added;
            return 1;
        }
        return 0;
    }
    size_t pos = 0;
    DWORD n = 0;
    unsigned char *der;
    while ((der = pem_next(b, &pos, "CERTIFICATE", &n)) != NULL) {
        PCCERT_CONTEXT added = NULL;
        int want = first && !*first;
        if (CertAddEncodedCertificateToStore(store, X509_ASN_ENCODING, der, n,
                                             CERT_STORE_ADD_USE_EXISTING, want ? &added : NULL)) {
            count++;
            if (want)
                *first = added;
        }
        free(der);
    }
    return count;
}

/* Adds every CRL of a blob (one DER, or PEM "X509 CRL" blocks) to store.
 * Returns how many were taken. */
int sch_add_crls(HCERTSTORE store, const dcx_blob *b)
{
    if (!b->len)
        return 0;
    if (!is_pem(b))
        return CertAddEncodedCRLToStore(store, X509_ASN_ENCODING, b->data, (DWORD)b->len,
                                        CERT_STORE_ADD_USE_EXISTING, NULL) ? 1 : 0;
    int count = 0;
    size_t pos = 0;
    DWORD n = 0;
    unsigned char *der;
    while ((der = pem_next(b, &pos, "X509 CRL", &n)) != NULL) {
        if (CertAddEncodedCRLToStore(store, X509_ASN_ENCODING, der, n, CERT_STORE_ADD_USE_EXISTING,
                                     NULL))
            count++;
        free(der);
    }
    return count;
}

void sch_describe_cert(PCCERT_CONTEXT cert, char *subject, size_t subject_cap, char *thumb,
                       char *not_after, size_t not_after_cap)
{
    char name[512] = "";
    CertNameToStrA(X509_ASN_ENCODING, &cert->pCertInfo->Subject,
                   CERT_X500_NAME_STR | CERT_NAME_STR_REVERSE_FLAG, name, sizeof(name));
    /* RFC 2253 spelling ("CN=a,O=b"), as the OpenSSL backend shows names */
    size_t j = 0;
    for (size_t i = 0; name[i] && j + 1 < subject_cap; i++) {
        if (name[i] == ' ' && i > 0 && name[i - 1] == ',')
            continue;
        subject[j++] = name[i];
    }
    subject[j] = '\0';
    unsigned char sha1[DCX_SHA1_LEN];
    DWORD n = sizeof(sha1);
    if (CertGetCertificateContextProperty(cert, CERT_HASH_PROP_ID, sha1, &n) && n == DCX_SHA1_LEN)
        dcx_hex(sha1, DCX_SHA1_LEN, thumb);
    else
        snprintf(thumb, 2 * DCX_SHA1_LEN + 1, "?");
    SYSTEMTIME st;
    if (FileTimeToSystemTime(&cert->pCertInfo->NotAfter, &st))
        snprintf(not_after, not_after_cap, "%04u-%02u-%02u %02u:%02u:%02u UTC", st.wYear,
                 st.wMonth, st.wDay, st.wHour, st.wMinute, st.wSecond);
    else
        snprintf(not_after, not_after_cap, "?");
}


/* A minimal DER reader, enough to take PKCS#8 and SEC1 keys apart. */
typedef struct der {
    const unsigned char *p;
    size_t len;
} der;

static int der_next(der *in, unsigned char *tag, der *content)
{
    if (in->len < 2)
        return 0;
    size_t hdr = 2, n = in->p[1];
    if (n & 0x80) {
        size_t k = n & 0x7f;
        if (k == 0 || k > 4 || in->len < 2 + k)
            return 0;
        n = 0;
        for (size_t i = 0; i < k; i++)
            n = (n << 8) | in->p[2 + i];
        hdr += k;
    }
    if (in->len - hdr < n)
        return 0;
    *tag = in->p[0];
    content->p = in->p + hdr;
    content->len = n;
    in->p += hdr + n;
    in->len -= hdr + n;
    return 1;
}

static const unsigned char OID_RSA[] = {0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x01};
static const unsigned char OID_EC[] = {0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01};

enum key_kind { KEY_UNKNOWN, KEY_RSA, KEY_EC };

/* PKCS#8 PrivateKeyInfo -> the inner key (PKCS#1 or SEC1) and its kind. */
static int unwrap_pkcs8(const unsigned char *p, size_t len, der *inner, int *kind)
{
    der all = {p, len}, seq, item, alg, oid;
    unsigned char tag;
    if (!der_next(&all, &tag, &seq) || tag != 0x30)
        return 0;
    if (!der_next(&seq, &tag, &item) || tag != 0x02) /* version */
        return 0;
    if (!der_next(&seq, &tag, &alg) || tag != 0x30)
        return 0;
    if (!der_next(&alg, &tag, &oid) || tag != 0x06)
        return 0;
    if (!der_next(&seq, &tag, inner) || tag != 0x04)
        return 0;
    if (oid.len == sizeof(OID_RSA) && memcmp(oid.p, OID_RSA, oid.len) == 0)
        *kind = KEY_RSA;
    else if (oid.len == sizeof(OID_EC) && memcmp(oid.p, OID_EC, oid.len) == 0)
        *kind = KEY_EC;
    else
        *kind = KEY_UNKNOWN;
    return 1;
}

/* SEC1 ECPrivateKey -> the private scalar, and the public point when present. */
static int sec1_parts(der key, der *scalar, der *point)
{
    der seq, item, bits;
    unsigned char tag;
    point->p = NULL;
    point->len = 0;
    if (!der_next(&key, &tag, &seq) || tag != 0x30)
        return 0;
    if (!der_next(&seq, &tag, &item) || tag != 0x02)
        return 0;
    if (!der_next(&seq, &tag, scalar) || tag != 0x04)
        return 0;
    while (der_next(&seq, &tag, &item)) /* [0] parameters, [1] publicKey BIT STRING */
        if (tag == 0xa1 && der_next(&item, &tag, &bits) && tag == 0x03 && bits.len > 1) {
            point->p = bits.p + 1;
            point->len = bits.len - 1;
        }
    return 1;
}

/* The private key as DER of a known kind; fails with a reason.  A key taken
 * out of PEM is decoded into *out (*out_len bytes, key pointing into it),
 * which the caller wipes and frees. */
static int read_private_key(const dcx_config *cfg, unsigned char **out, size_t *out_len, der *key,
                            int *kind, dcx_error *err)
{
    const dcx_blob *b = &cfg->private_key;
    DWORD n = 0;
    size_t pos = 0;
    *out = NULL;
    *out_len = 0;
    if (is_pem(b)) {
        if (find_bytes(b->data, b->len, "BEGIN ENCRYPTED PRIVATE KEY") ||
            find_bytes(b->data, b->len, "Proc-Type: 4,ENCRYPTED"))
            return dcx_fail(err, DCX_E_CONFIG,
                            cfg->private_key_password
                                ? "the private key is encrypted, and the SChannel backend cannot "
                                  "decrypt PEM keys: import the certificate and key as PKCS#12 "
                                  "into the My store and use its thumbprint"
                                : "the private key is encrypted: give its password");
        if ((*out = pem_next(b, &pos, "RSA PRIVATE KEY", &n)) != NULL) {
            *out_len = n;
            key->p = *out, key->len = n, *kind = KEY_RSA;
            return DCX_OK;
        }
        pos = 0;
        if ((*out = pem_next(b, &pos, "EC PRIVATE KEY", &n)) != NULL) {
            *out_len = n;
            key->p = *out, key->len = n, *kind = KEY_EC;
            return DCX_OK;
        }
        pos = 0;
        if ((*out = pem_next(b, &pos, "PRIVATE KEY", &n)) != NULL) {
            *out_len = n;
            if (unwrap_pkcs8(*out, n, key, kind) && *kind != KEY_UNKNOWN)
                return DCX_OK;
        }
    } else if (unwrap_pkcs8(b->data, b->len, key, kind) && *kind != KEY_UNKNOWN) {
        return DCX_OK;
    } else {
        /* bare PKCS#1 or SEC1: SEQUENCE { INTEGER version, INTEGER n | OCTET STRING d } */
        der all = {b->data, b->len}, seq, item;
        unsigned char tag;
        if (der_next(&all, &tag, &seq) && tag == 0x30 && der_next(&seq, &tag, &item) &&
            tag == 0x02 && der_next(&seq, &tag, &item)) {
            key->p = b->data, key->len = b->len, *kind = tag == 0x04 ? KEY_EC : KEY_RSA;
            return DCX_OK;
        }
    }
    if (*out) {
        SecureZeroMemory(*out, *out_len);
        free(*out);
    }
    *out = NULL;
    *out_len = 0;
    return dcx_fail(err, DCX_E_CONFIG,
                    "the private key is not an RSA or EC key in PEM or DER (PKCS#8, PKCS#1 or SEC1)");
}

/* A container name no other context or process uses. */
static void new_container_name(dcx_ctx *ctx)
{
    static volatile LONG counter;
    LARGE_INTEGER t;
    QueryPerformanceCounter(&t);
    swprintf(ctx->key_container, sizeof(ctx->key_container) / sizeof(wchar_t),
             L"dcxsec-%lu-%ld-%llx", (unsigned long)GetCurrentProcessId(),
             (long)InterlockedIncrement(&counter), (unsigned long long)t.QuadPart);
}

/* RSA goes through CryptoAPI (what Wine's SChannel, too, can use); the key is
 * persisted in a named container, because SChannel cannot use ephemeral keys. */
static int import_rsa_key(dcx_ctx *ctx, der key, PCCERT_CONTEXT cert, dcx_error *err)
{
    BYTE *blob = NULL;
    DWORD blob_len = 0;
    HCRYPTPROV prov = 0;
    HCRYPTKEY hkey = 0;
    int rc = DCX_OK;
    if (!CryptDecodeObjectEx(ENC, PKCS_RSA_PRIVATE_KEY, key.p, (DWORD)key.len,
                             CRYPT_DECODE_ALLOC_FLAG, NULL, &blob, &blob_len))
        return dcx_fail(err, DCX_E_CONFIG, "the RSA private key cannot be decoded (%s)",
                        sch_status_name((SECURITY_STATUS)GetLastError()));
    ((BLOBHEADER *)blob)->aiKeyAlg = CALG_RSA_KEYX; /* TLS needs AT_KEYEXCHANGE */
    new_container_name(ctx);
    if (!CryptAcquireContextW(&prov, ctx->key_container, MS_ENH_RSA_AES_PROV_W, PROV_RSA_AES,
                              CRYPT_NEWKEYSET)) {
        rc = dcx_fail(err, DCX_E_CONFIG, "cannot create a key container for the private key (%s)",
                      sch_status_name((SECURITY_STATUS)GetLastError()));
        ctx->key_container[0] = 0;
        goto out;
    }
    /* Exportable: Wine's SChannel hands the key to GnuTLS by exporting it. */
    if (!CryptImportKey(prov, blob, blob_len, 0, CRYPT_EXPORTABLE, &hkey)) {
        rc = dcx_fail(err, DCX_E_CONFIG, "the RSA private key cannot be imported (%s)",
                      sch_status_name((SECURITY_STATUS)GetLastError()));
        goto out;
    }
    BYTE spki_buf[4096];
    DWORD spki_len = sizeof(spki_buf);
    if (!CryptExportPublicKeyInfo(prov, AT_KEYEXCHANGE, X509_ASN_ENCODING,
                                  (PCERT_PUBLIC_KEY_INFO)spki_buf, &spki_len) ||
        !CertComparePublicKeyInfo(X509_ASN_ENCODING, &cert->pCertInfo->SubjectPublicKeyInfo,
                                  (PCERT_PUBLIC_KEY_INFO)spki_buf)) {
        rc = dcx_fail(err, DCX_E_CONFIG,
                      "the private key does not belong to certificate '%s' (thumbprint %s)",
                      err ? err->subject : "", err ? err->thumbprint : "");
        goto out;
    }
    CRYPT_KEY_PROV_INFO info = {ctx->key_container, MS_ENH_RSA_AES_PROV_W, PROV_RSA_AES, 0, 0,
                                NULL, AT_KEYEXCHANGE};
    if (!CertSetCertificateContextProperty(cert, CERT_KEY_PROV_INFO_PROP_ID, 0, &info))
        rc = dcx_fail(err, DCX_E_CONFIG, "cannot attach the private key to its certificate (%s)",
                      sch_status_name((SECURITY_STATUS)GetLastError()));
out:
    if (hkey)
        CryptDestroyKey(hkey);
    if (prov)
        CryptReleaseContext(prov, 0);
    SecureZeroMemory(blob, blob_len); /* the key in the clear, as CryptoAPI's PRIVATEKEYBLOB */
    LocalFree(blob);
    return rc;
}

/* EC keys need CNG: a named key in the software key storage provider. */
static int import_ec_key(dcx_ctx *ctx, der key, PCCERT_CONTEXT cert, dcx_error *err)
{
    der scalar, point;
    const CRYPT_BIT_BLOB *pub = &cert->pCertInfo->SubjectPublicKeyInfo.PublicKey;
    if (!sec1_parts(key, &scalar, &point))
        return dcx_fail(err, DCX_E_CONFIG, "the EC private key cannot be decoded");
    /* the public point is 04 || X || Y; the certificate's must match the key's */
    size_t coord = pub->cbData ? (pub->cbData - 1) / 2 : 0;
    ULONG magic = coord == 32 ? BCRYPT_ECDSA_PRIVATE_P256_MAGIC
                : coord == 48 ? BCRYPT_ECDSA_PRIVATE_P384_MAGIC
                : coord == 66 ? BCRYPT_ECDSA_PRIVATE_P521_MAGIC : 0;
    if (!magic || pub->pbData[0] != 4 || scalar.len > coord ||
        (point.len && (point.len != pub->cbData || memcmp(point.p, pub->pbData, point.len) != 0)))
        return dcx_fail(err, DCX_E_CONFIG,
                        "the private key does not belong to certificate '%s' (thumbprint %s), or "
                        "its curve is not P-256, P-384 or P-521",
                        err ? err->subject : "", err ? err->thumbprint : "");
    size_t blob_len = sizeof(BCRYPT_ECCKEY_BLOB) + 3 * coord;
    unsigned char *blob = calloc(1, blob_len);
    if (!blob)
        return dcx_fail(err, DCX_E_NOMEM, "out of memory");
    BCRYPT_ECCKEY_BLOB *h = (BCRYPT_ECCKEY_BLOB *)blob;
    h->dwMagic = magic;
    h->cbKey = (ULONG)coord;
    memcpy(blob + sizeof(*h), pub->pbData + 1, 2 * coord);
    memcpy(blob + sizeof(*h) + 3 * coord - scalar.len, scalar.p, scalar.len);

    NCRYPT_PROV_HANDLE prov = 0;
    NCRYPT_KEY_HANDLE hkey = 0;
    int rc = DCX_OK;
    new_container_name(ctx);
    NCryptBuffer name = {(ULONG)((wcslen(ctx->key_container) + 1) * sizeof(wchar_t)),
                         NCRYPTBUFFER_PKCS_KEY_NAME, ctx->key_container};
    NCryptBufferDesc params = {NCRYPTBUFFER_VERSION, 1, &name};
    SECURITY_STATUS s = NCryptOpenStorageProvider(&prov, MS_KEY_STORAGE_PROVIDER, 0);
    if (s == ERROR_SUCCESS)
        s = NCryptImportKey(prov, 0, BCRYPT_ECCPRIVATE_BLOB, &params, &hkey, blob, (DWORD)blob_len,
                            NCRYPT_OVERWRITE_KEY_FLAG);
    SecureZeroMemory(blob, blob_len);
    free(blob);
    if (s != ERROR_SUCCESS) {
        ctx->key_container[0] = 0;
        rc = dcx_fail(err, s == NTE_NOT_SUPPORTED ? DCX_E_UNSUPPORTED : DCX_E_CONFIG,
                      "the EC private key cannot be imported into the key storage provider (%s "
                      "0x%08lX): this platform cannot use it for TLS, use an RSA key",
                      sch_status_name(s), (unsigned long)s);
        goto out;
    }
    ctx->key_is_cng = 1;
    CRYPT_KEY_PROV_INFO info = {ctx->key_container, MS_KEY_STORAGE_PROVIDER, 0, 0, 0, NULL, 0};
    if (!CertSetCertificateContextProperty(cert, CERT_KEY_PROV_INFO_PROP_ID, 0, &info))
        rc = dcx_fail(err, DCX_E_CONFIG, "cannot attach the private key to its certificate (%s)",
                      sch_status_name((SECURITY_STATUS)GetLastError()));
out:
    if (hkey)
        NCryptFreeObject(hkey);
    if (prov)
        NCryptFreeObject(prov);
    return rc;
}

void sch_delete_key_container(dcx_ctx *ctx)
{
    if (!ctx->key_container[0])
        return;
    if (ctx->key_is_cng) {
        NCRYPT_PROV_HANDLE prov = 0;
        NCRYPT_KEY_HANDLE key = 0;
        if (NCryptOpenStorageProvider(&prov, MS_KEY_STORAGE_PROVIDER, 0) == ERROR_SUCCESS) {
            if (NCryptOpenKey(prov, &key, ctx->key_container, 0, 0) == ERROR_SUCCESS)
                NCryptDeleteKey(key, 0); /* frees the handle too */
            NCryptFreeObject(prov);
        }
    } else {
        HCRYPTPROV prov;
        CryptAcquireContextW(&prov, ctx->key_container, MS_ENH_RSA_AES_PROV_W, PROV_RSA_AES,
                             CRYPT_DELETEKEYSET);
    }
    ctx->key_container[0] = 0;
}

int sch_identity_from_bytes(dcx_ctx *ctx, const dcx_config *cfg, dcx_error *err)
{
    PCCERT_CONTEXT leaf = NULL;
    ctx->identity_store = CertOpenStore(CERT_STORE_PROV_MEMORY, 0, 0, 0, NULL);
    if (!ctx->identity_store)
        return dcx_fail(err, DCX_E_NOMEM, "cannot create a certificate store");
    /* the intermediates live beside the leaf, where SChannel looks for its chain */
    if (sch_add_certificates(ctx->identity_store, &cfg->certificate_chain, &leaf) == 0 || !leaf)
        return dcx_fail(err, DCX_E_CONFIG,
                        "the certificate is not an X.509 certificate in PEM or DER");
    ctx->identity = leaf;
    if (err)
        sch_describe_cert(leaf, err->subject, sizeof(err->subject), err->thumbprint,
                          err->not_after, sizeof(err->not_after));
    if (!cfg->private_key.len)
        return dcx_fail(err, DCX_E_CONFIG, "certificate '%s' was given without its private key",
                        err ? err->subject : "");
    unsigned char *buf;
    size_t buf_len;
    der key;
    int kind = KEY_UNKNOWN;
    int rc = read_private_key(cfg, &buf, &buf_len, &key, &kind, err);
    if (rc == DCX_OK)
        rc = kind == KEY_RSA ? import_rsa_key(ctx, key, leaf, err)
                             : import_ec_key(ctx, key, leaf, err);
    if (buf) { /* all of it: a PKCS#8 key lies inside, not at its start */
        SecureZeroMemory(buf, buf_len);
        free(buf);
    }
    return rc;
}

static const char *store_label(dcx_store s)
{
    return s == DCX_STORE_LOCAL_COMPUTER ? "LocalMachine" : "CurrentUser";
}

int sch_identity_from_store(dcx_ctx *ctx, const dcx_config *cfg, dcx_error *err)
{
    char thumb[2 * DCX_SHA1_LEN + 1];
    dcx_hex(cfg->identity_thumbprint, DCX_SHA1_LEN, thumb);
    DWORD where = cfg->cert_store == DCX_STORE_LOCAL_COMPUTER ? CERT_SYSTEM_STORE_LOCAL_MACHINE
                                                               : CERT_SYSTEM_STORE_CURRENT_USER;
    HCERTSTORE my = CertOpenStore(CERT_STORE_PROV_SYSTEM_W, 0, 0,
                                  where | CERT_STORE_OPEN_EXISTING_FLAG | CERT_STORE_READONLY_FLAG,
                                  L"MY");
    if (!my)
        return dcx_fail(err, DCX_E_CONFIG, "cannot open the Cert:\\%s\\My store (%s)",
                        store_label(cfg->cert_store),
                        sch_status_name((SECURITY_STATUS)GetLastError()));
    CRYPT_HASH_BLOB hash = {DCX_SHA1_LEN, (BYTE *)cfg->identity_thumbprint};
    ctx->identity = CertFindCertificateInStore(my, X509_ASN_ENCODING, 0, CERT_FIND_SHA1_HASH,
                                               &hash, NULL);
    CertCloseStore(my, 0); /* the found context keeps what it needs */
    if (!ctx->identity)
        return dcx_fail(err, DCX_E_CONFIG,
                        "no certificate with thumbprint %s in Cert:\\%s\\My: import it there "
                        "with its private key, or check the thumbprint and the store location",
                        thumb, store_label(cfg->cert_store));
    if (err)
        sch_describe_cert(ctx->identity, err->subject, sizeof(err->subject), err->thumbprint,
                          err->not_after, sizeof(err->not_after));
    DWORD n = 0;
    if (!CertGetCertificateContextProperty(ctx->identity, CERT_KEY_PROV_INFO_PROP_ID, NULL, &n))
        return dcx_fail(err, DCX_E_CONFIG,
                        "certificate '%s' (thumbprint %s) in Cert:\\%s\\My has no private key: "
                        "import it with its key (PKCS#12)",
                        err ? err->subject : "", thumb, store_label(cfg->cert_store));
    return DCX_OK;
}
