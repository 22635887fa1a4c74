#include "webhook.h"

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <string.h>

/* "sha256=<64 hex digits>" against the HMAC of body under secret. */
static bool hmac_matches(struct latch_view secret, struct latch_view body, const char *header)
{
	if (!header || strncmp(header, "sha256=", 7) != 0 || strlen(header + 7) != 64)
		return false;
	unsigned char mac[EVP_MAX_MD_SIZE];
	unsigned int mac_len = 0;
	const unsigned char *data = (const unsigned char *)(body.ptr ? body.ptr : "");
	if (!HMAC(EVP_sha256(), secret.ptr, (int)secret.len, data, body.len, mac, &mac_len) || mac_len != 32)
		return false;
	static const char hex[] = "0123456789abcdef";
	char expected[65];
	for (unsigned i = 0; i < 32; i++) {
		expected[2 * i] = hex[mac[i] >> 4];
		expected[2 * i + 1] = hex[mac[i] & 15];
	}
	char given[64];
	for (size_t i = 0; i < 64; i++) /* hex digits compare in lower case */
		given[i] = (char)(header[7 + i] >= 'A' && header[7 + i] <= 'F' ? header[7 + i] + 32 : header[7 + i]);
	bool ok = CRYPTO_memcmp(expected, given, 64) == 0;
	OPENSSL_cleanse(mac, sizeof(mac));
	return ok;
}

static bool token_matches(struct latch_view secret, const char *token)
{
	return token && secret.len > 0 && strlen(token) == secret.len &&
	       CRYPTO_memcmp(token, secret.ptr, secret.len) == 0;
}

bool sync_webhook_signed(struct latch_view secret, struct latch_view body, const char *hub_signature,
			 const char *latch_signature, const char *gitlab_token)
{
	secret = latch_view_trim_end(secret, "\r\n");
	if (secret.len == 0)
		return false; /* an empty secret file authorizes nobody */
	return hmac_matches(secret, body, hub_signature) || hmac_matches(secret, body, latch_signature) ||
	       token_matches(secret, gitlab_token);
}
