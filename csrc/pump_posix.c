/*
 * pump_posix.c - dcxtls.h's handshake pump on POSIX: one thread, poll(), and
 * a pipe that wakes it when a connection is added or claimed.
 *
 * The pump holds a list of accepted connections.  When one's socket turns
 * readable it takes one non-waiting handshake step, outside its lock; a step
 * that ends the handshake (either way) settles the connection, and whoever
 * claims it gets it back as the step left it.
 */
#include "dcxthreads.h"
#include "dcxtls_common.h"
#include "wakepipe.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

typedef enum { WAITING, STEPPING, SETTLED } entry_state;

typedef struct entry {
    dcx_conn *conn;
    int64_t deadline;  /* the pump lets go at this time; the claimant's deadline rules */
    entry_state state;
} entry;

struct dcx_pump {
    pthread_t thread;
    pthread_mutex_t lock;
    pthread_cond_t stepped;  /* a step ended: a claimant may go on */
    entry *entries;
    size_t count, cap;
    int wake[2];             /* a byte written to wake[1] makes the thread re-read the list */
    int stop;
};

static void wake(dcx_pump *p)
{
    dcx_wakepipe_signal(p->wake[1]);
}

static entry *find(dcx_pump *p, const dcx_conn *c)
{
    for (size_t i = 0; i < p->count; i++)
        if (p->entries[i].conn == c)
            return &p->entries[i];
    return NULL;
}

/* Lock held.  The poll set: the wake pipe, then every waiting connection;
 * connections past their time are settled here.  Returns poll's timeout. */
static int build_poll_set(dcx_pump *p, struct pollfd *fds, dcx_conn **conns, size_t *n)
{
    int64_t now = dcx_now_ms(), next = -1;
    fds[0] = (struct pollfd){p->wake[0], POLLIN, 0};
    *n = 1;
    for (size_t i = 0; i < p->count; i++) {
        entry *e = &p->entries[i];
        if (e->state != WAITING)
            continue;
        if (e->deadline >= 0 && e->deadline <= now) {
            e->state = SETTLED;
            continue;
        }
        if (e->deadline >= 0 && (next < 0 || e->deadline < next))
            next = e->deadline;
        fds[*n] = (struct pollfd){(int)dcx_conn_socket(e->conn), POLLIN, 0};
        conns[*n] = e->conn;
        (*n)++;
    }
    if (next < 0)
        return -1;
    return next - now > 0x7fffffff ? 0x7fffffff : (int)(next - now);
}

static void step(dcx_pump *p, dcx_conn *c)
{
    entry *e = find(p, c);
    if (!e || e->state != WAITING)
        return; /* claimed, or settled, while the lock was free */
    e->state = STEPPING;
    pthread_mutex_unlock(&p->lock);
    int rc = dcx_conn_handshake(c, 0, NULL); /* the connection keeps its own failure */
    pthread_mutex_lock(&p->lock);
    e = find(p, c); /* the list may have grown (moved) meanwhile */
    if (e)
        e->state = rc == DCX_E_TIMEOUT ? WAITING : SETTLED;
    pthread_cond_broadcast(&p->stepped);
}

static void *run(void *arg)
{
    dcx_pump *p = arg;
    struct pollfd *fds = NULL;
    dcx_conn **conns = NULL;
    size_t room = 0;
    pthread_mutex_lock(&p->lock);
    while (!p->stop) {
        if (room < p->count + 1) {
            room = 2 * (p->count + 1);
            struct pollfd *f = realloc(fds, room * sizeof(*fds));
            dcx_conn **c = realloc(conns, room * sizeof(*conns));
            fds = f ? f : fds;
            conns = c ? c : conns;
            if (!f || !c) { /* keep going with what there is: the claimants finish */
                room = 0;
                pthread_mutex_unlock(&p->lock);
                poll(NULL, 0, 10);
                pthread_mutex_lock(&p->lock);
                continue;
            }
        }
        size_t n;
        int timeout = build_poll_set(p, fds, conns, &n);
        pthread_mutex_unlock(&p->lock);
        int ready = poll(fds, (nfds_t)n, timeout);
        pthread_mutex_lock(&p->lock);
        if (ready <= 0)
            continue; /* timeout (a deadline to settle) or EINTR */
        if (fds[0].revents)
            dcx_wakepipe_drain(p->wake[0]);
        for (size_t i = 1; i < n && !p->stop; i++)
            if (fds[i].revents)
                step(p, conns[i]);
    }
    pthread_mutex_unlock(&p->lock);
    free(fds);
    free(conns);
    return NULL;
}

dcx_pump *dcx_pump_new(dcx_error *err)
{
    dcx_error_clear(err);
    dcx_pump *p = calloc(1, sizeof(*p));
    if (!p) {
        dcx_fail(err, DCX_E_NOMEM, "out of memory");
        return NULL;
    }
    if (dcx_wakepipe_open(p->wake, "handshake thread", err) != DCX_OK) {
        free(p);
        return NULL;
    }
    pthread_mutex_init(&p->lock, NULL);
    pthread_cond_init(&p->stepped, NULL);
    int rc = pthread_create(&p->thread, NULL, run, p);
    if (rc != 0) {
        dcx_fail(err, DCX_E_SYSCALL, "cannot start the handshake thread: %s", strerror(rc));
        dcx_wakepipe_close(p->wake);
        pthread_mutex_destroy(&p->lock);
        pthread_cond_destroy(&p->stepped);
        free(p);
        return NULL;
    }
    return p;
}

int dcx_pump_add(dcx_pump *p, dcx_conn *c, int timeout_ms, dcx_error *err)
{
    dcx_error_clear(err);
    pthread_mutex_lock(&p->lock);
    if (p->count == p->cap) {
        size_t cap = p->cap ? 2 * p->cap : 16;
        entry *grown = realloc(p->entries, cap * sizeof(*grown));
        if (!grown) {
            pthread_mutex_unlock(&p->lock);
            return dcx_fail(err, DCX_E_NOMEM, "out of memory");
        }
        p->entries = grown;
        p->cap = cap;
    }
    p->entries[p->count++] = (entry){c, dcx_deadline(timeout_ms), WAITING};
    pthread_mutex_unlock(&p->lock);
    wake(p);
    return DCX_OK;
}

int dcx_pump_settled(dcx_pump *p, const dcx_conn *c)
{
    pthread_mutex_lock(&p->lock);
    entry *e = find(p, c);
    int settled = !e || e->state == SETTLED;
    pthread_mutex_unlock(&p->lock);
    return settled;
}

void dcx_pump_claim(dcx_pump *p, dcx_conn *c)
{
    pthread_mutex_lock(&p->lock);
    entry *e;
    while ((e = find(p, c)) && e->state == STEPPING)
        pthread_cond_wait(&p->stepped, &p->lock);
    int was_polled = e && e->state == WAITING;
    if (e)
        *e = p->entries[--p->count];
    pthread_mutex_unlock(&p->lock);
    if (was_polled)
        wake(p); /* stop polling a descriptor about to be closed, and perhaps reused */
}

void dcx_pump_free(dcx_pump *p)
{
    if (!p)
        return;
    pthread_mutex_lock(&p->lock);
    p->stop = 1;
    pthread_mutex_unlock(&p->lock);
    wake(p);
    pthread_join(p->thread, NULL);
    dcx_wakepipe_close(p->wake);
    pthread_mutex_destroy(&p->lock);
    pthread_cond_destroy(&p->stepped);
    free(p->entries);
    free(p);
}
