#include "fetches.h"

#include <openssl/evp.h>
#include <string.h>

#include "latch/buf.h"

static void digest_field(EVP_MD_CTX *md, const char *field)
{
	EVP_DigestUpdate(md, field ? field : "", field ? strlen(field) + 1 : 1);
}

char *sync_fetch_dir(const struct sync_config *c, const struct sync_source *s)
{
	unsigned char digest[EVP_MAX_MD_SIZE];
	unsigned int n = 0;
	EVP_MD_CTX *md = EVP_MD_CTX_new();
	bool ok = md && EVP_DigestInit_ex(md, EVP_sha256(), NULL) == 1;
	const char *fields[] = { s->url, s->username_file, s->password_file,
				 s->ssh_key_file, s->known_hosts_file, s->ca_file };
	for (size_t i = 0; ok && i < sizeof(fields) / sizeof(fields[0]); i++)
		digest_field(md, fields[i]);
	ok = ok && EVP_DigestFinal_ex(md, digest, &n) == 1 && n >= 16;
	EVP_MD_CTX_free(md);
	if (!ok)
		return NULL;
	struct latch_buf dir = LATCH_BUF_INIT(8192);
	latch_buf_printf(&dir, "%s/%s/git/", c->cache_dir, c->name);
	for (size_t i = 0; i < 16; i++)
		latch_buf_printf(&dir, "%02x", digest[i]);
	return latch_buf_take(&dir);
}

struct fetch_work {
	sync_fetch_fn fetch;
	void *arg;
};

static int make_fetch(void *arg, json_t **kept, struct latch_error *err)
{
	const struct fetch_work *w = arg;
	*kept = NULL;
	return w->fetch(w->arg, err);
}

int sync_fetch_once(struct sync_round *round, const char *dir, sync_fetch_fn fetch, void *arg,
		    struct sync_observed *observed, struct latch_error *err)
{
	struct fetch_work fw = { fetch, arg };
	struct sync_round_work w = { make_fetch, NULL, &fw };
	struct latch_buf key = LATCH_BUF_INIT(8192);
	latch_buf_printf(&key, "fetch %s", dir);
	double seconds = 0;
	int r = latch_buf_check(&key, "fetch key", err);
	if (r == 0)
		r = sync_round_once(round, latch_buf_str(&key), &w, &seconds, err);
	latch_buf_done(&key);
	*observed = (struct sync_observed){ true, r < 0, seconds };
	return r;
}
