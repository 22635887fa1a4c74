#include "latch/sshsig.h"

#include <fnmatch.h>
#include <openssl/bn.h>
#include <openssl/core_names.h>
#include <openssl/ecdsa.h>
#include <openssl/evp.h>
#include <openssl/param_build.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include "latch/base64.h"
#include "latch/file.h"

#define END_MARKER "-----END SSH SIGNATURE-----"
#define MAX_SIGNATURE (64u << 10)
#define MAX_ALLOWED_SIGNERS (1u << 20)
#define MIN_RSA_BITS 2048

/* A cursor over SSH wire data (RFC 4251: uint32 and length-prefixed string); a read past the
 * end marks it bad and yields nothing. */
struct wire {
	const unsigned char *p;
	size_t n;
	bool bad;
};

static struct wire wire_of(struct latch_view v)
{
	return (struct wire){ (const unsigned char *)v.ptr, v.len, false };
}

static uint32_t wire_u32(struct wire *w)
{
	if (w->bad || w->n < 4) {
		w->bad = true;
		return 0;
	}
	uint32_t v = (uint32_t)w->p[0] << 24 | (uint32_t)w->p[1] << 16 | (uint32_t)w->p[2] << 8 | (uint32_t)w->p[3];
	w->p += 4;
	w->n -= 4;
	return v;
}

static struct latch_view wire_string(struct wire *w)
{
	uint32_t len = wire_u32(w);
	if (w->bad || len > w->n) {
		w->bad = true;
		return latch_view_make("", 0);
	}
	struct latch_view v = latch_view_make((const char *)w->p, len);
	w->p += len;
	w->n -= len;
	return v;
}

static bool wire_done(const struct wire *w)
{
	return !w->bad && w->n == 0;
}

static int put_string(struct latch_buf *b, struct latch_view v)
{
	unsigned char len[4] = { (unsigned char)(v.len >> 24), (unsigned char)(v.len >> 16),
				 (unsigned char)(v.len >> 8), (unsigned char)v.len };
	return latch_buf_append(b, len, 4) < 0 || latch_buf_append_view(b, v) < 0 ? LATCH_ENOMEM : 0;
}

/* The signature blob, as `ssh-keygen -Y sign` lays it out (PROTOCOL.sshsig). */
struct sshsig {
	struct latch_view public_key, ns, reserved, hash_alg, sig_type, sig_blob;
};

/* Key types, and how their signatures are checked. digest NULL: EdDSA, no separate hash. */
enum key_kind { KEY_ED25519, KEY_RSA, KEY_ECDSA };
struct key_type {
	const char *name;
	enum key_kind kind;
	const char *group;  /* ECDSA: OpenSSL's name of the curve */
	const char *curve;  /* ECDSA: the name inside the key blob */
	const char *digest; /* ECDSA: the hash the signature is over */
};

static const struct key_type key_types[] = {
	{ "ssh-ed25519", KEY_ED25519, NULL, NULL, NULL },
	{ "ssh-rsa", KEY_RSA, NULL, NULL, NULL },
	{ "ecdsa-sha2-nistp256", KEY_ECDSA, "P-256", "nistp256", "SHA256" },
	{ "ecdsa-sha2-nistp384", KEY_ECDSA, "P-384", "nistp384", "SHA384" },
	{ "ecdsa-sha2-nistp521", KEY_ECDSA, "P-521", "nistp521", "SHA512" },
};

static const struct key_type *key_type_named(struct latch_view name)
{
	for (size_t i = 0; i < sizeof(key_types) / sizeof(*key_types); i++)
		if (latch_view_eq_str(name, key_types[i].name))
			return &key_types[i];
	return NULL;
}

