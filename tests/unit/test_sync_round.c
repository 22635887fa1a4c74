/* What a round of latch-sync passes shares (sync-agent/round.c): work made once per round by
 * whichever pass asks first, each pass taking its share, a failure shared, nothing carried
 * into the next round, and everything made anew outside a round. */
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "round.h"

struct counter {
	pthread_mutex_t lock;
	int made, taken;
	int fail;              /* make fails with this code, when not 0 */
	useconds_t make_sleep; /* so that concurrent passes overlap the making */
};

static int make_list(void *arg, json_t **kept, struct latch_error *err)
{
	struct counter *c = arg;
	usleep(c->make_sleep);
	pthread_mutex_lock(&c->lock);
	c->made++;
	pthread_mutex_unlock(&c->lock);
	if (c->fail)
		return latch_error_set(err, c->fail, "the list was refused");
	*kept = json_pack("{s:i,s:i}", "a", 1, "b", 2);
	return 0;
}

static int take_share(void *arg, json_t *kept, struct latch_error *err)
{
	struct counter *c = arg;
	assert_non_null(kept);
	pthread_mutex_lock(&c->lock);
	c->taken++;
	pthread_mutex_unlock(&c->lock);
	return 0;
}

static int once(struct sync_round *r, const char *key, struct counter *c, struct latch_error *err)
{
	struct sync_round_work w = { make_list, take_share, c };
	double seconds = -1;
	int result = sync_round_once(r, key, &w, &seconds, err);
	assert_true(seconds >= 0);
	return result;
}

static void test_sync_round__work_is_made_once_per_round_and_key(void **state)
{
	struct sync_round *r = NULL;
	assert_int_equal(sync_round_new(&r), 0);
	struct counter c = { PTHREAD_MUTEX_INITIALIZER, 0, 0, 0, 0 };
	struct latch_error err = LATCH_ERROR_INIT;
	const char *names[] = { "web", "db", "cache" };
	sync_round_begin(r, names, 3);
	assert_int_equal(sync_round_passes(r), 3);
	assert_true(sync_round_passes_source(r, "db"));
	assert_false(sync_round_passes_source(r, "queue"));
	for (int i = 0; i < 3; i++)
		assert_int_equal(once(r, "list v1/ConfigMap", &c, &err), 0);
	assert_int_equal(once(r, "list apps/v1/Deployment", &c, &err), 0);
	assert_int_equal(c.made, 2);
	assert_int_equal(c.taken, 4);
	sync_round_end(r);
	assert_int_equal(sync_round_passes(r), 0);
	assert_false(sync_round_passes_source(r, "db"));

	/* The next round makes it again: a push between rounds must be seen. */
	sync_round_begin(r, names, 1);
	assert_int_equal(once(r, "list v1/ConfigMap", &c, &err), 0);
	assert_int_equal(c.made, 3);
	sync_round_end(r);

	/* Outside a round, and with no round at all, every call makes it. */
	assert_int_equal(once(r, "list v1/ConfigMap", &c, &err), 0);
	assert_int_equal(once(NULL, "list v1/ConfigMap", &c, &err), 0);
	assert_int_equal(c.made, 5);
	assert_int_equal(c.taken, 7);
	latch_error_done(&err);
	sync_round_free(r);
}

static void test_sync_round__a_failure_is_every_asking_pass_s(void **state)
{
	struct sync_round *r = NULL;
	assert_int_equal(sync_round_new(&r), 0);
	struct counter c = { PTHREAD_MUTEX_INITIALIZER, 0, 0, LATCH_EFORBIDDEN, 0 };
	const char *names[] = { "web", "db" };
	sync_round_begin(r, names, 2);
	for (int i = 0; i < 2; i++) {
		struct latch_error err = LATCH_ERROR_INIT;
		assert_int_equal(once(r, "list v1/Secret", &c, &err), LATCH_EFORBIDDEN);
		assert_string_equal(latch_error_message(&err), "the list was refused");
		latch_error_done(&err);
	}
	assert_int_equal(c.made, 1);
	assert_int_equal(c.taken, 0);
	sync_round_end(r);
	sync_round_free(r);
}

struct pass {
	struct sync_round *round;
	struct counter *c;
	int result;
};

static void *pass_thread(void *arg)
{
	struct pass *p = arg;
	struct latch_error err = LATCH_ERROR_INIT;
	p->result = once(p->round, "list v1/ConfigMap", p->c, &err);
	latch_error_done(&err);
	return NULL;
}

/* Passes asking at once wait for the one making it, and none makes it again. */
static void test_sync_round__concurrent_passes_wait_for_one_making(void **state)
{
	struct sync_round *r = NULL;
	assert_int_equal(sync_round_new(&r), 0);
	struct counter c = { PTHREAD_MUTEX_INITIALIZER, 0, 0, 0, 100000 };
	const char *names[] = { "a", "b", "c", "d" };
	sync_round_begin(r, names, 4);
	pthread_t threads[4];
	struct pass passes[4];
	for (int i = 0; i < 4; i++) {
		passes[i] = (struct pass){ r, &c, -1 };
		assert_int_equal(pthread_create(&threads[i], NULL, pass_thread, &passes[i]), 0);
	}
	for (int i = 0; i < 4; i++) {
		pthread_join(threads[i], NULL);
		assert_int_equal(passes[i].result, 0);
	}
	assert_int_equal(c.made, 1);
	assert_int_equal(c.taken, 4);
	sync_round_end(r);
	sync_round_free(r);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_sync_round__work_is_made_once_per_round_and_key),
		cmocka_unit_test(test_sync_round__a_failure_is_every_asking_pass_s),
		cmocka_unit_test(test_sync_round__concurrent_passes_wait_for_one_making),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
