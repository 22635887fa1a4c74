#include "lease.h"

#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "latch/buf.h"
#include "latch/clock.h"
#include "latch/log.h"
#include "objects.h"

#define MAX_NAME 253
#define LABEL_REPLICA_OF "latch.dev/replica-of"
#define LABEL_CONFIG "latch.dev/config"
/* A replica's own Lease unchanged this long belongs to one that died: removed. */
#define DEAD_REPLICA_S 3600.0
/* Another replica got a push hook for a source this one holds: it says so on the Lease. */
#define REQUESTED_AT "latch.dev/pass-requested-at"

/* What this replica last saw of a Lease, and when that last changed, on its own clock. */
struct sighting {
	char *name;
	char *seen;     /* holder, renewTime and transitions */
	double changed; /* latch_monotonic_s() */
};

struct lease_state {
	struct sighting s;
	char *path;
	double held_until; /* latch_monotonic_s() until which it counts as held; 0: not held */
	bool busy;         /* a pass over the source is under way: never released then */
	char *requested;   /* the Lease's REQUESTED_AT as last seen */
	bool looked;       /* requested holds what the Lease said (a request before is no news) */
	bool pass_wanted;  /* just acquired, or another replica asked: the loop passes it at once */
	char holder[128];  /* the live replica that held it at the last look; "" for none or this one */
};

struct sync_leases {
	struct latch_k8s *k;
	struct sync_lease_options o; /* o.identity points to identity */
	char *identity;
	const char *namespace;
	char *collection; /* the Leases' path in that namespace */
	char *config;
	struct lease_state *sources; /* n sources, then this replica's own Lease */
	size_t n;
	struct sighting *replicas; /* the replicas' own Leases, as seen */
	size_t n_replicas;
	size_t live;               /* replicas alive at the last count that answered */
	long last_refusal;         /* the last status the API server refused with, said once */
	pthread_mutex_t lock;
	pthread_cond_t wake;
	bool stopping;
	pthread_t thread;
};

/* A Kubernetes MicroTime, now. */
static void micro_time(char out[40])
{
	struct timespec ts;
	struct tm tm;
	clock_gettime(CLOCK_REALTIME, &ts);
	gmtime_r(&ts.tv_sec, &tm);
	char seconds[24];
	strftime(seconds, sizeof(seconds), "%Y-%m-%dT%H:%M:%S", &tm);
	snprintf(out, 40, "%.20s.%06dZ", seconds, (int)(ts.tv_nsec / 1000) % 1000000);
}

/* Notes when a Lease last changed, as this replica saw it; the time it did. */
static double observe(struct sighting *s, const json_t *spec, double now)
{
	struct latch_buf seen = LATCH_BUF_INIT(4096);
	if (latch_buf_printf(&seen, "%s|%s|%lld", latch_json_get_str(spec, "holderIdentity") ?: "",
			     latch_json_get_str(spec, "renewTime") ?: "",
			     (long long)json_integer_value(json_object_get(spec, "leaseTransitions"))) == 0 &&
	    (!s->seen || strcmp(s->seen, latch_buf_str(&seen)) != 0)) {
		free(s->seen);
		s->seen = latch_buf_take(&seen);
		s->changed = now;
	}
	latch_buf_done(&seen);
	return s->changed;
}

/* The API server refused a Lease request: said once per kind of refusal, not every round. */
static void note_refusal(struct sync_leases *l, const char *what, long status, const json_t *answer)
{
	if (status == l->last_refusal)
		return;
	l->last_refusal = status;
	char code[16];
	snprintf(code, sizeof(code), "%ld", status);
	LATCH_LOG(LATCH_LOG_WARN, "the API server refused a lease request", { "request", what }, { "status", code },
		  { "message", latch_json_get_str(answer, "message") });
}

/* The loop passes source i at once (it waits for SIGUSR1 between passes). */
static void want_pass(struct sync_leases *l, size_t i)
{
	pthread_mutex_lock(&l->lock);
	l->sources[i].pass_wanted = true;
	pthread_mutex_unlock(&l->lock);
	kill(getpid(), SIGUSR1);
}

bool sync_leases_take_pass_request(struct sync_leases *l, size_t i)
{
	if (!l)
		return false;
	pthread_mutex_lock(&l->lock);
	bool wanted = l->sources[i].pass_wanted;
	l->sources[i].pass_wanted = false;
	pthread_mutex_unlock(&l->lock);
	return wanted;
}