static int dearmor(struct latch_view armored, struct latch_buf *ret, struct latch_error *err)
{
	const char *begin = memmem(armored.ptr, armored.len, LATCH_SSHSIG_BEGIN, strlen(LATCH_SSHSIG_BEGIN));
	if (!begin)
		return latch_error_set(err, LATCH_EINVAL, "no SSH signature found");
	begin += strlen(LATCH_SSHSIG_BEGIN);
	const char *end = memmem(begin, (size_t)(armored.ptr + armored.len - begin), END_MARKER, strlen(END_MARKER));
	if (!end)
		return latch_error_set(err, LATCH_EINVAL, "the SSH signature has no end line");
	struct latch_buf text = LATCH_BUF_INIT(MAX_SIGNATURE);
	int r = 0;
	for (const char *p = begin; p < end && r == 0; p++)
		if (*p != '\n' && *p != '\r' && *p != ' ' && *p != '\t')
			r = latch_buf_putc(&text, *p);
	if (r == 0)
		r = latch_base64_decode(latch_buf_view(&text), false, ret);
	latch_buf_done(&text);
	return r < 0 ? latch_error_set(err, LATCH_EINVAL, "the SSH signature is not base64 or larger than %u bytes",
				       MAX_SIGNATURE)
		     : 0;
}

static int parse_sshsig(struct latch_view blob, struct sshsig *s, struct latch_error *err)
{
	if (blob.len < 6 || memcmp(blob.ptr, "SSHSIG", 6) != 0)
		return latch_error_set(err, LATCH_EINVAL, "not an SSH signature (no SSHSIG magic)");
	struct wire w = wire_of(latch_view_make(blob.ptr + 6, blob.len - 6));
	uint32_t version = wire_u32(&w);
	s->public_key = wire_string(&w);
	s->ns = wire_string(&w);
	s->reserved = wire_string(&w);
	s->hash_alg = wire_string(&w);
	struct wire sig = wire_of(wire_string(&w));
	s->sig_type = wire_string(&sig);
	s->sig_blob = wire_string(&sig);
	if (!wire_done(&w) || !wire_done(&sig))
		return latch_error_set(err, LATCH_EINVAL, "the SSH signature is malformed");
	if (version != 1)
		return latch_error_set(err, LATCH_EUNSUPPORTED, "SSH signature version %u is not supported", version);
	return 0;
}

static void fingerprint_of(struct latch_view key, char ret[64])
{
	unsigned char hash[32];
	unsigned int n = 0;
	struct latch_buf b64 = LATCH_BUF_INIT(64);
	snprintf(ret, 64, "SHA256:?");
	if (EVP_Digest(key.ptr, key.len, hash, &n, EVP_sha256(), NULL) == 1 &&
	    latch_base64_encode(latch_view_make((const char *)hash, n), false, &b64) == 0) {
		size_t len = b64.len;
		while (len > 0 && b64.ptr[len - 1] == '=')
			len--;
		snprintf(ret, 64, "SHA256:%.*s", (int)len, b64.ptr);
	}
	latch_buf_done(&b64);
}

static EVP_PKEY *key_from_params(const char *algorithm, OSSL_PARAM *params)
{
	EVP_PKEY *key = NULL;
	EVP_PKEY_CTX *ctx = EVP_PKEY_CTX_new_from_name(NULL, algorithm, NULL);
	if (!ctx || EVP_PKEY_fromdata_init(ctx) != 1 ||
	    EVP_PKEY_fromdata(ctx, &key, EVP_PKEY_PUBLIC_KEY, params) != 1)
		key = NULL;
	EVP_PKEY_CTX_free(ctx);
	return key;
}

static EVP_PKEY *rsa_key(struct wire *w)
{
	struct latch_view e = wire_string(w), n = wire_string(w);
	if (!wire_done(w))
		return NULL;
	BIGNUM *bn_e = BN_bin2bn((const unsigned char *)e.ptr, (int)e.len, NULL);
	BIGNUM *bn_n = BN_bin2bn((const unsigned char *)n.ptr, (int)n.len, NULL);
	OSSL_PARAM_BLD *bld = OSSL_PARAM_BLD_new();
	OSSL_PARAM *params = NULL;
	EVP_PKEY *key = NULL;
	if (bn_e && bn_n && bld && OSSL_PARAM_BLD_push_BN(bld, OSSL_PKEY_PARAM_RSA_N, bn_n) == 1 &&
	    OSSL_PARAM_BLD_push_BN(bld, OSSL_PKEY_PARAM_RSA_E, bn_e) == 1 && (params = OSSL_PARAM_BLD_to_param(bld)))
		key = key_from_params("RSA", params);
	OSSL_PARAM_free(params);
	OSSL_PARAM_BLD_free(bld);
	BN_free(bn_e);
	BN_free(bn_n);
	return key;
}

