#include "serve.h"

#include <errno.h>
#include <microhttpd.h>
#include <netdb.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "latch/buf.h"
#include "latch/clock.h"
#include "latch/file.h"
#include "latch/log.h"
#include "objects.h"
#include "webhook.h"

/* What a client may take: a whole connection lives at most REQUEST_DEADLINE_S (a client that
 * trickles a byte a second is cut then), idles at most IDLE_S, holds at most MEMORY_MAX of
 * headers, and one address holds at most PER_CLIENT connections of CONNECTIONS_MAX. */
#define REQUEST_DEADLINE_S 10.0
#define IDLE_S 5
#define MEMORY_MAX (32 * 1024)
#define CONNECTIONS_MAX 128
#define PER_CLIENT 16
/* Push hooks: a body of at most HOOK_BODY_MAX, and per source a burst of HOOK_BURST requests
 * then one a second; past that 429, before any signature is checked. */
#define HOOK_BODY_MAX (1u << 20)
#define HOOK_SECRET_MAX 4096
#define HOOK_BURST 10.0
#define HOOK_PER_S 1.0
#define HOOK_PREFIX "/hook/"

/* A Prometheus histogram: counts per upper bound (the last is +Inf), their sum. */
#define BUCKETS 12
static const double bucket_bounds[BUCKETS - 1] = { 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300 };
struct histogram {
	unsigned long long counts[BUCKETS];
	double sum;
};

static void observe(struct histogram *h, double v)
{
	size_t b = 0;
	while (b < BUCKETS - 1 && v > bucket_bounds[b])
		b++;
	h->counts[b]++;
	h->sum += v;
}

struct source_stats {
	struct histogram pass_seconds, fetch_seconds;
	unsigned long long fetch_errors;
	unsigned long long ok, failed, changed, drifted, pruned;
	size_t objects;
	double last_seconds;
	time_t last_success;
	time_t last_pass;
	char revision[41];    /* the last one applied (a failure's error names the commit it tried) */
	char error[1024];     /* the last failure's message (no values: sync errors hold none) */
	size_t last_changed, last_drifted, last_pruned;
	bool ran, last_ok;
	bool elsewhere;       /* this replica does not hold the source's Lease */
	char holder[128];     /* the replica that does ("": none seen yet) */
	bool pass_requested;  /* a signed push hook came: the loop runs this source at once */
	double hook_tokens;   /* rate limit: HOOK_BURST requests, then HOOK_PER_S */
	double hook_refilled;
	json_t *entries;      /* the inventory of the last applied pass (sync_result) */
	json_t *last_change;  /* entry key -> {action, at}, what the last pass that changed it did (shared) */
	json_t *pruned_entries; /* what the last pass that pruned pruned: entries with action and at */
};

struct open_connection {
	int fd;          /* -1: a free slot */
	double started;
};

struct serve {
	const struct sync_config *cfg;
	struct source_stats *stats;
	pthread_mutex_t lock;
	double heartbeat;
	long stale_after_s;
	int fd;
	struct MHD_Daemon *daemon;
	struct open_connection open[CONNECTIONS_MAX]; /* under lock */
	atomic_bool stop;
	pthread_t watchdog;
};

static int listen_on(const char *address, struct latch_error *err)
{
	const char *colon = strrchr(address, ':');
	if (!colon || !colon[1])
		return latch_error_set(err, LATCH_EINVAL, "--listen '%s' is not HOST:PORT or :PORT", address);
	char host[256];
	snprintf(host, sizeof(host), "%.*s", (int)(colon - address), address);
	struct addrinfo hints = { .ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM, .ai_flags = AI_PASSIVE }, *ai = NULL;
	if (getaddrinfo(*host ? host : NULL, colon + 1, &hints, &ai) != 0 || !ai)
		return latch_error_set(err, LATCH_EINVAL, "--listen '%s': cannot resolve", address);
	int fd = socket(ai->ai_family, SOCK_STREAM | SOCK_CLOEXEC, 0), one = 1;
	if (fd >= 0)
		setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	int r = fd >= 0 && bind(fd, ai->ai_addr, ai->ai_addrlen) == 0 && listen(fd, SOMAXCONN) == 0 ? fd : -errno;
	freeaddrinfo(ai);
	if (r < 0) {
		if (fd >= 0)
			close(fd);
		return latch_error_set(err, LATCH_EIO, "--listen '%s': %s", address, latch_errno_message(-r));
	}
	return fd;
}