/* until 0: not held (any more); the change from held to not held is said once. A Lease just
 * acquired gets a pass at once: its last holder may have died before applying the tip. */
static void set_held(struct sync_leases *l, size_t i, double until)
{
	pthread_mutex_lock(&l->lock);
	bool was = l->sources[i].held_until != 0;
	l->sources[i].held_until = until;
	pthread_mutex_unlock(&l->lock);
	if (i == l->n)
		return;
	if (!was && until > 0) {
		LATCH_LOG(LATCH_LOG_INFO, "acquired the lease", { "lease", l->sources[i].s.name },
			  { "identity", l->identity });
		want_pass(l, i);
	} else if (was && until == 0) {
		LATCH_LOG(LATCH_LOG_WARN, "lost the lease", { "lease", l->sources[i].s.name }, { "identity", l->identity });
	}
}

static void note_holder(struct sync_leases *l, size_t i, const char *holder)
{
	pthread_mutex_lock(&l->lock);
	snprintf(l->sources[i].holder, sizeof(l->sources[i].holder), "%s", holder ? holder : "");
	pthread_mutex_unlock(&l->lock);
}

bool sync_leases_holder(struct sync_leases *l, size_t i, char *out, size_t size)
{
	pthread_mutex_lock(&l->lock);
	snprintf(out, size, "%s", l->sources[i].holder);
	pthread_mutex_unlock(&l->lock);
	return *out != '\0';
}

bool sync_leases_held(struct sync_leases *l, size_t i)
{
	return sync_leases_time_left(l, i) > 0;
}

double sync_leases_time_left(struct sync_leases *l, size_t i)
{
	pthread_mutex_lock(&l->lock);
	double left = l->sources[i].held_until - latch_monotonic_s();
	pthread_mutex_unlock(&l->lock);
	return left;
}

void sync_leases_busy(struct sync_leases *l, size_t i, bool busy)
{
	pthread_mutex_lock(&l->lock);
	l->sources[i].busy = busy;
	pthread_mutex_unlock(&l->lock);
}

static size_t held_count(struct sync_leases *l)
{
	size_t n = 0;
	for (size_t i = 0; i < l->n; i++)
		n += sync_leases_held(l, i);
	return n;
}

static json_t *lease_spec(const char *holder, double duration_s)
{
	char now[40];
	micro_time(now);
	return json_pack("{s:s,s:i,s:s,s:s,s:i}", "holderIdentity", holder, "leaseDurationSeconds",
			 (int)(duration_s + 0.5), "acquireTime", now, "renewTime", now, "leaseTransitions", 0);
}

/* Sends a Lease: the answer's status (409: another replica got there first), 0 when no answer
 * came. */
static long send_lease(struct sync_leases *l, const char *method, const char *path, const json_t *obj)
{
	char *body = obj ? json_dumps(obj, JSON_COMPACT) : NULL;
	long status = 0;
	json_t *answer = NULL;
	struct latch_error err = LATCH_ERROR_INIT;
	int r = body ? latch_k8s_request(l->k, method, path, NULL, body, &status, &answer, &err) : LATCH_ENOMEM;
	if (r == 0 && status >= 300 && status != 404 && status != 409)
		note_refusal(l, path, status, answer);
	free(body);
	json_decref(answer);
	latch_error_done(&err);
	return r == 0 ? status : 0;
}

/* The SyncConfig's namespace, made as the inventory writer makes it (the same field manager),
 * when a Lease cannot be created for want of it. */
static int make_namespace(struct sync_leases *l)
{
	json_t *ns = json_pack("{s:s,s:s,s:{s:s}}", "apiVersion", "v1", "kind", "Namespace", "metadata", "name",
			       l->namespace);
	struct latch_k8s_apply_options ao = { FIELD_MANAGER "-inventory", true, false, NULL };
	struct latch_error err = LATCH_ERROR_INIT;
	int r = ns ? latch_k8s_apply(l->k, ns, &ao, NULL, &err)
		   : latch_error_set(&err, LATCH_ENOMEM, "out of memory");
	if (r < 0 && l->last_refusal != 404) {
		l->last_refusal = 404;
		LATCH_LOG(LATCH_LOG_WARN, "the namespace for the Leases is missing and could not be made",
			  { "namespace", l->namespace }, { "error", latch_error_message(&err) });
	}
	json_decref(ns);
	latch_error_done(&err);
	return r;
}

