/* LATCH_CONFIG: what latch-init does in a pod, as JSON. latch-inject writes it from the
 * pod's annotations; latch-init reads it from the env var LATCH_CONFIG or --config FILE.
 * Parsing validates everything, templates included, so a config that latch-inject accepted
 * does not fail in the pod. Unknown fields are errors that name the field.
 *
 *   {
 *     "version": 1,
 *     "vault": {"address": "https://vault:8200", "namespace": "", "ca_file": "", "ca_pem": "",
 *               "server_name": "", "client_cert_file": "", "client_key_file": "",
 *               "tls_skip_verify": false},
 *     "auth": {"method": "kubernetes", "path": "auth/kubernetes", "role": "app",
 *              "token_file": "/var/run/secrets/latch/token"},
 *     "output_dir": "/vault/secrets",
 *     "deadline_seconds": 120,
 *     "revoke_on_shutdown": false,
 *     "token_file_name": "",               (write the Vault token to <output_dir>/<name>)
 *     "state_dir": "",                     (sidecar: keep the session here, see below)
 *     "secrets": [
 *       {"name": "db", "path": "database/creds/app", "format": "map"},
 *       {"name": "cert", "path": "pki/issue/demo", "params": {"common_name": "a.demo.svc"},
 *        "format": "pem"},
 *       {"name": "env", "path": "secret/data/app", "format": "env", "file": "app.env",
 *        "mode": "0640", "uid": 1000, "gid": 1000},
 *       {"name": "url", "format": "template", "template": "{{ with secret ... }}...{{ end }}",
 *        "left_delim": "{{", "right_delim": "}}", "error_on_missing_key": true},
 *       {"name": "conf", "template_file": "/etc/tmpl/app.ctmpl"},    (read in the pod)
 *       {"name": "tls", "path": "pki/issue/web", "format": "pem",
 *        "reload": {"signal": "HUP", "process": "nginx"}}     (signalled when the files change)
 *     ],
 *     "copy_self_to": "/var/run/latch/bin"   (for latch-init exec in the app's container)
 *   }
 *
 * secrets may be empty or absent: latch-init then only logs in (and writes the token file
 * when token_file_name asks for it).
 *
 * format: map (default: "key: value" lines as the Vault Agent Injector writes them), json,
 * env (export KEY='value'), dotenv (KEY='value'), raw (one "key"), pem (<file>.crt,
 * <file>.key, <file>-ca.crt), template. Files are relative to output_dir; mode defaults to
 * 0640 and may never be group- or world-writable.
 *
 * state_dir: an absolute directory only latch-init sees (latch-inject mounts a memory volume
 * there). The sidecar keeps its Vault token and the responses it rendered from in it, so
 * that after a restart in the same pod it renews the same token and leases instead of
 * issuing a second set of credentials.
 *
 * Lifecycle: latch_config_parse() fills a caller-owned struct; latch_config_done() frees it. */
#pragma once

#include <stdbool.h>
#include <sys/types.h>

#include "latch/buf.h"
#include "latch/error.h"
#include "latch/json.h"
#include "latch/template.h"

#define LATCH_CONFIG_VERSION 1

enum latch_format {
	LATCH_FORMAT_MAP,
	LATCH_FORMAT_JSON,
	LATCH_FORMAT_ENV,
	LATCH_FORMAT_DOTENV,
	LATCH_FORMAT_RAW,
	LATCH_FORMAT_PEM,
	LATCH_FORMAT_TEMPLATE,
};

enum latch_auth_method {
	LATCH_AUTH_KUBERNETES,
	LATCH_AUTH_JWT,
	LATCH_AUTH_TOKEN,
};

/* At most what /proc/<pid>/comm holds. */
#define LATCH_PROCESS_NAME_MAX 15

struct latch_reload {
	int signal;            /* 0: no reload */
	char *process;
};

struct latch_secret_config {
	char *name;
	char *path;            /* NULL for templates: their secret calls name the paths */
	json_t *params;        /* write-style issue (pki/issue/...) when set */
	char *file;            /* relative to output_dir */
	enum latch_format format;
	char *key;             /* raw */
	struct latch_template *template; /* NULL until a template_file is loaded */
	char *template_file;   /* absolute, read in the pod */
	char *left_delim, *right_delim;
	bool error_on_missing_key;
	struct latch_reload reload;
	mode_t mode;
	bool set_owner;
	uid_t uid;
	gid_t gid;
};

struct latch_config {
	int version;
	struct {
		char *address, *namespace, *ca_file, *ca_pem, *server_name, *client_cert_file, *client_key_file;
		bool tls_skip_verify;
	} vault;
	struct {
		enum latch_auth_method method;
		char *path;
		char *role;
		char *token_file;
	} auth;
	char *output_dir;
	unsigned deadline_seconds;
	bool revoke_on_shutdown;
	char *token_file_name;
	char *state_dir;
	char *copy_self_to;   /* a directory: latch-init puts a copy of itself there (latch-init exec) */
	struct latch_secret_config *secrets;
	size_t n_secrets;
};

/* source names the input in errors ("LATCH_CONFIG", a file name). */
int latch_config_parse(struct latch_view text, const char *source, struct latch_config *ret, struct latch_error *err);
void latch_config_done(struct latch_config *c);
/* Read and parse every secret's template_file; in the pod, before anything is fetched. */
int latch_config_load_template_files(struct latch_config *c, struct latch_error *err) _warn_unused_;

/* "HUP", "SIGHUP", "hup" -> SIGHUP; only the signals daemons reload or reopen on. */
int latch_signal_parse(const char *name, int *ret);
const char *latch_signal_name(int number);

const char *latch_format_name(enum latch_format f);
int latch_format_parse(const char *name, enum latch_format *ret);
/* The files a secret produces (pem: three), relative to output_dir, into names[0..2] (to
 * free), and how many in ret_n; LATCH_ENOMEM leaves none. */
int latch_secret_files(const struct latch_secret_config *s, char *names[3], size_t *ret_n) _warn_unused_;
