/*
 * openssl_session.c - the requesting side's session cache: one resumable
 * session per peer (address, port and name), offered when that peer is
 * called again.  The accepting side uses OpenSSL's own cache (stateful
 * resumption, see dcx_conn_new).
 */
#include "openssl_int.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

/* Called with ctx->lock held.  An empty slot, else the least recently used,
 * is taken for a new peer. */
static session_slot *session_slot_for(dcx_ctx *ctx, const char *peer, int create)
{
    session_slot *victim = NULL;
    for (int i = 0; i < SESSION_SLOTS; i++) {
        session_slot *slot = &ctx->sessions[i];
        if (slot->session && strcmp(slot->peer, peer) == 0)
            return slot;
        if (!victim || (victim->session && (!slot->session || slot->last_used < victim->last_used)))
            victim = slot;
    }
    if (!create)
        return NULL;
    SSL_SESSION_free(victim->session);
    victim->session = NULL;
    snprintf(victim->peer, sizeof(victim->peer), "%s", peer);
    return victim;
}

/* OpenSSL hands over each new session (TLS 1.3: each ticket); keep the latest. */
int dcx_openssl_remember_session(SSL *ssl, SSL_SESSION *session)
{
    dcx_conn *c = SSL_get_ex_data(ssl, dcx_openssl_conn_index);
    if (!c || c->server_side || !c->peer_key)
        return 0;
    pthread_mutex_lock(&c->ctx->lock);
    session_slot *slot = session_slot_for(c->ctx, c->peer_key, 1);
    SSL_SESSION_free(slot->session);
    slot->session = session; /* returning 1 hands our reference over */
    slot->last_used = ++c->ctx->session_clock;
    pthread_mutex_unlock(&c->ctx->lock);
    return 1;
}

void dcx_openssl_forget_session(dcx_conn *c)
{
    if (c->server_side || !c->peer_key)
        return;
    pthread_mutex_lock(&c->ctx->lock);
    session_slot *slot = session_slot_for(c->ctx, c->peer_key, 0);
    if (slot) {
        SSL_SESSION_free(slot->session);
        slot->session = NULL;
    }
    pthread_mutex_unlock(&c->ctx->lock);
}

/* Offer the session last agreed with this peer (address, port and name). */
void dcx_openssl_offer_session(dcx_conn *c)
{
    struct sockaddr_storage addr;
    socklen_t len = sizeof(addr);
    char host[INET6_ADDRSTRLEN] = "";
    int port = 0;
    if (getpeername(c->fd, (struct sockaddr *)&addr, &len) != 0)
        return;
    if (addr.ss_family == AF_INET) {
        struct sockaddr_in *in = (struct sockaddr_in *)&addr;
        inet_ntop(AF_INET, &in->sin_addr, host, sizeof(host));
        port = ntohs(in->sin_port);
    } else if (addr.ss_family == AF_INET6) {
        struct sockaddr_in6 *in6 = (struct sockaddr_in6 *)&addr;
        inet_ntop(AF_INET6, &in6->sin6_addr, host, sizeof(host));
        port = ntohs(in6->sin6_port);
    }
    char key[sizeof(((session_slot *)0)->peer)];
    snprintf(key, sizeof(key), "%s:%d/%s", host, port, c->server_name ? c->server_name : "");
    if (!(c->peer_key = strdup(key)))
        return; /* out of memory: a full handshake, as with no cache */
    pthread_mutex_lock(&c->ctx->lock);
    session_slot *slot = session_slot_for(c->ctx, c->peer_key, 0);
    if (slot && SSL_SESSION_is_resumable(slot->session)) {
        SSL_set_session(c->ssl, slot->session);
        slot->last_used = ++c->ctx->session_clock;
    }
    pthread_mutex_unlock(&c->ctx->lock);
}

void dcx_openssl_free_sessions(dcx_ctx *ctx)
{
    for (int i = 0; i < SESSION_SLOTS; i++) {
        SSL_SESSION_free(ctx->sessions[i].session);
        ctx->sessions[i].session = NULL;
    }
}
