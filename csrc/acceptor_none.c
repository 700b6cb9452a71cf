/*
 * acceptor_none.c - dcxthreads.h's acceptor where there is none yet
 * (Windows): dcx_acceptor_new says so plainly, and the caller keeps its own
 * accept loop.
 */
#include "dcxthreads.h"
#include "dcxtls_common.h"

#include <string.h>

dcx_acceptor *dcx_acceptor_new(dcx_ctx *ctx, dcx_socket listener,
                               const dcx_acceptor_limits *limits, dcx_error *err)
{
    (void)ctx;
    (void)listener;
    (void)limits;
    dcx_error_clear(err);
    dcx_fail(err, DCX_E_UNSUPPORTED,
             "the engine's acceptor is not available on this platform; use "
             "ae.start_server(..., ssl_context=ctx) instead");
    return NULL;
}

dcx_socket dcx_acceptor_wakeup(const dcx_acceptor *a)
{
    (void)a;
    return (dcx_socket)-1;
}

int dcx_acceptor_take(dcx_acceptor *a, dcx_accepted *out)
{
    (void)a;
    (void)out;
    return 0;
}

int dcx_acceptor_take_refusal(dcx_acceptor *a, dcx_refusal *out)
{
    (void)a;
    (void)out;
    return 0;
}

void dcx_acceptor_set_ctx(dcx_acceptor *a, dcx_ctx *ctx)
{
    (void)a;
    (void)ctx;
}

void dcx_acceptor_stats_get(dcx_acceptor *a, dcx_acceptor_stats *out)
{
    (void)a;
    memset(out, 0, sizeof(*out));
}

void dcx_acceptor_free(dcx_acceptor *a)
{
    (void)a;
}

dcx_load_table *dcx_load_table_new(int workers, dcx_error *err)
{
    (void)workers;
    dcx_error_clear(err);
    dcx_fail(err, DCX_E_UNSUPPORTED, "worker processes are not available on this platform");
    return NULL;
}

int dcx_load_table_count(const dcx_load_table *t, int worker)
{
    (void)t;
    (void)worker;
    return 0;
}

void dcx_load_table_release(dcx_load_table *t, int worker)
{
    (void)t;
    (void)worker;
}

void dcx_load_table_retire(dcx_load_table *t, int worker)
{
    (void)t;
    (void)worker;
}
