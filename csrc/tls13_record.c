/*
 * tls13_record.c - TLS 1.3 record protection on OpenSSL's EVP AEADs; see
 * tls13_record.h.
 */
#include "tls13_record.h"

#include <pthread.h>
#include <string.h>

#include <openssl/core_names.h>
#include <openssl/crypto.h>
#include <openssl/kdf.h>

typedef struct suite {
    const char *name;      /* the IANA name OpenSSL reports */
    const char *cipher;    /* its AEAD */
    const char *digest;    /* its handshake hash, which the key schedule uses */
    size_t key_len;
} suite;

static const suite suites[] = {
    {"TLS_AES_128_GCM_SHA256", "AES-128-GCM", "SHA256", 16},
    {"TLS_AES_256_GCM_SHA384", "AES-256-GCM", "SHA384", 32},
    {"TLS_CHACHA20_POLY1305_SHA256", "ChaCha20-Poly1305", "SHA256", 32},
};
#define SUITES (sizeof(suites) / sizeof(suites[0]))

/* Fetched once: an implicit fetch on every connection costs more than its records. */
static EVP_CIPHER *ciphers[SUITES];
static EVP_MD *digests[SUITES];
static EVP_KDF *hkdf;
static pthread_once_t fetch_once = PTHREAD_ONCE_INIT;

static void fetch_all(void)
{
    for (size_t i = 0; i < SUITES; i++) {
        ciphers[i] = EVP_CIPHER_fetch(NULL, suites[i].cipher, NULL);
        digests[i] = EVP_MD_fetch(NULL, suites[i].digest, NULL);
    }
    hkdf = EVP_KDF_fetch(NULL, "HKDF", NULL);
}

static int find_suite(const char *name)
{
    pthread_once(&fetch_once, fetch_all);
    for (size_t i = 0; i < SUITES; i++)
        if (name && strcmp(name, suites[i].name) == 0)
            return ciphers[i] && digests[i] && hkdf ? (int)i : -1;
    return -1;
}

int tls13_suite_supported(const char *suite_name)
{
    return find_suite(suite_name) >= 0;
}

/* HKDF-Expand-Label(secret, label, "", len) of RFC 8446 section 7.1. */
static int expand_label(const EVP_MD *md, const unsigned char *secret, size_t secret_len,
                        const char *label, unsigned char *out, size_t len)
{
    unsigned char info[2 + 1 + 6 + 16 + 1];
    size_t label_len = strlen(label);
    if (label_len > 16)
        return 0;
    info[0] = (unsigned char)(len >> 8);
    info[1] = (unsigned char)len;
    info[2] = (unsigned char)(6 + label_len);
    memcpy(info + 3, "tls13 ", 6);
    memcpy(info + 9, label, label_len);
    info[9 + label_len] = 0; /* empty context */
    int mode = EVP_KDF_HKDF_MODE_EXPAND_ONLY;
    OSSL_PARAM params[] = {
        OSSL_PARAM_construct_int(OSSL_KDF_PARAM_MODE, &mode),
        OSSL_PARAM_construct_utf8_string(OSSL_KDF_PARAM_DIGEST, (char *)EVP_MD_get0_name(md), 0),
        OSSL_PARAM_construct_octet_string(OSSL_KDF_PARAM_KEY, (void *)secret, secret_len),
        OSSL_PARAM_construct_octet_string(OSSL_KDF_PARAM_INFO, info, 10 + label_len),
        OSSL_PARAM_construct_end(),
    };
    EVP_KDF_CTX *kctx = EVP_KDF_CTX_new(hkdf);
    int ok = kctx && EVP_KDF_derive(kctx, out, len, params) == 1;
    EVP_KDF_CTX_free(kctx);
    return ok;
}

/* Key and IV from the current secret (section 7.3). */
static int derive(tls13_keys *k, const EVP_CIPHER *cipher, size_t key_len)
{
    unsigned char key[32];
    int ok = expand_label(k->md, k->secret, k->secret_len, "key", key, key_len) &&
             expand_label(k->md, k->secret, k->secret_len, "iv", k->iv, TLS13_IV) &&
             EVP_CipherInit_ex(k->aead, cipher, NULL, key, NULL, k->encrypt) == 1;
    OPENSSL_cleanse(key, sizeof(key));
    return ok;
}

