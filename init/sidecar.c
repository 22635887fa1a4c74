/* The native-sidecar loop: renew the token and the leases before they expire, fetch again
 * what cannot be renewed, re-render atomically, and stop promptly on SIGTERM. */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <time.h>

#include "init.h"
#include "latch/clock.h"
#include "latch/log.h"

#define MAX_SLEEP_S 60.0
#define MAX_BACKOFF_S 60.0

static double earliest_due(const struct init_state *s)
{
	double next = s->token_due > 0 ? s->token_due : latch_monotonic_s() + MAX_SLEEP_S;
	for (size_t i = 0; i < s->n_requests; i++)
		if (s->requests[i].due < next)
			next = s->requests[i].due;
	return next;
}

/* Wait until `until` or a stop signal; true when a signal asked us to stop. */
static bool wait_for_stop(double until)
{
	double left = until - latch_monotonic_s();
	if (left <= 0)
		return false;
	if (left > MAX_SLEEP_S)
		left = MAX_SLEEP_S;
	sigset_t set;
	sigemptyset(&set);
	sigaddset(&set, SIGTERM);
	sigaddset(&set, SIGINT);
	struct timespec ts = { (time_t)left, (long)((left - (double)(time_t)left) * 1e9) };
	return sigtimedwait(&set, NULL, &ts) > 0;
}

static double backoff_s(unsigned failures)
{
	double d = 1.0;
	for (unsigned i = 0; i < failures && d < MAX_BACKOFF_S; i++)
		d *= 2;
	return d < MAX_BACKOFF_S ? d : MAX_BACKOFF_S;
}

/* Vault could not be asked (link down, timeout, 5xx): the lease itself may be fine. */
static bool vault_unreachable(int r)
{
	return r == LATCH_ECONNECT || r == LATCH_ETIMEOUT || r == LATCH_EHTTP;
}

static void log_failure(const char *what, const char *path, const struct latch_error *err)
{
	LATCH_LOG(LATCH_LOG_ERROR, what, { "path", path }, { "error", latch_error_message(err) });
}

/* Leases belong to the token that created them and die with it: after a new login every
 * leased secret is fetched again under the new token (not renewed: renewing would keep the
 * old token's lease). */
static void refetch_leased_now(struct init_state *s)
{
	double now = latch_monotonic_s();
	for (size_t i = 0; i < s->n_requests; i++)
		if (s->requests[i].lease_id && *s->requests[i].lease_id) {
			s->requests[i].due = now;
			s->requests[i].renewable = false;
		}
}

static void handle_token(struct init_state *s, unsigned *failures)
{
	struct latch_error err = LATCH_ERROR_INIT;
	int r = -1;
	if (s->token_renewable) {
		struct latch_vault_auth auth = { 0 };
		r = latch_vault_renew_self(s->vault, s->token_ttl, &auth, &err);
		if (r == 0 && auth.lease_duration >= s->token_ttl / 2) {
			init_token_granted(s, auth.lease_duration);
			LATCH_LOG(LATCH_LOG_INFO, "renewed the Vault token");
			latch_error_done(&err);
			*failures = 0;
			return;
		}
		double retry_at = latch_monotonic_s() + backoff_s(*failures);
		if (r < 0 && vault_unreachable(r) && retry_at < s->token_expires) {
			/* A new login would orphan every lease, and the app's credentials with them. */
			log_failure("renewing the Vault token failed; it is still valid, retrying", "auth/token/renew-self", &err);
			s->token_due = retry_at;
			(*failures)++;
			latch_error_done(&err);
			return;
		}
		if (r < 0)
			log_failure("renewing the Vault token failed; logging in again", "auth/token/renew-self", &err);
	}
	r = init_login(s, &err);
	if (r == 0) {
		refetch_leased_now(s);
		r = init_write_token_file(s, &err);
	}
	if (r < 0) {
		log_failure("logging in to Vault, or writing the token file, failed; will retry", s->config->auth.path, &err);
		s->token_due = latch_monotonic_s() + backoff_s((*failures)++);
	} else {
		*failures = 0;
	}
	latch_error_done(&err);
}

