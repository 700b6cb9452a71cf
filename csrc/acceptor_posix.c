/*
 * acceptor_posix.c - dcxthreads.h's acceptor on POSIX: one thread, poll(),
 * and the pump's technique (a self-pipe, non-waiting handshake steps).
 *
 * The thread alone touches the listening socket and the handshakes in
 * progress.  The lock guards what the caller shares with it: the queue of
 * handshaken connections, the queue of refusals, and the wake-up pipe, which
 * holds one byte exactly while either queue holds something.
 */
#define _DEFAULT_SOURCE  /* MAP_ANONYMOUS, beside POSIX (glibc) */
#define _DARWIN_C_SOURCE /* the same on macOS */
#include "dcxthreads.h"
#include "dcxtls_common.h"
#include "wakepipe.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <stdatomic.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define REFUSALS_KEPT 1024  /* refusals waiting for the caller; more are counted, not kept */
#define ACCEPTS_PER_ROUND 64 /* then the handshakes get their turn */

struct dcx_load_table {
    int workers;
    atomic_int held[];         /* connections each worker holds */
};

typedef struct pending {
    dcx_conn *conn;
    int fd, family, port;
    char host[64];
    int64_t deadline;          /* the accept's time plus handshake_timeout */
    int finished;              /* handed over or refused: removed after this round */
} pending;

struct dcx_acceptor {
    pthread_t thread;
    pthread_mutex_t lock;
    dcx_ctx *ctx;              /* under lock: set_ctx may change it */
    dcx_acceptor_limits limits;
    int listener;              /* our duplicate of the caller's listening socket */
    int control[2];            /* wakes the thread (to stop) */
    int ready_pipe[2];         /* readable while ready or refusals hold something */
    int pipe_full;
    int stop;
    /* the thread's own */
    pending *pending;
    int npending;
    struct pollfd *fds;
    /* shared, under lock */
    dcx_accepted *ready;       /* a ring of max_pending entries */
    int ready_head, ready_count;
    dcx_refusal *refusals;     /* a ring of REFUSALS_KEPT entries */
    int refusal_head, refusal_count;
    uint64_t refused, dropped;
    int npending_shared;
    dcx_load_table *loads;     /* limits.loads: the workers sharing the listening socket */
    int worker;
    int64_t deferred_since;    /* when a waiting connection was first left to another worker */
};

