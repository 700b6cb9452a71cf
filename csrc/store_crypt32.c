/*
 * store_crypt32.c - dcxstore.h on the Windows system certificate stores.
 *
 * Cert:\CurrentUser\<store> and Cert:\LocalMachine\<store> opened with
 * CertOpenStore(CERT_STORE_PROV_SYSTEM_W); keys of imported PKCS#12 files
 * stay in the scope's key storage, linked to their certificate by
 * CERT_KEY_PROV_INFO_PROP_ID, which is what SChannel (schannel_identity.c)
 * follows when the identity is given by thumbprint.
 */
#ifndef _WIN32_WINNT
#define _WIN32_WINNT 0x0A00
#endif

#include "dcxstore.h"
#include "dcxtls_common.h"

#include <windows.h>
#include <wincrypt.h>
#include <ncrypt.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <wchar.h>

#ifndef HRESULT_FROM_WIN32
#define HRESULT_FROM_WIN32(x) ((HRESULT)(x) <= 0 ? (HRESULT)(x) : (HRESULT)(((x)&0x0000FFFF) | (7 << 16) | 0x80000000))
#endif
#define WIN32_HR(code) ((DWORD)HRESULT_FROM_WIN32(code))

struct dcx_store_list {
    dcx_store_entry *items;
    size_t count;
};

/* ---- names and messages ------------------------------------------------ */

/* The system store name of a logical store, and its canonical spelling. */
static const wchar_t *logical_name(const char *logical, const char **label)
{
    static const struct {
        const char *label;
        const wchar_t *name;
    } names[] = {{"My", L"MY"}, {"Root", L"ROOT"}, {"CA", L"CA"}};
    for (size_t i = 0; logical && i < sizeof(names) / sizeof(names[0]); i++)
        if (_stricmp(logical, names[i].label) == 0) {
            *label = names[i].label;
            return names[i].name;
        }
    return NULL;
}

static int unknown_logical(const char *logical, dcx_error *err)
{
    return dcx_fail(err, DCX_E_CONFIG, "unknown logical store '%s': use My, Root or CA",
                    logical ? logical : "(none)");
}

static const char *scope_label(dcx_store scope)
{
    return scope == DCX_STORE_LOCAL_COMPUTER ? "LocalMachine" : "CurrentUser";
}

static DWORD scope_flag(dcx_store scope)
{
    return scope == DCX_STORE_LOCAL_COMPUTER ? CERT_SYSTEM_STORE_LOCAL_MACHINE
                                             : CERT_SYSTEM_STORE_CURRENT_USER;
}

/* The system's words for a status code ("Access is denied"), or "". */
static void code_text(DWORD code, char *out, size_t cap)
{
    out[0] = '\0';
    if (!FormatMessageA(FORMAT_MESSAGE_FROM_SYSTEM | FORMAT_MESSAGE_IGNORE_INSERTS, NULL, code, 0,
                        out, (DWORD)cap, NULL))
        out[0] = '\0';
    size_t n = strlen(out);
    while (n && (out[n - 1] == '\r' || out[n - 1] == '\n' || out[n - 1] == '.' || out[n - 1] == ' '))
        out[--n] = '\0';
}

/* A Crypt32 failure while `doing` (e.g. "adding a certificate to") a store,
 * told for a person: what failed, and what to do about it. */