static EVP_PKEY *ecdsa_key(struct wire *w, const struct key_type *t)
{
	struct latch_view curve = wire_string(w), point = wire_string(w);
	if (!wire_done(w) || !latch_view_eq_str(curve, t->curve))
		return NULL;
	OSSL_PARAM params[] = {
		OSSL_PARAM_construct_utf8_string(OSSL_PKEY_PARAM_GROUP_NAME, (char *)t->group, 0),
		OSSL_PARAM_construct_octet_string(OSSL_PKEY_PARAM_PUB_KEY, (void *)point.ptr, point.len),
		OSSL_PARAM_construct_end(),
	};
	return key_from_params("EC", params);
}

/* The public key of the blob; NULL when it does not parse as its type says. */
static EVP_PKEY *public_key(struct latch_view blob, const struct key_type *t)
{
	struct wire w = wire_of(blob);
	wire_string(&w); /* the type, already read */
	if (t->kind == KEY_RSA)
		return rsa_key(&w);
	if (t->kind == KEY_ECDSA)
		return ecdsa_key(&w, t);
	struct latch_view raw = wire_string(&w);
	if (!wire_done(&w) || raw.len != 32)
		return NULL;
	return EVP_PKEY_new_raw_public_key(EVP_PKEY_ED25519, NULL, (const unsigned char *)raw.ptr, 32);
}

/* SSH's ECDSA signature (mpint r, mpint s) as the DER OpenSSL verifies. */
static int ecdsa_der(struct latch_view sig, struct latch_buf *ret)
{
	struct wire w = wire_of(sig);
	struct latch_view r = wire_string(&w), s = wire_string(&w);
	if (!wire_done(&w))
		return LATCH_EINVAL;
	ECDSA_SIG *es = ECDSA_SIG_new();
	BIGNUM *br = BN_bin2bn((const unsigned char *)r.ptr, (int)r.len, NULL);
	BIGNUM *bs = BN_bin2bn((const unsigned char *)s.ptr, (int)s.len, NULL);
	if (!es || !br || !bs || ECDSA_SIG_set0(es, br, bs) != 1) {
		BN_free(br);
		BN_free(bs);
		ECDSA_SIG_free(es);
		return LATCH_ENOMEM;
	}
	unsigned char *der = NULL;
	int len = i2d_ECDSA_SIG(es, &der);
	int rc = len > 0 && latch_buf_append(ret, der, (size_t)len) == 0 ? 0 : LATCH_ENOMEM;
	OPENSSL_free(der);
	ECDSA_SIG_free(es);
	return rc;
}

/* An RSA signature as long as the modulus: OpenSSL wants it so, and OpenSSH's verifier
 * left-pads a shorter one (a signer may strip leading zeros). */
static int rsa_padded(struct latch_view sig, size_t modulus_len, struct latch_buf *ret)
{
	if (sig.len > modulus_len)
		return LATCH_EINVAL;
	for (size_t i = sig.len; i < modulus_len; i++)
		if (latch_buf_putc(ret, '\0') < 0)
			return LATCH_ENOMEM;
	return latch_buf_append_view(ret, sig) < 0 ? LATCH_ENOMEM : 0;
}

/* The digest a signature of this type is made with; "" for EdDSA; NULL when the type does
 * not go with the key (or is RSA with SHA-1, which ssh-keygen no longer makes). */
static const char *signature_digest(const struct key_type *t, struct latch_view sig_type)
{
	switch (t->kind) {
	case KEY_ED25519: return latch_view_eq_str(sig_type, "ssh-ed25519") ? "" : NULL;
	case KEY_ECDSA: return latch_view_eq_str(sig_type, t->name) ? t->digest : NULL;
	case KEY_RSA:
		return latch_view_eq_str(sig_type, "rsa-sha2-512") ? "SHA512"
		       : latch_view_eq_str(sig_type, "rsa-sha2-256") ? "SHA256"
								      : NULL;
	}
	return NULL;
}