enum renewal { RENEWED, RENEW_LATER, FETCH_AGAIN };

/* Renew a renewable lease; near its max TTL Vault grants less than asked, and the secret is
 * then fetched again at 85% of what is left. While Vault cannot be reached and the lease has
 * time left, the renewal is retried: fetching anew would hand the app other credentials for
 * what was only a network outage. */
static enum renewal renew_lease(struct init_state *s, struct init_request *q, unsigned *failures)
{
	struct latch_error err = LATCH_ERROR_INIT;
	long granted = 0;
	int r = latch_vault_lease_renew(s->vault, q->lease_id, q->original_duration, &granted, &err);
	double retry_at = latch_monotonic_s() + backoff_s(*failures);
	if (r < 0 && vault_unreachable(r) && retry_at < q->expires) {
		log_failure("renewing a lease failed; the lease is still valid, retrying", q->path, &err);
		q->due = retry_at;
		(*failures)++;
		latch_error_done(&err);
		return RENEW_LATER;
	}
	if (r < 0)
		log_failure("renewing a lease failed; fetching the secret again", q->path, &err);
	latch_error_done(&err);
	if (r < 0 || granted <= 0)
		return FETCH_AGAIN;
	*failures = 0;
	q->lease_duration = granted;
	if (granted < q->original_duration)
		q->renewable = false;
	double now = latch_monotonic_s();
	q->due = q->renewable ? now + (double)granted * 2.0 / 3.0 : now + (double)granted * 0.85;
	q->expires = now + (double)granted;
	LATCH_LOG(LATCH_LOG_INFO, "renewed lease", { "path", q->path });
	return RENEWED;
}

/* Returns true when the secret was fetched again (its files may change). */
static bool handle_request(struct init_state *s, struct init_request *q, unsigned *failures)
{
	enum renewal renewal = q->renewable ? renew_lease(s, q, failures) : FETCH_AGAIN;
	if (renewal != FETCH_AGAIN)
		return false;
	struct latch_error err = LATCH_ERROR_INIT;
	int r = init_fetch(s, q, &err);
	if (r < 0) {
		log_failure("fetching a secret failed; keeping the files as they are and retrying", q->path, &err);
		q->due = latch_monotonic_s() + backoff_s((*failures)++);
	} else {
		*failures = 0;
	}
	latch_error_done(&err);
	return r == 0;
}

static void run_due(struct init_state *s, unsigned *failures)
{
	double now = latch_monotonic_s();
	s->deadline = now + s->config->deadline_seconds;
	if (s->token_due > 0 && s->token_due <= now)
		handle_token(s, failures);
	bool changed = false;
	for (size_t i = 0; i < s->n_requests; i++)
		if (s->requests[i].due <= latch_monotonic_s())
			changed |= handle_request(s, &s->requests[i], failures);
	struct latch_error err = LATCH_ERROR_INIT;
	if (changed && init_write_all(s, false, &err) < 0)
		LATCH_LOG(LATCH_LOG_ERROR, "writing the secret files failed; keeping the old ones",
			  { "error", latch_error_message(&err) });
	latch_error_done(&err);
	if (init_session_save(s, &err) < 0)
		LATCH_LOG(LATCH_LOG_ERROR, "saving the session failed; a restart would populate afresh",
			  { "error", latch_error_message(&err) });
	latch_error_done(&err);
}

int init_sidecar_loop(struct init_state *s, struct latch_error *err)
{
	unsigned failures = 0;
	for (;;) {
		if (wait_for_stop(earliest_due(s))) {
			LATCH_LOG(LATCH_LOG_INFO, "stopping on signal");
			break;
		}
		run_due(s, &failures);
	}
	if (!s->config->revoke_on_shutdown)
		return 0;
	s->deadline = latch_monotonic_s() + 5;
	latch_vault_set_deadline(s->vault, 5000);
	int r = latch_vault_revoke_self(s->vault, err);
	if (r == 0)
		LATCH_LOG(LATCH_LOG_INFO, "revoked the Vault token and its leases (revoke_on_shutdown)");
	return r;
}
