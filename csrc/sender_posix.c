/*
 * sender_posix.c - dcxtls.h's sender on POSIX: one thread per connection
 * that seals and sends what the caller queued.
 *
 * The queue is a ring of bytes.  The thread takes it a slice at a time
 * through dcx_conn_write_some(), which never waits; when the socket is full
 * the thread waits in poll() on the socket and on a wake-up pipe, so that a
 * stop reaches it at once, before the caller closes the descriptor.
 */
#ifdef __linux__
#define _GNU_SOURCE /* pipe2 */
#endif
#include "dcxtls.h"
#include "dcxtls_common.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define STACK_SIZE (256 * 1024) /* sealing needs little; the default is megabytes */
/* A socket that stays full this long means a peer that has stopped reading:
 * a caller waiting for room is then woken to take what there is, not left
 * waiting for half a queue that may never drain. */
#define STALL_MS 20

struct dcx_sender {
    dcx_conn *conn;
    pthread_t thread;
    pid_t owner;           /* a forked child has no such thread, and must not wait for it */
    pthread_mutex_t lock;
    pthread_cond_t work;   /* to the thread: bytes queued, or stop */
    pthread_cond_t moved;  /* to callers: room made, all sent, or the sender ended */
    unsigned char *ring;   /* made on the first queued byte */
    size_t cap, head, count;
    size_t unsent;         /* bytes of records sealed but not yet in the socket */
    int waiters;           /* callers waiting for room */
    int status;            /* DCX_OK while it runs, else why it ended */
    dcx_error failure;
    int stopped;
    int wake[2];
};

static void wake(dcx_sender *s)
{
    char byte = 1;
    ssize_t n = write(s->wake[1], &byte, 1); /* a full pipe is already a wake-up */
    (void)n;
}

/* Until the socket takes more, a stop comes through the pipe, or
 * `timeout_ms` (-1: no limit) passes; 0 if it passed. */
static int wait_writable(dcx_sender *s, int timeout_ms)
{
    struct pollfd fds[2] = {{(int)dcx_conn_socket(s->conn), POLLOUT, 0}, {s->wake[0], POLLIN, 0}};
    int n = poll(fds, 2, timeout_ms);
    if (n > 0 && fds[1].revents) {
        char drain[64];
        while (read(s->wake[0], drain, sizeof(drain)) > 0) {
        }
    }
    return n != 0;
}

/* Lock held: the sender ends with `status`; everyone waiting hears of it. */
static void end(dcx_sender *s, int status, const dcx_error *why)
{
    if (s->status == DCX_OK) {
        s->status = status;
        s->failure = *why;
    }
    s->count = s->unsent = 0;
    pthread_cond_broadcast(&s->moved);
}

static void *run(void *arg)
{
    dcx_sender *s = arg;
    dcx_error err;
    pthread_mutex_lock(&s->lock);
    while (s->status == DCX_OK) {
        if (s->count == 0 && s->unsent == 0) {
            pthread_cond_wait(&s->work, &s->lock);
            continue;
        }
        /* The caller writes only at the tail, so the slice at the head is
         * read here without the lock. */
        size_t n = s->count < s->cap - s->head ? s->count : s->cap - s->head;
        const unsigned char *p = s->ring + s->head;
        pthread_mutex_unlock(&s->lock);
        long took = dcx_conn_write_some(s->conn, p, n, &err);
        size_t unsent = took >= 0 ? dcx_conn_unsent(s->conn) : 0;
        pthread_mutex_lock(&s->lock);
        if (s->status != DCX_OK)
            break; /* stopped meanwhile */
        if (took < 0) {
            end(s, (int)took, &err);
            break;
        }
        s->head = (s->head + (size_t)took) % s->cap;
        s->count -= (size_t)took;
        s->unsent = unsent;
        /* Callers waiting for room hear of it once half the queue is free:
         * one wake-up per half a queue, not per slice.  (Woken at every
         * stall of the socket instead, a writer that outruns its reader
         * would take turns on the GIL with it once per PDU again.) */
        if ((took > 0 && s->count <= s->cap / 2) || (s->count == 0 && unsent == 0))
            pthread_cond_broadcast(&s->moved);
        if (took == 0 && unsent) {
            int patience = s->waiters && s->count < s->cap ? STALL_MS : -1;
            pthread_mutex_unlock(&s->lock);
            int moved = wait_writable(s, patience);
            pthread_mutex_lock(&s->lock);
            if (!moved)
                pthread_cond_broadcast(&s->moved);
        }
    }
    pthread_mutex_unlock(&s->lock);
    return NULL;
}