/* What the key signed: the magic, the namespace, the reserved field, the hash algorithm and
 * the hash of the message. */
static int signed_data(const struct sshsig *s, struct latch_view message, struct latch_buf *ret)
{
	const EVP_MD *md = latch_view_eq_str(s->hash_alg, "sha512")   ? EVP_sha512()
			   : latch_view_eq_str(s->hash_alg, "sha256") ? EVP_sha256()
								      : NULL;
	unsigned char hash[EVP_MAX_MD_SIZE];
	unsigned int n = 0;
	if (!md)
		return LATCH_EUNSUPPORTED;
	if (EVP_Digest(message.ptr, message.len, hash, &n, md, NULL) != 1)
		return LATCH_ENOMEM;
	/* The reserved field signed is empty whatever the blob holds, as OpenSSH verifies it. */
	if (latch_buf_append(ret, "SSHSIG", 6) < 0 || put_string(ret, s->ns) < 0 ||
	    put_string(ret, latch_view_make("", 0)) < 0 ||
	    put_string(ret, s->hash_alg) < 0 || put_string(ret, latch_view_make((const char *)hash, n)) < 0)
		return LATCH_ENOMEM;
	return 0;
}

static bool signature_matches(EVP_PKEY *key, const char *digest, struct latch_view sig,
			      struct latch_view data)
{
	EVP_MD_CTX *ctx = EVP_MD_CTX_new();
	bool ok = ctx && EVP_DigestVerifyInit_ex(ctx, NULL, *digest ? digest : NULL, NULL, NULL, key, NULL) == 1 &&
		  EVP_DigestVerify(ctx, (const unsigned char *)sig.ptr, sig.len, (const unsigned char *)data.ptr,
				   data.len) == 1;
	EVP_MD_CTX_free(ctx);
	return ok;
}

/* ---- allowed_signers ---------------------------------------------------------------------- */

struct signer_line {
	struct latch_view principals, key_type, key_base64;
	struct latch_view namespaces; /* ptr NULL: any */
	bool cert_authority;
	bool has_after, has_before;
	int64_t valid_after, valid_before;
};

/* The next whitespace-separated field; double quotes hold spaces. */
static bool next_field(const char **p, const char *end, struct latch_view *ret)
{
	while (*p < end && (**p == ' ' || **p == '\t'))
		(*p)++;
	if (*p == end)
		return false;
	const char *start = *p;
	bool quoted = false;
	for (; *p < end && (quoted || (**p != ' ' && **p != '\t')); (*p)++)
		if (**p == '"')
			quoted = !quoted;
	*ret = latch_view_make(start, (size_t)(*p - start));
	return true;
}

static struct latch_view unquoted(struct latch_view v)
{
	if (v.len >= 2 && v.ptr[0] == '"' && v.ptr[v.len - 1] == '"')
		return latch_view_make(v.ptr + 1, v.len - 2);
	return v;
}

static bool looks_like_key_type(struct latch_view v)
{
	return latch_view_has_prefix(v, "ssh-") || latch_view_has_prefix(v, "ecdsa-") ||
	       latch_view_has_prefix(v, "sk-");
}

/* YYYYMMDD, YYYYMMDDHHMM or YYYYMMDDHHMMSS, optionally ending in Z; UTC either way. */
static bool parse_time(struct latch_view v, int64_t *ret)
{
	v = unquoted(v);
	if (v.len > 0 && (v.ptr[v.len - 1] == 'Z' || v.ptr[v.len - 1] == 'z'))
		v.len--;
	if (v.len != 8 && v.len != 12 && v.len != 14)
		return false;
	int f[6] = { 0 };
	static const int width[] = { 4, 2, 2, 2, 2, 2 };
	size_t at = 0;
	for (size_t i = 0; i < 6 && at < v.len; i++)
		for (int k = 0; k < width[i]; k++, at++) {
			if (v.ptr[at] < '0' || v.ptr[at] > '9')
				return false;
			f[i] = f[i] * 10 + (v.ptr[at] - '0');
		}
	if (f[1] < 1 || f[1] > 12 || f[2] < 1 || f[2] > 31 || f[3] > 23 || f[4] > 59 || f[5] > 60)
		return false;
	struct tm tm = { .tm_year = f[0] - 1900, .tm_mon = f[1] - 1, .tm_mday = f[2],
			 .tm_hour = f[3], .tm_min = f[4], .tm_sec = f[5] };
	*ret = (int64_t)timegm(&tm);
	return true;
}