static int store_failure(dcx_error *err, DWORD code, dcx_store scope, const char *label,
                         const char *doing)
{
    char where[64], text[256];
    snprintf(where, sizeof(where), "Cert:\\%s\\%s", scope_label(scope), label);
    code_text(code, text, sizeof(text));
    if (code == ERROR_ACCESS_DENIED || code == WIN32_HR(ERROR_ACCESS_DENIED)) {
        if (scope == DCX_STORE_LOCAL_COMPUTER)
            return dcx_fail(err, DCX_E_CONFIG,
                            "access denied %s %s: the LocalMachine stores can be changed by an "
                            "administrator only; run as administrator, or use CURRENT_USER",
                            doing, where);
        return dcx_fail(err, DCX_E_CONFIG,
                        "access denied %s %s: this account may not change its own store "
                        "(system policy?); ask an administrator", doing, where);
    }
    if (code == ERROR_CANCELLED || code == WIN32_HR(ERROR_CANCELLED))
        return dcx_fail(err, DCX_E_CONFIG,
                        "Windows asked to confirm %s %s and it was declined (or no one could "
                        "answer, as in a service): confirm the dialog, or use LOCAL_MACHINE as "
                        "administrator, where Windows does not ask", doing, where);
    if (code == (DWORD)NTE_PERM)
        return dcx_fail(err, DCX_E_CONFIG,
                        "the key storage refused %s %s (NTE_PERM): the private key is not "
                        "accessible to this account; run as the account that owns it, or as "
                        "administrator for LocalMachine", doing, where);
    if (code == ERROR_NOT_ENOUGH_MEMORY || code == (DWORD)E_OUTOFMEMORY)
        return dcx_fail(err, DCX_E_NOMEM, "out of memory %s %s", doing, where);
    return dcx_fail(err, DCX_E_CONFIG, "%s %s failed: %s (0x%08lX)", doing, where,
                    text[0] ? text : "unknown error", (unsigned long)code);
}

static int not_found(dcx_error *err, dcx_store scope, const char *label,
                     const unsigned char *thumbprint)
{
    char hex[2 * DCX_THUMBPRINT_LEN + 1];
    dcx_hex(thumbprint, DCX_THUMBPRINT_LEN, hex);
    return dcx_fail(err, DCX_E_CONFIG,
                    "no certificate with thumbprint %s in Cert:\\%s\\%s: check the thumbprint "
                    "(dcxsec cert list) and the store location", hex, scope_label(scope), label);
}

/* ---- stores and certificates ------------------------------------------- */

/* Open a logical store.  For reading, a store that does not exist yet sets
 * *missing and returns NULL without an error; for writing it is created. */
static HCERTSTORE open_store(dcx_store scope, const wchar_t *name, const char *label, int write,
                             int *missing, dcx_error *err)
{
    DWORD flags = scope_flag(scope) | CERT_STORE_OPEN_EXISTING_FLAG;
    if (!write)
        flags |= CERT_STORE_READONLY_FLAG;
    *missing = 0;
    HCERTSTORE store = CertOpenStore(CERT_STORE_PROV_SYSTEM_W, 0, 0, flags, name);
    DWORD code = store ? 0 : GetLastError();
    int absent = code == ERROR_FILE_NOT_FOUND || code == WIN32_HR(ERROR_FILE_NOT_FOUND);
    if (!store && absent && write) {
        store = CertOpenStore(CERT_STORE_PROV_SYSTEM_W, 0, 0, scope_flag(scope), name);
        code = store ? 0 : GetLastError();
        absent = 0;
    }
    if (store)
        return store;
    if (absent) {
        *missing = 1;
        return NULL;
    }
    store_failure(err, code, scope, label, write ? "opening for changes" : "opening");
    return NULL;
}

static PCCERT_CONTEXT find_sha1(HCERTSTORE store, const unsigned char *thumbprint)
{
    CRYPT_HASH_BLOB hash = {DCX_THUMBPRINT_LEN, (BYTE *)thumbprint};
    return CertFindCertificateInStore(store, X509_ASN_ENCODING, 0, CERT_FIND_SHA1_HASH, &hash,
                                      NULL);
}

static int sha1_of(PCCERT_CONTEXT cert, unsigned char *out)
{
    DWORD n = DCX_THUMBPRINT_LEN;
    return CertGetCertificateContextProperty(cert, CERT_HASH_PROP_ID, out, &n) &&
           n == DCX_THUMBPRINT_LEN;
}

/* A private key is attached: where to find it (CryptoAPI container or CNG
 * key name), an open CryptoAPI context, or an open NCrypt key. */
