/* latch-init: the init-container / native-sidecar binary. */
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "init.h"
#include "latch/file.h"
#include "latch/log.h"

#define CONFIG_FILE_MAX (1u << 20)
#define SELF_MAX (64u << 20)

static const char usage[] =
	"Usage: latch-init MODE [OPTIONS]\n"
	"\n"
	"Modes:\n"
	"  populate   log in to Vault, fetch every secret, write every file, exit (init container)\n"
	"  sidecar    populate, then keep the token and leases renewed and the files current\n"
	"             until SIGTERM (native sidecar, restartPolicy: Always)\n"
	"  probe      exit 0 once every file is in place (the sidecar's startupProbe)\n"
	"  version    print the version\n"
	"\n"
	"Options:\n"
	"  --config FILE         read the configuration from FILE instead of $LATCH_CONFIG\n"
	"  --log-format FORMAT   text (default) or json; also $LATCH_LOG_FORMAT\n"
	"  --log-level LEVEL     debug, info (default), warn, error\n"
	"  -h, --help            this text\n"
	"\n"
	"Exit codes: 0 done, 1 probe: not ready, 64 usage, 65 bad configuration, 69 Vault\n"
	"unavailable or deadline passed, 70 internal error, 73 a file could not be written,\n"
	"77 login refused or permission denied.\n";

struct options {
	const char *mode;
	const char *config_file;
	enum latch_log_format log_format;
	enum latch_log_level log_level;
};

int init_exit_for(int code)
{
	switch (code) {
	case LATCH_EINVAL:
	case LATCH_EPARSE:
	case LATCH_EUNSUPPORTED: return INIT_EXIT_CONFIG;
	case LATCH_EFORBIDDEN:
	case LATCH_ENOTFOUND: return INIT_EXIT_AUTH;
	case LATCH_ECONNECT:
	case LATCH_ETIMEOUT:
	case LATCH_ETLS:
	case LATCH_EHTTP: return INIT_EXIT_UNAVAILABLE;
	case LATCH_EIO:
	case LATCH_ENOSPC: return INIT_EXIT_WRITE;
	default: return INIT_EXIT_SOFTWARE;
	}
}

static int fail(const char *what, const struct latch_error *err, int exit_code)
{
	LATCH_LOG(LATCH_LOG_ERROR, what, { "error", latch_error_message(err) });
	return exit_code;
}

static int parse_options(int argc, char **argv, struct options *o)
{
	static const struct option longopts[] = {
		{ "config", required_argument, NULL, 'c' },     { "log-format", required_argument, NULL, 'f' },
		{ "log-level", required_argument, NULL, 'l' }, { "help", no_argument, NULL, 'h' },
		{ "version", no_argument, NULL, 'V' },          { NULL, 0, NULL, 0 },
	};
	const char *env_format = getenv("LATCH_LOG_FORMAT");
	if (env_format && latch_log_format_parse(env_format, &o->log_format) < 0) {
		fprintf(stderr, "latch-init: LATCH_LOG_FORMAT='%s' is not text or json\n", env_format);
		return INIT_EXIT_USAGE;
	}
	int c;
	while ((c = getopt_long(argc, argv, "h", longopts, NULL)) != -1) {
		switch (c) {
		case 'c': o->config_file = optarg; break;
		case 'f':
			if (latch_log_format_parse(optarg, &o->log_format) < 0) {
				fprintf(stderr, "latch-init: --log-format '%s' is not text or json\n", optarg);
				return INIT_EXIT_USAGE;
			}
			break;
		case 'l':
			if (latch_log_level_parse(optarg, &o->log_level) < 0) {
				fprintf(stderr, "latch-init: --log-level '%s' is not debug, info, warn or error\n", optarg);
				return INIT_EXIT_USAGE;
			}
			break;
		case 'h': fputs(usage, stdout); exit(0);
		case 'V': o->mode = "version"; return 0;
		default: fputs(usage, stderr); return INIT_EXIT_USAGE;
		}
	}
	if (optind < argc)
		o->mode = argv[optind++];
	if (!o->mode || optind < argc) {
		fputs(usage, stderr);
		return INIT_EXIT_USAGE;
	}
	return 0;
}

static int load_config(const struct options *o, struct latch_config *ret, struct latch_error *err)
{
	if (o->config_file) {
		struct latch_buf text = LATCH_BUF_INIT(CONFIG_FILE_MAX);
		int r = latch_file_read(o->config_file, CONFIG_FILE_MAX, &text, err);
		if (r == 0)
			r = latch_config_parse(latch_buf_view(&text), o->config_file, ret, err);
		latch_buf_done(&text);
		return r;
	}
	const char *env = getenv("LATCH_CONFIG");
	if (!env || !*env)
		return latch_error_set(err, LATCH_EINVAL, "no configuration: set LATCH_CONFIG or pass --config FILE");
	return latch_config_parse(latch_view_str(env), "LATCH_CONFIG", ret, err);
}