static bool option_is(struct latch_view opt, const char *name, struct latch_view *ret_value)
{
	size_t n = strlen(name);
	if (opt.len < n || strncasecmp(opt.ptr, name, n) != 0)
		return false;
	if (ret_value) {
		if (opt.len == n || opt.ptr[n] != '=')
			return false;
		*ret_value = unquoted(latch_view_make(opt.ptr + n + 1, opt.len - n - 1));
		return true;
	}
	return opt.len == n;
}

static int parse_options(struct latch_view opts, struct signer_line *l)
{
	const char *p = opts.ptr, *end = opts.ptr + opts.len;
	while (p < end) {
		const char *start = p;
		bool quoted = false;
		for (; p < end && (quoted || *p != ','); p++)
			if (*p == '"')
				quoted = !quoted;
		struct latch_view opt = latch_view_make(start, (size_t)(p - start)), value;
		if (p < end)
			p++;
		if (option_is(opt, "cert-authority", NULL))
			l->cert_authority = true;
		else if (option_is(opt, "namespaces", &l->namespaces))
			continue;
		else if (option_is(opt, "valid-after", &value) && parse_time(value, &l->valid_after))
			l->has_after = true;
		else if (option_is(opt, "valid-before", &value) && parse_time(value, &l->valid_before))
			l->has_before = true;
		else
			return LATCH_EINVAL;
	}
	return 0;
}

/* principals [options] keytype base64-key [comment] */
static int parse_line(struct latch_view text, struct signer_line *l)
{
	*l = (struct signer_line){ 0 };
	const char *p = text.ptr, *end = text.ptr + text.len;
	struct latch_view second;
	if (!next_field(&p, end, &l->principals) || !next_field(&p, end, &second))
		return LATCH_EINVAL;
	if (looks_like_key_type(second)) {
		l->key_type = second;
	} else if (parse_options(second, l) < 0 || !next_field(&p, end, &l->key_type)) {
		return LATCH_EINVAL;
	}
	return next_field(&p, end, &l->key_base64) ? 0 : LATCH_EINVAL;
}

/* ssh's pattern lists: any pattern matches, and a matching !pattern denies. */
static bool namespace_allowed(struct latch_view patterns, const char *ns)
{
	bool allowed = false;
	const char *p = patterns.ptr, *end = patterns.ptr + patterns.len;
	for (bool last = false; !last;) {
		const char *comma = memchr(p, ',', (size_t)(end - p));
		const char *stop = comma ? comma : end;
		bool negated = p < stop && *p == '!';
		char *pattern = strndup(p + negated, (size_t)(stop - p) - negated);
		bool match = pattern && fnmatch(pattern, ns, 0) == 0;
		free(pattern);
		if (match && negated)
			return false;
		allowed = allowed || match;
		last = !comma;
		if (comma)
			p = comma + 1;
	}
	return allowed;
}

static void copy_principal(struct latch_sshsig_signer *ret, const struct signer_line *l, size_t line)
{
	struct latch_view pr = unquoted(l->principals);
	snprintf(ret->principal, sizeof(ret->principal), "%.*s", (int)pr.len, pr.ptr);
	ret->line = line;
}

/* Why the line that lists the key does not let it sign this (NULL: it does). */
static const char *line_refusal(const struct signer_line *l, const char *ns, int64_t signed_at)
{
	if (l->namespaces.ptr && !namespace_allowed(l->namespaces, ns))
		return "its namespaces= option does not include it";
	if (l->has_after && signed_at < l->valid_after)
		return "it was signed before the key's valid-after";
	if (l->has_before && signed_at > l->valid_before)
		return "it was signed after the key's valid-before";
	return NULL;
}

