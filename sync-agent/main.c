/* latch-sync: the GitOps pull agent. */
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "latch/buf.h"
#include "latch/clock.h"
#include "latch/git.h"
#include "latch/log.h"
#include "lease.h"
#include "round.h"
#include "objects.h"
#include "parallel.h"
#include "serve.h"
#include "sync.h"

static const char usage[] =
	"Usage: latch-sync once|diff|run|status --config FILE [--kubeconfig FILE] [--log-format text|json]\n"
	"                  [--concurrent N]\n"
	"\n"
	"  once   one pass over every source; exit 0 only if every source applied\n"
	"  diff   validate every source with a server dry run; nothing is written\n"
	"  run    a pass per source every interval, until SIGTERM (or --max-passes N);\n"
	"         --interval SECONDS overrides the sources' intervals (0: back to back, for soak tests)\n"
	"         --listen HOST:PORT serves /healthz, /readyz, /metrics (Prometheus) and\n"
	"         POST /hook/<source> (a push webhook signed with the source's webhook.secretFile)\n"
	"         Replicas share the sources by Leases in the SyncConfig's namespace: --identity NAME\n"
	"         (default: $POD_NAME or the host name, and a random suffix), --lease-duration SECONDS\n"
	"         (15), --no-leases for one replica without Lease permissions\n"
	"  status what the last pass of every source recorded; exit 0 only if all applied\n"
	"\n"
	"once and run pass --concurrent sources at a time (4; 1 to 8). Sources that read the same\n"
	"repository with the same credentials share its cache and one fetch per round of passes.\n"
	"\n"
	"Kubernetes access: --kubeconfig, $KUBECONFIG, or the in-cluster service account.\n";

struct options {
	const char *mode, *config, *kubeconfig;
	long max_passes; /* run: stop after this many passes (0: until SIGTERM) */
	long interval_s; /* run: seconds between passes instead of the sources' intervals; -1: theirs */
	const char *listen; /* run: where to serve /healthz, /readyz and /metrics, or NULL */
	const char *identity; /* run: this replica's name in the Leases, or NULL */
	long lease_duration_s; /* run: 0 without Leases */
	long concurrent; /* sources passed at the same time */
};

static int parse(int argc, char **argv, struct options *o)
{
	static const struct option longopts[] = { { "config", required_argument, NULL, 'c' },
						  { "kubeconfig", required_argument, NULL, 'k' },
						  { "log-format", required_argument, NULL, 'f' },
						  { "max-passes", required_argument, NULL, 'p' },
						  { "interval", required_argument, NULL, 'i' },
						  { "listen", required_argument, NULL, 'l' },
						  { "identity", required_argument, NULL, 'I' },
						  { "lease-duration", required_argument, NULL, 'L' },
						  { "no-leases", no_argument, NULL, 'N' },
						  { "concurrent", required_argument, NULL, 'C' },
						  { "help", no_argument, NULL, 'h' },
						  { NULL, 0, NULL, 0 } };
	enum latch_log_format format = LATCH_LOG_TEXT;
	int c;
	while ((c = getopt_long(argc, argv, "h", longopts, NULL)) != -1) {
		switch (c) {
		case 'c': o->config = optarg; break;
		case 'k': o->kubeconfig = optarg; break;
		case 'p': {
			char *end = NULL;
			o->max_passes = strtol(optarg, &end, 10);
			if (!*optarg || *end || o->max_passes <= 0) {
				fprintf(stderr, "latch-sync: --max-passes '%s' is not a positive number\n", optarg);
				return 64;
			}
			break;
		}
		case 'i': {
			char *end = NULL;
			o->interval_s = strtol(optarg, &end, 10);
			if (!*optarg || *end || o->interval_s < 0) {
				fprintf(stderr, "latch-sync: --interval '%s' is not a number of seconds\n", optarg);
				return 64;
			}
			break;
		}
		case 'C': {
			char *end = NULL;
			o->concurrent = strtol(optarg, &end, 10);
			if (!*optarg || *end || o->concurrent < 1 || o->concurrent > PARALLEL_MAX_WORKERS) {
				fprintf(stderr, "latch-sync: --concurrent '%s' is not a number from 1 to %d\n", optarg,
					PARALLEL_MAX_WORKERS);
				return 64;
			}
			break;
		}
		case 'l': o->listen = optarg; break;
		case 'I': o->identity = optarg; break;
		case 'N': o->lease_duration_s = 0; break;
		case 'L': {
			char *end = NULL;
			o->lease_duration_s = strtol(optarg, &end, 10);
			if (!*optarg || *end || o->lease_duration_s < 3 || o->lease_duration_s > 3600) {
				fprintf(stderr, "latch-sync: --lease-duration '%s' is not a number of seconds from 3 to 3600\n",
					optarg);
				return 64;
			}
			break;
		}
		case 'f':
			if (latch_log_format_parse(optarg, &format) < 0) {
				fprintf(stderr, "latch-sync: --log-format '%s' is not text or json\n", optarg);
				return 64;
			}
			break;
		case 'h': fputs(usage, stdout); exit(0);
		default: fputs(usage, stderr); return 64;
		}
	}
	latch_log_setup(2, format, LATCH_LOG_INFO);
	o->mode = optind < argc ? argv[optind] : NULL;
	if (!o->mode || !o->config ||
	    (strcmp(o->mode, "once") != 0 && strcmp(o->mode, "diff") != 0 && strcmp(o->mode, "run") != 0 &&
	     strcmp(o->mode, "status") != 0)) {
		fputs(usage, stderr);
		return 64;
	}
	return 0;
}

