#include "fetches.h"

#include <openssl/evp.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "latch/buf.h"
#include "latch/clock.h"

/* What the last round's fetch of one repository came to. */
struct fetched {
	char *dir;
	pthread_mutex_t lock; /* held while fetching: the round's other passes wait for it */
	unsigned long round;
	int result;
	char *message;
	double seconds;
};

struct sync_fetches {
	pthread_mutex_t lock; /* of the list */
	struct fetched **items;
	size_t n;
	unsigned long round; /* 0: not in a round */
	unsigned long rounds;
};

int sync_fetches_new(struct sync_fetches **ret)
{
	struct sync_fetches *f = calloc(1, sizeof(*f));
	if (!f)
		return LATCH_ENOMEM;
	pthread_mutex_init(&f->lock, NULL);
	*ret = f;
	return 0;
}

void sync_fetches_free(struct sync_fetches *f)
{
	if (!f)
		return;
	for (size_t i = 0; i < f->n; i++) {
		pthread_mutex_destroy(&f->items[i]->lock);
		free(f->items[i]->dir);
		free(f->items[i]->message);
		free(f->items[i]);
	}
	free(f->items);
	pthread_mutex_destroy(&f->lock);
	free(f);
}

void sync_fetches_round_begin(struct sync_fetches *f)
{
	if (f)
		f->round = ++f->rounds;
}

void sync_fetches_round_end(struct sync_fetches *f)
{
	if (f)
		f->round = 0;
}

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

static struct fetched *fetched_for(struct sync_fetches *f, const char *dir)
{
	struct fetched *found = NULL;
	pthread_mutex_lock(&f->lock);
	for (size_t i = 0; i < f->n && !found; i++)
		if (strcmp(f->items[i]->dir, dir) == 0)
			found = f->items[i];
	struct fetched **grown = found ? NULL : realloc(f->items, (f->n + 1) * sizeof(*f->items));
	if (grown) {
		f->items = grown;
		found = calloc(1, sizeof(*found));
		if (found && !(found->dir = strdup(dir))) {
			free(found);
			found = NULL;
		}
		if (found) {
			pthread_mutex_init(&found->lock, NULL);
			f->items[f->n++] = found;
		}
	}
	pthread_mutex_unlock(&f->lock);
	return found;
}

static int fetch_timed(sync_fetch_fn fetch, void *arg, double *seconds, struct latch_error *err)
{
	double started = latch_monotonic_s();
	int r = fetch(arg, err);
	*seconds = latch_monotonic_s() - started;
	return r;
}

/* This round's fetch of it, made now unless an earlier pass of the round made it. */
static int fetch_in_round(struct sync_fetches *f, struct fetched *e, sync_fetch_fn fetch, void *arg,
			  struct sync_observed *observed, struct latch_error *err)
{
	int r;
	pthread_mutex_lock(&e->lock);
	if (e->round != f->round) {
		r = fetch_timed(fetch, arg, &e->seconds, err);
		free(e->message);
		e->message = r < 0 ? strdup(latch_error_message(err)) : NULL;
		e->result = r;
		e->round = f->round;
	} else {
		r = e->result < 0 ? latch_error_set(err, e->result, "%s", e->message ? e->message : "out of memory") : 0;
	}
	*observed = (struct sync_observed){ true, r < 0, e->seconds };
	pthread_mutex_unlock(&e->lock);
	return r;
}

int sync_fetch_once(struct sync_fetches *f, const char *dir, sync_fetch_fn fetch, void *arg,
		    struct sync_observed *observed, struct latch_error *err)
{
	if (f && f->round) {
		struct fetched *e = fetched_for(f, dir);
		if (!e)
			return latch_error_set(err, LATCH_ENOMEM, "out of memory");
		return fetch_in_round(f, e, fetch, arg, observed, err);
	}
	double seconds = 0;
	int r = fetch_timed(fetch, arg, &seconds, err);
	*observed = (struct sync_observed){ true, r < 0, seconds };
	return r;
}
