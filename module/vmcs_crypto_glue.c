// SPDX-License-Identifier: GPL-2.0
/*
 * vmcs's C glue for per-connection encryption (module/glue/crypto.rs, module/conn/crypto.rs):
 * one-line forwarders to lib/crypto's ChaCha20-Poly1305, X25519 and keyed BLAKE2s, and to
 * memzero_explicit and get_random_bytes, whose C definitions are inline or whose headers
 * the Rust bindings do not include. No logic lives here: the handshake, the key schedule,
 * the nonce counters and the framing are in Rust.
 */
#include <linux/random.h>
#include <linux/string.h>
#include <linux/types.h>
#include <crypto/blake2s.h>
#include <crypto/chacha20poly1305.h>
#include <crypto/curve25519.h>

#include "vmcs_glue.h"

void vmcs_crypto_seal(u8 *dst, const u8 *src, size_t len, const u8 *ad, size_t ad_len,
		      u64 nonce, const u8 *key)
{
	chacha20poly1305_encrypt(dst, src, len, ad, ad_len, nonce, key);
}

bool vmcs_crypto_open(u8 *dst, const u8 *src, size_t len, const u8 *ad, size_t ad_len,
		      u64 nonce, const u8 *key)
{
	return chacha20poly1305_decrypt(dst, src, len, ad, ad_len, nonce, key);
}

bool vmcs_crypto_keypair(u8 *secret, u8 *pub)
{
	get_random_bytes(secret, CURVE25519_KEY_SIZE);
	curve25519_clamp_secret(secret);
	return curve25519_generate_public(pub, secret);
}

bool vmcs_crypto_dh(u8 *out, const u8 *secret, const u8 *peer_pub)
{
	return curve25519(out, secret, peer_pub);
}

void vmcs_crypto_mac(u8 *out, size_t out_len, const u8 *key, size_t key_len, const u8 *in,
		     size_t in_len)
{
	blake2s(key, key_len, in, in_len, out, out_len);
}

void vmcs_crypto_wipe(void *p, size_t len)
{
	memzero_explicit(p, len);
}
