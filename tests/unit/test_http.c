/* The HTTP client against a small HTTP/1.1 server forked by the test on loopback. The
 * server is a fault injector for transport behaviour (status sequences, delays, dropped
 * connections, oversized bodies), not an imitation of any API. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "latch/http.h"

struct step {
	int status;       /* 0: close the connection without answering */
	size_t body_len;  /* body of 'x' bytes; 0 echoes the request */
	unsigned delay_ms;
};

struct server {
	pid_t pid;
	int port;
	unsigned *requests; /* shared with the child */
};

static void serve_one(int fd, const struct step *st)
{
	char req[8192];
	size_t n = 0;
	ssize_t r;
	while (n < sizeof(req) - 1 && (r = read(fd, req + n, sizeof(req) - 1 - n)) > 0) {
		n += (size_t)r;
		req[n] = '\0';
		char *end = strstr(req, "\r\n\r\n");
		if (!end)
			continue;
		char *cl = strcasestr(req, "Content-Length:");
		size_t want = cl ? strtoul(cl + 15, NULL, 10) : 0;
		if (n >= (size_t)(end + 4 - req) + want)
			break;
	}
	if (st->delay_ms) {
		struct timespec ts = { st->delay_ms / 1000, (long)(st->delay_ms % 1000) * 1000000L };
		nanosleep(&ts, NULL);
	}
	if (st->status == 0)
		return;
	size_t len = st->body_len ? st->body_len : n;
	char head[256];
	int h = snprintf(head, sizeof(head),
			 "HTTP/1.1 %d X\r\nContent-Type: application/json\r\nContent-Length: %zu\r\nConnection: close\r\n\r\n",
			 st->status, len);
	if (write(fd, head, (size_t)h) < 0)
		return;
	if (!st->body_len) {
		if (write(fd, req, n) < 0)
			return;
		return;
	}
	char *body = malloc(len);
	memset(body, 'x', len);
	if (write(fd, body, len) < 0) {
		free(body);
		return;
	}
	free(body);
}

