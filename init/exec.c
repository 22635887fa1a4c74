/* latch-init exec: start the app with secrets as environment variables read from the
 * memory volume, so they are in no manifest, Secret or etcd (vault-k8s#14).
 *
 *   latch-init exec --env-file /vault/secrets/db [--env-file ...] [--on-change restart|ignore]
 *                   [--grace SECONDS] -- PROGRAM [ARGS...]
 *
 * ignore (the default): exec PROGRAM in place; a renewed secret reaches it at its next start.
 * restart: stay as PROGRAM's parent, pass signals on, and when an env file changes, stop it
 * (SIGTERM, SIGKILL after the grace period) and start it again with the new values. */
#include <errno.h>
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "init.h"
#include "latch/clock.h"
#include "latch/dotenv.h"
#include "latch/file.h"
#include "latch/log.h"

#define ENV_FILE_MAX (1u << 20)
#define MAX_ENV_FILES 16
#define POLL_S 1

static const char exec_usage[] =
	"Usage: latch-init exec --env-file FILE [--env-file FILE]... [--on-change restart|ignore]\n"
	"                       [--grace SECONDS] -- PROGRAM [ARGS...]\n";

struct exec_options {
	const char *env_files[MAX_ENV_FILES];
	size_t n_env_files;
	bool restart;
	long grace_s;
	char **argv; /* PROGRAM [ARGS...] */
};

/* What says a file was replaced: latch-init renames a new file into place. */
struct file_stamp {
	dev_t dev;
	ino_t ino;
	struct timespec mtime;
};