static int has_private_key(PCCERT_CONTEXT cert)
{
    static const DWORD props[] = {CERT_KEY_PROV_INFO_PROP_ID, CERT_KEY_CONTEXT_PROP_ID,
                                  CERT_NCRYPT_KEY_HANDLE_PROP_ID};
    for (size_t i = 0; i < sizeof(props) / sizeof(props[0]); i++) {
        DWORD n = 0;
        if (CertGetCertificateContextProperty(cert, props[i], NULL, &n))
            return 1;
    }
    return 0;
}

/* Where the certificate's key lives (malloc'd), or NULL. */
static CRYPT_KEY_PROV_INFO *key_info(PCCERT_CONTEXT cert)
{
    DWORD n = 0;
    if (!CertGetCertificateContextProperty(cert, CERT_KEY_PROV_INFO_PROP_ID, NULL, &n))
        return NULL;
    CRYPT_KEY_PROV_INFO *info = malloc(n);
    if (info && !CertGetCertificateContextProperty(cert, CERT_KEY_PROV_INFO_PROP_ID, info, &n)) {
        free(info);
        return NULL;
    }
    return info;
}

static int same_key(const CRYPT_KEY_PROV_INFO *a, const CRYPT_KEY_PROV_INFO *b)
{
    return a->pwszContainerName && b->pwszContainerName &&
           _wcsicmp(a->pwszContainerName, b->pwszContainerName) == 0 &&
           a->dwProvType == b->dwProvType &&
           (a->dwFlags & CRYPT_MACHINE_KEYSET) == (b->dwFlags & CRYPT_MACHINE_KEYSET) &&
           ((!a->pwszProvName && !b->pwszProvName) ||
            (a->pwszProvName && b->pwszProvName && _wcsicmp(a->pwszProvName, b->pwszProvName) == 0));
}

/* Delete a key container (CryptoAPI) or a persisted key (CNG); best effort. */
static void delete_key(const CRYPT_KEY_PROV_INFO *info)
{
    int machine = (info->dwFlags & CRYPT_MACHINE_KEYSET) != 0;
    if (!info->pwszContainerName || !info->pwszContainerName[0])
        return;
    if (info->dwProvType) {
        HCRYPTPROV prov;
        CryptAcquireContextW(&prov, info->pwszContainerName, info->pwszProvName, info->dwProvType,
                             CRYPT_DELETEKEYSET | CRYPT_SILENT | (machine ? CRYPT_MACHINE_KEYSET : 0));
        return;
    }
    NCRYPT_PROV_HANDLE prov = 0;
    NCRYPT_KEY_HANDLE key = 0;
    if (NCryptOpenStorageProvider(&prov, info->pwszProvName, 0) != ERROR_SUCCESS)
        return;
    if (NCryptOpenKey(prov, &key, info->pwszContainerName, info->dwKeySpec,
                      NCRYPT_SILENT_FLAG | (machine ? NCRYPT_MACHINE_KEY_FLAG : 0)) == ERROR_SUCCESS)
        NCryptDeleteKey(key, 0); /* frees the handle too */
    NCryptFreeObject(prov);
}

/* Another certificate in My of the scope still uses this key. */
static int key_in_use(dcx_store scope, const CRYPT_KEY_PROV_INFO *info)
{
    int missing, used = 0;
    HCERTSTORE my = open_store(scope, L"MY", "My", 0, &missing, NULL);
    PCCERT_CONTEXT cert = NULL;
    if (!my)
        return missing ? 0 : 1; /* cannot tell: keep the key */
    while (!used && (cert = CertEnumCertificatesInStore(my, cert)) != NULL) {
        CRYPT_KEY_PROV_INFO *other = key_info(cert);
        used = other && same_key(info, other);
        free(other);
    }
    if (cert)
        CertFreeCertificateContext(cert);
    CertCloseStore(my, 0);
    return used;
}