static bool create_lease(struct sync_leases *l, size_t i)
{
	bool own = i == l->n;
	json_t *lease = json_pack("{s:s,s:s,s:{s:s,s:s,s:{s:s,s:s}},s:o}", "apiVersion", "coordination.k8s.io/v1",
				  "kind", "Lease", "metadata", "name", l->sources[i].s.name, "namespace", l->namespace,
				  "labels", "app.kubernetes.io/managed-by", "latch-sync",
				  own ? LABEL_REPLICA_OF : LABEL_CONFIG, l->config, "spec",
				  lease_spec(l->identity, l->o.duration_s));
	long status = send_lease(l, "POST", l->collection, lease);
	if (status == 404 && make_namespace(l) == 0)
		status = send_lease(l, "POST", l->collection, lease);
	json_decref(lease);
	return status == 201;
}

/* NO_ANSWER: ours, but the renewal got no clear answer; it stays held until the renew deadline
 * of the last renewal. RENEWAL_RACED: ours, written since it was read (a pass request). */
enum outcome { NOT_HELD, HELD, NO_ANSWER, RENEWAL_RACED };

/* A pass asked for on the Lease since this replica last looked, while it holds it. */
static void notice_request(struct sync_leases *l, size_t i, const json_t *lease, bool mine)
{
	struct lease_state *st = &l->sources[i];
	const char *at = latch_json_get_str(latch_json_path(lease, "metadata.annotations"), REQUESTED_AT);
	bool changed = at && (!st->requested || strcmp(st->requested, at) != 0);
	if (changed && mine && st->looked) {
		LATCH_LOG(LATCH_LOG_INFO, "another replica asked for a pass", { "lease", st->s.name });
		want_pass(l, i);
	}
	if (changed) {
		free(st->requested);
		st->requested = strdup(at);
	}
	st->looked = true;
}

/* The Lease with this replica as its holder, renewed now (NULL when out of memory). */
static json_t *renewed(const struct sync_leases *l, const json_t *lease, bool mine)
{
	const json_t *spec = json_object_get(lease, "spec");
	json_t *updated = json_deep_copy(lease), *new_spec = lease_spec(l->identity, l->o.duration_s);
	json_int_t transitions = json_integer_value(json_object_get(spec, "leaseTransitions"));
	bool ok = updated && new_spec &&
		  (!mine || !json_object_get(spec, "acquireTime") ||
		   json_object_set(new_spec, "acquireTime", json_object_get(spec, "acquireTime")) == 0) &&
		  json_object_set_new(new_spec, "leaseTransitions",
				      json_integer(mine ? transitions : transitions + 1)) == 0 &&
		  json_object_set(updated, "spec", new_spec) == 0;
	json_decref(new_spec);
	if (!ok) {
		json_decref(updated);
		return NULL;
	}
	return updated;
}

/* Renew it when ours; take it when may_take and it is free or unchanged for a whole lease
 * duration. */
static enum outcome take_or_renew(struct sync_leases *l, size_t i, const json_t *lease, double now,
				  bool may_take)
{
	struct lease_state *st = &l->sources[i];
	const json_t *spec = json_object_get(lease, "spec");
	const char *holder = latch_json_get_str(spec, "holderIdentity");
	bool mine = holder && strcmp(holder, l->identity) == 0, free_lease = !holder || !*holder;
	json_int_t their_duration = json_integer_value(json_object_get(spec, "leaseDurationSeconds"));
	double duration = their_duration > 0 ? (double)their_duration : l->o.duration_s;
	double changed = observe(&st->s, spec, now);
	notice_request(l, i, lease, mine);
	bool held_by_another = !mine && !free_lease && now < changed + duration;
	note_holder(l, i, held_by_another ? holder : NULL);
	if (!mine && (!may_take || held_by_another))
		return NOT_HELD;
	json_t *updated = renewed(l, lease, mine);
	long status = updated ? send_lease(l, "PUT", st->path, updated) : 0;
	json_decref(updated);
	if (status == 200 && !mine)
		LATCH_LOG(LATCH_LOG_INFO, "took the lease over", { "lease", st->s.name },
			  { "from", free_lease ? "(released)" : holder });
	if (status == 200)
		return HELD;
	if (mine)
		return status == 409 ? RENEWAL_RACED : NO_ANSWER;
	return NOT_HELD;
}