static double wall_time(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

/* Lock held: keep the wake-up pipe readable exactly while something waits. */
static void update_pipe(dcx_acceptor *a)
{
    int want = a->ready_count > 0 || a->refusal_count > 0;
    if (want && !a->pipe_full)
        dcx_wakepipe_signal(a->ready_pipe[1]);
    else if (!want && a->pipe_full)
        dcx_wakepipe_drain(a->ready_pipe[0]);
    a->pipe_full = want;
}

static void address_text(const struct sockaddr_storage *ss, socklen_t len, char *host,
                         size_t cap, int *port)
{
    char service[16] = "0";
    if (getnameinfo((const struct sockaddr *)ss, len, host, (socklen_t)cap, service,
                    sizeof(service), NI_NUMERICHOST | NI_NUMERICSERV) != 0)
        snprintf(host, cap, "unknown");
    *port = atoi(service);
}

/* Record a refusal (the connection is closed by the caller of this). */
static void refuse(dcx_acceptor *a, const char *host, int port, const char *stage,
                   const char *kind, const char *reason, const dcx_error *err)
{
    pthread_mutex_lock(&a->lock);
    a->refused++;
    if (a->refusal_count == REFUSALS_KEPT) {
        a->dropped++;
    } else {
        dcx_refusal *r = &a->refusals[(a->refusal_head + a->refusal_count++) % REFUSALS_KEPT];
        memset(r, 0, sizeof(*r));
        snprintf(r->host, sizeof(r->host), "%s", host);
        r->port = port;
        snprintf(r->stage, sizeof(r->stage), "%s", stage);
        snprintf(r->kind, sizeof(r->kind), "%s", kind);
        snprintf(r->reason, sizeof(r->reason), "%s", reason);
        if (err) {
            snprintf(r->subject, sizeof(r->subject), "%s", err->subject);
            snprintf(r->thumbprint, sizeof(r->thumbprint), "%s", err->thumbprint);
        }
        r->time = wall_time();
        update_pipe(a);
    }
    pthread_mutex_unlock(&a->lock);
}

static const char *verify_kind(int verify_reason)
{
    switch (verify_reason) {
    case DCX_VR_NO_CERTIFICATE: return "verification failed (no certificate)";
    case DCX_VR_UNTRUSTED: return "verification failed (untrusted)";
    case DCX_VR_EXPIRED: return "verification failed (expired)";
    case DCX_VR_NOT_YET_VALID: return "verification failed (not yet valid)";
    case DCX_VR_THUMBPRINT: return "verification failed (thumbprint not accepted)";
    case DCX_VR_HOSTNAME: return "verification failed (host name)";
    case DCX_VR_REVOKED: return "verification failed (revoked)";
    case DCX_VR_REVOCATION: return "verification failed (no current CRL)";
    case DCX_VR_BAD_SIGNATURE: return "verification failed (bad signature)";
    case DCX_VR_PURPOSE: return "verification failed (not fit for TLS)";
    default: return "verification failed";
    }
}

/* The few words that group a failed handshake with alike ones. */
static const char *failure_kind(const dcx_error *err, char *buf, size_t cap)
{
    switch (err->status) {
    case DCX_E_VERIFY:
        return verify_kind(err->verify_reason);
    case DCX_E_NOT_TLS: {
        /* "X on the TLS port: ..." -> "not TLS (X)" */
        const char *end = strstr(err->reason, " on the TLS port");
        int n = end ? (int)(end - err->reason) : 0;
        if (strncmp(err->reason, "data that is not TLS", 20) == 0)
            return "not TLS (other data)"; /* its first bytes differ from one peer to the next */
        snprintf(buf, cap, n ? "not TLS (%.*s)" : "not TLS", n, err->reason);
        return buf;
    }
    case DCX_E_PEER_ALERT:
        return "TLS alert from the client";
    case DCX_E_SYSCALL:
        return err->sys_errno == ECONNRESET || err->sys_errno == EPIPE ? "reset by the client"
                                                                      : "socket error";
    default:
        if (strstr(err->reason, "before sending anything"))
            return "closed before sending anything";
        if (strstr(err->reason, "after a partial ClientHello"))
            return "partial ClientHello, then closed";
        if (strstr(err->reason, "closed the connection"))
            return "closed during the handshake";
        if (strstr(err->reason, "no TLS version in common"))
            return "no TLS version in common";
        if (strstr(err->reason, "no cipher suite in common"))
            return "no cipher suite in common";
        if (strncmp(err->reason, "TLS handshake failed: ", 22) == 0) {
            snprintf(buf, cap, "TLS handshake failed (%.40s)", err->reason + 22);
            return buf;
        }
        return "TLS handshake failed";
    }
}

/* One connection fewer held by this worker (refused, or never taken). */
static void count_down(dcx_load_table *t, int worker)
{
    if (t)
        atomic_fetch_sub(&t->held[worker], 1);
}

static void close_entry(dcx_acceptor *a, pending *e)
{
    dcx_conn_free(e->conn);
    close(e->fd);
    e->conn = NULL;
    e->finished = 1;
    count_down(a->loads, a->worker);
}

/* The few words of a handshake out of time, to count alike ones; the
 * reason itself is the engine's (dcx_fail_handshake_timeout). */
static const char *timeout_kind(const dcx_handshake_progress *p, const char *reason, char *buf,
                                size_t cap)
{
    char what[128];
    if (p->received == 0)
        return "nothing sent";
    if (dcx_sniff_not_tls(p->first, p->first_len, what, sizeof(what))) {
        snprintf(buf, cap, "not TLS (%.50s)",
                 strncmp(what, "data that is not TLS", 20) == 0 ? "other data" : what);
        return buf;
    }
    if (strstr(reason, "partial ClientHello"))
        return "partial ClientHello";
    if (strstr(reason, "stopped answering"))
        return "stopped answering";
    return "too slow";
}

/* The handshake is not done by its deadline, counted from the accept. */
static void expire(dcx_acceptor *a, pending *e)
{
    dcx_error err;
    char buf[160];
    dcx_handshake_progress p = dcx_conn_progress(e->conn);
    dcx_error_clear(&err);
    dcx_fail_handshake_timeout(&err, &p);
    refuse(a, e->host, e->port, "handshake", timeout_kind(&p, err.reason, buf, sizeof(buf)),
           err.reason, NULL);
    close_entry(a, e);
}

/* A client that reset the connection before its ClientHello was whole (we
 * had answered nothing): say so, with how much of it came, as the engine
 * says it of one that closed. */
static void cut_short(pending *e, dcx_error *err, const char **kind)
{
    dcx_handshake_progress p = dcx_conn_progress(e->conn);
    int reset = err->status == DCX_E_SYSCALL &&
                (err->sys_errno == ECONNRESET || err->sys_errno == EPIPE);
    if (!reset || p.answered || p.first_len < 5 || p.first[0] != 0x16)
        return;
    size_t announced = 5 + ((size_t)p.first[3] << 8 | p.first[4]); /* the record's length */
    if (p.received >= announced)
        return; /* the hello was whole: the engine's reason stands */
    snprintf(err->reason, sizeof(err->reason),
             "the client reset the connection after a partial ClientHello (%zu of the %zu bytes "
             "its record announced)", p.received, announced);
    *kind = "partial ClientHello, then reset";
}

/* One non-waiting step of e's handshake: hand it over, refuse it, or wait on. */
static void step(dcx_acceptor *a, pending *e)
{
    dcx_error err;
    int rc = dcx_conn_handshake(e->conn, 0, &err);
    if (rc == DCX_E_TIMEOUT)
        return; /* waits for more from the peer; the engine notes what came and when */
    if (rc != DCX_OK) {
        char buf[160];
        const char *kind = failure_kind(&err, buf, sizeof(buf));
        cut_short(e, &err, &kind);
        refuse(a, e->host, e->port, rc == DCX_E_VERIFY ? "verification" : "handshake", kind,
               err.reason, &err);
        close_entry(a, e);
        return;
    }
    pthread_mutex_lock(&a->lock);
    int cap = a->limits.max_pending;
    dcx_accepted *r = &a->ready[(a->ready_head + a->ready_count++) % cap];
    r->conn = e->conn;
    r->fd = e->fd;
    r->family = e->family;
    r->port = e->port;
    snprintf(r->host, sizeof(r->host), "%s", e->host);
    update_pipe(a);
    pthread_mutex_unlock(&a->lock);
    e->conn = NULL;
    e->finished = 1;
}

/* Connections from host: handshakes running and handshaken ones not taken. */
static int count_from(dcx_acceptor *a, const char *host)
{
    int n = 0;
    for (int i = 0; i < a->npending; i++)
        n += strcmp(a->pending[i].host, host) == 0;
    pthread_mutex_lock(&a->lock);
    for (int i = 0; i < a->ready_count; i++)
        n += strcmp(a->ready[(a->ready_head + i) % a->limits.max_pending].host, host) == 0;
    pthread_mutex_unlock(&a->lock);
    return n;
}

/* Admit one accepted socket, or close it at once as over a limit. */
static void admit(dcx_acceptor *a, int fd, const struct sockaddr_storage *ss, socklen_t len)
{
    char host[64], reason[512];
    int port;
    address_text(ss, len, host, sizeof(host), &port);
    pthread_mutex_lock(&a->lock);
    int in_all = a->npending + a->ready_count;
    dcx_ctx *ctx = a->ctx;
    pthread_mutex_unlock(&a->lock);
    /* The per-address share applies once the acceptor is half full: a burst
     * from one busy host is served while there is room, and no one address
     * can keep the other half from everyone else. */
    int crowded = 2 * in_all >= a->limits.max_pending;
    int from_host = crowded ? count_from(a, host) : 0;
    if (in_all >= a->limits.max_pending || from_host >= a->limits.max_pending_per_address) {
        if (in_all >= a->limits.max_pending)
            snprintf(reason, sizeof(reason), "over a limit: %d pending handshakes in all "
                     "(max_pending %d)", in_all, a->limits.max_pending);
        else
            snprintf(reason, sizeof(reason), "over a limit: %d pending handshakes from %s "
                     "while %d are pending in all (max_pending_per_address %d applies "
                     "from max_pending/2)", from_host, host, in_all,
                     a->limits.max_pending_per_address);
        close(fd);
        refuse(a, host, port, "limit",
               in_all >= a->limits.max_pending ? "over a limit (in all)"
                                               : "over a limit (per address)",
               reason, NULL);
        return;
    }
    int one = 1;
    fcntl(fd, F_SETFD, FD_CLOEXEC);
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one)); /* handshake flights go at once */
    dcx_error err;
    dcx_conn *c = dcx_set_nonblocking(fd, &err) == DCX_OK
                      ? dcx_conn_new(ctx, fd, 1, NULL, &err) : NULL;
    if (!c) {
        close(fd);
        refuse(a, host, port, "handshake", "no resources", err.reason, NULL);
        return;
    }
    int64_t now = dcx_now_ms();
    pending *e = &a->pending[a->npending];
    memset(e, 0, sizeof(*e));
    e->conn = c;
    e->fd = fd;
    e->family = ss->ss_family;
    e->port = port;
    snprintf(e->host, sizeof(e->host), "%s", host);
    e->deadline = now + a->limits.handshake_timeout_ms;
    a->npending++;
    if (a->loads)
        atomic_fetch_add(&a->loads->held[a->worker], 1);
}

