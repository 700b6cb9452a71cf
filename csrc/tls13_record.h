/*
 * tls13_record.h - TLS 1.3 record protection (RFC 8446 sections 5.2-5.5 and
 * 7.1-7.3) on OpenSSL's EVP AEADs.  Internal to the OpenSSL backend.
 *
 * After the handshake the backend protects application records itself, from
 * the traffic secrets OpenSSL derived: it seals straight from the caller's
 * buffer into the send buffer and opens straight into the caller's buffer.
 * OpenSSL's own record layer copies every outgoing record twice and every
 * incoming one once more, which on bulk transfers costs a sixth (reading) to
 * a third (writing) of the AES-GCM work.  No sockets here: bytes in, bytes out.
 */
#ifndef TLS13_RECORD_H
#define TLS13_RECORD_H

#include <stddef.h>
#include <stdint.h>

#include <openssl/evp.h>

#define TLS13_HEADER 5                  /* type, legacy version, length */
#define TLS13_TAG 16                    /* AES-GCM and ChaCha20-Poly1305 */
#define TLS13_MAX_PLAIN 16384           /* content of one record */
#define TLS13_MAX_CIPHER (TLS13_MAX_PLAIN + 256) /* a record's body, at most */
#define TLS13_IV 12

/* Content types. */
#define TLS13_ALERT 21
#define TLS13_HANDSHAKE 22
#define TLS13_APPLICATION_DATA 23

/* One direction's traffic keys and record sequence number. */
typedef struct tls13_keys {
    EVP_CIPHER_CTX *aead;
    const EVP_MD *md;
    unsigned char secret[EVP_MAX_MD_SIZE]; /* kept for KeyUpdate's next generation */
    size_t secret_len;
    unsigned char iv[TLS13_IV];
    uint64_t seq;
    int encrypt;
} tls13_keys;

/* 1 when the suite (its standard name) is one tls13_keys can carry:
 * TLS_AES_128_GCM_SHA256, TLS_AES_256_GCM_SHA384, TLS_CHACHA20_POLY1305_SHA256. */
int tls13_suite_supported(const char *suite);

/* Keys from a traffic secret, with the first record numbered `seq`.
 * Returns 1, or 0 (nothing held) when the suite or OpenSSL refuses. */
int tls13_keys_init(tls13_keys *k, const char *suite, const unsigned char *secret,
                    size_t secret_len, uint64_t seq, int encrypt);
/* The next generation after a KeyUpdate; the sequence restarts at 0. */
int tls13_keys_update(tls13_keys *k);
void tls13_keys_clear(tls13_keys *k);

/* Seal `len` (<= TLS13_MAX_PLAIN) bytes of content `type` as one record at
 * `out`, which has room for TLS13_HEADER + len + 1 + TLS13_TAG bytes.
 * Returns the record's length, or 0 when OpenSSL fails. */
size_t tls13_seal(tls13_keys *k, unsigned char type, const unsigned char *in, size_t len,
                  unsigned char *out);

/* Open the record whose header is `header` and whose body (ciphertext and
 * tag) is `body`, `body_len` bytes.  The inner plaintext (content, type,
 * padding) goes to `dst` as far as `room` allows and the rest to `spill`,
 * which holds TLS13_MAX_CIPHER bytes.  Returns the inner plaintext's length,
 * or -1 when the tag does not verify (the bytes written are then garbage). */
long tls13_open(tls13_keys *k, const unsigned char *header, const unsigned char *body,
                size_t body_len, unsigned char *dst, size_t room, unsigned char *spill);

#endif /* TLS13_RECORD_H */