/* Past the renew deadline with no renewal (the API server out of reach): lost, and said so,
 * before any other replica may take it. Checked before every request, so the word comes
 * within one request's deadline. */
static void expire_overdue(struct sync_leases *l)
{
	for (size_t i = 0; i < l->n; i++) {
		pthread_mutex_lock(&l->lock);
		bool overdue = l->sources[i].held_until != 0 && l->sources[i].held_until <= latch_monotonic_s();
		pthread_mutex_unlock(&l->lock);
		if (overdue)
			set_held(l, i, 0);
	}
}

/* One read and write of the Lease; false when it must be tried again at once. */
static bool try_once(struct sync_leases *l, size_t i, bool may_take, double started)
{
	long status = 0;
	json_t *lease = NULL;
	struct latch_error err = LATCH_ERROR_INIT;
	int r = latch_k8s_request(l->k, "GET", l->sources[i].path, NULL, NULL, &status, &lease, &err);
	latch_error_done(&err);
	enum outcome o = NO_ANSWER;
	if (r == 0 && status == 404) {
		note_holder(l, i, NULL);
		o = may_take && create_lease(l, i) ? HELD : NOT_HELD;
		l->sources[i].looked = o == HELD; /* created without a request on it */
	} else if (r == 0 && status == 200) {
		o = take_or_renew(l, i, lease, started, may_take);
	} else if (r == 0) {
		note_refusal(l, l->sources[i].path, status, lease);
	}
	json_decref(lease);
	if (o == HELD || o == NOT_HELD)
		set_held(l, i, o == HELD ? started + l->o.renew_deadline_s : 0);
	return o != RENEWAL_RACED;
}

static void try_one(struct sync_leases *l, size_t i, bool may_take)
{
	double started = latch_monotonic_s();
	expire_overdue(l);
	if (!try_once(l, i, may_take, started))
		try_once(l, i, may_take, started);
}

int sync_leases_request_pass(struct sync_leases *l, struct latch_k8s *k, size_t i, struct latch_error *err)
{
	char now[40];
	struct latch_buf body = LATCH_BUF_INIT(256);
	long status = 0;
	json_t *answer = NULL;
	micro_time(now);
	int r = latch_buf_printf(&body, "{\"metadata\":{\"annotations\":{\"" REQUESTED_AT "\":\"%s\"}}}", now) < 0
			? latch_error_set(err, LATCH_ENOMEM, "out of memory")
			: latch_k8s_request(k, "PATCH", l->sources[i].path, "application/merge-patch+json",
					    latch_buf_str(&body), &status, &answer, err);
	json_decref(answer);
	latch_buf_done(&body);
	if (r == 0 && status != 200)
		r = latch_error_set(err, LATCH_EHTTP, "marking the Lease '%s' answered %ld", l->sources[i].s.name, status);
	return r;
}

/* Held and no pass under way: from now on it counts as not held (checked and set at once, so a
 * pass either starts before, and it is not given up, or finds it not held). */
static bool claim_release(struct sync_leases *l, size_t i)
{
	pthread_mutex_lock(&l->lock);
	bool claimed = !l->sources[i].busy && l->sources[i].held_until > latch_monotonic_s();
	if (claimed)
		l->sources[i].held_until = 0;
	pthread_mutex_unlock(&l->lock);
	return claimed;
}

/* holderIdentity "" and a second's duration: the others take it at once. */
static void release_one(struct sync_leases *l, size_t i)
{
	long status = 0;
	json_t *lease = NULL;
	struct latch_error err = LATCH_ERROR_INIT;
	pthread_mutex_lock(&l->lock);
	l->sources[i].held_until = 0; /* given up, not lost: nothing to warn about */
	pthread_mutex_unlock(&l->lock);
	int r = latch_k8s_request(l->k, "GET", l->sources[i].path, NULL, NULL, &status, &lease, &err);
	latch_error_done(&err);
	json_t *spec = json_object_get(lease, "spec");
	const char *holder = latch_json_get_str(spec, "holderIdentity");
	bool mine = r == 0 && status == 200 && holder && strcmp(holder, l->identity) == 0;
	json_t *released = mine ? lease_spec("", 1) : NULL;
	if (released &&
	    json_object_set(released, "leaseTransitions", json_object_get(spec, "leaseTransitions")) == 0 &&
	    json_object_set(lease, "spec", released) == 0 && send_lease(l, "PUT", l->sources[i].path, lease) == 200)
		LATCH_LOG(LATCH_LOG_INFO, "released the lease", { "lease", l->sources[i].s.name });
	json_decref(released);
	json_decref(lease);
}