/* Whether this worker takes the next connection: it holds no more than any other. */
static int fewest(dcx_acceptor *a)
{
    dcx_load_table *t = a->loads;
    if (!t)
        return 1;
    int mine = atomic_load(&t->held[a->worker]);
    for (int i = 0; i < t->workers; i++)
        if (i != a->worker && atomic_load(&t->held[i]) < mine)
            return 0;
    return 1;
}

/* A connection waits to be accepted (looked at without waiting). */
static int one_waits(const dcx_acceptor *a)
{
    struct pollfd p = {a->listener, POLLIN, 0};
    return poll(&p, 1, 0) > 0 && (p.revents & POLLIN);
}

static void accept_some(dcx_acceptor *a)
{
    for (int i = 0; i < ACCEPTS_PER_ROUND; i++) {
        if (i > 0 && !fewest(a))
            return; /* the next one is another worker's */
        struct sockaddr_storage ss;
        socklen_t len = sizeof(ss);
        int fd = accept(a->listener, (struct sockaddr *)&ss, &len);
        if (fd < 0) {
            if (errno == EINTR || errno == ECONNABORTED)
                continue;
            if ((errno == EMFILE || errno == ENFILE) && i == 0)
                poll(NULL, 0, 10); /* out of descriptors: let handshakes end first */
            return;                /* EAGAIN: nothing more waits */
        }
        admit(a, fd, &ss, len);
    }
}