/* Wine's PFXImportCertStore puts every key into the provider's default
 * container, so the next import overwrites it; Windows makes a fresh
 * container per key.  A key found in the default container moves to one of
 * its own, named after its certificate.  It needs the key exportable; when
 * the move cannot be made the key stays where it is. */
static void own_container(PCCERT_CONTEXT cert, const char *thumb_hex, int exportable)
{
    CRYPT_KEY_PROV_INFO *info = key_info(cert);
    HCRYPTPROV def = 0, src = 0, dst = 0;
    HCRYPTKEY key = 0, moved = 0;
    BYTE *blob = NULL;
    DWORD blob_len = 0;
    if (!info || !info->dwProvType || !info->pwszContainerName)
        goto out;
    DWORD machine = info->dwFlags & CRYPT_MACHINE_KEYSET;
    char def_name[256];
    wchar_t def_wide[256];
    DWORD n = sizeof(def_name);
    if (!CryptAcquireContextW(&def, NULL, info->pwszProvName, info->dwProvType,
                              machine | CRYPT_SILENT) ||
        !CryptGetProvParam(def, PP_CONTAINER, (BYTE *)def_name, &n, 0) ||
        !MultiByteToWideChar(CP_ACP, 0, def_name, -1, def_wide, 256) ||
        _wcsicmp(def_wide, info->pwszContainerName) != 0)
        goto out;
    if (!CryptAcquireContextW(&src, info->pwszContainerName, info->pwszProvName, info->dwProvType,
                              machine | CRYPT_SILENT))
        goto out;
    DWORD spec = info->dwKeySpec;
    if (!CryptGetUserKey(src, spec, &key)) {
        spec = AT_KEYEXCHANGE;
        if (!CryptGetUserKey(src, spec, &key)) {
            spec = AT_SIGNATURE;
            if (!CryptGetUserKey(src, spec, &key))
                goto out;
        }
    }
    if (!CryptExportKey(key, 0, PRIVATEKEYBLOB, 0, NULL, &blob_len) || !(blob = malloc(blob_len)) ||
        !CryptExportKey(key, 0, PRIVATEKEYBLOB, 0, blob, &blob_len))
        goto out;
    wchar_t name[64];
    swprintf(name, sizeof(name) / sizeof(name[0]), L"dcxsec-%hs", thumb_hex);
    if (!CryptAcquireContextW(&dst, name, info->pwszProvName, info->dwProvType,
                              CRYPT_NEWKEYSET | machine | CRYPT_SILENT) &&
        !CryptAcquireContextW(&dst, name, info->pwszProvName, info->dwProvType,
                              machine | CRYPT_SILENT))
        goto out;
    if (!CryptImportKey(dst, blob, blob_len, 0, exportable ? CRYPT_EXPORTABLE : 0, &moved))
        goto out;
    CRYPT_KEY_PROV_INFO here = *info;
    here.pwszContainerName = name;
    if (!CertSetCertificateContextProperty(cert, CERT_KEY_PROV_INFO_PROP_ID, 0, &here))
        goto out;
    CryptReleaseContext(src, 0);
    src = 0;
    delete_key(info); /* the default container held this key only since the import */
out:
    if (blob) {
        SecureZeroMemory(blob, blob_len);
        free(blob);
    }
    if (moved)
        CryptDestroyKey(moved);
    if (key)
        CryptDestroyKey(key);
    if (dst)
        CryptReleaseContext(dst, 0);
    if (src)
        CryptReleaseContext(src, 0);
    if (def)
        CryptReleaseContext(def, 0);
    free(info);
}

/* ---- the API -------------------------------------------------------------- */