static struct sighting *replica_sighting(struct sync_leases *l, const char *name)
{
	for (size_t i = 0; i < l->n_replicas; i++)
		if (strcmp(l->replicas[i].name, name) == 0)
			return &l->replicas[i];
	void *p = realloc(l->replicas, (l->n_replicas + 1) * sizeof(*l->replicas));
	if (!p)
		return NULL;
	l->replicas = p;
	struct sighting *s = &l->replicas[l->n_replicas];
	*s = (struct sighting){ strdup(name), NULL, 0 };
	if (!s->name)
		return NULL;
	l->n_replicas++;
	return s;
}

/* A dead replica's own Lease, deleted only as it was seen: not one renewed since. */
static void delete_dead(struct sync_leases *l, const json_t *lease)
{
	const json_t *meta = json_object_get(lease, "metadata");
	struct latch_buf path = LATCH_BUF_INIT(2048), body = LATCH_BUF_INIT(256);
	long status = 0;
	json_t *answer = NULL;
	struct latch_error err = LATCH_ERROR_INIT;
	if (latch_buf_printf(&path, "%s/%s", l->collection, latch_json_get_str(meta, "name")) == 0 &&
	    latch_buf_printf(&body, "{\"preconditions\":{\"resourceVersion\":\"%s\"}}",
			     latch_json_get_str(meta, "resourceVersion") ?: "") == 0 &&
	    latch_k8s_request(l->k, "DELETE", latch_buf_str(&path), NULL, latch_buf_str(&body), &status, &answer,
			      &err) == 0 &&
	    status == 200)
		LATCH_LOG(LATCH_LOG_INFO, "removed the lease of a replica gone for an hour",
			  { "lease", latch_json_get_str(meta, "name") });
	json_decref(answer);
	latch_error_done(&err);
	latch_buf_done(&path);
	latch_buf_done(&body);
}

/* A replica whose own Lease is unchanged for a lease duration is gone; for an hour, its Lease
 * is removed. */
static bool replica_alive(struct sync_leases *l, const json_t *lease, double now)
{
	const char *name = latch_json_get_str(json_object_get(lease, "metadata"), "name");
	const json_t *spec = json_object_get(lease, "spec");
	const char *holder = latch_json_get_str(spec, "holderIdentity");
	struct sighting *s = name ? replica_sighting(l, name) : NULL;
	if (!s || !holder || !*holder)
		return false;
	if (strcmp(holder, l->identity) == 0)
		return true;
	double changed = observe(s, spec, now);
	if (now > changed + DEAD_REPLICA_S) {
		delete_dead(l, lease);
		return false;
	}
	return now < changed + l->o.duration_s;
}

/* The replicas of this SyncConfig alive now, this one included; when the API server does not
 * answer, as many as at the last count. */
static size_t live_replicas(struct sync_leases *l, double now)
{
	expire_overdue(l);
	struct latch_buf path = LATCH_BUF_INIT(2048);
	long status = 0;
	json_t *list = NULL;
	struct latch_error err = LATCH_ERROR_INIT;
	size_t alive = 0, i;
	json_t *item;
	if (latch_buf_printf(&path, "%s?labelSelector=" LABEL_REPLICA_OF "%%3D%s", l->collection, l->config) == 0 &&
	    latch_k8s_request(l->k, "GET", latch_buf_str(&path), NULL, NULL, &status, &list, &err) == 0 &&
	    status == 200) {
		json_array_foreach(json_object_get(list, "items"), i, item)
			alive += replica_alive(l, item, now);
		l->live = alive ? alive : 1;
	}
	json_decref(list);
	latch_error_done(&err);
	latch_buf_done(&path);
	return l->live;
}