static int connect(const struct options *o, struct latch_k8s **k, struct latch_error *err)
{
	int r = o->kubeconfig || getenv("KUBECONFIG") || !getenv("KUBERNETES_SERVICE_HOST")
			? latch_k8s_from_kubeconfig(o->kubeconfig, k, err)
			: latch_k8s_in_cluster(k, err);
	if (r == 0 && latch_k8s_tls_unverified(*k))
		LATCH_LOG(LATCH_LOG_WARN, "the kubeconfig turns TLS verification off (insecure-skip-tls-verify): the API "
			  "server's certificate is not checked");
	return r;
}

/* A CRD deleted or added by hand since: discovery older than a minute is run again. */
static void refresh_old_discovery(struct latch_k8s *k)
{
	static double discovered_at = -60;
	if (latch_monotonic_s() - discovered_at >= 60) {
		latch_k8s_forget_discovery(k);
		discovered_at = latch_monotonic_s();
	}
	/* Now, before the workers clone k and copy what it found. A failure is the passes' to report. */
	latch_k8s_discover(k, NULL);
}

static void log_result(const struct sync_source *s, const struct sync_result *res, bool dry_run)
{
	char applied[32], changed[32], drifted[32], pruned[32], would[32];
	snprintf(applied, sizeof(applied), "%zu", res->applied);
	snprintf(changed, sizeof(changed), "%zu", res->changed);
	snprintf(drifted, sizeof(drifted), "%zu", res->drifted);
	snprintf(pruned, sizeof(pruned), "%zu", res->pruned);
	snprintf(would, sizeof(would), "%zu", res->would_change);
	if (dry_run)
		LATCH_LOG(LATCH_LOG_INFO, "validated", { "source", s->name }, { "revision", res->revision }, { "would_change", would });
	else
		LATCH_LOG(LATCH_LOG_INFO, "synced", { "source", s->name }, { "revision", res->revision }, { "applied", applied },
			  { "changed", changed }, { "drifted", drifted }, { "pruned", pruned });
}

static bool pass_source(struct latch_k8s *k, const struct sync_config *cfg, size_t i, bool dry_run,
			struct serve *sv);

struct held_source {
	struct sync_leases *leases;
	size_t i;
};

static double time_held(void *arg)
{
	const struct held_source *h = arg;
	return sync_leases_time_left(h->leases, h->i);
}

/* One pass over one source, unless another replica holds its Lease; false when it failed. */
static bool pass_one(struct latch_k8s *k, const struct sync_config *cfg, size_t i, bool dry_run,
		     struct serve *sv, struct sync_leases *leases)
{
	struct held_source held = { leases, i };
	if (!leases)
		return pass_source(k, cfg, i, dry_run, sv);
	/* Busy first: the lease thread may give up a Lease it holds above its share, not this one. */
	sync_leases_busy(leases, i, true);
	bool ok = true, mine = time_held(&held) > 0;
	char holder[128] = "";
	if (!mine)
		sync_leases_holder(leases, i, holder, sizeof(holder));
	serve_held_elsewhere(sv, i, !mine, holder);
	if (mine) {
		latch_k8s_set_write_guard(k, time_held, &held);
		ok = pass_source(k, cfg, i, dry_run, sv);
	}
	latch_k8s_set_write_guard(k, NULL, NULL);
	sync_leases_busy(leases, i, false);
	return ok;
}

