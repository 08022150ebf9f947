// Thin inline helpers over system OpenSSL libcrypto (libssl-dev).
// Only the hot paths live here: keyed chunk ids (HMAC-SHA-256) and, later, bulk AES-256-GCM.
#ifndef CSYNCCRYPTO_SHIM_H
#define CSYNCCRYPTO_SHIM_H
#include <openssl/evp.h>
#include <openssl/crypto.h>
#include <string.h>
#include <stdint.h>

/// HMAC-SHA-256 with the inner and outer SHA-256 states precomputed once per key,
/// so each chunk costs two digest-context copies instead of a key schedule.
typedef struct {
    EVP_MD_CTX *inner;
    EVP_MD_CTX *outer;
} csync_hmac_key;

static inline int csync_hmac_key_init(csync_hmac_key *k, const uint8_t *key, size_t keylen) {
    uint8_t block[64];
    uint8_t pad[64];
    memset(block, 0, sizeof block);
    if (keylen > 64) {
        unsigned int n = 0;
        if (!EVP_Digest(key, keylen, block, &n, EVP_sha256(), NULL)) return 0;
    } else {
        memcpy(block, key, keylen);
    }
    k->inner = EVP_MD_CTX_new();
    k->outer = EVP_MD_CTX_new();
    if (!k->inner || !k->outer) return 0;
    for (int i = 0; i < 64; i++) pad[i] = block[i] ^ 0x36;
    if (!EVP_DigestInit_ex(k->inner, EVP_sha256(), NULL) || !EVP_DigestUpdate(k->inner, pad, 64)) return 0;
    for (int i = 0; i < 64; i++) pad[i] = block[i] ^ 0x5c;
    if (!EVP_DigestInit_ex(k->outer, EVP_sha256(), NULL) || !EVP_DigestUpdate(k->outer, pad, 64)) return 0;
    OPENSSL_cleanse(block, sizeof block);
    OPENSSL_cleanse(pad, sizeof pad);
    return 1;
}

static inline void csync_hmac_key_free(csync_hmac_key *k) {
    EVP_MD_CTX_free(k->inner);
    EVP_MD_CTX_free(k->outer);
    k->inner = NULL;
    k->outer = NULL;
}

/// out must hold 32 bytes. Thread-safe: the key's contexts are only read (copied).
static inline int csync_hmac_sha256(const csync_hmac_key *k, const void *data, size_t len, uint8_t *out) {
    EVP_MD_CTX *c = EVP_MD_CTX_new();
    if (!c) return 0;
    uint8_t ih[32];
    unsigned int n = 0;
    int ok = EVP_MD_CTX_copy_ex(c, k->inner)
        && EVP_DigestUpdate(c, data, len)
        && EVP_DigestFinal_ex(c, ih, &n)
        && EVP_MD_CTX_copy_ex(c, k->outer)
        && EVP_DigestUpdate(c, ih, 32)
        && EVP_DigestFinal_ex(c, out, &n);
    EVP_MD_CTX_free(c);
    return ok;
}

/// Plain SHA-256 (used for device ids and checksums on bulk data).
static inline int csync_sha256(const void *data, size_t len, uint8_t *out) {
    unsigned int n = 0;
    return EVP_Digest(data, len, out, &n, EVP_sha256(), NULL);
}

/// AES-256-GCM with the key schedule set up once; each message only sets its 96-bit nonce.
/// One context per direction: a context is used by one thread at a time.
typedef struct {
    EVP_CIPHER_CTX *ctx;
    int encrypt;
} csync_gcm;

static inline int csync_gcm_init(csync_gcm *g, const uint8_t *key32, int encrypt) {
    g->ctx = EVP_CIPHER_CTX_new();
    g->encrypt = encrypt;
    if (!g->ctx) return 0;
    return EVP_CipherInit_ex(g->ctx, EVP_aes_256_gcm(), NULL, key32, NULL, encrypt);
}

static inline void csync_gcm_free(csync_gcm *g) {
    EVP_CIPHER_CTX_free(g->ctx);
    g->ctx = NULL;
}

/// out receives len bytes of ciphertext followed by the 16-byte tag.
static inline int csync_gcm_seal(csync_gcm *g, const uint8_t *nonce12, const uint8_t *ad, size_t adlen,
                                 const uint8_t *pt, size_t len, uint8_t *out) {
    int n = 0;
    if (!EVP_CipherInit_ex(g->ctx, NULL, NULL, NULL, nonce12, 1)) return 0;
    if (adlen && !EVP_CipherUpdate(g->ctx, NULL, &n, ad, (int)adlen)) return 0;
    if (len && !EVP_CipherUpdate(g->ctx, out, &n, pt, (int)len)) return 0;
    if (!EVP_CipherFinal_ex(g->ctx, out + len, &n)) return 0;
    return EVP_CIPHER_CTX_ctrl(g->ctx, EVP_CTRL_GCM_GET_TAG, 16, out + len);
}

/// in holds len bytes of ciphertext followed by the tag; returns 1 only if the tag verifies.
static inline int csync_gcm_open(csync_gcm *g, const uint8_t *nonce12, const uint8_t *ad, size_t adlen,
                                 const uint8_t *in, size_t len, uint8_t *out) {
    int n = 0;
    if (!EVP_CipherInit_ex(g->ctx, NULL, NULL, NULL, nonce12, 0)) return 0;
    if (adlen && !EVP_CipherUpdate(g->ctx, NULL, &n, ad, (int)adlen)) return 0;
    if (len && !EVP_CipherUpdate(g->ctx, out, &n, in, (int)len)) return 0;
    if (!EVP_CIPHER_CTX_ctrl(g->ctx, EVP_CTRL_GCM_SET_TAG, 16, (void *)(in + len))) return 0;
    return EVP_CipherFinal_ex(g->ctx, out + len, &n) > 0;
}

#endif