/* A round: this replica's own Lease and the sources' it holds renewed first (a long round must
 * not cost a Lease); then the others, taken while this replica holds fewer than its share;
 * those above the share (a replica joined) are released, unless a pass over one is under way. */
static void try_all(struct sync_leases *l)
{
	try_one(l, l->n, true);
	for (size_t i = 0; i < l->n; i++)
		if (sync_leases_held(l, i))
			try_one(l, i, true);
	size_t live = live_replicas(l, latch_monotonic_s());
	size_t share = (l->n + live - 1) / live;
	for (size_t i = 0; i < l->n; i++) {
		size_t held = held_count(l);
		if (held > share && claim_release(l, i))
			release_one(l, i);
		else if (!sync_leases_held(l, i))
			try_one(l, i, held < share);
	}
}

static void *run(void *arg)
{
	struct sync_leases *l = arg;
	pthread_mutex_lock(&l->lock);
	while (!l->stopping) {
		struct timespec until;
		clock_gettime(CLOCK_MONOTONIC, &until);
		long ns = until.tv_nsec + (long)(l->o.retry_s * 1e9);
		until.tv_sec += ns / 1000000000L;
		until.tv_nsec = ns % 1000000000L;
		while (!l->stopping && pthread_cond_timedwait(&l->wake, &l->lock, &until) != ETIMEDOUT)
			;
		if (l->stopping)
			break;
		pthread_mutex_unlock(&l->lock);
		try_all(l);
		pthread_mutex_lock(&l->lock);
	}
	pthread_mutex_unlock(&l->lock);
	for (size_t i = 0; i < l->n; i++)
		if (sync_leases_held(l, i))
			release_one(l, i);
	long status = 0;
	json_t *answer = NULL;
	struct latch_error err = LATCH_ERROR_INIT;
	latch_k8s_request(l->k, "DELETE", l->sources[l->n].path, NULL, NULL, &status, &answer, &err);
	json_decref(answer);
	latch_error_done(&err);
	return NULL;
}

/* Lease names are DNS subdomains: anything else in an identity becomes '-'. */
static void dns_safe(char *s)
{
	for (; *s; s++)
		if (!((*s >= 'a' && *s <= 'z') || (*s >= '0' && *s <= '9') || *s == '-' || *s == '.'))
			*s = *s >= 'A' && *s <= 'Z' ? (char)(*s - 'A' + 'a') : '-';
}

/* Config and source names are DNS labels (the SyncConfig says so), so the dots keep
 * "latch-sync.a.b-c" and "latch-sync.a-b.c" apart. */
static int name_lease(struct sync_leases *l, size_t i, const char *prefix, const char *suffix,
		      struct latch_error *err)
{
	struct latch_buf name = LATCH_BUF_INIT(4096), path = LATCH_BUF_INIT(4096);
	int r = latch_buf_printf(&name, "%s.%s.%s", prefix, l->config, suffix) < 0 ? LATCH_ENOMEM : 0;
	if (r == 0)
		dns_safe(name.ptr);
	if (r == 0 && name.len > MAX_NAME)
		r = latch_error_set(err, LATCH_ELIMIT, "the Lease name '%s' would be longer than %d characters",
				    latch_buf_str(&name), MAX_NAME);
	if (r == 0 && latch_buf_printf(&path, "%s/%s", l->collection, latch_buf_str(&name)) < 0)
		r = LATCH_ENOMEM;
	if (r == 0 &&
	    (!(l->sources[i].s.name = latch_buf_take(&name)) || !(l->sources[i].path = latch_buf_take(&path))))
		r = LATCH_ENOMEM;
	if (r == LATCH_ENOMEM)
		latch_error_set(err, r, "out of memory");
	latch_buf_done(&name);
	latch_buf_done(&path);
	return r;
}

static int name_leases(struct sync_leases *l, const struct sync_config *cfg, struct latch_error *err)
{
	int r = name_lease(l, l->n, "latch-sync-replica", l->identity, err);
	for (size_t i = 0; r == 0 && i < l->n; i++)
		r = name_lease(l, i, "latch-sync", cfg->sources[i].name, err);
	return r;
}