/* Drop finished entries and publish the count. */
static void compact(dcx_acceptor *a)
{
    int kept = 0;
    for (int i = 0; i < a->npending; i++)
        if (!a->pending[i].finished)
            a->pending[kept++] = a->pending[i];
    a->npending = kept;
    pthread_mutex_lock(&a->lock);
    a->npending_shared = kept;
    pthread_mutex_unlock(&a->lock);
}

static void *run(void *arg)
{
    dcx_acceptor *a = arg;
    for (;;) {
        pthread_mutex_lock(&a->lock);
        int stop = a->stop;
        pthread_mutex_unlock(&a->lock);
        if (stop)
            break;
        int64_t now = dcx_now_ms(), next = -1;
        /* A connection left for another worker: not polled, looked at again soon. */
        int deferring = a->deferred_since != 0;
        a->fds[0] = (struct pollfd){a->control[0], POLLIN, 0};
        a->fds[1] = (struct pollfd){deferring ? -1 : a->listener, POLLIN, 0};
        for (int i = 0; i < a->npending; i++) {
            a->fds[2 + i] = (struct pollfd){a->pending[i].fd, POLLIN, 0};
            if (next < 0 || a->pending[i].deadline < next)
                next = a->pending[i].deadline;
        }
        int timeout = next < 0 ? -1 : next <= now ? 0 : (int)(next - now);
        if (deferring && (timeout < 0 || timeout > 1))
            timeout = 1;
        int ready = poll(a->fds, (nfds_t)(2 + a->npending), timeout);
        if (ready < 0 && errno != EINTR)
            poll(NULL, 0, 10);
        now = dcx_now_ms();
        if (ready > 0 && a->fds[0].revents)
            dcx_wakepipe_drain(a->control[0]);
        for (int i = 0; i < a->npending; i++) {
            pending *e = &a->pending[i];
            if (ready > 0 && a->fds[2 + i].revents)
                step(a, e);
            if (!e->finished && e->deadline <= now)
                expire(a, e);
        }
        compact(a);
        int waiting = deferring ? one_waits(a) : ready > 0 && a->fds[1].revents;
        if (!waiting) {
            a->deferred_since = 0; /* another worker took it */
        } else if (fewest(a) || (deferring && now - a->deferred_since >= DCX_BALANCE_WAIT_MS)) {
            a->deferred_since = 0;
            accept_some(a);
        } else if (!deferring) {
            a->deferred_since = now; /* another worker's turn: leave it to it for a while */
        }
        compact(a);
    }
    return NULL;
}