static struct server start_server(const struct step *steps, size_t n_steps)
{
	struct server s = { 0 };
	int lfd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	struct sockaddr_in a = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
	assert_int_equal(bind(lfd, (struct sockaddr *)&a, sizeof(a)), 0);
	assert_int_equal(listen(lfd, 16), 0);
	socklen_t alen = sizeof(a);
	getsockname(lfd, (struct sockaddr *)&a, &alen);
	s.port = ntohs(a.sin_port);
	s.requests = mmap(NULL, sizeof(unsigned), PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	*s.requests = 0;
	s.pid = fork();
	if (s.pid == 0) {
		prctl(PR_SET_PDEATHSIG, SIGKILL); /* never outlive a failed test */
		alarm(60);
		for (size_t i = 0;; i++) {
			int fd = accept(lfd, NULL, NULL);
			if (fd < 0)
				_exit(0);
			__atomic_add_fetch(s.requests, 1, __ATOMIC_SEQ_CST);
			serve_one(fd, &steps[i < n_steps ? i : n_steps - 1]);
			close(fd);
		}
	}
	close(lfd);
	return s;
}

static void stop_server(struct server *s)
{
	kill(s->pid, SIGKILL);
	waitpid(s->pid, NULL, 0);
	munmap(s->requests, sizeof(unsigned));
}

static char *url_of(const struct server *s, const char *path)
{
	static char url[128];
	snprintf(url, sizeof(url), "http://127.0.0.1:%d%s", s->port, path);
	return url;
}

static bool retry_5xx(long status, void *ud)
{
	return status >= 500;
}

static struct latch_http_client *client_with(unsigned attempts, unsigned deadline_ms, unsigned timeout_ms, size_t max_body)
{
	struct latch_http_options o = LATCH_HTTP_OPTIONS_DEFAULT;
	o.retry = (struct latch_retry_policy){ attempts, 20, 100, deadline_ms };
	o.request_timeout_ms = timeout_ms;
	o.max_body = max_body;
	struct latch_http_client *c = NULL;
	assert_int_equal(latch_http_client_new(&o, &c, NULL), 0);
	return c;
}

static unsigned long long elapsed_ms(const struct timespec *start)
{
	struct timespec now;
	clock_gettime(CLOCK_MONOTONIC, &now);
	long long ms = (long long)(now.tv_sec - start->tv_sec) * 1000 + (now.tv_nsec - start->tv_nsec) / 1000000;
	return (unsigned long long)ms;
}

static void test_http__retries_status_the_caller_marks(void **state)
{
	const struct step steps[] = { { 503, 10, 0 }, { 502, 10, 0 }, { 200, 5, 0 } };
	struct server s = start_server(steps, 3);
	struct latch_http_client *c = client_with(5, 0, 5000, 1 << 20);
	struct latch_http_request req = { .method = "GET", .url = url_of(&s, "/v1/sys/health"), .retry_status = retry_5xx };
	struct latch_http_response resp = { 0 };
	assert_int_equal(latch_http_do(c, &req, &resp, NULL), 0);
	assert_int_equal(resp.status, 200);
	assert_int_equal(resp.attempts, 3);
	assert_int_equal(*s.requests, 3);
	assert_string_equal(latch_buf_str(&resp.body), "xxxxx");
	assert_string_equal(resp.content_type, "application/json");
	latch_http_response_done(&resp);
	latch_http_client_free(c);
	stop_server(&s);
}

static void test_http__status_not_marked_is_returned_at_once(void **state)
{
	const struct step steps[] = { { 404, 3, 0 } };
	struct server s = start_server(steps, 1);
	struct latch_http_client *c = client_with(5, 0, 5000, 1 << 20);
	struct latch_http_request req = { .method = "GET", .url = url_of(&s, "/v1/secret/data/nope"), .retry_status = retry_5xx };
	struct latch_http_response resp = { 0 };
	assert_int_equal(latch_http_do(c, &req, &resp, NULL), 0);
	assert_int_equal(resp.status, 404);
	assert_int_equal(resp.attempts, 1);
	assert_int_equal(*s.requests, 1);
	latch_http_response_done(&resp);
	latch_http_client_free(c);
	stop_server(&s);
}

static void test_http__sends_method_headers_and_body(void **state)
{
	const struct step steps[] = { { 200, 0, 0 } };
	struct server s = start_server(steps, 1);
	struct latch_http_client *c = client_with(1, 0, 5000, 1 << 20);
	const char *headers[] = { "X-Vault-Token: t0k3n", "X-Vault-Namespace: team-a" };
	struct latch_http_request req = { .method = "PUT", .url = url_of(&s, "/v1/pki/issue/demo"), .headers = headers,
					  .n_headers = 2, .body = latch_view_str("{\"common_name\":\"a.demo.svc\"}") };
	struct latch_http_response resp = { 0 };
	assert_int_equal(latch_http_do(c, &req, &resp, NULL), 0);
	const char *echo = latch_buf_str(&resp.body);
	assert_true(strncmp(echo, "PUT /v1/pki/issue/demo HTTP/1.1\r\n", 33) == 0);
	assert_non_null(strstr(echo, "X-Vault-Token: t0k3n\r\n"));
	assert_non_null(strstr(echo, "X-Vault-Namespace: team-a\r\n"));
	assert_non_null(strstr(echo, "\r\n\r\n{\"common_name\":\"a.demo.svc\"}"));
	latch_http_response_done(&resp);
	latch_http_client_free(c);
	stop_server(&s);
}

static void test_http__connection_refused_retries_then_fails(void **state)
{
	const struct step steps[] = { { 200, 1, 0 } };
	struct server s = start_server(steps, 1);
	stop_server(&s); /* the port is now closed */
	struct latch_http_client *c = client_with(3, 0, 5000, 1 << 20);
	struct latch_http_request req = { .method = "GET", .url = url_of(&s, "/v1/sys/health") };
	struct latch_http_response resp = { 0 };
	struct latch_error err = LATCH_ERROR_INIT;
	assert_int_equal(latch_http_do(c, &req, &resp, &err), LATCH_ECONNECT);
	assert_non_null(strstr(latch_error_message(&err), url_of(&s, "/v1/sys/health")));
	assert_non_null(strstr(latch_error_message(&err), "after 3 attempts"));
	latch_error_done(&err);
	latch_http_client_free(c);
}

/* A Vault address with user:password in it was once echoed into error logs. */
static void test_http__credentials_in_the_url_stay_out_of_errors(void **state)
{
	const struct step steps[] = { { 200, 1, 0 } };
	struct server s = start_server(steps, 1);
	stop_server(&s);
	struct latch_http_client *c = client_with(1, 0, 5000, 1 << 20);
	char url[256];
	snprintf(url, sizeof(url), "http://admin:hunter2@%s", url_of(&s, "/v1/sys/health") + strlen("http://"));
	struct latch_http_request req = { .method = "GET", .url = url };
	struct latch_http_response resp = { 0 };
	struct latch_error err = LATCH_ERROR_INIT;
	assert_int_equal(latch_http_do(c, &req, &resp, &err), LATCH_ECONNECT);
	assert_null(strstr(latch_error_message(&err), "hunter2"));
	assert_null(strstr(latch_error_message(&err), "admin"));
	assert_non_null(strstr(latch_error_message(&err), url_of(&s, "/v1/sys/health")));
	latch_error_done(&err);
	latch_http_client_free(c);

	char *shown = latch_url_without_userinfo("https://u:p@git.example/a@b?x=@");
	assert_string_equal(shown, "https://git.example/a@b?x=@");
	free(shown);
	shown = latch_url_without_userinfo("ssh://git@host:22/r.git");
	assert_string_equal(shown, "ssh://host:22/r.git");
	free(shown);
}

/* Git credentials go only where the configured URL points: a redirect elsewhere gets none. */
static void test_http__same_origin_is_scheme_host_and_port(void **state)
{
	assert_true(latch_url_same_origin("https://u:p@Git.Example/a.git",
		"https://git.example:443/other/info/refs"));
	assert_true(latch_url_same_origin("http://[::1]:8080/a", "http://[::1]:8080/b"));
	assert_false(latch_url_same_origin("https://git.example/a.git", "https://evil.example/a.git"));
	assert_false(latch_url_same_origin("https://git.example/a.git", "http://git.example/a.git"));
	assert_false(latch_url_same_origin("https://git.example/a.git", "https://git.example:8443/a.git"));
	assert_false(latch_url_same_origin("https://git.example@evil.example/", "https://git.example/"));
	assert_false(latch_url_same_origin("git.example:a.git", "git.example:a.git"));
}

static void test_http__dropped_connection_is_retried(void **state)
{
	const struct step steps[] = { { 0, 0, 0 }, { 200, 2, 0 } };
	struct server s = start_server(steps, 2);
	struct latch_http_client *c = client_with(3, 0, 5000, 1 << 20);
	struct latch_http_request req = { .method = "GET", .url = url_of(&s, "/") };
	struct latch_http_response resp = { 0 };
	assert_int_equal(latch_http_do(c, &req, &resp, NULL), 0);
	assert_int_equal(resp.status, 200);
	assert_int_equal(resp.attempts, 2);
	latch_http_response_done(&resp);
	latch_http_client_free(c);
	stop_server(&s);
}

static void test_http__attempt_timeout(void **state)
{
	const struct step steps[] = { { 200, 1, 3000 } };
	struct server s = start_server(steps, 1);
	struct latch_http_client *c = client_with(1, 0, 200, 1 << 20);
	struct latch_http_request req = { .method = "GET", .url = url_of(&s, "/slow") };
	struct latch_http_response resp = { 0 };
	struct latch_error err = LATCH_ERROR_INIT;
	assert_int_equal(latch_http_do(c, &req, &resp, &err), LATCH_ETIMEOUT);
	latch_error_done(&err);
	latch_http_client_free(c);
	stop_server(&s);
}

static void test_http__total_deadline_bounds_retries(void **state)
{
	const struct step steps[] = { { 503, 1, 0 } };
	struct server s = start_server(steps, 1);
	struct latch_http_client *c = client_with(1000, 700, 5000, 1 << 20);
	struct latch_http_request req = { .method = "GET", .url = url_of(&s, "/"), .retry_status = retry_5xx };
	struct latch_http_response resp = { 0 };
	struct timespec start;
	clock_gettime(CLOCK_MONOTONIC, &start);
	assert_int_equal(latch_http_do(c, &req, &resp, NULL), 0);
	/* The deadline, not the 1000 attempts, ended the retries: the last answer comes back. */
	assert_int_equal(resp.status, 503);
	assert_true(resp.attempts > 2);
	assert_true(resp.attempts < 1000);
	/* Generous: without the deadline, 1000 attempts take far longer. */
	assert_true(elapsed_ms(&start) < 10000);
	latch_http_response_done(&resp);
	latch_http_client_free(c);
	stop_server(&s);
}

static void test_http__body_cap(void **state)
{
	const struct step steps[] = { { 200, 100000, 0 } };
	struct server s = start_server(steps, 1);
	struct latch_http_client *c = client_with(3, 0, 5000, 1000);
	struct latch_http_request req = { .method = "GET", .url = url_of(&s, "/big") };
	struct latch_http_response resp = { 0 };
	struct latch_error err = LATCH_ERROR_INIT;
	assert_int_equal(latch_http_do(c, &req, &resp, &err), LATCH_ELIMIT);
	assert_non_null(strstr(latch_error_message(&err), "limit of 1000 bytes"));
	assert_int_equal(*s.requests, 1); /* not retried */
	latch_error_done(&err);
	latch_http_client_free(c);
	stop_server(&s);
}

static void test_http__full_jitter_delay_bounds(void **state)
{
	struct latch_retry_policy p = { 10, 100, 3000, 0 };
	for (unsigned retry = 0; retry < 8; retry++) {
		unsigned long long ceiling = 100ull << retry;
		if (ceiling > 3000)
			ceiling = 3000;
		unsigned max_seen = 0;
		for (unsigned long long r = 0; r < 20000; r += 7) {
			unsigned d = latch_retry_delay_ms(&p, retry, r * 2654435761ull);
			assert_true(d <= ceiling);
			if (d > max_seen)
				max_seen = d;
		}
		assert_true(max_seen >= ceiling * 9 / 10);
		assert_int_equal(latch_retry_delay_ms(&p, retry, ceiling), ceiling);
	}
}

int main(void)
{
	signal(SIGPIPE, SIG_IGN);
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_http__retries_status_the_caller_marks),
		cmocka_unit_test(test_http__status_not_marked_is_returned_at_once),
		cmocka_unit_test(test_http__sends_method_headers_and_body),
		cmocka_unit_test(test_http__connection_refused_retries_then_fails),
		cmocka_unit_test(test_http__credentials_in_the_url_stay_out_of_errors),
		cmocka_unit_test(test_http__same_origin_is_scheme_host_and_port),
		cmocka_unit_test(test_http__dropped_connection_is_retried),
		cmocka_unit_test(test_http__attempt_timeout),
		cmocka_unit_test(test_http__total_deadline_bounds_retries),
		cmocka_unit_test(test_http__body_cap),
		cmocka_unit_test(test_http__full_jitter_delay_bounds),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
