#include "serve.h"

#include <errno.h>
#include <netdb.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "latch/buf.h"
#include "latch/log.h"
#include "objects.h"

#define REQUEST_MAX 4096

struct source_stats {
	unsigned long long ok, failed, changed, drifted, pruned;
	size_t objects;
	double last_seconds;
	time_t last_success;
	bool ran, last_ok;
};

struct serve {
	const struct sync_config *cfg;
	struct source_stats *stats;
	pthread_mutex_t lock;
	double heartbeat;
	long stale_after_s;
	int fd;
	atomic_bool stop;
	pthread_t thread;
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
	int r = fd >= 0 && bind(fd, ai->ai_addr, ai->ai_addrlen) == 0 && listen(fd, 16) == 0 ? fd : -errno;
	freeaddrinfo(ai);
	if (r < 0) {
		if (fd >= 0)
			close(fd);
		return latch_error_set(err, LATCH_EIO, "--listen '%s': %s", address, strerror(-r));
	}
	return fd;
}

static void metric(struct latch_buf *b, const char *name, const char *type, const char *help)
{
	latch_buf_printf(b, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
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
}

/* The answer to "GET path": status and body. */
static int answer(struct serve *sv, const char *path, struct latch_buf *body)
{
	pthread_mutex_lock(&sv->lock);
	int status = 404;
	if (strcmp(path, "/healthz") == 0) {
		bool alive = sync_now() - sv->heartbeat < (double)sv->stale_after_s;
		latch_buf_printf(body, "%s\n", alive ? "ok" : "the sync loop has not turned in time");
		status = alive ? 200 : 503;
	} else if (strcmp(path, "/readyz") == 0) {
		status = 200;
		for (size_t i = 0; i < sv->cfg->n_sources; i++) {
			if (sv->stats[i].ran && sv->stats[i].last_ok)
				continue;
			status = 503;
			latch_buf_printf(body, "source %s: %s\n", sv->cfg->sources[i].name, sv->stats[i].ran ? "last pass failed" : "no pass yet");
		}
		if (status == 200)
			latch_buf_printf(body, "ok\n");
	} else if (strcmp(path, "/metrics") == 0) {
		metrics_text(sv, body);
		status = 200;
	} else {
		latch_buf_printf(body, "not found: /healthz, /readyz or /metrics\n");
	}
	pthread_mutex_unlock(&sv->lock);
	return status;
}

static void handle(struct serve *sv, int fd)
{
	struct timeval timeout = { 2, 0 };
	setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, sizeof(timeout));
	setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &timeout, sizeof(timeout));
	char request[REQUEST_MAX];
	size_t len = 0;
	ssize_t got;
	while (len < sizeof(request) - 1 && (got = read(fd, request + len, sizeof(request) - 1 - len)) > 0) {
		len += (size_t)got;
		request[len] = '\0';
		if (strstr(request, "\r\n\r\n") || strstr(request, "\n\n"))
			break;
	}
	request[len] = '\0';
	char path[256] = "";
	bool get = sscanf(request, "GET %255s HTTP/", path) == 1;
	char *query = strchr(path, '?');
	if (query)
		*query = '\0';
	struct latch_buf body = LATCH_BUF_INIT(1u << 20), head = LATCH_BUF_INIT(1024);
	int status = get ? answer(sv, path, &body) : 405;
	if (!get)
		latch_buf_printf(&body, "only GET\n");
	const char *reason = status == 200 ? "OK" : status == 404 ? "Not Found" : status == 405 ? "Method Not Allowed" : "Service Unavailable";
	latch_buf_printf(&head, "HTTP/1.1 %d %s\r\nContent-Type: %s\r\nContent-Length: %zu\r\nConnection: close\r\n\r\n", status, reason,
			 strcmp(path, "/metrics") == 0 ? "text/plain; version=0.0.4" : "text/plain", body.len);
	/* MSG_NOSIGNAL: a scraper that hung up must not kill the agent with SIGPIPE. */
	if (send(fd, head.ptr, head.len, MSG_NOSIGNAL) == (ssize_t)head.len && body.len)
		(void)!send(fd, body.ptr, body.len, MSG_NOSIGNAL);
	latch_buf_done(&head);
	latch_buf_done(&body);
}

static void *serve_loop(void *arg)
{
	struct serve *sv = arg;
	while (!atomic_load(&sv->stop)) {
		struct pollfd p = { sv->fd, POLLIN, 0 };
		if (poll(&p, 1, 200) <= 0)
			continue;
		int fd = accept4(sv->fd, NULL, NULL, SOCK_CLOEXEC);
		if (fd < 0)
			continue;
		handle(sv, fd);
		close(fd);
	}
	return NULL;
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
	sv->heartbeat = sync_now();
	pthread_mutex_init(&sv->lock, NULL);
	atomic_init(&sv->stop, false);
	int r = sv->fd = listen_on(listen, err);
	if (r >= 0 && (r = pthread_create(&sv->thread, NULL, serve_loop, sv)) != 0)
		r = latch_error_set(err, LATCH_EIO, "cannot start the HTTP thread: %s", strerror(r));
	if (r < 0) {
		if (sv->fd >= 0)
			close(sv->fd);
		pthread_mutex_destroy(&sv->lock);
		free(sv->stats);
		free(sv);
		return r;
	}
	LATCH_LOG(LATCH_LOG_INFO, "serving /healthz, /readyz and /metrics", { "listen", listen });
	*ret = sv;
	return 0;
}

void serve_record(struct serve *sv, size_t source, bool ok, const struct sync_result *res, double seconds)
{
	if (!sv || source >= sv->cfg->n_sources)
		return;
	pthread_mutex_lock(&sv->lock);
	struct source_stats *st = &sv->stats[source];
	st->ran = true;
	st->last_ok = ok;
	st->last_seconds = seconds;
	if (ok) {
		st->ok++;
		st->objects = res->applied;
		st->changed += res->changed;
		st->drifted += res->drifted;
		st->pruned += res->pruned;
		st->last_success = time(NULL);
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
	sv->heartbeat = sync_now();
	pthread_mutex_unlock(&sv->lock);
}

void serve_stop(struct serve *sv)
{
	if (!sv)
		return;
	atomic_store(&sv->stop, true);
	pthread_join(sv->thread, NULL);
	close(sv->fd);
	pthread_mutex_destroy(&sv->lock);
	free(sv->stats);
	free(sv);
}