int tls13_keys_init(tls13_keys *k, const char *suite_name, const unsigned char *secret,
                    size_t secret_len, uint64_t seq, int encrypt)
{
    memset(k, 0, sizeof(*k));
    int i = find_suite(suite_name);
    if (i < 0 || secret_len != (size_t)EVP_MD_get_size(digests[i]) ||
        secret_len > sizeof(k->secret) || !(k->aead = EVP_CIPHER_CTX_new()))
        return 0;
    k->md = digests[i];
    memcpy(k->secret, secret, secret_len);
    k->secret_len = secret_len;
    k->seq = seq;
    k->encrypt = encrypt;
    if (!derive(k, ciphers[i], suites[i].key_len)) {
        tls13_keys_clear(k);
        return 0;
    }
    return 1;
}

int tls13_keys_update(tls13_keys *k)
{
    unsigned char next[EVP_MAX_MD_SIZE];
    if (!expand_label(k->md, k->secret, k->secret_len, "traffic upd", next, k->secret_len))
        return 0;
    memcpy(k->secret, next, k->secret_len);
    OPENSSL_cleanse(next, sizeof(next));
    k->seq = 0;
    const EVP_CIPHER *cipher = EVP_CIPHER_CTX_get0_cipher(k->aead);
    return derive(k, cipher, (size_t)EVP_CIPHER_get_key_length(cipher));
}

void tls13_keys_clear(tls13_keys *k)
{
    EVP_CIPHER_CTX_free(k->aead);
    OPENSSL_cleanse(k, sizeof(*k));
}

/* The per-record nonce: the IV XOR the sequence number (section 5.3). */
static void nonce_for(const tls13_keys *k, unsigned char nonce[TLS13_IV])
{
    memcpy(nonce, k->iv, TLS13_IV);
    for (int i = 0; i < 8; i++)
        nonce[TLS13_IV - 1 - i] ^= (unsigned char)(k->seq >> (8 * i));
}

size_t tls13_seal(tls13_keys *k, unsigned char type, const unsigned char *in, size_t len,
                  unsigned char *out)
{
    unsigned char nonce[TLS13_IV];
    size_t body = len + 1 + TLS13_TAG;
    int n;
    if (len > TLS13_MAX_PLAIN || k->seq == UINT64_MAX) /* the sequence must never wrap */
        return 0;
    out[0] = TLS13_APPLICATION_DATA; /* the outer type of every protected record */
    out[1] = 3;
    out[2] = 3;
    out[3] = (unsigned char)(body >> 8);
    out[4] = (unsigned char)body;
    nonce_for(k, nonce);
    unsigned char *p = out + TLS13_HEADER;
    if (EVP_EncryptInit_ex(k->aead, NULL, NULL, NULL, nonce) != 1 ||
        EVP_EncryptUpdate(k->aead, NULL, &n, out, TLS13_HEADER) != 1 ||
        (len && EVP_EncryptUpdate(k->aead, p, &n, in, (int)len) != 1) ||
        EVP_EncryptUpdate(k->aead, p + len, &n, &type, 1) != 1 ||
        EVP_EncryptFinal_ex(k->aead, p + len + 1, &n) != 1 ||
        EVP_CIPHER_CTX_ctrl(k->aead, EVP_CTRL_AEAD_GET_TAG, TLS13_TAG, p + len + 1) != 1)
        return 0;
    k->seq++;
    return TLS13_HEADER + body;
}

long tls13_open(tls13_keys *k, const unsigned char *header, const unsigned char *body,
                size_t body_len, unsigned char *dst, size_t room, unsigned char *spill)
{
    unsigned char nonce[TLS13_IV], tag[TLS13_TAG], scratch[16];
    int n;
    if (body_len < TLS13_TAG + 1 || body_len > TLS13_MAX_CIPHER || k->seq == UINT64_MAX)
        return -1;
    size_t inner = body_len - TLS13_TAG;
    size_t first = inner < room ? inner : room;
    memcpy(tag, body + inner, TLS13_TAG);
    nonce_for(k, nonce);
    if (EVP_DecryptInit_ex(k->aead, NULL, NULL, NULL, nonce) != 1 ||
        EVP_DecryptUpdate(k->aead, NULL, &n, header, TLS13_HEADER) != 1 ||
        (first && EVP_DecryptUpdate(k->aead, dst, &n, body, (int)first) != 1) ||
        (inner > first &&
         EVP_DecryptUpdate(k->aead, spill, &n, body + first, (int)(inner - first)) != 1) ||
        EVP_CIPHER_CTX_ctrl(k->aead, EVP_CTRL_AEAD_SET_TAG, TLS13_TAG, tag) != 1 ||
        EVP_DecryptFinal_ex(k->aead, scratch, &n) != 1)
        return -1;
    k->seq++;
    return (long)inner;
}