dcx_store_list *dcx_store_list_open(dcx_store scope, const char *logical, dcx_error *err)
{
    const char *label;
    const wchar_t *name = logical_name(logical, &label);
    dcx_error_clear(err);
    if (!name) {
        unknown_logical(logical, err);
        return NULL;
    }
    dcx_store_list *list = calloc(1, sizeof(*list));
    if (!list) {
        dcx_fail(err, DCX_E_NOMEM, "out of memory");
        return NULL;
    }
    int missing;
    HCERTSTORE store = open_store(scope, name, label, 0, &missing, err);
    if (!store) {
        if (missing)
            return list; /* nothing was ever put there */
        free(list);
        return NULL;
    }
    size_t cap = 0;
    PCCERT_CONTEXT cert = NULL;
    while ((cert = CertEnumCertificatesInStore(store, cert)) != NULL) {
        if (list->count == cap) {
            size_t more = cap ? 2 * cap : 16;
            dcx_store_entry *items = realloc(list->items, more * sizeof(*items));
            if (!items)
                break;
            list->items = items;
            cap = more;
        }
        dcx_store_entry *e = &list->items[list->count];
        unsigned char *der = malloc(cert->cbCertEncoded);
        memset(e, 0, sizeof(*e));
        if (!der || !sha1_of(cert, e->thumbprint)) {
            free(der);
            continue;
        }
        memcpy(der, cert->pbCertEncoded, cert->cbCertEncoded);
        e->der = der;
        e->der_len = cert->cbCertEncoded;
        dcx_hex(e->thumbprint, DCX_THUMBPRINT_LEN, e->thumbprint_hex);
        e->has_key = has_private_key(cert);
        list->count++;
    }
    if (cert) { /* stopped early: out of memory */
        CertFreeCertificateContext(cert);
        CertCloseStore(store, 0);
        dcx_store_list_free(list);
        dcx_fail(err, DCX_E_NOMEM, "out of memory reading Cert:\\%s\\%s", scope_label(scope), label);
        return NULL;
    }
    CertCloseStore(store, 0);
    return list;
}

size_t dcx_store_list_count(const dcx_store_list *list)
{
    return list ? list->count : 0;
}

const dcx_store_entry *dcx_store_list_get(const dcx_store_list *list, size_t i)
{
    return list && i < list->count ? &list->items[i] : NULL;
}

void dcx_store_list_free(dcx_store_list *list)
{
    if (!list)
        return;
    for (size_t i = 0; i < list->count; i++)
        free((void *)list->items[i].der);
    free(list->items);
    free(list);
}

int dcx_store_add(dcx_store scope, const char *logical, dcx_blob der, unsigned char *thumbprint,
                  dcx_error *err)
{
    const char *label;
    const wchar_t *name = logical_name(logical, &label);
    dcx_error_clear(err);
    if (!name)
        return unknown_logical(logical, err);
    PCCERT_CONTEXT cert = der.len ? CertCreateCertificateContext(X509_ASN_ENCODING, der.data,
                                                                 (DWORD)der.len)
                                  : NULL;
    if (!cert) {
        char text[256];
        code_text(GetLastError(), text, sizeof(text));
        return dcx_fail(err, DCX_E_CONFIG, "the certificate is not an X.509 certificate in DER%s%s",
                        text[0] ? ": " : "", text);
    }
    int missing, rc = DCX_OK;
    HCERTSTORE store = open_store(scope, name, label, 1, &missing, err);
    if (!store) {
        rc = err ? err->status : DCX_E_CONFIG;
    } else {
        if (!CertAddCertificateContextToStore(store, cert, CERT_STORE_ADD_USE_EXISTING, NULL))
            rc = store_failure(err, GetLastError(), scope, label, "adding a certificate to");
        CertCloseStore(store, 0);
    }
    if (rc == DCX_OK && thumbprint)
        sha1_of(cert, thumbprint);
    CertFreeCertificateContext(cert);
    return rc;
}

