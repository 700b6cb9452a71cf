/*
 * wakepipe.h - the self-pipe of the engine's POSIX threads (pump_posix.c,
 * acceptor_posix.c): a byte written to the write end makes the read end
 * readable, which wakes a thread in poll().  Internal to the C layer.
 */
#ifndef DCX_WAKEPIPE_H
#define DCX_WAKEPIPE_H

#include "dcxtls_common.h"

#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <unistd.h>

/* Both ends non-blocking and closed on exec; err says why not. */
static inline int dcx_wakepipe_open(int fds[2], const char *whose, dcx_error *err)
{
    if (pipe(fds) != 0) {
        if (err)
            err->sys_errno = errno;
        return dcx_fail(err, DCX_E_SYSCALL, "cannot make the %s's wake-up pipe: %s", whose,
                        strerror(errno));
    }
    for (int i = 0; i < 2; i++) {
        fcntl(fds[i], F_SETFL, fcntl(fds[i], F_GETFL) | O_NONBLOCK);
        fcntl(fds[i], F_SETFD, FD_CLOEXEC);
    }
    return DCX_OK;
}

static inline void dcx_wakepipe_signal(int write_end)
{
    char byte = 1;
    ssize_t n = write(write_end, &byte, 1); /* a full pipe is already a wake-up */
    (void)n;
}

static inline void dcx_wakepipe_drain(int read_end)
{
    char drain[64];
    while (read(read_end, drain, sizeof(drain)) > 0) {
    }
}

static inline void dcx_wakepipe_close(int fds[2])
{
    close(fds[0]);
    close(fds[1]);
}

#endif /* DCX_WAKEPIPE_H */
