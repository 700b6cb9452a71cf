/*
 * cases_store.c - the system certificate store (dcxstore.h): PKCS#12 import
 * into Cert:\CurrentUser\My, enumeration, DER export, adding to and removing
 * from Root and CA, and the identity chosen when no thumbprint is
 * configured.  Natively there is no system store and every case must come
 * back SKIPPED with the backend's reason.
 */
#include "driver.h"

/* ---- the system certificate store (dcxstore.h) ------------------------------ *
 * Under Wine: Cert:\CurrentUser\My, Root and CA through Crypt32.  Natively
 * there is no system store: every case must come back SKIPPED with the
 * backend's reason, never passed. */

#define CU DCX_STORE_CURRENT_USER

static int store_trouble(int rc, const dcx_error *err, const char *doing)
{
    if (rc == DCX_E_UNSUPPORTED)
        return say(SKIP, "%s", err->reason);
    return say(FAIL, "%s: status %d: %s", doing, rc, err->reason);
}

/* The SHA-1 in a .sha1 file, as 20 bytes. */
static void file_sha1(const char *name, unsigned char out[DCX_THUMBPRINT_LEN])
{
    char text[128];
    memset(out, 0, DCX_THUMBPRINT_LEN);
    file_text(name, text, sizeof(text));
    unhex(text, out, DCX_THUMBPRINT_LEN);
}

static const dcx_store_entry *list_find(const dcx_store_list *list, const unsigned char *sha1)
{
    for (size_t i = 0; i < dcx_store_list_count(list); i++) {
        const dcx_store_entry *e = dcx_store_list_get(list, i);
        if (memcmp(e->thumbprint, sha1, DCX_THUMBPRINT_LEN) == 0)
            return e;
    }
    return NULL;
}

static int import_pfx_file(const char *name, const char *password, unsigned char *sha1,
                           dcx_error *err)
{
    dcx_blob pfx = file_blob(name);
    if (!pfx.data) {
        snprintf(err->reason, sizeof(err->reason), "cannot read %s", name);
        return err->status = DCX_E_CONFIG;
    }
    int rc = dcx_store_import_pfx(CU, pfx, password, 1, sha1, err);
    free((void *)pfx.data);
    return rc;
}

int case_store_wrong_password(void)
{
    unsigned char sha1[DCX_THUMBPRINT_LEN];
    dcx_error err;
    int rc = import_pfx_file("store_second.pfx", "not the password", sha1, &err);
    if (rc == DCX_OK) {
        dcx_store_remove(CU, "My", sha1, 1, &err);
        return say(FAIL, "a PKCS#12 file was imported with a wrong password");
    }
    if (rc == DCX_E_CONFIG && strstr(err.reason, "wrong password"))
        return say(PASS, "%s", err.reason);
    return store_trouble(rc, &err, "expected DCX_E_CONFIG saying 'wrong password'");
}

int case_store_import_pfx(void)
{
    unsigned char got[DCX_THUMBPRINT_LEN], want[DCX_THUMBPRINT_LEN];
    char password[128], hx[41];
    dcx_error err;
    file_text("pfx.password", password, sizeof(password));
    file_sha1("store_second.sha1", want);
    int rc = import_pfx_file("store_second.pfx", password, got, &err);
    if (rc != DCX_OK)
        return store_trouble(rc, &err, "importing store_second.pfx");
    hex(got, DCX_THUMBPRINT_LEN, hx);
    if (memcmp(got, want, DCX_THUMBPRINT_LEN) != 0)
        return say(FAIL, "the import reported thumbprint %s, not the file's certificate", hx);
    return say(PASS, "imported %s with its key into Cert:\\CurrentUser\\My", hx);
}