static bool pass_source(struct latch_k8s *k, const struct sync_config *cfg, size_t i, bool dry_run,
			struct serve *sv)
{
	const struct sync_source *s = &cfg->sources[i];
	struct sync_result res = { 0 };
	struct latch_error err = LATCH_ERROR_INIT;
	if (dry_run)
		printf("# %s\n", s->name);
	double started = latch_monotonic_s();
	struct sync_observed observed = { 0 };
	bool ok = sync_source_pass(k, cfg, s, dry_run ? stdout : NULL, &res, &observed, &err) == 0;
	double seconds = latch_monotonic_s() - started;
	serve_record(sv, i, ok, &res, &observed, seconds, ok ? NULL : latch_error_message(&err));
	if (ok)
		log_result(s, &res, dry_run);
	else
		LATCH_LOG(LATCH_LOG_ERROR, "sync failed", { "source", s->name }, { "error", latch_error_message(&err) });
	sync_result_done(&res);
	latch_error_done(&err);
	return ok;
}

/* A push hook for a source another replica holds: that replica makes the pass. */
static bool ask_the_holder(struct latch_k8s *k, const struct sync_config *cfg, size_t i,
			   struct sync_leases *leases)
{
	if (!leases || sync_leases_held(leases, i))
		return false;
	struct latch_error err = LATCH_ERROR_INIT;
	if (sync_leases_request_pass(leases, k, i, &err) == 0)
		LATCH_LOG(LATCH_LOG_INFO, "asked the replica holding the source for a pass",
			  { "source", cfg->sources[i].name });
	else
		LATCH_LOG(LATCH_LOG_WARN, "cannot ask the replica holding the source for a pass",
			  { "source", cfg->sources[i].name }, { "error", latch_error_message(&err) });
	latch_error_done(&err);
	return true;
}

struct passes {
	const struct sync_config *cfg;
	bool dry_run;
	struct serve *sv;
	struct sync_leases *leases;
	const size_t *sources; /* the sources to pass, whose requests were taken; NULL: every source */
};

static int pass_unit(struct latch_k8s *k, size_t n, void *arg)
{
	const struct passes *p = arg;
	if (p->sources)
		return pass_one(k, p->cfg, p->sources[n], p->dry_run, p->sv, p->leases) ? 0 : LATCH_EINVAL;
	/* This pass is the one a new Lease asked for, and a hook, unless another replica holds
	 * the source: then that one is asked. Taken before the pass, so a request that comes
	 * during it gets a pass of its own. */
	sync_leases_take_pass_request(p->leases, n);
	if (serve_take_pass_request(p->sv, n))
		ask_the_holder(k, p->cfg, n, p->leases);
	return pass_one(k, p->cfg, n, p->dry_run, p->sv, p->leases) ? 0 : LATCH_EINVAL;
}

/* n passes, concurrent at a time, each repository fetched once and each kind listed once;
 * returns the number that failed. A diff prints its sources in order, one at a time. */
static size_t pass_round(struct latch_k8s *k, const struct passes *p, size_t n, long concurrent)
{
	int *results = calloc(n ? n : 1, sizeof(*results));
	if (!results) {
		LATCH_LOG(LATCH_LOG_ERROR, "out of memory starting a round of passes");
		return n;
	}
	const char **names = calloc(n ? n : 1, sizeof(*names));
	for (size_t i = 0; names && i < n; i++)
		names[i] = p->cfg->sources[p->sources ? p->sources[i] : i].name;
	/* Without the names the round still fetches once; it only lists per source. */
	sync_round_begin(p->cfg->round, names, names ? n : 0);
	parallel_run(k, n, p->dry_run ? 1 : (size_t)concurrent, pass_unit, (void *)p, true, results);
	sync_round_end(p->cfg->round);
	free(names);
	size_t failed = 0;
	for (size_t i = 0; i < n; i++)
		failed += results[i] != 0;
	free(results);
	return failed;
}

/* One pass over every source (held by this replica); returns the number that failed. */
static size_t pass_all(struct latch_k8s *k, const struct sync_config *cfg, bool dry_run, long concurrent,
		       struct serve *sv, struct sync_leases *leases)
{
	refresh_old_discovery(k);
	struct passes p = { cfg, dry_run, sv, leases, NULL };
	return pass_round(k, &p, cfg->n_sources, concurrent);
}

/* The sources a signed push hook, a new Lease or another replica asked for, at once: a push
 * to one repository is one fetch for all its sources. */
