/* Reading the Vault Agent Injector annotations (and their openbao.openbao.org/ and latch.dev/
 * relatives) of one workload into what latch injects: the LATCH_CONFIG and the container
 * settings. */
#pragma once

#include <stdbool.h>

#include "inject.h"
#include "latch/json.h"
#include "latch/macro.h"

/* Where the sidecar keeps its session (LATCH_CONFIG state_dir), on a memory volume mounted
 * into latch-init alone. */
#define INJECT_STATE_DIR "/var/run/latch/state"
/* Where latch-init puts a copy of itself for `latch-init exec` (latch.dev/exec-env). */
#define INJECT_BIN_DIR "/var/run/latch/bin"

/* The tri-state of an optional resource: absent keeps latch's default, "" drops it (as the
 * Vault Agent Injector does), anything else is a validated quantity. */
struct inject_quantity {
	bool set;
	char *value; /* NULL with set: omitted */
};

/* latch.dev/exec-env: the app's command runs through `latch-init exec`. */
struct inject_exec {
	char **env_files;       /* absolute paths in the secrets volume, NULL-terminated */
	char **containers;      /* names, NULL-terminated; NULL: the containers the secrets are mounted in */
	bool restart;
	long grace_seconds;
};

struct inject_settings {
	bool inject;
	bool already_injected;  /* agent-inject-status: injected */
	bool pre_populate_only; /* a plain init container that exits */
	bool pre_populate;      /* sidecar blocks the app until populated (startupProbe) */
	bool init_first;
	bool set_security_context;
	bool run_as_same_user;
	char **containers;      /* agent-inject-containers: names, NULL-terminated; NULL for all */
	char *image;
	struct inject_quantity requests_cpu, requests_mem, limits_cpu, limits_mem;
	struct inject_quantity requests_ephemeral, limits_ephemeral;
	long run_as_user, run_as_group;
	char *secret_volume_path;
	char **extra_mount_paths; /* secret-volume-path-NAME: the volume mounted there too */
	int share_process_namespace; /* -1 unset, else the value for spec.shareProcessNamespace */
	char *copy_volume_mounts;  /* container whose volumeMounts latch-init gets too */
	char *extra_secret;        /* a Secret mounted at /vault/custom in latch-init */
	char *proxy_address;
	char *log_format, *log_level;
	struct inject_exec exec;
	char *tls_secret;
	char *token_volume_name;
	char *token_audience;
	json_t *config;         /* the LATCH_CONFIG object, validated */
	char *config_text;      /* it as the container's LATCH_CONFIG value: compact, keys sorted */
};

struct inject_context {
	const char *name;       /* input name */
	const char *object;     /* "Deployment 'web'" */
	const struct latch_inject_options *opts;
	struct latch_buf *warnings;
	struct latch_error *err;
	const char *file_mode;  /* for secrets without agent-inject-perms */
};

/* LATCH_EINVAL with "NAME:LINE:COLUMN: OBJECT: [annotation 'KEY': ]message" (no line:column
 * when at has none); annotation may be NULL. */
int inject_fail_at(const struct inject_context *ctx, const struct latch_yaml_node *at, const char *annotation,
		   const char *fmt, ...) _printf_(4, 5);

/* annotations: the merged annotation mapping nodes (workload first, pod template second;
 * either may be NULL). */
int inject_read_annotations(const struct inject_context *ctx, const struct latch_yaml_node *workload_annotations,
			    const struct latch_yaml_node *pod_annotations, struct inject_settings *ret);
void inject_settings_done(struct inject_settings *s);
