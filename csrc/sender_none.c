/*
 * sender_none.c - dcxtls.h's sender where there is none yet (Windows): no
 * connection is duplex there, and the caller writes in its own thread.
 */
#include "dcxtls.h"
#include "dcxtls_common.h"

#include <stddef.h>

dcx_sender *dcx_sender_new(dcx_conn *c, size_t capacity, dcx_error *err)
{
    (void)c;
    (void)capacity;
    dcx_error_clear(err);
    dcx_fail(err, DCX_E_UNSUPPORTED, "no sender threads on this platform; writes go out in the "
             "caller's thread");
    return NULL;
}

long dcx_sender_queue(dcx_sender *s, const void *buf, size_t len, int timeout_ms, dcx_error *err)
{
    (void)s;
    (void)buf;
    (void)len;
    (void)timeout_ms;
    dcx_error_clear(err);
    return dcx_fail(err, DCX_E_UNSUPPORTED, "no sender threads on this platform");
}

int dcx_sender_flush(dcx_sender *s, int timeout_ms, dcx_error *err)
{
    (void)s;
    (void)timeout_ms;
    dcx_error_clear(err);
    return DCX_OK;
}

size_t dcx_sender_pending(dcx_sender *s)
{
    (void)s;
    return 0;
}

void dcx_sender_stop(dcx_sender *s)
{
    (void)s;
}

void dcx_sender_free(dcx_sender *s)
{
    (void)s;
}
