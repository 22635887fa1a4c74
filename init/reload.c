/* Reload on rotation without a shell: after the sidecar replaced a secret's files, send the
 * signal the secret's reload names to that process of the pod (nginx: HUP). The pod shares
 * one process namespace (shareProcessNamespace), so /proc lists the app's processes; the
 * kernel lets latch-init signal them when it runs as the same user.
 *
 * Only the topmost process of that name is signalled, the one whose parent has another
 * name: nginx's master, not its workers, as `nginx -s reload` does. */
#include <dirent.h>
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "init.h"
#include "latch/file.h"
#include "latch/log.h"

#define STAT_MAX 4096

struct proc_info {
	char comm[LATCH_PROCESS_NAME_MAX + 1];
	pid_t ppid;
};

/* /proc/<pid>/stat is "pid (comm) state ppid ...": comm may hold blanks and parentheses,
 * so it ends at the last ')'. */
static bool read_proc(pid_t pid, struct proc_info *ret)
{
	char path[64];
	snprintf(path, sizeof(path), "/proc/%d/stat", (int)pid);
	struct latch_buf text = LATCH_BUF_INIT(STAT_MAX);
	struct latch_error err = LATCH_ERROR_INIT;
	bool ok = latch_file_read(path, STAT_MAX, &text, &err) == 0;
	const char *s = latch_buf_str(&text);
	const char *open = strchr(s, '('), *close = strrchr(s, ')');
	int ppid = 0;
	/* NOLINTNEXTLINE(cert-err34-c): the kernel writes /proc/PID/stat */
	ok = ok && open && close && close > open && sscanf(close + 1, " %*c %d", &ppid) == 1;
	if (ok) {
		size_t n = (size_t)(close - open - 1);
		if (n > LATCH_PROCESS_NAME_MAX)
			n = LATCH_PROCESS_NAME_MAX;
		memcpy(ret->comm, open + 1, n);
		ret->comm[n] = '\0';
		ret->ppid = (pid_t)ppid;
	}
	latch_buf_done(&text);
	latch_error_done(&err);
	return ok;
}

static bool is_named(pid_t pid, const char *name)
{
	struct proc_info p;
	return pid > 0 && read_proc(pid, &p) && strcmp(p.comm, name) == 0;
}

static pid_t pid_of_entry(const struct dirent *d)
{
	char *end;
	long v = strtol(d->d_name, &end, 10);
	return *d->d_name && !*end && v > 0 ? (pid_t)v : 0;
}

static void log_reload(enum latch_log_level level, const char *msg, const struct latch_secret_config *sc,
		       const char *detail)
{
	LATCH_LOG(level, msg, { "secret", sc->name }, { "process", sc->reload.process },
		  { "signal", latch_signal_name(sc->reload.signal) }, { "detail", detail });
}

static void reload(const struct latch_secret_config *sc)
{
	if (!sc->reload.signal)
		return;
	DIR *proc = opendir("/proc");
	if (!proc) {
		log_reload(LATCH_LOG_WARN, "cannot list processes; no reload", sc, "/proc");
		return;
	}
	unsigned sent = 0, refused = 0;
	pid_t self = getpid();
	for (struct dirent *d; (d = readdir(proc));) {
		pid_t pid = pid_of_entry(d);
		struct proc_info p;
		if (pid == 0 || pid == self || !read_proc(pid, &p) || strcmp(p.comm, sc->reload.process) != 0 ||
		    is_named(p.ppid, sc->reload.process))
			continue;
		if (kill(pid, sc->reload.signal) == 0)
			sent++;
		else
			refused++;
	}
	closedir(proc);
	if (sent > 0)
		log_reload(LATCH_LOG_INFO, "signalled the app to reload", sc,
			   sent == 1 ? "1 process" : "several processes");
	else if (refused > 0)
		log_reload(LATCH_LOG_WARN, "the app could not be signalled", sc,
			   "not permitted: latch-init must run as the app's user (agent-run-as-same-user)");
	else
		log_reload(LATCH_LOG_WARN, "no such process to reload; is the process namespace shared "
			   "(agent-share-process-namespace)?", sc, "not found");
}

void init_reload_changed(const struct latch_config *c, const bool *changed)
{
	for (size_t i = 0; i < c->n_secrets; i++) {
		const struct latch_reload *rl = &c->secrets[i].reload;
		if (!changed[i] || !rl->signal)
			continue;
		bool sent_already = false;
		for (size_t j = 0; j < i && !sent_already; j++)
			sent_already = changed[j] && c->secrets[j].reload.signal == rl->signal &&
				       strcmp(c->secrets[j].reload.process, rl->process) == 0;
		if (!sent_already)
			reload(&c->secrets[i]);
	}
}