/* Why PFXImportCertStore refused a file. */
static int pfx_failure(DWORD code, dcx_store scope, dcx_error *err)
{
    if (code == ERROR_INVALID_PASSWORD || code == WIN32_HR(ERROR_INVALID_PASSWORD))
        return dcx_fail(err, DCX_E_CONFIG,
                        "cannot open the PKCS#12 file: wrong password; give the password it "
                        "was exported with");
    if (code == 0) /* Wine says nothing more when decryption fails */
        return dcx_fail(err, DCX_E_CONFIG,
                        "cannot open the PKCS#12 file: wrong password, or the file is damaged; "
                        "give the password it was exported with");
    if (code == (DWORD)NTE_BAD_DATA || code == (DWORD)CRYPT_E_BAD_ENCODE ||
        code == (DWORD)CRYPT_E_ASN1_BADTAG || code == (DWORD)NTE_BAD_ALGID ||
        code == (DWORD)CRYPT_E_UNKNOWN_ALGO)
        return dcx_fail(err, DCX_E_CONFIG,
                        "cannot read the PKCS#12 file (0x%08lX): it is damaged, or encrypted "
                        "with an algorithm this Windows does not know; export it again with "
                        "TripleDES-SHA1 or AES256-SHA256", (unsigned long)code);
    if (code == (DWORD)NTE_EXISTS || code == WIN32_HR(ERROR_FILE_EXISTS))
        return dcx_fail(err, DCX_E_CONFIG,
                        "the private key of the PKCS#12 file already exists in the key storage "
                        "of %s: remove the old certificate and its key first", scope_label(scope));
    return store_failure(err, code, scope, "My", "importing a PKCS#12 file into");
}

int dcx_store_import_pfx(dcx_store scope, dcx_blob pfx, const char *password, int exportable,
                         unsigned char *thumbprint, dcx_error *err)
{
    dcx_error_clear(err);
    CRYPT_DATA_BLOB blob = {(DWORD)pfx.len, (BYTE *)pfx.data};
    if (!pfx.len || !PFXIsPFXBlob(&blob))
        return dcx_fail(err, DCX_E_CONFIG, "the file is not a PKCS#12 (.pfx, .p12) file");
    wchar_t *pw = NULL;
    if (password) {
        int n = MultiByteToWideChar(CP_UTF8, 0, password, -1, NULL, 0);
        pw = n > 0 ? calloc((size_t)n, sizeof(wchar_t)) : NULL;
        if (!pw)
            return dcx_fail(err, DCX_E_CONFIG, "the PKCS#12 password is not valid UTF-8");
        MultiByteToWideChar(CP_UTF8, 0, password, -1, pw, n);
    }
    DWORD flags = (scope == DCX_STORE_LOCAL_COMPUTER ? CRYPT_MACHINE_KEYSET : CRYPT_USER_KEYSET) |
                  (exportable ? CRYPT_EXPORTABLE : 0);
    SetLastError(0);
    HCERTSTORE tmp = PFXImportCertStore(&blob, pw, flags);
    DWORD code = tmp ? 0 : GetLastError();
    if (pw) {
        SecureZeroMemory(pw, wcslen(pw) * sizeof(wchar_t));
        free(pw);
    }
    if (!tmp)
        return pfx_failure(code, scope, err);

    int rc = DCX_OK, missing;
    PCCERT_CONTEXT cert = NULL, identity = NULL;
    while ((cert = CertEnumCertificatesInStore(tmp, cert)) != NULL)
        if (!identity && has_private_key(cert))
            identity = CertDuplicateCertificateContext(cert);
    if (!identity) {
        rc = dcx_fail(err, DCX_E_CONFIG,
                      "the PKCS#12 file holds no certificate with its private key: import a "
                      "certificate without key into Root or CA instead");
        goto out;
    }
    unsigned char sha1[DCX_THUMBPRINT_LEN];
    char hex[2 * DCX_THUMBPRINT_LEN + 1];
    if (!sha1_of(identity, sha1)) {
        rc = dcx_fail(err, DCX_E_CONFIG, "cannot compute the thumbprint of the PKCS#12 certificate");
        goto out;
    }
    dcx_hex(sha1, DCX_THUMBPRINT_LEN, hex);
    own_container(identity, hex, exportable);
    HCERTSTORE my = open_store(scope, L"MY", "My", 1, &missing, err);
    if (!my) {
        rc = err ? err->status : DCX_E_CONFIG;
    } else {
        if (!CertAddCertificateContextToStore(my, identity, CERT_STORE_ADD_REPLACE_EXISTING, NULL))
            rc = store_failure(err, GetLastError(), scope, "My", "adding the certificate to");
        CertCloseStore(my, 0);
    }
    if (rc != DCX_OK) { /* nothing refers to the key any more */
        CRYPT_KEY_PROV_INFO *info = key_info(identity);
        if (info && !key_in_use(scope, info))
            delete_key(info);
        free(info);
        goto out;
    }
    /* the chain beside it: intermediates that may complete chains, not trusted */
    HCERTSTORE ca = NULL;
    while ((cert = CertEnumCertificatesInStore(tmp, cert)) != NULL) {
        if (CertCompareCertificate(X509_ASN_ENCODING, cert->pCertInfo, identity->pCertInfo))
            continue;
        if (!ca && !(ca = open_store(scope, L"CA", "CA", 1, &missing, NULL)))
            break;
        CertAddCertificateContextToStore(ca, cert, CERT_STORE_ADD_USE_EXISTING, NULL);
    }
    if (cert)
        CertFreeCertificateContext(cert);
    if (ca)
        CertCloseStore(ca, 0);
    if (thumbprint)
        memcpy(thumbprint, sha1, DCX_THUMBPRINT_LEN);
out:
    if (identity)
        CertFreeCertificateContext(identity);
    CertCloseStore(tmp, 0);
    return rc;
}