static void free_parts(dcx_acceptor *a)
{
    free(a->pending);
    free(a->fds);
    free(a->ready);
    free(a->refusals);
    free(a);
}

dcx_acceptor *dcx_acceptor_new(dcx_ctx *ctx, dcx_socket listener,
                               const dcx_acceptor_limits *limits, dcx_error *err)
{
    dcx_error_clear(err);
    if (limits->max_pending < 1 || limits->max_pending_per_address < 1 ||
        limits->handshake_timeout_ms < 1 || limits->backlog < 1 ||
        (limits->loads && (limits->worker < 0 || limits->worker >= limits->loads->workers))) {
        dcx_fail(err, DCX_E_CONFIG,
                 "the acceptor's limits must be positive, and its worker one of the load table's");
        return NULL;
    }
    dcx_acceptor *a = calloc(1, sizeof(*a));
    if (!a) {
        dcx_fail(err, DCX_E_NOMEM, "out of memory");
        return NULL;
    }
    a->ctx = ctx;
    a->limits = *limits;
    a->loads = limits->loads;
    a->worker = limits->worker;
    a->pending = calloc((size_t)limits->max_pending, sizeof(*a->pending));
    a->fds = calloc((size_t)limits->max_pending + 2, sizeof(*a->fds));
    a->ready = calloc((size_t)limits->max_pending, sizeof(*a->ready));
    a->refusals = calloc(REFUSALS_KEPT, sizeof(*a->refusals));
    if (!a->pending || !a->fds || !a->ready || !a->refusals) {
        free_parts(a);
        dcx_fail(err, DCX_E_NOMEM, "out of memory");
        return NULL;
    }
    a->listener = fcntl(listener, F_DUPFD_CLOEXEC, 0);
    if (a->listener < 0 || listen(a->listener, limits->backlog) != 0 ||
        dcx_set_nonblocking(a->listener, err) != DCX_OK) {
        int e = errno;
        if (a->listener >= 0)
            close(a->listener);
        free_parts(a);
        if (err)
            err->sys_errno = e;
        dcx_fail(err, DCX_E_SYSCALL, "cannot listen on the server's socket: %s", strerror(e));
        return NULL;
    }
    if (dcx_wakepipe_open(a->control, "acceptor", err) != DCX_OK) {
        close(a->listener);
        free_parts(a);
        return NULL;
    }
    if (dcx_wakepipe_open(a->ready_pipe, "acceptor", err) != DCX_OK) {
        dcx_wakepipe_close(a->control);
        close(a->listener);
        free_parts(a);
        return NULL;
    }
    pthread_mutex_init(&a->lock, NULL);
    int rc = pthread_create(&a->thread, NULL, run, a);
    if (rc != 0) {
        dcx_fail(err, DCX_E_SYSCALL, "cannot start the acceptor thread: %s", strerror(rc));
        dcx_wakepipe_close(a->control);
        dcx_wakepipe_close(a->ready_pipe);
        close(a->listener);
        pthread_mutex_destroy(&a->lock);
        free_parts(a);
        return NULL;
    }
    return a;
}