static bool pass_requested(struct latch_k8s *k, const struct sync_config *cfg, long concurrent,
			   struct serve *sv, struct sync_leases *leases)
{
	size_t *wanted = calloc(cfg->n_sources, sizeof(*wanted)), n = 0;
	if (!wanted) {
		LATCH_LOG(LATCH_LOG_ERROR, "out of memory taking the requested passes");
		return false;
	}
	for (size_t i = 0; i < cfg->n_sources; i++) {
		bool hook = serve_take_pass_request(sv, i), lease = sync_leases_take_pass_request(leases, i);
		if ((hook && !ask_the_holder(k, cfg, i, leases)) || lease)
			wanted[n++] = i;
	}
	refresh_old_discovery(k);
	struct passes p = { cfg, false, sv, leases, wanted };
	if (n)
		pass_round(k, &p, n, concurrent);
	free(wanted);
	return n > 0;
}

/* Prints a line per source; returns the number not applied and healthy. */
static size_t status_all(struct latch_k8s *k, const struct sync_config *cfg)
{
	size_t failed = 0;
	printf("%-20s %-12s %-12s %8s  %s\n", "SOURCE", "APPLIED", "ATTEMPTED", "OBJECTS", "RESULT");
	for (size_t i = 0; i < cfg->n_sources; i++) {
		struct sync_status st;
		struct latch_error err = LATCH_ERROR_INIT;
		if (sync_source_status(k, cfg, &cfg->sources[i], &st, &err) < 0) {
			printf("%-20s %-12s %-12s %8s  %s\n", cfg->sources[i].name, "-", "-", "-", latch_error_message(&err));
			failed++;
		} else {
			printf("%-20s %-12.12s %-12.12s %8zu  %s\n", cfg->sources[i].name, st.applied_revision ? st.applied_revision : "-",
			       st.attempted_revision, st.objects, st.result ? st.result : "");
			failed += !st.ok;
		}
		latch_error_done(&err);
		sync_status_done(&st);
	}
	return failed;
}

/* /healthz turns unhealthy when a turn of the loop takes longer than the slowest pass could
 * (every source fetching, applying and waiting its timeout) plus the wait, twice over. */
static long stale_after(const struct sync_config *cfg)
{
	long longest = 0;
	for (size_t i = 0; i < cfg->n_sources; i++)
		longest += cfg->sources[i].timeout_s + cfg->sources[i].interval_s;
	return 2 * longest + 60;
}

static long shortest_interval(const struct sync_config *cfg)
{
	long m = 3600;
	for (size_t i = 0; i < cfg->n_sources; i++)
		if (cfg->sources[i].interval_s < m)
			m = cfg->sources[i].interval_s;
	return m;
}

/* GPGME runs gpg detached (double fork): its processes are re-parented to PID 1. When
 * latch-sync is PID 1 in its container, nobody else would wait for them. Between passes no
 * child of ours runs (kustomize is waited for within the pass), so reaping any is safe. */
static void reap_orphans(void)
{
	while (waitpid(-1, NULL, WNOHANG) > 0)
		;
}

/* As client-go: the holder must renew within 2/3 of the duration, and tries 7.5 times per
 * duration (15 s, 10 s, 2 s by default). */
static int start_leases(const struct options *o, const struct latch_k8s *k, const struct sync_config *cfg,
			struct sync_leases **ret, struct latch_error *err)
{
	char host[256] = "latch-sync", identity[512];
	const char *pod = getenv("POD_NAME");
	if (!pod && gethostname(host, sizeof(host)) == 0)
		host[sizeof(host) - 1] = '\0';
	unsigned char random[4] = { 0 };
	if (!o->identity && getrandom(random, sizeof(random), 0) != sizeof(random))
		return latch_error_set(err, LATCH_EIO, "no random bytes for the replica's identity");
	snprintf(identity, sizeof(identity), "%s_%02x%02x%02x%02x", pod ? pod : host, random[0], random[1],
		 random[2],
		 random[3]);
	double d = (double)o->lease_duration_s;
	struct sync_lease_options lo = { o->identity ? o->identity : identity, d, d * 2 / 3, d / 7.5 };
	return sync_leases_start(k, cfg, &lo, ret, err);
}

enum wake { WAKE_INTERVAL, WAKE_HOOK, WAKE_STOP };

/* Whole seconds until a time on the monotonic clock, 0 when past: a hook's pass does not put off
 * the other sources' next pass. */
static long seconds_until(double when)
{
	double left = when - latch_monotonic_s();
	return left > 0 ? (long)(left + 0.999) : 0;
}

