/* latch-init internals: one run's state and the steps the modes share.
 *
 * A run logs in, fetches each distinct Vault request once (a DB role read by three secrets
 * is one set of credentials), renders every secret's files in memory, then writes them
 * atomically. The sidecar keeps the state and renews or re-fetches what expires. */
#pragma once

#include <stdbool.h>

#include "latch/config.h"
#include "latch/vault.h"

/* Exit codes, from sysexits.h where one fits. */
enum init_exit {
	INIT_EXIT_OK = 0,
	INIT_EXIT_NOT_READY = 1,  /* probe: files not in place yet */
	INIT_EXIT_USAGE = 64,
	INIT_EXIT_CONFIG = 65,    /* LATCH_CONFIG or --config is invalid */
	INIT_EXIT_UNAVAILABLE = 69, /* Vault unreachable, sealed, or the deadline passed */
	INIT_EXIT_SOFTWARE = 70,
	INIT_EXIT_WRITE = 73,     /* a file could not be written */
	INIT_EXIT_AUTH = 77,      /* login refused, or no permission for a path */
};

/* One distinct Vault call (path and parameters) and what it returned. */
struct init_request {
	const char *path;
	const json_t *params;
	json_t *envelope;     /* the last response, NULL before the first fetch */
	char *lease_id;       /* "" when the secret has no lease (KV) */
	long lease_duration;  /* seconds */
	bool renewable;
	long original_duration; /* what the first fetch granted: renewals ask for this again */
	double due;           /* monotonic seconds: next renewal or re-fetch */
	double expires;       /* monotonic seconds: when the lease runs out; 0 without a lease */
};

struct init_state {
	struct latch_config *config;
	struct latch_vault_options vault_options; /* to open more clients for parallel fetches */
	struct latch_vault *vault;
	struct init_request *requests;
	size_t n_requests;
	long token_ttl;
	bool token_renewable;
	double token_due;
	double token_expires; /* monotonic seconds; 0 when the token does not expire */
	double deadline;      /* monotonic seconds for the current phase */
};


int init_state_setup(struct init_state *s, struct latch_config *config, struct latch_error *err);
/* The distinct requests of s->config's secrets into s->requests (no fetch); LATCH_ENOMEM. */
int init_collect_requests(struct init_state *s);
void init_state_done(struct init_state *s);
/* Hold a Vault response as r's envelope (the reference is taken, also on failure) with its
 * lease id, duration and renewable flag; LATCH_ENOMEM. The caller sets the schedule. */
int init_request_take(struct init_request *r, json_t *envelope);

/* The token's lease as Vault just granted it: renewal due at 2/3, and when it runs out. */
void init_token_granted(struct init_state *s, long lease_duration);
/* Log in with the configured method; the token then lives in s->vault. */
int init_login(struct init_state *s, struct latch_error *err);
/* Fetch one request again (read or write-style issue). */
int init_fetch(struct init_state *s, struct init_request *r, struct latch_error *err);
/* Fetch every request, several at a time. */
int init_fetch_all(struct init_state *s, struct latch_error *err);
/* The sidecar's session in config->state_dir (nothing without one): saved after every
 * change, resumed after a restart in the same pod. resume returns 0 when the saved token and
 * leases still work and the files are in place, 1 when there is no saved session, and a
 * negative code (err says why) when the saved one cannot be used: populate afresh then. */
int init_session_save(const struct init_state *s, struct latch_error *err);
int init_session_resume(struct init_state *s, struct latch_error *err);
/* Render every secret and write the files that changed (all of them the first time). */
int init_write_all(struct init_state *s, bool first, struct latch_error *err);
/* Write the Vault token to token_file_name, when configured. */
int init_write_token_file(const struct init_state *s, struct latch_error *err);
/* populate: login, fetch all, write all. */
int init_populate(struct init_state *s, struct latch_error *err);

/* Whether every configured file and the ready marker are in place. */
bool init_files_ready(const struct latch_config *c);

/* The sidecar loop after populate: returns on SIGTERM/SIGINT. */
int init_sidecar_loop(struct init_state *s, struct latch_error *err);

/* Render one secret into up to three files (pem), contents in secret buffers. */
struct init_output {
	char *relpath;
	struct latch_buf content;
};
int init_render_secret(const struct init_state *s, const struct latch_secret_config *sc, struct init_output out[3],
		       size_t *ret_n, struct latch_error *err);
void init_outputs_done(struct init_output *out, size_t n);

/* latch-init exec: argv[0] is "exec". Returns an exit code, or does not return. */
int init_exec_main(int argc, char **argv);

/* After files changed (changed[i] for secret i): the signals their reloads ask for, each
 * signal and process once, to those processes of the pod. */
void init_reload_changed(const struct latch_config *c, const bool *changed);

/* Map an error code to the process exit code. */
int init_exit_for(int code);