dcx_socket dcx_acceptor_wakeup(const dcx_acceptor *a)
{
    return a->ready_pipe[0];
}

int dcx_acceptor_take(dcx_acceptor *a, dcx_accepted *out)
{
    pthread_mutex_lock(&a->lock);
    int got = a->ready_count > 0;
    if (got) {
        *out = a->ready[a->ready_head];
        a->ready_head = (a->ready_head + 1) % a->limits.max_pending;
        a->ready_count--;
        update_pipe(a);
    }
    pthread_mutex_unlock(&a->lock);
    return got;
}

int dcx_acceptor_take_refusal(dcx_acceptor *a, dcx_refusal *out)
{
    pthread_mutex_lock(&a->lock);
    int got = a->refusal_count > 0;
    if (got) {
        *out = a->refusals[a->refusal_head];
        a->refusal_head = (a->refusal_head + 1) % REFUSALS_KEPT;
        a->refusal_count--;
        update_pipe(a);
    }
    pthread_mutex_unlock(&a->lock);
    return got;
}

void dcx_acceptor_set_ctx(dcx_acceptor *a, dcx_ctx *ctx)
{
    pthread_mutex_lock(&a->lock);
    a->ctx = ctx;
    pthread_mutex_unlock(&a->lock);
}

void dcx_acceptor_stats_get(dcx_acceptor *a, dcx_acceptor_stats *out)
{
    pthread_mutex_lock(&a->lock);
    out->pending = a->npending_shared;
    out->ready = a->ready_count;
    out->refused = a->refused;
    out->refusals_dropped = a->dropped;
    pthread_mutex_unlock(&a->lock);
}

/* ---- the load table: shared memory, made before fork() ------------------- */

dcx_load_table *dcx_load_table_new(int workers, dcx_error *err)
{
    dcx_error_clear(err);
    if (workers < 1) {
        dcx_fail(err, DCX_E_CONFIG, "the load table needs at least one worker");
        return NULL;
    }
    size_t size = sizeof(dcx_load_table) + (size_t)workers * sizeof(atomic_int);
    dcx_load_table *t = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS,
                             -1, 0);
    if (t == MAP_FAILED) {
        if (err)
            err->sys_errno = errno;
        dcx_fail(err, DCX_E_SYSCALL, "cannot map the workers' load table: %s", strerror(errno));
        return NULL;
    }
    t->workers = workers;
    for (int i = 0; i < workers; i++)
        atomic_init(&t->held[i], 0);
    return t;
}

int dcx_load_table_count(const dcx_load_table *t, int worker)
{
    return atomic_load((atomic_int *)&t->held[worker]);
}

void dcx_load_table_release(dcx_load_table *t, int worker)
{
    count_down(t, worker);
}

void dcx_load_table_retire(dcx_load_table *t, int worker)
{
    atomic_store(&t->held[worker], INT_MAX / 2);
}

void dcx_acceptor_free(dcx_acceptor *a)
{
    if (!a)
        return;
    pthread_mutex_lock(&a->lock);
    a->stop = 1;
    pthread_mutex_unlock(&a->lock);
    dcx_wakepipe_signal(a->control[1]);
    pthread_join(a->thread, NULL);
    close(a->listener);
    for (int i = 0; i < a->npending; i++)
        if (!a->pending[i].finished)
            close_entry(a, &a->pending[i]);
    for (int i = 0; i < a->ready_count; i++) {
        dcx_accepted *r = &a->ready[(a->ready_head + i) % a->limits.max_pending];
        dcx_conn_free(r->conn);
        close(r->fd);
        count_down(a->loads, a->worker);
    }
    dcx_wakepipe_close(a->control);
    dcx_wakepipe_close(a->ready_pipe);
    pthread_mutex_destroy(&a->lock);
    free_parts(a);
}