/* Until the interval is over, a push hook asks for a pass (SIGUSR1), or a stop signal. */
static enum wake wait_for_next(long seconds)
{
	sigset_t set;
	sigemptyset(&set);
	sigaddset(&set, SIGTERM);
	sigaddset(&set, SIGINT);
	sigaddset(&set, SIGUSR1);
	struct timespec ts = { seconds, 0 };
	int sig = sigtimedwait(&set, NULL, &ts);
	return sig == SIGUSR1 ? WAKE_HOOK : sig > 0 ? WAKE_STOP : WAKE_INTERVAL;
}

/* run: serve, take part in the Leases, and pass until a stop signal (or --max-passes). */
static int run(const struct options *o, struct latch_k8s *k, const struct sync_config *cfg)
{
	struct latch_error err = LATCH_ERROR_INIT;
	struct serve *sv = NULL;
	struct sync_leases *leases = NULL;
	if (o->listen && serve_start(o->listen, cfg, stale_after(cfg), &sv, &err) < 0) {
		LATCH_LOG(LATCH_LOG_ERROR, "cannot serve", { "error", latch_error_message(&err) });
		latch_error_done(&err);
		return 69;
	}
	if (o->lease_duration_s > 0 && start_leases(o, k, cfg, &leases, &err) < 0) {
		LATCH_LOG(LATCH_LOG_ERROR, "cannot take part in lease election", { "error", latch_error_message(&err) });
		serve_stop(sv);
		latch_error_done(&err);
		return 69;
	}
	long passes = 0, interval = o->interval_s >= 0 ? o->interval_s : shortest_interval(cfg);
	enum wake why = WAKE_INTERVAL;
	double next_full = 0;
	/* --max-passes counts the turns that passed something: a wake-up whose request an
	 * earlier pass already served is not one. */
	do {
		bool passed = true;
		if (why == WAKE_HOOK) {
			passed = pass_requested(k, cfg, o->concurrent, sv, leases);
		} else {
			pass_all(k, cfg, false, o->concurrent, sv, leases);
			next_full = latch_monotonic_s() + (double)interval;
		}
		reap_orphans();
		serve_heartbeat(sv);
		passes += passed;
	} while ((o->max_passes == 0 || passes < o->max_passes) &&
		 (why = wait_for_next(seconds_until(next_full))) != WAKE_STOP);
	sync_leases_stop(leases);
	serve_stop(sv);
	return 0;
}

int main(int argc, char **argv)
{
	sigset_t stop;
	sigemptyset(&stop);
	sigaddset(&stop, SIGTERM);
	sigaddset(&stop, SIGINT);
	sigaddset(&stop, SIGUSR1); /* a push hook: taken by the loop, never by a thread */
	sigprocmask(SIG_BLOCK, &stop, NULL);
	/* Git credentials and rendered Secrets pass through this process's memory. */
	latch_secret_no_core_dumps();
	/* A peer that hangs up (git server, scraper) is an error to handle, not a reason to die. */
	signal(SIGPIPE, SIG_IGN);
	/* libgit2 1.5 reads ~/.ssh/known_hosts before our own check and fails every ssh fetch
	 * when HOME is unset (as in a bare container); host keys are checked against the
	 * source's knownHostsFile either way. */
	if (!getenv("HOME"))
		setenv("HOME", "/", 0);
	struct options o = { .interval_s = -1, .lease_duration_s = 15, .concurrent = 4 };
	int r = parse(argc, argv, &o);
	if (r)
		return r;
	struct sync_config cfg;
	struct latch_k8s *k = NULL;
	struct latch_error err = LATCH_ERROR_INIT;
	if (sync_config_load(o.config, &cfg, &err) < 0) {
		LATCH_LOG(LATCH_LOG_ERROR, "invalid configuration", { "error", latch_error_message(&err) });
		latch_error_done(&err);
		return 65;
	}
	int code;
	if (sync_round_new(&cfg.round) < 0) {
		LATCH_LOG(LATCH_LOG_ERROR, "out of memory");
		code = 70;
	} else if (connect(&o, &k, &err) < 0) {
		LATCH_LOG(LATCH_LOG_ERROR, "cannot reach Kubernetes", { "error", latch_error_message(&err) });
		code = 69;
	} else if (strcmp(o.mode, "run") == 0) {
		code = run(&o, k, &cfg);
	} else if (strcmp(o.mode, "status") == 0) {
		code = status_all(k, &cfg) ? 1 : 0;
	} else {
		code = pass_all(k, &cfg, strcmp(o.mode, "diff") == 0, o.concurrent, NULL, NULL) ? 1 : 0;
	}
	latch_k8s_free(k);
	sync_round_free(cfg.round);
	sync_config_done(&cfg);
	latch_error_done(&err);
	latch_git_shutdown();
	return code;
}
