#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <dirent.h>
#include <errno.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "latch/file.h"

static int setup_dir(void **state)
{
	char *tmpl = strdup("/tmp/latch-test-file-XXXXXX");
	assert_non_null(mkdtemp(tmpl));
	*state = tmpl;
	return 0;
}

static int teardown_dir(void **state)
{
	char cmd[256];
	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", (char *)*state);
	assert_int_equal(system(cmd), 0);
	free(*state);
	return 0;
}

static char *join(const char *dir, const char *name)
{
	static char path[512];
	snprintf(path, sizeof(path), "%s/%s", dir, name);
	return path;
}

static size_t count_entries(const char *dir)
{
	DIR *d = opendir(dir);
	assert_non_null(d);
	size_t n = 0;
	struct dirent *de;
	while ((de = readdir(d)))
		if (strcmp(de->d_name, ".") != 0 && strcmp(de->d_name, "..") != 0)
			n++;
	closedir(d);
	return n;
}

static char *slurp(const char *path)
{
	struct latch_buf b = LATCH_BUF_INIT(1 << 20);
	struct latch_error err = LATCH_ERROR_INIT;
	assert_int_equal(latch_file_read(path, 1 << 20, &b, &err), 0);
	return latch_buf_take(&b);
}

static void test_file__write_sets_mode_despite_umask(void **state)
{
	const char *dir = *state;
	struct latch_error err = LATCH_ERROR_INIT;
	mode_t old = umask(077);
	struct latch_file_opts o = { .mode = 0640 };
	assert_int_equal(latch_file_write_atomic(join(dir, "db-creds"), latch_view_str("user: v-app\n"), &o, &err), 0);
	umask(old);
	struct stat st;
	assert_int_equal(stat(join(dir, "db-creds"), &st), 0);
	assert_int_equal(st.st_mode & 07777, 0640);
	char *s = slurp(join(dir, "db-creds"));
	assert_string_equal(s, "user: v-app\n");
	free(s);
	assert_int_equal(count_entries(dir), 1);
}

static void test_file__overwrite_replaces_whole_file(void **state)
{
	const char *dir = *state;
	struct latch_error err = LATCH_ERROR_INIT;
	struct latch_file_opts o = { .mode = 0600 };
	assert_int_equal(latch_file_write_atomic(join(dir, "f"), latch_view_str("a much longer first version"), &o, &err), 0);
	assert_int_equal(latch_file_write_atomic(join(dir, "f"), latch_view_str("short"), &o, &err), 0);
	char *s = slurp(join(dir, "f"));
	assert_string_equal(s, "short");
	free(s);
	assert_int_equal(count_entries(dir), 1);
}

static void test_file__refuses_group_or_world_writable_mode(void **state)
{
	struct latch_error err = LATCH_ERROR_INIT;
	struct latch_file_opts o = { .mode = 0666 };
	assert_int_equal(latch_file_write_atomic(join(*state, "f"), latch_view_str("x"), &o, &err), LATCH_EINVAL);
	assert_non_null(strstr(latch_error_message(&err), "0666"));
	assert_int_equal(count_entries(*state), 0);
	latch_error_done(&err);
}

static void test_file__missing_directory_names_it(void **state)
{
	struct latch_error err = LATCH_ERROR_INIT;
	struct latch_file_opts o = { .mode = 0600 };
	assert_int_equal(latch_file_write_atomic(join(*state, "nope/f"), latch_view_str("x"), &o, &err), LATCH_ENOTFOUND);
	assert_non_null(strstr(latch_error_message(&err), "/nope"));
	latch_error_done(&err);
}