static void metric(struct latch_buf *b, const char *name, const char *type, const char *help)
{
	latch_buf_printf(b, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

static void histogram_text(struct latch_buf *b, const char *name, const char *cfg, const char *src,
			   const struct histogram *h)
{
	unsigned long long cumulative = 0;
	for (size_t i = 0; i < BUCKETS; i++) {
		cumulative += h->counts[i];
		char le[32];
		if (i < BUCKETS - 1)
			snprintf(le, sizeof(le), "%g", bucket_bounds[i]);
		else
			snprintf(le, sizeof(le), "+Inf");
		latch_buf_printf(b, "%s_bucket{config=\"%s\",source=\"%s\",le=\"%s\"} %llu\n", name, cfg, src, le,
				 cumulative);
	}
	latch_buf_printf(b, "%s_sum{config=\"%s\",source=\"%s\"} %.17g\n", name, cfg, src, h->sum);
	latch_buf_printf(b, "%s_count{config=\"%s\",source=\"%s\"} %llu\n", name, cfg, src, cumulative);
}

/* As Flux's gotk_reconcile_condition: one series per status, 1 for the current one. */
static void condition_text(struct latch_buf *b, const char *cfg, const char *src,
			   const struct source_stats *st)
{
	static const char *const statuses[] = { "True", "False", "Unknown" };
	size_t now = st->elsewhere || !st->ran ? 2 : st->last_ok ? 0 : 1;
	for (size_t s = 0; s < 3; s++)
		latch_buf_printf(b, "latch_sync_reconcile_condition{config=\"%s\",source=\"%s\",type=\"Ready\","
				 "status=\"%s\"} %d\n", cfg, src, statuses[s], s == now);
}

/* Durations as histograms, git fetch errors, the Ready condition, the Leases, and the
 * process's API requests by method and status. */
static void metrics_more(struct serve *sv, struct latch_buf *b)
{
	const char *cfg = sv->cfg->name;
	size_t n = sv->cfg->n_sources;
	metric(b, "latch_sync_pass_duration_seconds", "histogram", "How long passes over a source took.");
	for (size_t i = 0; i < n; i++)
		histogram_text(b, "latch_sync_pass_duration_seconds", cfg, sv->cfg->sources[i].name,
			       &sv->stats[i].pass_seconds);
	metric(b, "latch_sync_git_fetch_duration_seconds", "histogram", "How long git fetches for a source took.");
	for (size_t i = 0; i < n; i++)
		histogram_text(b, "latch_sync_git_fetch_duration_seconds", cfg, sv->cfg->sources[i].name,
			       &sv->stats[i].fetch_seconds);
	metric(b, "latch_sync_git_fetch_errors_total", "counter", "Git fetches for a source that failed.");
	for (size_t i = 0; i < n; i++)
		latch_buf_printf(b, "latch_sync_git_fetch_errors_total{config=\"%s\",source=\"%s\"} %llu\n", cfg,
				 sv->cfg->sources[i].name, sv->stats[i].fetch_errors);
	metric(b, "latch_sync_reconcile_condition", "gauge",
	       "The source's Ready condition here: 1 for the current status (Unknown: no pass yet, or another "
	       "replica holds it).");
	for (size_t i = 0; i < n; i++)
		condition_text(b, cfg, sv->cfg->sources[i].name, &sv->stats[i]);
	metric(b, "latch_sync_source_held", "gauge", "1 when this replica syncs the source (holds its Lease).");
	for (size_t i = 0; i < n; i++)
		latch_buf_printf(b, "latch_sync_source_held{config=\"%s\",source=\"%s\"} %d\n", cfg,
				 sv->cfg->sources[i].name,
				 !sv->stats[i].elsewhere);
	metric(b, "latch_sync_api_requests_total", "counter",
	       "Requests to the Kubernetes API server by method and status code (0: no answer).");
	for (size_t m = 0; m < LATCH_K8S_METHODS; m++)
		for (long code = 0; code < LATCH_K8S_STATUS_MAX; code++) {
			const char *method;
			unsigned long count = latch_k8s_requests(m, code, &method);
			if (count)
				latch_buf_printf(b, "latch_sync_api_requests_total{method=\"%s\",code=\"%ld\"} %lu\n", method, code,
						 count);
		}
}

static void metrics_text(struct serve *sv, struct latch_buf *b)
{
	const char *cfg = sv->cfg->name;
	size_t n = sv->cfg->n_sources;
	metric(b, "latch_sync_passes_total", "counter", "Passes over a source, by result.");
	for (size_t i = 0; i < n; i++) {
		const char *src = sv->cfg->sources[i].name;
		latch_buf_printf(b, "latch_sync_passes_total{config=\"%s\",source=\"%s\",result=\"success\"} %llu\n", cfg, src, sv->stats[i].ok);
		latch_buf_printf(b, "latch_sync_passes_total{config=\"%s\",source=\"%s\",result=\"failure\"} %llu\n", cfg, src, sv->stats[i].failed);
	}
	static const struct {
		const char *name, *type, *help;
	} per_source[] = {
		{ "latch_sync_objects", "gauge", "Objects in the source's last applied revision." },
		{ "latch_sync_changed_objects_total", "counter", "Objects the applies created or changed." },
		{ "latch_sync_drifted_objects_total", "counter", "Objects changed by hand and put back." },
		{ "latch_sync_pruned_objects_total", "counter", "Objects deleted because they left the repository." },
		{ "latch_sync_last_pass_duration_seconds", "gauge", "How long the source's last pass took." },
		{ "latch_sync_last_success_timestamp_seconds", "gauge", "When the source's last successful pass ended (Unix time)." },
	};
	for (size_t m = 0; m < sizeof(per_source) / sizeof(per_source[0]); m++) {
		metric(b, per_source[m].name, per_source[m].type, per_source[m].help);
		for (size_t i = 0; i < n; i++) {
			const struct source_stats *st = &sv->stats[i];
			double values[] = { (double)st->objects, (double)st->changed, (double)st->drifted, (double)st->pruned, st->last_seconds,
					    (double)st->last_success };
			latch_buf_printf(b, "%s{config=\"%s\",source=\"%s\"} %.17g\n", per_source[m].name, cfg, sv->cfg->sources[i].name, values[m]);
		}
	}
	metrics_more(sv, b);
}

static void html_text(struct latch_buf *b, const char *s)
{
	for (; *s; s++) {
		switch (*s) {
		case '&': latch_buf_append_str(b, "&amp;"); break;
		case '<': latch_buf_append_str(b, "&lt;"); break;
		case '>': latch_buf_append_str(b, "&gt;"); break;
		case '"': latch_buf_append_str(b, "&quot;"); break;
		case '\'': latch_buf_append_str(b, "&#39;"); break;
		default: latch_buf_putc(b, *s);
		}
	}
}

static void utc_time(time_t t, char out[32])
{
	struct tm tm;
	gmtime_r(&t, &tm);
	strftime(out, 32, "%Y-%m-%d %H:%M:%S UTC", &tm);
}

static const char page_head[] =
	"<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\n"
	"<meta http-equiv=\"refresh\" content=\"10\">\n<title>latch-sync %s</title>\n<style>\n"
	"body{font:14px system-ui,sans-serif;margin:2em;color:#222}h1{font-size:20px}\n"
	"table{border-collapse:collapse}\n"
	"th,td{border:1px solid #ccc;padding:4px 8px;text-align:left;vertical-align:top}\n"
	"th{background:#f4f4f4}tr.failed td,tr.drift td{background:#fde8e8}tr.ok td.result{color:#176e2c}\n"
	"tr.failed td.result{color:#a01818;font-weight:bold}td.error{font-family:monospace;white-space:pre-wrap}\n"
	"</style></head><body>\n";

static void source_row(struct latch_buf *b, const struct sync_source *src, const struct source_stats *st)
{
	char when[32] = "-";
	if (st->ran)
		utc_time(st->last_pass, when);
	const char *result = st->elsewhere && st->holder[0] ? "Synced by replica "
			     : st->elsewhere ? "Waiting for its Lease"
			     : !st->ran ? "No pass yet"
			     : st->last_ok ? "Applied" : "Failed";
	latch_buf_printf(b, "<tr class=\"%s\"><td>", st->elsewhere ? "elsewhere" : !st->ran ? "waiting"
							 : st->last_ok ? "ok" : "failed");
	html_text(b, src->name);
	latch_buf_printf(b, "</td><td class=\"result\">%s", result);
	html_text(b, st->elsewhere ? st->holder : "");
	latch_buf_printf(b, "</td><td><code>%.12s</code></td><td>%s</td>", st->revision[0] ? st->revision : "-",
			 when);
	latch_buf_printf(b, "<td>%.2f s</td><td>%zu</td><td>%zu</td><td>%zu</td><td>%zu</td><td class=\"error\">",
			 st->last_seconds, st->objects, st->last_changed, st->last_drifted, st->last_pruned);
	html_text(b, st->last_ok ? "" : st->error);
	latch_buf_append_str(b, "</td></tr>\n");
}

static void inventory_row(struct latch_buf *b, const json_t *entry, const char *state, const json_t *change)
{
	const char *action = latch_json_get_str(change, "action");
	bool drift = action && strcmp(action, "Drift corrected") == 0;
	latch_buf_printf(b, "<tr class=\"%s\"><td>", drift ? "drift" : "object");
	const char *cells[] = { latch_json_get_str(entry, "kind"), latch_json_get_str(entry, "namespace"),
				latch_json_get_str(entry, "name"), state };
	for (size_t i = 0; i < sizeof(cells) / sizeof(cells[0]); i++) {
		latch_buf_append_str(b, i ? "</td><td>" : "");
		html_text(b, cells[i] ? cells[i] : "");
	}
	char when[32] = "-";
	if (action)
		utc_time((time_t)json_integer_value(json_object_get(change, "at")), when);
	latch_buf_printf(b, "</td><td>%s%s%s</td></tr>\n", action ? action : "", action ? " " : "", when);
}

/* Each object of the last applied revision, with the last change a pass made to it (created,
 * updated, drift put back); then what the last pruning pass pruned. */
static void inventory_table(struct latch_buf *b, const struct sync_source *src, const struct source_stats *st)
{
	size_t n = json_array_size(st->entries);
	latch_buf_printf(b, "<details%s><summary>", n <= 100 ? " open" : "");
	html_text(b, src->name);
	latch_buf_printf(b, ": %zu objects</summary>\n<table class=\"inventory\">\n"
			    "<tr><th>Kind</th><th>Namespace</th><th>Name</th><th>State</th><th>Last change</th></tr>\n", n);
	size_t i;
	json_t *entry;
	json_array_foreach(st->entries, i, entry) {
		json_t *record = sync_entry_object(sync_entry_key(entry));
		if (record)
			inventory_row(b, record, "In sync", json_object_get(st->last_change, sync_entry_key(entry)));
		json_decref(record);
	}
	json_array_foreach(st->pruned_entries, i, entry) inventory_row(b, entry, "Pruned", entry);
	latch_buf_append_str(b, "</table></details>\n");
}

/* GET /: what happened, for a person, without kubectl. Read-only, no script, no value. */
static void status_page(struct serve *sv, struct latch_buf *b)
{
	struct latch_buf title = LATCH_BUF_INIT(1024);
	html_text(&title, sv->cfg->name);
	latch_buf_printf(b, page_head, latch_buf_str(&title));
	char now[32];
	utc_time(time(NULL), now);
	bool alive = latch_monotonic_s() - sv->heartbeat < (double)sv->stale_after_s;
	latch_buf_printf(b, "<h1>latch-sync %s</h1>\n<p>%s &middot; the sync loop is %s</p>\n",
			 latch_buf_str(&title), now, alive ? "turning" : "<strong>stalled</strong>");
	latch_buf_done(&title);
	latch_buf_append_str(b, "<table>\n<tr><th>Source</th><th>Result</th><th>Applied revision</th>"
				"<th>Last pass</th><th>Took</th><th>Objects</th><th>Changed</th><th>Drifted</th><th>Pruned</th>"
				"<th>Error</th></tr>\n");
	for (size_t i = 0; i < sv->cfg->n_sources; i++)
		source_row(b, &sv->cfg->sources[i], &sv->stats[i]);
	latch_buf_append_str(b, "</table>\n<p>Objects, changed, drifted and pruned are the counts of the last "
				"applied pass. Machine-readable: <a href=\"/metrics\">/metrics</a>, <a href=\"/readyz\">/readyz"
				"</a>.</p>\n<h2>Inventory</h2>\n<p>Drift is found and put back at each pass.</p>\n");
	/* A source another replica holds is that replica's to show: what this one kept is old. */
	for (size_t i = 0; i < sv->cfg->n_sources; i++)
		if (sv->stats[i].entries && !sv->stats[i].elsewhere)
			inventory_table(b, &sv->cfg->sources[i], &sv->stats[i]);
	latch_buf_append_str(b, "</body></html>\n");
}

/* The answer to "GET path": status and body. */
static int answer(struct serve *sv, const char *path, struct latch_buf *body)
{
	pthread_mutex_lock(&sv->lock);
	int status = 404;
	if (strcmp(path, "/healthz") == 0) {
		bool alive = latch_monotonic_s() - sv->heartbeat < (double)sv->stale_after_s;
		latch_buf_printf(body, "%s\n", alive ? "ok" : "the sync loop has not turned in time");
		status = alive ? 200 : 503;
	} else if (strcmp(path, "/readyz") == 0) {
		status = 200;
		for (size_t i = 0; i < sv->cfg->n_sources; i++) {
			if ((sv->stats[i].elsewhere && sv->stats[i].holder[0]) ||
			    (!sv->stats[i].elsewhere && sv->stats[i].ran && sv->stats[i].last_ok))
				continue;
			status = 503;
			if (sv->stats[i].elsewhere) {
				latch_buf_printf(body, "source %s: waiting for its Lease\n", sv->cfg->sources[i].name);
				continue;
			}
			/* The error names the file or commit, the key and why; it holds no value. */
			latch_buf_printf(body, "source %s: %s%s\n", sv->cfg->sources[i].name,
					 sv->stats[i].ran ? "last pass failed: " : "no pass yet", sv->stats[i].ran ? sv->stats[i].error : "");
		}
		if (status == 200)
			latch_buf_printf(body, "ok\n");
	} else if (strcmp(path, "/metrics") == 0) {
		metrics_text(sv, body);
		status = 200;
	} else if (strcmp(path, "/") == 0) {
		status_page(sv, body);
		status = 200;
	} else {
		latch_buf_printf(body, "not found: /, /healthz, /readyz or /metrics\n");
	}
	pthread_mutex_unlock(&sv->lock);
	return status;
}

static enum MHD_Result respond(struct MHD_Connection *c, unsigned status, const char *type,
			       const struct latch_buf *body)
{
	struct MHD_Response *r = MHD_create_response_from_buffer(body->len, body->ptr ? body->ptr : (void *)"",
								 MHD_RESPMEM_MUST_COPY);
	if (!r)
		return MHD_NO;
	MHD_add_response_header(r, MHD_HTTP_HEADER_CONTENT_TYPE, type);
	enum MHD_Result ok = MHD_queue_response(c, status, r);
	MHD_destroy_response(r);
	return ok;
}

/* The source a hook URL names, if it takes hooks. */
static const struct sync_source *hook_source(const struct serve *sv, const char *url, size_t *ret_index)
{
	for (size_t i = 0; i < sv->cfg->n_sources; i++)
		if (strcmp(url + strlen(HOOK_PREFIX), sv->cfg->sources[i].name) == 0 &&
		    sv->cfg->sources[i].webhook_secret_file) {
			*ret_index = i;
			return &sv->cfg->sources[i];
		}
	return NULL;
}

static bool hook_rate_ok(struct serve *sv, size_t i)
{
	pthread_mutex_lock(&sv->lock);
	struct source_stats *st = &sv->stats[i];
	double now = latch_monotonic_s();
	st->hook_tokens += (now - st->hook_refilled) * HOOK_PER_S;
	if (st->hook_tokens > HOOK_BURST)
		st->hook_tokens = HOOK_BURST;
	st->hook_refilled = now;
	bool ok = st->hook_tokens >= 1.0;
	if (ok)
		st->hook_tokens -= 1.0;
	pthread_mutex_unlock(&sv->lock);
	return ok;
}

/* The body of a hook being received. */
struct hook_request {
	size_t source;
	struct latch_buf body;
	bool too_big;
};

/* A push is news of its repository: every source reading it passes, in one round (one fetch,
 * one list per kind), as in Flux every Kustomization of a GitRepository follows its new
 * revision. Returns how many. */
static size_t request_repository_passes(struct serve *sv, size_t hooked)
{
	const char *url = sv->cfg->sources[hooked].url;
	size_t n = 0;
	pthread_mutex_lock(&sv->lock);
	for (size_t i = 0; i < sv->cfg->n_sources; i++)
		if (strcmp(sv->cfg->sources[i].url, url) == 0) {
			sv->stats[i].pass_requested = true;
			n++;
		}
	pthread_mutex_unlock(&sv->lock);
	kill(getpid(), SIGUSR1); /* wakes the loop, which waits for it */
	return n;
}

/* A complete hook: checked against the source's secret (read at every hook, so it can be
 * rotated by updating the Secret), then the passes of its repository's sources are requested. */
static unsigned hook_verdict(struct serve *sv, struct MHD_Connection *c, struct hook_request *h,
			     struct latch_buf *out)
{
	const struct sync_source *s = &sv->cfg->sources[h->source];
	if (h->too_big)
		return latch_buf_printf(out, "the body is larger than %u bytes\n", HOOK_BODY_MAX), 413;
	struct latch_buf secret = LATCH_SECRET_BUF_INIT(HOOK_SECRET_MAX);
	struct latch_error err = LATCH_ERROR_INIT;
	bool readable = latch_file_read(s->webhook_secret_file, HOOK_SECRET_MAX, &secret, &err) == 0;
	bool ok = readable && sync_webhook_signed(latch_buf_view(&secret), latch_buf_view(&h->body),
						  MHD_lookup_connection_value(c, MHD_HEADER_KIND, "X-Hub-Signature-256"),
						  MHD_lookup_connection_value(c, MHD_HEADER_KIND, "X-Latch-Signature"),
						  MHD_lookup_connection_value(c, MHD_HEADER_KIND, "X-Gitlab-Token"));
	latch_buf_done(&secret);
	if (!readable)
		LATCH_LOG(LATCH_LOG_ERROR, "cannot read the webhook secret", { "source", s->name },
			  { "error", latch_error_message(&err) });
	latch_error_done(&err);
	if (!ok) {
		LATCH_LOG(LATCH_LOG_WARN, "refused a webhook without a valid signature", { "source", s->name });
		return latch_buf_printf(out, "no valid signature\n"), 401;
	}
	size_t n = request_repository_passes(sv, h->source);
	char others[32];
	snprintf(others, sizeof(others), "%zu", n - 1);
	LATCH_LOG(LATCH_LOG_INFO, "a signed webhook starts a pass", { "source", s->name },
		  { "others_on_its_repository", others });
	return latch_buf_printf(out, "pass of %s and %zu other source(s) of its repository started\n", s->name,
				n - 1), 202;
}

/* POST /hook/<source>: called first with the headers, then with each part of the body, then
 * once more with none. */
static enum MHD_Result handle_hook(struct serve *sv, struct MHD_Connection *c, const char *url,
				   const char *data, size_t *size, void **req, struct latch_buf *out,
				   unsigned *status)
{
	struct hook_request *h = *req;
	if (!h) {
		size_t i;
		if (!hook_source(sv, url, &i))
			return latch_buf_printf(out, "no source takes hooks at %s\n", url), *status = 404, MHD_NO;
		if (!hook_rate_ok(sv, i))
			return latch_buf_printf(out, "too many hooks for this source\n"), *status = 429, MHD_NO;
		const char *length = MHD_lookup_connection_value(c, MHD_HEADER_KIND, MHD_HTTP_HEADER_CONTENT_LENGTH);
		if (length && strtoull(length, NULL, 10) > HOOK_BODY_MAX)
			return latch_buf_printf(out, "the body is larger than %u bytes\n", HOOK_BODY_MAX), *status = 413,
			       MHD_NO;
		if (!(h = calloc(1, sizeof(*h))))
			return MHD_NO;
		h->source = i;
		latch_buf_init(&h->body, HOOK_BODY_MAX, false);
		*req = h;
		return MHD_YES;
	}
	if (*size > 0) {
		h->too_big = h->too_big || latch_buf_append(&h->body, data, *size) < 0;
		*size = 0;
		return MHD_YES;
	}
	*status = hook_verdict(sv, c, h, out);
	return MHD_NO;
}

static void request_done(void *cls, struct MHD_Connection *c, void **req, enum MHD_RequestTerminationCode why)
{
	(void)cls;
	(void)c;
	(void)why;
	struct hook_request *h = *req;
	if (h) {
		latch_buf_done(&h->body);
		free(h);
		*req = NULL;
	}
}

static enum MHD_Result handle(void *cls, struct MHD_Connection *c, const char *url, const char *method,
			      const char *version, const char *upload_data, size_t *upload_data_size, void **req)
{
	struct serve *sv = cls;
	(void)version;
	struct latch_buf body = LATCH_BUF_INIT(1u << 20);
	unsigned status = 405;
	if (strcmp(method, MHD_HTTP_METHOD_POST) == 0 && strncmp(url, HOOK_PREFIX, strlen(HOOK_PREFIX)) == 0) {
		/* MHD_YES: more of the request is to come. MHD_NO: answer now with the status it
		 * set, or close the connection when it set none (out of memory). */
		status = 0;
		enum MHD_Result more = handle_hook(sv, c, url, upload_data, upload_data_size, req, &body, &status);
		if (more == MHD_YES || status == 0) {
			latch_buf_done(&body);
			return more;
		}
	} else if (strcmp(method, MHD_HTTP_METHOD_GET) == 0) {
		status = (unsigned)answer(sv, url, &body);
	} else {
		latch_buf_printf(&body, "GET /healthz, /readyz, /metrics; POST %s<source>\n", HOOK_PREFIX);
	}
	*upload_data_size = 0;
	const char *type = strcmp(url, "/metrics") == 0 ? "text/plain; version=0.0.4"
			   : strcmp(url, "/") == 0 && status == 200 ? "text/html; charset=utf-8"
								  : "text/plain";
	enum MHD_Result r = respond(c, status, type, &body);
	latch_buf_done(&body);
	return r;
}

void serve_held_elsewhere(struct serve *sv, size_t source, bool elsewhere, const char *holder)
{
	if (!sv)
		return;
	pthread_mutex_lock(&sv->lock);
	struct source_stats *st = &sv->stats[source];
	st->elsewhere = elsewhere;
	snprintf(st->holder, sizeof(st->holder), "%s", elsewhere && holder ? holder : "");
	pthread_mutex_unlock(&sv->lock);
}

bool serve_take_pass_request(struct serve *sv, size_t source)
{
	if (!sv || source >= sv->cfg->n_sources)
		return false;
	pthread_mutex_lock(&sv->lock);
	bool requested = sv->stats[source].pass_requested;
	sv->stats[source].pass_requested = false;
	pthread_mutex_unlock(&sv->lock);
	return requested;
}

/* Each connection is noted when it opens, so the watchdog can cut it at the deadline. */
static void track(void *cls, struct MHD_Connection *c, void **socket_context,
		  enum MHD_ConnectionNotificationCode what)
{
	struct serve *sv = cls;
	const union MHD_ConnectionInfo *info = MHD_get_connection_info(c, MHD_CONNECTION_INFO_CONNECTION_FD);
	if (!info)
		return;
	pthread_mutex_lock(&sv->lock);
	for (size_t i = 0; i < CONNECTIONS_MAX; i++) {
		if (what == MHD_CONNECTION_NOTIFY_STARTED && sv->open[i].fd < 0) {
			sv->open[i] = (struct open_connection){ info->connect_fd, latch_monotonic_s() };
			break;
		}
		if (what == MHD_CONNECTION_NOTIFY_CLOSED && sv->open[i].fd == info->connect_fd) {
			sv->open[i].fd = -1;
			break;
		}
	}
	pthread_mutex_unlock(&sv->lock);
	(void)socket_context;
}

/* libmicrohttpd's timeout is for idleness; a client that sends a byte now and then resets
 * it. The whole connection's deadline is kept here: past it, the socket is shut down and
 * libmicrohttpd closes the connection. */
static void *watchdog(void *arg)
{
	struct serve *sv = arg;
	while (!atomic_load(&sv->stop)) {
		struct timespec tick = { 0, 200 * 1000 * 1000 };
		nanosleep(&tick, NULL);
		pthread_mutex_lock(&sv->lock);
		double now = latch_monotonic_s();
		for (size_t i = 0; i < CONNECTIONS_MAX; i++)
			if (sv->open[i].fd >= 0 && now - sv->open[i].started > REQUEST_DEADLINE_S) {
				shutdown(sv->open[i].fd, SHUT_RDWR);
				sv->open[i].started = now; /* once */
			}
		pthread_mutex_unlock(&sv->lock);
	}
	return NULL;
}

static struct MHD_Daemon *start_daemon(struct serve *sv)
{
	return MHD_start_daemon(MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_EPOLL, 0, NULL, NULL, handle, sv,
				MHD_OPTION_LISTEN_SOCKET, sv->fd, MHD_OPTION_CONNECTION_TIMEOUT, (unsigned)IDLE_S,
				MHD_OPTION_CONNECTION_LIMIT, (unsigned)CONNECTIONS_MAX, MHD_OPTION_PER_IP_CONNECTION_LIMIT,
				(unsigned)PER_CLIENT, MHD_OPTION_CONNECTION_MEMORY_LIMIT, (size_t)MEMORY_MAX,
				MHD_OPTION_NOTIFY_CONNECTION, track, sv, MHD_OPTION_NOTIFY_COMPLETED, request_done, sv,
				MHD_OPTION_END);
}

int serve_start(const char *listen, const struct sync_config *cfg, long stale_after_s, struct serve **ret, struct latch_error *err)
{
	struct serve *sv = calloc(1, sizeof(*sv));
	if (!sv || !(sv->stats = calloc(cfg->n_sources ? cfg->n_sources : 1, sizeof(*sv->stats)))) {
		free(sv);
		return latch_error_set(err, LATCH_ENOMEM, "out of memory");
	}
	sv->cfg = cfg;
	sv->stale_after_s = stale_after_s;
	sv->heartbeat = latch_monotonic_s();
	pthread_mutex_init(&sv->lock, NULL);
	atomic_init(&sv->stop, false);
	for (size_t i = 0; i < CONNECTIONS_MAX; i++)
		sv->open[i].fd = -1;
	int r = sv->fd = listen_on(listen, err);
	if (r >= 0 && !(sv->daemon = start_daemon(sv)))
		r = latch_error_set(err, LATCH_EIO, "--listen '%s': libmicrohttpd did not start", listen);
	if (r >= 0 && (r = pthread_create(&sv->watchdog, NULL, watchdog, sv)) != 0)
		r = latch_error_set(err, LATCH_EIO, "cannot start the HTTP watchdog thread: %s", latch_errno_message(r));
	if (r < 0) {
		if (sv->daemon)
			MHD_stop_daemon(sv->daemon);
		if (sv->fd >= 0)
			close(sv->fd);
		pthread_mutex_destroy(&sv->lock);
		free(sv->stats);
		free(sv);
		return r;
	}
	for (size_t i = 0; i < cfg->n_sources; i++)
		sv->stats[i].hook_tokens = HOOK_BURST;
	LATCH_LOG(LATCH_LOG_INFO, "serving /healthz, /readyz, /metrics and /hook/<source>", { "listen", listen });
	*ret = sv;
	return 0;
}

/* Forgets the changes of objects no longer in the inventory (left without a prune). */
static void forget_departed(struct source_stats *st)
{
	json_t *kept = json_object();
	size_t i;
	json_t *entry;
	json_array_foreach(kept ? st->entries : NULL, i, entry) {
		const char *key = sync_entry_key(entry);
		json_t *change = key ? json_object_get(st->last_change, key) : NULL;
		if (change)
			json_object_set(kept, key, change);
	}
	if (!kept)
		return;
	json_decref(st->last_change);
	st->last_change = kept;
}

/* The applied pass's inventory for the page, with the last change to each object kept
 * across the quiet passes that follow. */
static void keep_inventory(struct source_stats *st, const struct sync_result *res)
{
	json_decref(st->entries);
	st->entries = json_incref(res->entries);
	if (!st->last_change)
		st->last_change = json_object();
	json_t *pruned = json_array();
	json_t *changes = json_object(); /* one {action, at} per action, shared by the objects it names */
	const char *key;
	json_t *touched;
	json_object_foreach(changes ? res->touched : NULL, key, touched) {
		const char *action = json_string_value(touched);
		if (!action)
			continue;
		json_t *change = json_incref(json_object_get(changes, action));
		if (!change && (change = json_pack("{s:s,s:I}", "action", action, "at", (json_int_t)st->last_pass)))
			json_object_set(changes, action, change);
		bool was_pruned = strcmp(action, "Pruned") == 0;
		json_t *record = was_pruned ? sync_entry_object(key) : NULL;
		if (record && pruned && json_object_update(record, change) == 0)
			json_array_append(pruned, record);
		json_decref(record);
		if (was_pruned)
			json_object_del(st->last_change, key);
		else if (change)
			json_object_set(st->last_change, key, change);
		json_decref(change);
	}
	if (json_array_size(pruned) > 0) {
		json_decref(st->pruned_entries);
		st->pruned_entries = json_incref(pruned);
	}
	json_decref(changes);
	json_decref(pruned);
	if (json_object_size(st->last_change) > json_array_size(st->entries))
		forget_departed(st);
}

void serve_record(struct serve *sv, size_t source, bool ok, const struct sync_result *res,
		  const struct sync_observed *observed, double seconds, const char *error)
{
	if (!sv || source >= sv->cfg->n_sources)
		return;
	pthread_mutex_lock(&sv->lock);
	struct source_stats *st = &sv->stats[source];
	observe(&st->pass_seconds, seconds);
	if (observed->fetched)
		observe(&st->fetch_seconds, observed->fetch_s);
	st->fetch_errors += observed->fetched && observed->fetch_failed;
	st->ran = true;
	st->last_ok = ok;
	st->last_seconds = seconds;
	st->last_pass = time(NULL);
	snprintf(st->error, sizeof(st->error), "%s", error ? error : "");
	if (ok && res->revision[0])
		memcpy(st->revision, res->revision, sizeof(st->revision));
	if (ok) {
		st->ok++;
		st->objects = res->applied;
		st->changed += res->changed;
		st->drifted += res->drifted;
		st->pruned += res->pruned;
		st->last_changed = res->changed;
		st->last_drifted = res->drifted;
		st->last_pruned = res->pruned;
		st->last_success = st->last_pass;
		keep_inventory(st, res);
	} else {
		st->failed++;
	}
	pthread_mutex_unlock(&sv->lock);
}

void serve_heartbeat(struct serve *sv)
{
	if (!sv)
		return;
	pthread_mutex_lock(&sv->lock);
	sv->heartbeat = latch_monotonic_s();
	pthread_mutex_unlock(&sv->lock);
}

void serve_stop(struct serve *sv)
{
	if (!sv)
		return;
	atomic_store(&sv->stop, true);
	pthread_join(sv->watchdog, NULL);
	MHD_stop_daemon(sv->daemon); /* closes the listening socket it was given */
	pthread_mutex_destroy(&sv->lock);
	for (size_t i = 0; i < sv->cfg->n_sources; i++) {
		json_decref(sv->stats[i].entries);
		json_decref(sv->stats[i].last_change);
		json_decref(sv->stats[i].pruned_entries);
	}
	free(sv->stats);
	free(sv);
}