static int parse_exec_options(int argc, char **argv, struct exec_options *o)
{
	static const struct option longopts[] = {
		{ "env-file", required_argument, NULL, 'e' }, { "on-change", required_argument, NULL, 'o' },
		{ "grace", required_argument, NULL, 'g' },    { "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	*o = (struct exec_options){ .grace_s = 10 };
	optind = 1;
	int c;
	char *end;
	while ((c = getopt_long(argc, argv, "+h", longopts, NULL)) != -1) {
		switch (c) {
		case 'e':
			if (o->n_env_files == MAX_ENV_FILES) {
				fprintf(stderr, "latch-init exec: at most %d --env-file\n", MAX_ENV_FILES);
				return INIT_EXIT_USAGE;
			}
			o->env_files[o->n_env_files++] = optarg;
			break;
		case 'o':
			if (strcmp(optarg, "restart") != 0 && strcmp(optarg, "ignore") != 0) {
				fprintf(stderr, "latch-init exec: --on-change '%s' is not restart or ignore\n", optarg);
				return INIT_EXIT_USAGE;
			}
			o->restart = strcmp(optarg, "restart") == 0;
			break;
		case 'g':
			o->grace_s = strtol(optarg, &end, 10);
			if (!*optarg || *end || o->grace_s < 0 || o->grace_s > 3600) {
				fprintf(stderr, "latch-init exec: --grace '%s' is not a number of seconds (0-3600)\n", optarg);
				return INIT_EXIT_USAGE;
			}
			break;
		case 'h': fputs(exec_usage, stdout); exit(0);
		default: fputs(exec_usage, stderr); return INIT_EXIT_USAGE;
		}
	}
	if (optind >= argc) {
		fprintf(stderr, "latch-init exec: no program to run\n%s", exec_usage);
		return INIT_EXIT_USAGE;
	}
	o->argv = argv + optind;
	return 0;
}

/* The process environment, then every env file in order; a file's KEY wins. */
static int build_environment(const struct exec_options *o, struct latch_env_list *ret,
			     struct latch_error *err)
{
	extern char **environ;
	int r = 0;
	for (char **e = environ; r == 0 && e && *e; e++) {
		const char *eq = strchr(*e, '=');
		if (eq)
			r = latch_env_list_set(ret, *e, (size_t)(eq - *e), latch_view_str(eq + 1));
	}
	if (r < 0)
		return latch_error_set(err, r, "copying the environment failed");
	for (size_t i = 0; i < o->n_env_files; i++) {
		struct latch_buf text = LATCH_SECRET_BUF_INIT(ENV_FILE_MAX);
		r = latch_file_read(o->env_files[i], ENV_FILE_MAX, &text, err);
		if (r == 0)
			r = latch_dotenv_parse(latch_buf_view(&text), o->env_files[i], ret, err);
		latch_buf_done(&text);
		if (r < 0)
			return r;
	}
	return 0;
}

static int stamp_files(const struct exec_options *o, struct file_stamp *stamps)
{
	for (size_t i = 0; i < o->n_env_files; i++) {
		struct stat st;
		if (stat(o->env_files[i], &st) < 0)
			return -errno;
		stamps[i] = (struct file_stamp){ st.st_dev, st.st_ino, st.st_mtim };
	}
	return 0;
}

static bool files_changed(const struct exec_options *o, const struct file_stamp *before)
{
	struct file_stamp now[MAX_ENV_FILES];
	if (stamp_files(o, now) < 0)
		return false; /* being replaced: look again at the next poll */
	for (size_t i = 0; i < o->n_env_files; i++)
		/* NOLINTNEXTLINE(clang-analyzer-core.UndefinedBinaryOperatorResult): stamp_files() filled both */
		if (now[i].dev != before[i].dev || now[i].ino != before[i].ino ||
		    now[i].mtime.tv_sec != before[i].mtime.tv_sec || now[i].mtime.tv_nsec != before[i].mtime.tv_nsec)
			return true;
	return false;
}

/* The signals the supervisor takes: those it passes on to the program, and SIGCHLD. */
static void supervised_signals(sigset_t *set)
{
	sigemptyset(set);
	static const int signals[] = { SIGTERM, SIGINT, SIGHUP, SIGQUIT, SIGUSR1, SIGUSR2, SIGWINCH, SIGCHLD };
	for (size_t i = 0; i < ELEMENTSOF(signals); i++)
		sigaddset(set, signals[i]);
}

static _Noreturn void exec_program(char **argv, char **envp, const sigset_t *original_mask)
{
	sigprocmask(SIG_SETMASK, original_mask, NULL);
	execvpe(argv[0], argv, envp);
	int e = errno;
	LATCH_LOG(LATCH_LOG_ERROR, "cannot start the program", { "program", argv[0] },
		  { "error", latch_errno_message(e) });
	_exit(e == ENOENT ? 127 : 126);
}

static int exit_code_of(int status)
{
	return WIFEXITED(status) ? WEXITSTATUS(status) : WIFSIGNALED(status) ? 128 + WTERMSIG(status) : 1;
}

/* Stop the child: SIGTERM, then SIGKILL once the grace period is over. */
static void stop_child(pid_t child, long grace_s)
{
	kill(child, SIGTERM);
	double until = latch_monotonic_s() + (double)grace_s;
	int status;
	while (waitpid(child, &status, WNOHANG) == 0) {
		if (latch_monotonic_s() >= until) {
			kill(child, SIGKILL);
			waitpid(child, &status, 0);
			return;
		}
		struct timespec ts = { 0, 50 * 1000 * 1000 };
		nanosleep(&ts, NULL);
	}
}

static int start_child(const struct exec_options *o, struct file_stamp *stamps,
		       const sigset_t *mask, pid_t *ret)
{
	struct latch_error err = LATCH_ERROR_INIT;
	struct latch_env_list env = { 0 };
	int r = stamp_files(o, stamps) < 0 ? latch_error_set(&err, LATCH_EIO, "an env file is missing") : 0;
	if (r == 0)
		r = build_environment(o, &env, &err);
	if (r < 0) {
		LATCH_LOG(LATCH_LOG_ERROR, "reading the env files failed", { "error", latch_error_message(&err) });
		latch_error_done(&err);
		latch_env_list_done(&env);
		return INIT_EXIT_CONFIG;
	}
	pid_t pid = fork();
	if (pid == 0)
		exec_program(o->argv, env.items, mask);
	latch_env_list_done(&env); /* the parent keeps no copy of a value */
	if (pid < 0) {
		LATCH_LOG(LATCH_LOG_ERROR, "fork failed", { "error", latch_errno_message(errno) });
		return INIT_EXIT_SOFTWARE;
	}
	*ret = pid;
	return 0;
}

static int supervise(const struct exec_options *o, const sigset_t *original_mask)
{
	sigset_t set;
	supervised_signals(&set);
	sigprocmask(SIG_BLOCK, &set, NULL);
	struct file_stamp stamps[MAX_ENV_FILES];
	pid_t child;
	int r = start_child(o, stamps, original_mask, &child);
	if (r != 0)
		return r;
	for (;;) {
		struct timespec poll = { POLL_S, 0 };
		int sig = sigtimedwait(&set, NULL, &poll);
		int status;
		if (waitpid(child, &status, WNOHANG) == child)
			return exit_code_of(status);
		if (sig > 0 && sig != SIGCHLD) {
			kill(child, sig);
			continue;
		}
		if (sig < 0 && files_changed(o, stamps)) {
			LATCH_LOG(LATCH_LOG_INFO, "an env file changed; restarting the program", { "program", o->argv[0] });
			stop_child(child, o->grace_s);
			if ((r = start_child(o, stamps, original_mask, &child)) != 0)
				return r;
		}
	}
}

int init_exec_main(int argc, char **argv)
{
	struct exec_options o;
	int r = parse_exec_options(argc, argv, &o);
	if (r != 0)
		return r;
	sigset_t original_mask;
	sigprocmask(SIG_SETMASK, NULL, &original_mask);
	if (o.restart) {
		/* The values pass through this process: keep it out of core dumps and ptrace.
		 * Not inherited by the program, which starts dumpable as usual. */
		prctl(PR_SET_DUMPABLE, 0, 0, 0, 0);
		return supervise(&o, &original_mask);
	}
	struct latch_error err = LATCH_ERROR_INIT;
	struct latch_env_list env = { 0 };
	if (build_environment(&o, &env, &err) < 0) {
		LATCH_LOG(LATCH_LOG_ERROR, "reading the env files failed", { "error", latch_error_message(&err) });
		latch_error_done(&err);
		latch_env_list_done(&env);
		return INIT_EXIT_CONFIG;
	}
	exec_program(o.argv, env.items, &original_mask);
}
