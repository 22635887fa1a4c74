/* latch's git client against hostile servers on loopback: a server that redirects the fetch
 * to another host must not get the credentials. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <arpa/inet.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "latch/git.h"

struct server {
	int fd;
	int port;
	const char *address;
	char reply[1024];
	int requests;
	bool saw_authorization;
	pthread_t thread;
};

static void listen_on(struct server *s, const char *address)
{
	s->address = address;
	s->fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	struct sockaddr_in a = { .sin_family = AF_INET };
	inet_pton(AF_INET, address, &a.sin_addr);
	assert_int_equal(bind(s->fd, (struct sockaddr *)&a, sizeof(a)), 0);
	assert_int_equal(listen(s->fd, 8), 0);
	socklen_t len = sizeof(a);
	getsockname(s->fd, (struct sockaddr *)&a, &len);
	s->port = ntohs(a.sin_port);
}

/* Answer each request (until the listening socket is shut down) with the reply. */
static void *serve(void *arg)
{
	struct server *s = arg;
	for (int c; (c = accept(s->fd, NULL, NULL)) >= 0; close(c)) {
		char request[8192] = { 0 };
		size_t have = 0;
		ssize_t n;
		while (have < sizeof(request) - 1 && !strstr(request, "\r\n\r\n") &&
		       (n = read(c, request + have, sizeof(request) - 1 - have)) > 0)
			have += (size_t)n;
		s->requests++;
		if (strcasestr(request, "\nAuthorization:"))
			s->saw_authorization = true;
		if (write(c, s->reply, strlen(s->reply)) < 0)
			break;
	}
	return NULL;
}

static void stop(struct server *s)
{
	shutdown(s->fd, SHUT_RDWR);
	pthread_join(s->thread, NULL);
	close(s->fd);
}

static void test_git__credentials_never_follow_a_redirect_to_another_host(void **state)
{
	struct server origin = { 0 }, elsewhere = { 0 };
	listen_on(&origin, "127.0.0.1");
	listen_on(&elsewhere, "127.0.0.2");
	snprintf(origin.reply, sizeof(origin.reply),
		"HTTP/1.1 302 Found\r\nLocation: http://127.0.0.2:%d/repo.git/info/refs"
		 "?service=git-upload-pack\r\nContent-Length: 0\r\nConnection: close\r\n\r\n", elsewhere.port);
	snprintf(elsewhere.reply, sizeof(elsewhere.reply), "HTTP/1.1 401 Unauthorized\r\nWWW-Authenticate: Basic "
		 "realm=\"x\"\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
	pthread_create(&origin.thread, NULL, serve, &origin);
	pthread_create(&elsewhere.thread, NULL, serve, &elsewhere);

	char dir[] = "/tmp/latch-test-git-XXXXXX", url[128], cache[256];
	assert_non_null(mkdtemp(dir));
	snprintf(cache, sizeof(cache), "%s/cache", dir);
	snprintf(url, sizeof(url), "http://127.0.0.1:%d/repo.git", origin.port);
	struct latch_git *g = NULL;
	struct latch_error err = LATCH_ERROR_INIT;
	assert_int_equal(latch_git_open(cache, url, &g, &err), 0);
	struct latch_git_auth auth = { .username = "deploy", .password = "hunter2" };
	assert_true(latch_git_fetch(g, &auth, &err) < 0);
	assert_true(origin.requests >= 1);
	assert_false(elsewhere.saw_authorization);
	assert_null(strstr(latch_error_message(&err), "hunter2"));
	latch_error_done(&err);
	latch_git_close(g);
	stop(&origin);
	stop(&elsewhere);
	char rm[300];
	snprintf(rm, sizeof(rm), "rm -rf '%s'", dir);
	assert_int_equal(system(rm), 0);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_git__credentials_never_follow_a_redirect_to_another_host),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