static void leases_free(struct sync_leases *l)
{
	if (!l)
		return;
	for (size_t i = 0; l->sources && i <= l->n; i++) {
		free(l->sources[i].s.name);
		free(l->sources[i].s.seen);
		free(l->sources[i].path);
		free(l->sources[i].requested);
	}
	for (size_t i = 0; i < l->n_replicas; i++) {
		free(l->replicas[i].name);
		free(l->replicas[i].seen);
	}
	latch_k8s_free(l->k);
	free(l->replicas);
	free(l->sources);
	free(l->config);
	free(l->collection);
	free(l->identity);
	pthread_mutex_destroy(&l->lock);
	pthread_cond_destroy(&l->wake);
	free(l);
}

static int init_sync(struct sync_leases *l)
{
	pthread_condattr_t attr;
	if (pthread_condattr_init(&attr) != 0)
		return -1;
	int r = pthread_condattr_setclock(&attr, CLOCK_MONOTONIC) == 0 && pthread_cond_init(&l->wake, &attr) == 0 &&
			pthread_mutex_init(&l->lock, NULL) == 0
		? 0
		: -1;
	pthread_condattr_destroy(&attr);
	return r;
}

/* A first look at this replica's own Lease: without permission for Leases, say so now rather
 * than sync nothing in silence. */
static int check_access(struct sync_leases *l, struct latch_error *err)
{
	long status = 0;
	json_t *answer = NULL;
	struct latch_error no_answer = LATCH_ERROR_INIT;
	int r = 0;
	/* No answer yet is no verdict: the rounds try again. */
	if (latch_k8s_request(l->k, "GET", l->sources[l->n].path, NULL, NULL, &status, &answer, &no_answer) == 0 &&
	    (status == 401 || status == 403))
		r = latch_error_set(err, LATCH_EFORBIDDEN, "reading Leases in namespace '%s' answered %ld: give latch-sync "
				    "the Lease Role of deploy/ (get, list, create, update, patch, delete), or run one "
				    "replica with --no-leases", l->namespace, status);
	latch_error_done(&no_answer);
	json_decref(answer);
	return r;
}

int sync_leases_start(const struct latch_k8s *k, const struct sync_config *cfg,
		      const struct sync_lease_options *o,
		      struct sync_leases **ret, struct latch_error *err)
{
	struct sync_leases *l = calloc(1, sizeof(*l));
	if (!l || init_sync(l) < 0) {
		free(l);
		return latch_error_set(err, LATCH_ENOMEM, "out of memory");
	}
	l->o = *o;
	l->identity = strdup(o->identity);
	l->o.identity = l->identity;
	l->namespace = cfg->namespace;
	l->n = cfg->n_sources;
	l->live = 1;
	l->config = strdup(cfg->name);
	l->sources = calloc(l->n + 1, sizeof(*l->sources));
	struct latch_buf collection = LATCH_BUF_INIT(1024);
	if (latch_buf_printf(&collection, "/apis/coordination.k8s.io/v1/namespaces/%s/leases", l->namespace) == 0)
		l->collection = latch_buf_take(&collection);
	latch_buf_done(&collection);
	int r = l->identity && l->config && l->sources && l->collection ? name_leases(l, cfg, err)
						     : latch_error_set(err, LATCH_ENOMEM, "out of memory");
	if (r == 0)
		r = latch_k8s_clone(k, &l->k, err);
	/* A request stuck in retries would hold the thread past the renew deadline, and a Lease
	 * past it would be lost without a word: each gets half a retry period, or a second when
	 * that is shorter (a TLS handshake on a loaded machine takes a good part of one). */
	if (r == 0)
		latch_k8s_set_deadline(l->k, l->o.retry_s * 500 > 1000 ? (unsigned)(l->o.retry_s * 500) : 1000);
	if (r == 0)
		r = check_access(l, err);
	if (r == 0)
		try_all(l);
	if (r == 0 && pthread_create(&l->thread, NULL, run, l) != 0)
		r = latch_error_set(err, LATCH_ENOMEM, "cannot start the lease thread");
	if (r < 0) {
		leases_free(l);
		return r;
	}
	*ret = l;
	return 0;
}

void sync_leases_stop(struct sync_leases *l)
{
	if (!l)
		return;
	pthread_mutex_lock(&l->lock);
	l->stopping = true;
	pthread_cond_signal(&l->wake);
	pthread_mutex_unlock(&l->lock);
	pthread_join(l->thread, NULL);
	leases_free(l);
}