/* For latch-init exec in the app's containers: a copy of this static binary in the
 * memory volume given by copy_self_to. */
static int copy_self(const struct latch_config *c, struct latch_error *err)
{
	if (!c->copy_self_to)
		return 0;
	struct latch_buf self = LATCH_BUF_INIT(SELF_MAX);
	struct latch_buf target = LATCH_BUF_INIT(4096);
	struct latch_file_opts mode = { .mode = 0555 };
	int r = latch_file_read("/proc/self/exe", SELF_MAX, &self, err);
	if (r == 0)
		r = latch_file_mkdir_p(c->copy_self_to, 0755, err);
	if (r == 0 && latch_buf_printf(&target, "%s/latch-init", c->copy_self_to) < 0)
		r = latch_error_set(err, LATCH_ENOMEM, "out of memory");
	if (r == 0)
		r = latch_file_write_atomic(latch_buf_str(&target), latch_buf_view(&self), &mode, err);
	latch_buf_done(&self);
	latch_buf_done(&target);
	return r;
}

static int run_probe(const struct latch_config *c)
{
	return init_files_ready(c) ? INIT_EXIT_OK : INIT_EXIT_NOT_READY;
}

/* A sidecar restarted in the same pod picks up its saved session; otherwise, and if that
 * session no longer works, it populates like the first time. */
static int resume_or_populate(struct init_state *s, bool sidecar, struct latch_error *err)
{
	if (sidecar) {
		struct latch_error why = LATCH_ERROR_INIT;
		int r = init_session_resume(s, &why);
		if (r < 0)
			LATCH_LOG(LATCH_LOG_WARN, "the saved session cannot be used; populating afresh",
				  { "reason", latch_error_message(&why) });
		latch_error_done(&why);
		if (r == 0)
			return 0;
	}
	int r = init_populate(s, err);
	if (r == 0 && sidecar)
		r = init_session_save(s, err);
	return r;
}

static int run_populate(struct latch_config *c, bool sidecar)
{
	struct latch_error err = LATCH_ERROR_INIT;
	struct init_state s = { 0 };
	int exit_code = INIT_EXIT_OK;
	int r = latch_config_load_template_files(c, &err);
	if (r == 0)
		r = copy_self(c, &err);
	if (r == 0)
		r = init_state_setup(&s, c, &err);
	if (r == 0)
		r = resume_or_populate(&s, sidecar, &err);
	if (r < 0) {
		exit_code = fail("populating the secrets failed", &err, init_exit_for(r));
	} else {
		LATCH_LOG(LATCH_LOG_INFO, "secrets written", { "dir", c->output_dir });
		if (sidecar && init_sidecar_loop(&s, &err) < 0)
			exit_code = fail("revoking the token at shutdown failed", &err, INIT_EXIT_UNAVAILABLE);
	}
	init_state_done(&s);
	latch_error_done(&err);
	return exit_code;
}

int main(int argc, char **argv)
{
	/* Before anything process-wide: the program it starts inherits the signal mask and limits. */
	if (argc > 1 && strcmp(argv[1], "exec") == 0) {
		latch_log_setup(2, LATCH_LOG_TEXT, LATCH_LOG_INFO);
		return init_exec_main(argc - 1, argv + 1);
	}
	latch_secret_no_core_dumps();
	/* Stop signals are taken synchronously by the sidecar loop. */
	sigset_t stop;
	sigemptyset(&stop);
	sigaddset(&stop, SIGTERM);
	sigaddset(&stop, SIGINT);
	sigprocmask(SIG_BLOCK, &stop, NULL);

	struct options o = { .log_format = LATCH_LOG_TEXT, .log_level = LATCH_LOG_INFO };
	int r = parse_options(argc, argv, &o);
	if (r != 0)
		return r;
	latch_log_setup(2, o.log_format, o.log_level);
	if (strcmp(o.mode, "version") == 0) {
		printf("latch-init %s (config version %d)\n", LATCH_VERSION, LATCH_CONFIG_VERSION);
		return 0;
	}
	bool populate = strcmp(o.mode, "populate") == 0, sidecar = strcmp(o.mode, "sidecar") == 0;
	bool probe = strcmp(o.mode, "probe") == 0;
	if (!populate && !sidecar && !probe) {
		fprintf(stderr, "latch-init: unknown mode '%s'\n\n%s", o.mode, usage);
		return INIT_EXIT_USAGE;
	}
	struct latch_config config;
	struct latch_error err = LATCH_ERROR_INIT;
	if (load_config(&o, &config, &err) < 0) {
		r = fail("invalid configuration", &err, INIT_EXIT_CONFIG);
		latch_error_done(&err);
		return r;
	}
	r = probe ? run_probe(&config) : run_populate(&config, sidecar);
	latch_config_done(&config);
	return r;
}