static void init_cond(pthread_cond_t *cond)
{
    pthread_condattr_t attr;
    pthread_condattr_init(&attr);
#ifndef __APPLE__
    pthread_condattr_setclock(&attr, CLOCK_MONOTONIC); /* dcx_now_ms()'s clock */
#endif
    pthread_cond_init(cond, &attr);
    pthread_condattr_destroy(&attr);
}

/* Lock held: wait for `moved` until the deadline; 0 once it has passed. */
static int wait_moved(dcx_sender *s, int64_t deadline)
{
    if (deadline < 0) {
        pthread_cond_wait(&s->moved, &s->lock);
        return 1;
    }
    int64_t left = deadline - dcx_now_ms();
    if (left <= 0)
        return 0;
    struct timespec at;
#ifdef __APPLE__
    clock_gettime(CLOCK_REALTIME, &at);
#else
    clock_gettime(CLOCK_MONOTONIC, &at);
#endif
    at.tv_sec += (time_t)(left / 1000);
    at.tv_nsec += (long)(left % 1000) * 1000000L;
    if (at.tv_nsec >= 1000000000L) {
        at.tv_sec++;
        at.tv_nsec -= 1000000000L;
    }
    pthread_cond_timedwait(&s->moved, &s->lock, &at);
    return 1;
}

/* A non-blocking pipe that no exec'd child inherits (on Linux, not even one
 * forked by another thread meanwhile). */
static int make_pipe(int fds[2])
{
#ifdef __linux__
    return pipe2(fds, O_CLOEXEC | O_NONBLOCK);
#else
    if (pipe(fds) != 0)
        return -1;
    for (int i = 0; i < 2; i++) {
        fcntl(fds[i], F_SETFL, fcntl(fds[i], F_GETFL) | O_NONBLOCK);
        fcntl(fds[i], F_SETFD, FD_CLOEXEC);
    }
    return 0;
#endif
}

/* In a forked child the thread is not there, and its lock may be held for good. */
static int foreign(const dcx_sender *s)
{
    return s->owner != getpid();
}

dcx_sender *dcx_sender_new(dcx_conn *c, size_t capacity, dcx_error *err)
{
    dcx_error_clear(err);
    if (dcx_conn_duplex(c) != 1) {
        dcx_fail(err, DCX_E_UNSUPPORTED,
                 "this connection cannot be written in one thread while it is read in another");
        return NULL;
    }
    dcx_sender *s = calloc(1, sizeof(*s));
    if (!s || capacity == 0) {
        free(s);
        dcx_fail(err, DCX_E_NOMEM, "out of memory");
        return NULL;
    }
    s->conn = c;
    s->cap = capacity;
    s->owner = getpid();
    if (make_pipe(s->wake) != 0) {
        if (err)
            err->sys_errno = errno;
        dcx_fail(err, DCX_E_SYSCALL, "cannot make the sender's wake-up pipe: %s", strerror(errno));
        free(s);
        return NULL;
    }
    pthread_mutex_init(&s->lock, NULL);
    pthread_cond_init(&s->work, NULL);
    init_cond(&s->moved);
    pthread_attr_t attr;
    pthread_attr_init(&attr);
    pthread_attr_setstacksize(&attr, STACK_SIZE);
    int rc = pthread_create(&s->thread, &attr, run, s);
    pthread_attr_destroy(&attr);
    if (rc != 0) {
        dcx_fail(err, DCX_E_SYSCALL, "cannot start the sender thread: %s", strerror(rc));
        close(s->wake[0]);
        close(s->wake[1]);
        pthread_mutex_destroy(&s->lock);
        pthread_cond_destroy(&s->work);
        pthread_cond_destroy(&s->moved);
        free(s);
        return NULL;
    }
    return s;
}

