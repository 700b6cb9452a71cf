/*
 * store_none.c - dcxstore.h where the platform has no system certificate
 * store (Linux, macOS): every call says so, and dcxsec uses its folder store.
 */
#include "dcxstore.h"
#include "dcxtls_common.h"

#include <stddef.h>

#define NO_STORE "no system certificate store on this platform; the folder store is used"

static int unsupported(dcx_error *err)
{
    dcx_error_clear(err);
    return dcx_fail(err, DCX_E_UNSUPPORTED, NO_STORE);
}

dcx_store_list *dcx_store_list_open(dcx_store scope, const char *logical, dcx_error *err)
{
    (void)scope;
    (void)logical;
    unsupported(err);
    return NULL;
}

size_t dcx_store_list_count(const dcx_store_list *list)
{
    (void)list;
    return 0;
}

const dcx_store_entry *dcx_store_list_get(const dcx_store_list *list, size_t i)
{
    (void)list;
    (void)i;
    return NULL;
}

void dcx_store_list_free(dcx_store_list *list)
{
    (void)list;
}

int dcx_store_add(dcx_store scope, const char *logical, dcx_blob der, unsigned char *thumbprint,
                  dcx_error *err)
{
    (void)scope;
    (void)logical;
    (void)der;
    (void)thumbprint;
    return unsupported(err);
}

int dcx_store_import_pfx(dcx_store scope, dcx_blob pfx, const char *password, int exportable,
                         unsigned char *thumbprint, dcx_error *err)
{
    (void)scope;
    (void)pfx;
    (void)password;
    (void)exportable;
    (void)thumbprint;
    return unsupported(err);
}

long dcx_store_export(dcx_store scope, const char *logical, const unsigned char *thumbprint,
                      unsigned char *buf, size_t cap, dcx_error *err)
{
    (void)scope;
    (void)logical;
    (void)thumbprint;
    (void)buf;
    (void)cap;
    return unsupported(err);
}

int dcx_store_remove(dcx_store scope, const char *logical, const unsigned char *thumbprint,
                     int delete_key, dcx_error *err)
{
    (void)scope;
    (void)logical;
    (void)thumbprint;
    (void)delete_key;
    return unsupported(err);
}