/* A planted `out/sub -> elsewhere` once made latch-init write sub/db.env outside out/. */
static void test_file__no_symlink_leads_outside_the_root(void **state)
{
	char root[512], elsewhere[512], link[600];
	snprintf(root, sizeof(root), "%s/out", (char *)*state);
	snprintf(elsewhere, sizeof(elsewhere), "%s/elsewhere", (char *)*state);
	assert_int_equal(mkdir(root, 0755), 0);
	assert_int_equal(mkdir(elsewhere, 0755), 0);
	snprintf(link, sizeof(link), "%s/sub", root);
	assert_int_equal(symlink(elsewhere, link), 0);
	struct latch_error err = LATCH_ERROR_INIT;
	int fd = -1;
	assert_int_equal(latch_file_open_dir_beneath(root, "sub", 0755, &fd, &err), LATCH_EINVAL);
	assert_non_null(strstr(latch_error_message(&err), "'sub' in"));
	latch_error_done(&err);
	assert_int_equal(latch_file_open_dir_beneath(root, "a/../../x", 0755, &fd, &err), LATCH_EINVAL);
	latch_error_done(&err);
	assert_int_equal(count_entries(elsewhere), 0);

	/* Real directories are made and used. */
	assert_int_equal(latch_file_open_dir_beneath(root, "certs/web", 0755, &fd, &err), 0);
	struct latch_file_opts o = { .mode = 0600 };
	assert_int_equal(latch_file_write_atomic_at(fd, "tls.key", "out/certs/web/tls.key", latch_view_str("k"), &o,
						    &err), 0);
	close(fd);
	char path[700];
	snprintf(path, sizeof(path), "%s/certs/web/tls.key", root);
	char *text = slurp(path);
	assert_string_equal(text, "k");
	free(text);
}

static void test_file__stale_temp_from_killed_writer_is_swept(void **state)
{
	const char *dir = *state;
	FILE *f = fopen(join(dir, ".token.latch-tmp-0123456789abcdef"), "w");
	assert_non_null(f);
	fputs("partial", f);
	fclose(f);
	struct latch_error err = LATCH_ERROR_INIT;
	struct latch_file_opts o = { .mode = 0600 };
	assert_int_equal(latch_file_write_atomic(join(dir, "token"), latch_view_str("new"), &o, &err), 0);
	assert_int_equal(count_entries(dir), 1);
}

static void test_file__read_cap(void **state)
{
	const char *dir = *state;
	struct latch_error err = LATCH_ERROR_INIT;
	struct latch_file_opts o = { .mode = 0600 };
	assert_int_equal(latch_file_write_atomic(join(dir, "big"), latch_view_str("0123456789"), &o, &err), 0);
	struct latch_buf b = LATCH_BUF_INIT(100);
	assert_int_equal(latch_file_read(join(dir, "big"), 9, &b, &err), LATCH_ELIMIT);
	assert_non_null(strstr(latch_error_message(&err), "limit of 9 bytes"));
	latch_buf_done(&b);
	latch_error_done(&err);
}

/* A mapped input whose read part was given back still reads as the file. */
static void test_file__input_given_back_still_reads_the_file(void **state)
{
	const char *dir = *state;
	struct latch_error err = LATCH_ERROR_INIT;
	size_t page = (size_t)sysconf(_SC_PAGESIZE), size = 5 * page + 123;
	char *content = malloc(size);
	assert_non_null(content);
	for (size_t i = 0; i < size; i++)
		content[i] = (char)('a' + i % 26);
	struct latch_file_opts o = { .mode = 0600 };
	struct latch_view text = { content, size };
	assert_int_equal(latch_file_write_atomic(join(dir, "in.yaml"), text, &o, &err), 0);

	struct latch_input in;
	assert_int_equal(latch_input_open(join(dir, "in.yaml"), 1 << 20, &in, &err), 0);
	assert_int_equal(in.mapped_len, size);
	assert_int_equal(in.text.len, size);
	latch_input_release_before(&in, 3 * page + 10);
	assert_int_equal(in.released, 3 * page);
	latch_input_release_before(&in, page); /* never backwards */
	assert_int_equal(in.released, 3 * page);
	assert_memory_equal(in.text.ptr, content, size);
	latch_input_close(&in);

	assert_int_equal(latch_input_open(join(dir, "in.yaml"), size - 1, &in, &err), LATCH_ELIMIT);
	assert_non_null(strstr(latch_error_message(&err), "limit of"));
	latch_input_close(&in);
	free(content);
	latch_error_done(&err);
}