int case_store_enumerate_my(void)
{
    unsigned char first[DCX_THUMBPRINT_LEN], second[DCX_THUMBPRINT_LEN], digest[32];
    char want[128], got[65];
    dcx_error err;
    file_sha1("store_client.sha1", first);
    file_sha1("store_second.sha1", second);
    dcx_store_list *my = dcx_store_list_open(CU, "my", &err); /* names match without case */
    if (!my)
        return store_trouble(err.status, &err, "listing My");
    const dcx_store_entry *a = list_find(my, first), *b = list_find(my, second);
    int out;
    if (!a || !b) {
        out = say(FAIL, "My (%lu certificates) lacks %s", (unsigned long)dcx_store_list_count(my),
                  !a ? "the certificate of store_client.pfx" : "the certificate of store_second.pfx");
    } else if (!a->has_key || !b->has_key) {
        out = say(FAIL, "has_key is %d and %d; both PKCS#12 imports have their key", a->has_key,
                  b->has_key);
    } else {
        sha256 h;
        sha256_init(&h);
        sha256_update(&h, b->der, b->der_len);
        sha256_final(&h, digest);
        hex(digest, 32, got);
        file_text("store_second.sha256", want, sizeof(want));
        if (strcmp(got, want) != 0)
            out = say(FAIL, "the DER listed for %s has SHA-256 %s, expected %s", b->thumbprint_hex,
                      got, want);
        else
            out = say(PASS, "%lu certificates in My; %s and %s both with has_key=1",
                      (unsigned long)dcx_store_list_count(my), a->thumbprint_hex, b->thumbprint_hex);
    }
    dcx_store_list_free(my);
    return out;
}

int case_store_export_der(void)
{
    unsigned char sha1[DCX_THUMBPRINT_LEN];
    dcx_error err;
    file_sha1("store_second.sha1", sha1);
    long n = dcx_store_export(CU, "My", sha1, NULL, 0, &err);
    if (n < 0)
        return store_trouble((int)n, &err, "exporting from My");
    unsigned char *der = malloc((size_t)n);
    long m = der ? dcx_store_export(CU, "My", sha1, der, (size_t)n, &err) : -1;
    dcx_blob file = file_blob("store_second.der");
    int out;
    if (m != n)
        out = say(FAIL, "the second export returned %ld, the first %ld: %s", m, n, err.reason);
    else if (!file.data || file.len != (size_t)n || memcmp(file.data, der, (size_t)n) != 0)
        out = say(FAIL, "the exported DER (%ld bytes) differs from store_second.der (%lu bytes)", n,
                  (unsigned long)file.len);
    else
        out = say(PASS, "exported %ld bytes of DER, identical to the certificate in the PKCS#12 file", n);
    free(der);
    free((void *)file.data);
    return out;
}

/* Is the certificate with this SHA-1 in a logical store (1), not (0), or failed (<0)? */
static int store_holds(const char *logical, const unsigned char *sha1, int *has_key, dcx_error *err)
{
    dcx_store_list *list = dcx_store_list_open(CU, logical, err);
    if (!list)
        return err->status;
    const dcx_store_entry *e = list_find(list, sha1);
    if (e && has_key)
        *has_key = e->has_key;
    dcx_store_list_free(list);
    return e != NULL;
}

int case_store_add_root_ca(void)
{
    static const char *const logical[] = {"Root", "CA"};
    unsigned char want[DCX_THUMBPRINT_LEN], got[DCX_THUMBPRINT_LEN];
    dcx_blob der = file_blob("store_ca.der");
    dcx_error err;
    int out = PASS;
    file_sha1("store_ca.sha1", want);
    for (int i = 0; i < 2 && out == PASS; i++) {
        int rc = dcx_store_add(CU, logical[i], der, got, &err), key = -1;
        if (rc != DCX_OK) {
            out = store_trouble(rc, &err, logical[i]);
        } else if (memcmp(got, want, DCX_THUMBPRINT_LEN) != 0) {
            out = say(FAIL, "adding to %s reported another thumbprint", logical[i]);
        } else if ((rc = store_holds(logical[i], want, &key, &err)) != 1) {
            out = rc < 0 ? store_trouble(rc, &err, "listing") : say(FAIL, "%s does not list it", logical[i]);
        } else if (key != 0) {
            out = say(FAIL, "%s lists it with has_key=%d; it was added without a key", logical[i], key);
        }
    }
    free((void *)der.data);
    if (out == PASS) {
        char hx[41];
        hex(want, DCX_THUMBPRINT_LEN, hx);
        say(PASS, "CA certificate %s added to Root and CA, listed in both with has_key=0", hx);
    }
    return out;
}

