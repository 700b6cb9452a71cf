/*
 * dcxstore.h - the platform's system certificate store, backend-neutral.
 *
 * Windows keeps certificates in system stores (Cert:\CurrentUser\My, ...);
 * store_crypt32.c opens them with Crypt32.  Elsewhere store_none.c answers
 * every call with DCX_E_UNSUPPORTED ("no system certificate store on this
 * platform; the folder store is used"): dcxsec's Python layer keeps its own
 * folder store there.  Exactly one of the two is compiled per platform.
 *
 * A scope (dcx_store, from dcxtls.h) holds logical stores named as on
 * Windows: "My" (the local identities, with their private keys), "Root"
 * (trusted roots) and "CA" (intermediate CAs).  Names are matched without
 * regard to case.  Certificates go in and out as DER and are named by their
 * SHA-1 thumbprint (20 bytes).  Every failure returns a negative dcx_status
 * and fills a dcx_error whose reason says what failed and what to do.
 */
#ifndef DCXSTORE_H
#define DCXSTORE_H

#include "dcxtls.h"

#ifdef __cplusplus
extern "C" {
#endif

#define DCX_THUMBPRINT_LEN 20

/* One certificate of a logical store. */
typedef struct dcx_store_entry {
    const unsigned char *der;        /* the certificate, DER */
    size_t der_len;
    unsigned char thumbprint[20];    /* its SHA-1 */
    char thumbprint_hex[41];         /* the same, upper-case hex */
    int has_key;                     /* a private key is attached to it */
} dcx_store_entry;

/* A snapshot of a logical store's certificates, in the store's order. */
typedef struct dcx_store_list dcx_store_list;

/* Read a logical store.  A logical store that does not exist yet is empty. */
dcx_store_list *dcx_store_list_open(dcx_store scope, const char *logical, dcx_error *err);
size_t dcx_store_list_count(const dcx_store_list *list);
/* Entry i (0 <= i < count); valid until the list is freed. */
const dcx_store_entry *dcx_store_list_get(const dcx_store_list *list, size_t i);
void dcx_store_list_free(dcx_store_list *list);

/* Add a certificate (DER, without key) to a logical store; an existing copy
 * is kept with its properties.  thumbprint (may be NULL) receives its SHA-1. */
int dcx_store_add(dcx_store scope, const char *logical, dcx_blob der,
                  unsigned char *thumbprint, dcx_error *err);

/* Import a PKCS#12 (PFX) file into My of scope, keeping the private key in
 * the scope's key storage; the file's other certificates go into CA (not
 * trusted: trust a root with dcx_store_add into Root).  exportable marks the
 * key exportable.  thumbprint (may be NULL) receives the SHA-1 of the
 * certificate that has the key. */
int dcx_store_import_pfx(dcx_store scope, dcx_blob pfx, const char *password, int exportable,
                         unsigned char *thumbprint, dcx_error *err);

/* The DER of the certificate with this SHA-1 in a logical store: returns its
 * length (> 0) or a negative status.  Copies at most cap bytes; call with
 * cap 0 to learn the size. */
long dcx_store_export(dcx_store scope, const char *logical, const unsigned char *thumbprint,
                      unsigned char *buf, size_t cap, dcx_error *err);

/* Remove the certificate with this SHA-1 from a logical store.  With
 * delete_key, its private key goes too, unless another certificate of the
 * scope's My still uses that key. */
int dcx_store_remove(dcx_store scope, const char *logical, const unsigned char *thumbprint,
                     int delete_key, dcx_error *err);

#ifdef __cplusplus
}
#endif
#endif /* DCXSTORE_H */