/* A pipe cannot be mapped: it is read whole instead; an empty file gives empty text. */
static void test_file__input_from_a_pipe_or_empty_file(void **state)
{
	const char *dir = *state;
	struct latch_error err = LATCH_ERROR_INIT;
	int fds[2];
	assert_int_equal(pipe(fds), 0);
	assert_int_equal(write(fds[1], "kind: ConfigMap\n", 16), 16);
	close(fds[1]);
	char path[64];
	snprintf(path, sizeof(path), "/proc/self/fd/%d", fds[0]);
	struct latch_input in;
	assert_int_equal(latch_input_open(path, 1 << 20, &in, &err), 0);
	assert_int_equal(in.mapped_len, 0);
	assert_int_equal(in.text.len, 16);
	assert_memory_equal(in.text.ptr, "kind: ConfigMap\n", 16);
	latch_input_release_before(&in, 16); /* nothing mapped: nothing to give back */
	assert_memory_equal(in.text.ptr, "kind: ConfigMap\n", 16);
	latch_input_close(&in);
	close(fds[0]);

	struct latch_file_opts o = { .mode = 0600 };
	assert_int_equal(latch_file_write_atomic(join(dir, "empty"), latch_view_str(""), &o, &err), 0);
	assert_int_equal(latch_input_open(join(dir, "empty"), 1 << 20, &in, &err), 0);
	assert_non_null(in.text.ptr);
	assert_int_equal(in.text.len, 0);
	latch_input_close(&in);
	latch_error_done(&err);
}

#define OLD_SIZE 4096
#define NEW_SIZE 65536

static void write_forever(const char *path)
{
	static char a[OLD_SIZE], b[NEW_SIZE];
	memset(a, 'a', sizeof(a));
	memset(b, 'b', sizeof(b));
	struct latch_file_opts o = { .mode = 0600 };
	for (unsigned i = 0;; i++) {
		struct latch_view v = i % 2 ? latch_view_make(b, sizeof(b)) : latch_view_make(a, sizeof(a));
		if (latch_file_write_atomic(path, v, &o, NULL) < 0)
			_exit(3);
	}
}

static bool is_whole_version(const char *s, size_t len)
{
	char c = len == OLD_SIZE ? 'a' : len == NEW_SIZE ? 'b' : 0;
	if (!c)
		return false;
	for (size_t i = 0; i < len; i++)
		if (s[i] != c)
			return false;
	return true;
}

static bool only_temps_besides(const char *dir, const char *name)
{
	DIR *d = opendir(dir);
	assert_non_null(d);
	bool ok = true;
	struct dirent *de;
	char prefix[256];
	snprintf(prefix, sizeof(prefix), ".%s.latch-tmp-", name);
	while ((de = readdir(d)))
		if (strcmp(de->d_name, ".") && strcmp(de->d_name, "..") && strcmp(de->d_name, name) &&
		    strncmp(de->d_name, prefix, strlen(prefix)) != 0)
			ok = false;
	closedir(d);
	return ok;
}

/* kill -9 at a random point of a write loop, 100 times: the file is always one whole
 * version. A temporary name can only survive a kill that lands between linking the
 * finished temporary inode and the rename (no system call links over an existing name);
 * the next write removes it, so nothing accumulates. */