int case_store_remove_root_ca(void)
{
    static const char *const logical[] = {"Root", "CA"};
    unsigned char sha1[DCX_THUMBPRINT_LEN];
    dcx_error err;
    file_sha1("store_ca.sha1", sha1);
    for (int i = 0; i < 2; i++) {
        int rc = dcx_store_remove(CU, logical[i], sha1, 0, &err);
        if (rc != DCX_OK)
            return store_trouble(rc, &err, logical[i]);
        if ((rc = store_holds(logical[i], sha1, NULL, &err)) != 0)
            return rc < 0 ? store_trouble(rc, &err, "listing") : say(FAIL, "%s still lists it", logical[i]);
    }
    int rc = dcx_store_remove(CU, "Root", sha1, 0, &err);
    if (rc != DCX_E_CONFIG || !strstr(err.reason, "no certificate with thumbprint"))
        return say(FAIL, "removing it again: expected DCX_E_CONFIG 'no certificate with thumbprint', "
                   "got %d: %s", rc, err.reason);
    return say(PASS, "removed from Root and CA, listed in neither; again: %s", err.reason);
}

int case_store_remove_identity(void)
{
    unsigned char gone[DCX_THUMBPRINT_LEN], kept[DCX_THUMBPRINT_LEN];
    dcx_error err;
    int key = 0;
    file_sha1("store_client.sha1", gone);
    file_sha1("store_second.sha1", kept);
    int rc = dcx_store_remove(CU, "My", gone, 1, &err);
    if (rc != DCX_OK)
        return store_trouble(rc, &err, "removing store_client from My");
    if ((rc = store_holds("My", gone, NULL, &err)) != 0)
        return rc < 0 ? store_trouble(rc, &err, "listing") : say(FAIL, "My still lists it");
    if ((rc = store_holds("My", kept, &key, &err)) != 1 || !key)
        return rc < 0 ? store_trouble(rc, &err, "listing")
                      : say(FAIL, "the other identity lost its place or its key (listed %d, has_key %d)", rc, key);
    return say(PASS, "removed with its key; the other identity in My keeps its own");
}

/* The local identity as dcxsec chooses it when no thumbprint is configured:
 * the only certificate in My with a private key.  My also holds one without. */
int case_store_chosen_identity(void)
{
    unsigned char without[DCX_THUMBPRINT_LEN], chosen[DCX_THUMBPRINT_LEN];
    dcx_blob der = file_blob("client.der");
    dcx_error err;
    int rc = dcx_store_add(CU, "My", der, without, &err);
    free((void *)der.data);
    if (rc != DCX_OK)
        return store_trouble(rc, &err, "adding a certificate without key to My");
    dcx_store_list *my = dcx_store_list_open(CU, "My", &err);
    if (!my)
        return store_trouble(err.status, &err, "listing My");
    size_t with_key = 0, total = dcx_store_list_count(my);
    for (size_t i = 0; i < total; i++) {
        const dcx_store_entry *e = dcx_store_list_get(my, i);
        if (e->has_key && with_key++ == 0)
            memcpy(chosen, e->thumbprint, DCX_THUMBPRINT_LEN);
    }
    dcx_store_list_free(my);
    int out;
    if (with_key != 1) {
        out = say(FAIL, "expected exactly one certificate with a key among the %lu in My, found %lu",
                  (unsigned long)total, (unsigned long)with_key);
    } else {
        opts o = {NULL, NULL, NULL, DCX_VERIFY_TRUST_CHAIN, "ca.pem", {NULL, NULL}, 1, 0, chosen};
        char hx[41];
        hex(chosen, DCX_THUMBPRINT_LEN, hx);
        out = identity_case(&o, "store_second.sha256", NULL, "");
        if (out == PASS)
            say(PASS, "chose %s, the only one of %lu certificates in My with a key; the server saw it",
                hx, (unsigned long)total);
    }
    dcx_store_remove(CU, "My", without, 0, &err);
    return out;
}