struct lookup {
	struct latch_view key;        /* the signature's public key blob */
	const char *name, *ns, *fingerprint;
	int64_t signed_at;
	struct latch_sshsig_signer *ret;
	struct latch_error *err;
	const char *refused;          /* the first listing line's refusal */
	size_t refused_line;
};

/* 1 when this line lets the key sign, 0 when it is another key or refuses, < 0 on an error. */
static int check_line(struct lookup *k, struct latch_view text, size_t line)
{
	struct signer_line l;
	if (parse_line(text, &l) < 0)
		return latch_error_set(k->err, LATCH_EINVAL, "%s:%zu: not an allowed_signers line (principals, options, "
				       "key type, key)", k->name, line);
	struct latch_buf blob = LATCH_BUF_INIT(MAX_SIGNATURE);
	int r = latch_base64_decode(l.key_base64, false, &blob);
	if (r < 0) {
		latch_buf_done(&blob);
		return latch_error_set(k->err, LATCH_EINVAL, "%s:%zu: the key is not base64", k->name, line);
	}
	bool same = !l.cert_authority && latch_view_eq(latch_buf_view(&blob), k->key);
	latch_buf_done(&blob);
	if (!same)
		return 0;
	const char *why = line_refusal(&l, k->ns, k->signed_at);
	if (!why) {
		copy_principal(k->ret, &l, line);
		return 1;
	}
	if (!k->refused) {
		k->refused = why;
		k->refused_line = line;
	}
	return 0;
}

static int find_signer(struct lookup *k, struct latch_view allowed)
{
	const char *p = allowed.ptr, *end = allowed.ptr + allowed.len;
	for (size_t line = 1; p < end; line++) {
		const char *nl = memchr(p, '\n', (size_t)(end - p));
		const char *stop = nl ? nl : end;
		const char *q = p;
		while (q < stop && (*q == ' ' || *q == '\t'))
			q++;
		size_t len = (size_t)(stop - q);
		if (len > 0 && q[len - 1] == '\r')
			len--;
		int r = len == 0 || *q == '#' ? 0 : check_line(k, latch_view_make(q, len), line);
		if (r != 0)
			return r < 0 ? r : 0;
		p = nl ? nl + 1 : end;
	}
	if (k->refused)
		return latch_error_set(k->err, LATCH_EFORBIDDEN,
				       "SSH key %s is listed in %s:%zu, but not for this signature: "
				       "namespace '%s', %s", k->fingerprint, k->name, k->refused_line, k->ns, k->refused);
	return latch_error_set(k->err, LATCH_EFORBIDDEN, "signed by SSH key %s, which is not in '%s'",
			       k->fingerprint, k->name);
}

/* ---- verification -------------------------------------------------------------------------- */

static int key_type_of(struct latch_view key, const char *fingerprint, const struct key_type **ret,
		       struct latch_error *err)
{
	struct wire w = wire_of(key);
	struct latch_view type = wire_string(&w);
	if (w.bad)
		return latch_error_set(err, LATCH_EINVAL, "the SSH signature's key is malformed");
	*ret = key_type_named(type);
	if (*ret)
		return 0;
	if (latch_view_has_prefix(type, "sk-"))
		return latch_error_set(err, LATCH_EUNSUPPORTED, "SSH key %s is a security key (%.*s), which latch does not "
				       "verify yet", fingerprint, (int)type.len, type.ptr);
	if (type.len > 21 && memcmp(type.ptr + type.len - 21, "-cert-v01@openssh.com", 21) == 0)
		return latch_error_set(err, LATCH_EUNSUPPORTED, "signed with an SSH certificate (%s): list the signing key "
				       "itself in allowed_signers; certificates are not supported", fingerprint);
	return latch_error_set(err, LATCH_EUNSUPPORTED, "SSH key %s has type '%.*s', which latch does not support",
			       fingerprint, (int)type.len, type.ptr);
}