static void test_file__kill_9_leaves_old_or_new_and_no_temp(void **state)
{
	const char *dir = *state;
	char path[512];
	snprintf(path, sizeof(path), "%s/secret", dir);
	srand((unsigned)time(NULL));
	for (int round = 0; round < 100; round++) {
		pid_t pid = fork();
		assert_true(pid >= 0);
		if (pid == 0)
			write_forever(path);
		struct timespec ts = { 0, (long)(1000000 + rand() % 4000000) };
		nanosleep(&ts, NULL);
		kill(pid, SIGKILL);
		int status;
		assert_int_equal(waitpid(pid, &status, 0), pid);
		assert_true(WIFSIGNALED(status));
		assert_true(only_temps_besides(dir, "secret"));
		if (access(path, F_OK) != 0)
			continue; /* killed before the first rename */
		struct latch_buf b = LATCH_BUF_INIT(1 << 20);
		assert_int_equal(latch_file_read(path, 1 << 20, &b, NULL), 0);
		assert_true(is_whole_version(b.ptr, b.len));
		latch_buf_done(&b);
	}
	struct latch_file_opts o = { .mode = 0600 };
	assert_int_equal(latch_file_write_atomic(path, latch_view_str("after"), &o, NULL), 0);
	assert_int_equal(count_entries(dir), 1);
}

/* A full file system: the write fails with ENOSPC and the old file stays as it was. Runs
 * in a child with its own mount namespace and a 64 KiB tmpfs. */
static void test_file__enospc_keeps_old_file(void **state)
{
	const char *dir = *state;
	pid_t pid = fork();
	assert_true(pid >= 0);
	if (pid == 0) {
		if (unshare(CLONE_NEWNS) < 0 || mount("none", "/", NULL, MS_REC | MS_PRIVATE, NULL) < 0 ||
		    mount("tmpfs", dir, "tmpfs", 0, "size=64k") < 0) {
			fprintf(stderr, "cannot mount a tmpfs: %s (the test needs root)\n", latch_errno_message(errno));
			_exit(2);
		}
		struct latch_file_opts o = { .mode = 0600 };
		if (latch_file_write_atomic(join(dir, "creds"), latch_view_str("old"), &o, NULL) < 0)
			_exit(3);
		static char big[256 * 1024];
		memset(big, 'x', sizeof(big));
		struct latch_error err = LATCH_ERROR_INIT;
		int r = latch_file_write_atomic(join(dir, "creds"), latch_view_make(big, sizeof(big)), &o, &err);
		if (r != LATCH_ENOSPC || !strstr(latch_error_message(&err), "creds"))
			_exit(4);
		struct latch_buf b = LATCH_BUF_INIT(1024);
		if (latch_file_read(join(dir, "creds"), 1024, &b, NULL) < 0 || strcmp(latch_buf_str(&b), "old") != 0)
			_exit(5);
		_exit(count_entries(dir) == 1 ? 0 : 6);
	}
	int status;
	assert_int_equal(waitpid(pid, &status, 0), pid);
	assert_true(WIFEXITED(status));
	assert_int_equal(WEXITSTATUS(status), 0);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_file__write_sets_mode_despite_umask, setup_dir, teardown_dir),
		cmocka_unit_test_setup_teardown(test_file__overwrite_replaces_whole_file, setup_dir, teardown_dir),
		cmocka_unit_test_setup_teardown(test_file__refuses_group_or_world_writable_mode, setup_dir, teardown_dir),
		cmocka_unit_test_setup_teardown(test_file__missing_directory_names_it, setup_dir, teardown_dir),
		cmocka_unit_test_setup_teardown(test_file__no_symlink_leads_outside_the_root, setup_dir, teardown_dir),
		cmocka_unit_test_setup_teardown(test_file__stale_temp_from_killed_writer_is_swept, setup_dir, teardown_dir),
		cmocka_unit_test_setup_teardown(test_file__read_cap, setup_dir, teardown_dir),
		cmocka_unit_test_setup_teardown(test_file__input_given_back_still_reads_the_file, setup_dir, teardown_dir),
		cmocka_unit_test_setup_teardown(test_file__input_from_a_pipe_or_empty_file, setup_dir, teardown_dir),
		cmocka_unit_test_setup_teardown(test_file__kill_9_leaves_old_or_new_and_no_temp, setup_dir, teardown_dir),
		cmocka_unit_test_setup_teardown(test_file__enospc_keeps_old_file, setup_dir, teardown_dir),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