long dcx_store_export(dcx_store scope, const char *logical, const unsigned char *thumbprint,
                      unsigned char *buf, size_t cap, dcx_error *err)
{
    const char *label;
    const wchar_t *name = logical_name(logical, &label);
    dcx_error_clear(err);
    if (!name)
        return unknown_logical(logical, err);
    int missing;
    HCERTSTORE store = open_store(scope, name, label, 0, &missing, err);
    if (!store)
        return missing ? not_found(err, scope, label, thumbprint) : (err ? err->status : DCX_E_CONFIG);
    PCCERT_CONTEXT cert = find_sha1(store, thumbprint);
    long n;
    if (!cert) {
        n = not_found(err, scope, label, thumbprint);
    } else {
        n = (long)cert->cbCertEncoded;
        if (buf && (size_t)n <= cap)
            memcpy(buf, cert->pbCertEncoded, (size_t)n);
        CertFreeCertificateContext(cert);
    }
    CertCloseStore(store, 0);
    return n;
}

int dcx_store_remove(dcx_store scope, const char *logical, const unsigned char *thumbprint,
                     int delete_key_too, dcx_error *err)
{
    const char *label;
    const wchar_t *name = logical_name(logical, &label);
    dcx_error_clear(err);
    if (!name)
        return unknown_logical(logical, err);
    int missing;
    HCERTSTORE store = open_store(scope, name, label, 1, &missing, err);
    if (!store)
        return err ? err->status : DCX_E_CONFIG;
    PCCERT_CONTEXT cert = find_sha1(store, thumbprint);
    int rc = DCX_OK;
    if (!cert) {
        rc = not_found(err, scope, label, thumbprint);
    } else {
        CRYPT_KEY_PROV_INFO *info = delete_key_too ? key_info(cert) : NULL;
        if (!CertDeleteCertificateFromStore(cert)) { /* frees cert, also on failure */
            rc = store_failure(err, GetLastError(), scope, label, "removing a certificate from");
        } else {
            /* Windows writes the registry store through; Wine 8 keeps a delete
             * from the system (collection) store in memory until committed */
            CertControlStore(store, 0, CERT_STORE_CTRL_COMMIT, NULL);
            if (info && !key_in_use(scope, info))
                delete_key(info);
        }
        free(info);
    }
    CertCloseStore(store, 0);
    return rc;
}