/* Lock held: the sender's failure as this call's result. */
static int failed(dcx_sender *s, dcx_error *err)
{
    if (err)
        *err = s->failure;
    return s->status;
}

long dcx_sender_queue(dcx_sender *s, const void *buf, size_t len, int timeout_ms, dcx_error *err)
{
    dcx_error_clear(err);
    if (foreign(s))
        return dcx_fail(err, DCX_E_CLOSED, "this connection's sender belongs to the parent process");
    int64_t deadline = dcx_deadline(timeout_ms);
    const unsigned char *p = buf;
    size_t done = 0;
    pthread_mutex_lock(&s->lock);
    if (s->status == DCX_OK && !s->ring && !(s->ring = malloc(s->cap))) {
        pthread_mutex_unlock(&s->lock);
        return dcx_fail(err, DCX_E_NOMEM, "out of memory for the send queue");
    }
    while (done < len && s->status == DCX_OK) {
        size_t room = s->cap - s->count;
        if (room == 0) {
            s->waiters++;
            int more = wait_moved(s, deadline);
            s->waiters--;
            if (!more)
                break;
            continue;
        }
        size_t tail = (s->head + s->count) % s->cap;
        size_t n = len - done;
        if (n > room)
            n = room;
        if (n > s->cap - tail)
            n = s->cap - tail;
        memcpy(s->ring + tail, p + done, n);
        s->count += n;
        done += n;
        pthread_cond_signal(&s->work);
    }
    long rc = s->status != DCX_OK ? failed(s, err) : (long)done;
    pthread_mutex_unlock(&s->lock);
    if (rc == 0 && len > 0 && timeout_ms != 0)
        return dcx_fail(err, DCX_E_TIMEOUT, "timed out: the peer took no data for %d ms",
                        timeout_ms);
    return rc;
}

int dcx_sender_flush(dcx_sender *s, int timeout_ms, dcx_error *err)
{
    dcx_error_clear(err);
    if (foreign(s))
        return dcx_fail(err, DCX_E_CLOSED, "this connection's sender belongs to the parent process");
    int64_t deadline = dcx_deadline(timeout_ms);
    pthread_mutex_lock(&s->lock);
    int rc = DCX_OK;
    while (s->status == DCX_OK && (s->count || s->unsent)) {
        if (!wait_moved(s, deadline)) {
            rc = dcx_fail(err, DCX_E_TIMEOUT, "timed out: queued data has not all been sent");
            break;
        }
    }
    if (s->status != DCX_OK)
        rc = failed(s, err);
    pthread_mutex_unlock(&s->lock);
    return rc;
}

size_t dcx_sender_pending(dcx_sender *s)
{
    if (foreign(s))
        return 0;
    pthread_mutex_lock(&s->lock);
    size_t n = s->count + s->unsent;
    pthread_mutex_unlock(&s->lock);
    return n;
}

void dcx_sender_stop(dcx_sender *s)
{
    if (!s || s->stopped || foreign(s))
        return;
    dcx_error why;
    dcx_error_clear(&why);
    dcx_fail(&why, DCX_E_CLOSED, "the connection was closed");
    pthread_mutex_lock(&s->lock);
    end(s, DCX_E_CLOSED, &why);
    pthread_cond_signal(&s->work);
    pthread_mutex_unlock(&s->lock);
    wake(s);
    pthread_join(s->thread, NULL);
    s->stopped = 1;
}

void dcx_sender_free(dcx_sender *s)
{
    if (!s || foreign(s))
        return; /* a forked child leaves it to the parent */
    dcx_sender_stop(s);
    close(s->wake[0]);
    close(s->wake[1]);
    pthread_mutex_destroy(&s->lock);
    pthread_cond_destroy(&s->work);
    pthread_cond_destroy(&s->moved);
    free(s->ring);
    free(s);
}
