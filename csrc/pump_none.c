/*
 * pump_none.c - dcxtls.h's handshake pump where there is none yet (Windows):
 * dcx_pump_new says so, and the accepting side handshakes in the thread that
 * first uses the connection.
 */
#include "dcxthreads.h"
#include "dcxtls_common.h"

#include <stddef.h>

dcx_pump *dcx_pump_new(dcx_error *err)
{
    dcx_error_clear(err);
    dcx_fail(err, DCX_E_UNSUPPORTED,
             "no background handshake thread on this platform; handshakes run on first use");
    return NULL;
}

int dcx_pump_add(dcx_pump *p, dcx_conn *c, int timeout_ms, dcx_error *err)
{
    (void)p;
    (void)c;
    (void)timeout_ms;
    dcx_error_clear(err);
    return dcx_fail(err, DCX_E_UNSUPPORTED, "no background handshake thread on this platform");
}

int dcx_pump_settled(dcx_pump *p, const dcx_conn *c)
{
    (void)p;
    (void)c;
    return 1;
}

void dcx_pump_claim(dcx_pump *p, dcx_conn *c)
{
    (void)p;
    (void)c;
}

void dcx_pump_free(dcx_pump *p)
{
    (void)p;
}