static int check_signature(const struct sshsig *s, const struct key_type *t, const char *fingerprint,
			   struct latch_view message, struct latch_error *err)
{
	const char *digest = signature_digest(t, s->sig_type);
	if (!digest)
		return latch_error_set(err, LATCH_EUNSUPPORTED, "SSH key %s made a '%.*s' signature, which latch does not "
				       "accept for a %s key", fingerprint, (int)s->sig_type.len, s->sig_type.ptr, t->name);
	EVP_PKEY *key = public_key(s->public_key, t);
	if (!key)
		return latch_error_set(err, LATCH_EINVAL, "SSH key %s is malformed", fingerprint);
	struct latch_buf data = LATCH_BUF_INIT(4096), der = LATCH_BUF_INIT(4096);
	int r = 0;
	if (t->kind == KEY_RSA && EVP_PKEY_get_bits(key) < MIN_RSA_BITS)
		r = latch_error_set(err, LATCH_EFORBIDDEN, "SSH key %s is RSA of %d bits, fewer than %d", fingerprint,
				    EVP_PKEY_get_bits(key), MIN_RSA_BITS);
	else if ((r = signed_data(s, message, &data)) < 0)
		r = latch_error_set(err, r, "the SSH signature's hash '%.*s' is not sha256 or sha512", (int)s->hash_alg.len,
				    s->hash_alg.ptr);
	else if ((t->kind == KEY_ECDSA && ecdsa_der(s->sig_blob, &der) < 0) ||
		 (t->kind == KEY_RSA && rsa_padded(s->sig_blob, (size_t)EVP_PKEY_get_size(key), &der) < 0))
		r = latch_error_set(err, LATCH_EINVAL, "the SSH signature by key %s is malformed", fingerprint);
	struct latch_view sig = t->kind == KEY_ECDSA || t->kind == KEY_RSA ? latch_buf_view(&der) : s->sig_blob;
	if (r == 0 && !signature_matches(key, digest, sig, latch_buf_view(&data)))
		r = latch_error_set(err, LATCH_EFORBIDDEN, "the SSH signature by key %s does not match what it signs",
				    fingerprint);
	EVP_PKEY_free(key);
	latch_buf_done(&data);
	latch_buf_done(&der);
	return r;
}

int latch_sshsig_verify(struct latch_view allowed_signers, const char *name, const char *ns,
			struct latch_view armored,
			struct latch_view message, int64_t signed_at, struct latch_sshsig_signer *ret,
			struct latch_error *err)
{
	struct latch_buf blob = LATCH_BUF_INIT(MAX_SIGNATURE);
	struct sshsig s;
	const struct key_type *type = NULL;
	struct latch_sshsig_signer signer = { 0 };
	int r = dearmor(armored, &blob, err);
	if (r == 0)
		r = parse_sshsig(latch_buf_view(&blob), &s, err);
	if (r == 0) {
		fingerprint_of(s.public_key, signer.fingerprint);
		if (!latch_view_eq_str(s.ns, ns))
			r = latch_error_set(err, LATCH_EFORBIDDEN, "the SSH signature by key %s is for namespace '%.*s', "
					    "not '%s'", signer.fingerprint, (int)s.ns.len, s.ns.ptr, ns);
	}
	if (r == 0)
		r = key_type_of(s.public_key, signer.fingerprint, &type, err);
	if (r == 0) {
		struct lookup k = { s.public_key, name, ns, signer.fingerprint, signed_at, &signer, err, NULL, 0 };
		r = find_signer(&k, allowed_signers);
	}
	if (r == 0)
		r = check_signature(&s, type, signer.fingerprint, message, err);
	if (r == 0 && ret)
		*ret = signer;
	latch_buf_done(&blob);
	return r;
}

int latch_sshsig_verify_file(const char *path, const char *ns, struct latch_view armored,
			     struct latch_view message,
			     int64_t signed_at, struct latch_sshsig_signer *ret, struct latch_error *err)
{
	struct latch_buf text = LATCH_BUF_INIT(MAX_ALLOWED_SIGNERS);
	int r = latch_file_read(path, MAX_ALLOWED_SIGNERS, &text, err);
	if (r == 0)
		r = latch_sshsig_verify(latch_buf_view(&text), path, ns, armored, message, signed_at, ret, err);
	latch_buf_done(&text);
	return r;
}
