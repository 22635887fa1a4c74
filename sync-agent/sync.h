/* latch-sync internals: the SyncConfig, and one pass over a source (fetch, render, inject,
 * validate by server dry run, apply, prune, record). */
#pragma once

#include <stdbool.h>
#include <stdio.h>

#include "inject.h"
#include "latch/error.h"
#include "latch/k8s.h"

struct sync_round;

/* verify.mode, as Flux spells it: HEAD (the commit), Tag (the annotated tag), TagAndHEAD. */
enum {
	SYNC_VERIFY_HEAD = 1,
	SYNC_VERIFY_TAG = 2,
};
#define SYNC_VERIFY_MAX_COMMITS 1000

struct sync_source {
	char *name;
	char *url;
	char *branch, *tag, *commit;
	char *path;
	bool prune;
	bool allow_empty;
	char *target_namespace;
	long interval_s;
	long timeout_s;
	bool health_check;
	bool kustomize;        /* render: kustomize (else plain) */
	char *kustomize_path;  /* the kustomize binary, "kustomize" from PATH by default */
	char *username_file, *password_file; /* https basic auth, read at every pass */
	char *ssh_key_file, *known_hosts_file;
	char *ca_file;         /* CA bundle for an https remote */
	char *verify_keyring_file;  /* OpenPGP public keys... */
	char *verify_allowed_signers_file; /* ...and SSH ones: a revision must be signed by one to apply */
	unsigned verify_mode;       /* SYNC_VERIFY_* bits: what must be signed */
	bool verify_every_commit;   /* every commit since the applied one, not only the tip */
	char *webhook_secret_file; /* POST /hook/<name> signed with this secret starts a pass at once */
	char *inject_image;
	char *inject_vault_address;
	char *inject_token_audience;
	bool inject_pin_vault_address;
	bool inject_allow_http_vault;
};

struct sync_config {
	char *name;          /* metadata.name: names the inventory */
	char *namespace;     /* spec.namespace: where inventories live */
	char *cache_dir;
	struct sync_source *sources;
	size_t n_sources;
	struct sync_round *round; /* what a round of passes shares (round.h); NULL: nothing */
};

int sync_config_load(const char *path, struct sync_config *ret, struct latch_error *err);
/* The same from text; path names it in errors. */
/* A source's folder in the repository, in place: "./clusters//a/" becomes "clusters/a", "."
 * and "" the root. false, leaving it as it was, when a ".." component climbs out. */
bool sync_repo_path_normalize(char *path);
int sync_config_parse(struct latch_view text, const char *path, struct sync_config *ret,
		      struct latch_error *err);
void sync_config_done(struct sync_config *c);

struct sync_result {
	char revision[41];
	size_t applied;
	size_t pruned;
	size_t changed;  /* objects the apply changed: new, updated, or put back after drift */
	size_t drifted;  /* of those, changed although the revision was the same */
	size_t would_change; /* diff: objects the apply and prune would change */
	/* For the status page, after a pass that applied: the inventory's entries, and what the
	 * pass did to each object it touched (entry key -> "Created", "Updated", "Drift corrected"
	 * or "Pruned"; an entry not named there is in sync). Names
	 * only, never content. Owned: sync_result_done() frees them. */
	json_t *entries, *touched;
};

void sync_result_done(struct sync_result *res);
/* Note what the pass did to one object (key: sync_object_key); out of memory, or no key,
 * only loses the note. */
void sync_result_note(struct sync_result *res, const char *key, const char *action);

/* What a pass saw on its way, filled whether it applied or not (for metrics). */
struct sync_observed {
	bool fetched;       /* a git fetch was made... */
	bool fetch_failed;  /* ...and failed */
	double fetch_s;     /* how long it took */
};

/* One pass over one source. diff non-NULL: a dry run, writing nothing in the cluster; what
 * the pass would change is printed to diff. */
int sync_source_pass(struct latch_k8s *k, const struct sync_config *c, const struct sync_source *s, FILE *diff,
		     struct sync_result *ret, struct sync_observed *observed, struct latch_error *err);

struct sync_status {
	char *applied_revision, *attempted_revision, *result, *durations;
	size_t objects;
	bool ok; /* the last attempt applied, healthy */
};

/* What the last pass recorded in the inventory; LATCH_ENOTFOUND if no pass has run. */
int sync_source_status(struct latch_k8s *k, const struct sync_config *c, const struct sync_source *s, struct sync_status *ret,
		       struct latch_error *err);
void sync_status_done(struct sync_status *st);
