/* The git adapter (the only file that speaks libgit2): fetch a remote into a bare cache
 * repository, resolve a branch, tag or commit, and read manifest files straight from the
 * commit's tree, without a checkout.
 *
 * Lifecycle: latch_git_open() -> latch_git_fetch() -> latch_git_resolve() ->
 * latch_git_read_tree() -> latch_git_files_done() / latch_git_close(). */
#pragma once

#include <stdbool.h>
#include <stdint.h>
#include <stddef.h>

#include "latch/buf.h"
#include "latch/error.h"

struct latch_git;

struct latch_git_ref {
	const char *branch; /* exactly one of the three */
	const char *tag;
	const char *commit;
};

struct latch_git_file {
	char *path;  /* relative to the repository root */
	char *data;
	size_t len;
};

struct latch_git_files {
	struct latch_git_file *items;
	size_t n;
};

/* cache_dir: where the bare repository lives (created when missing). */
int latch_git_open(const char *cache_dir, const char *url, struct latch_git **ret, struct latch_error *err);
void latch_git_close(struct latch_git *g);

/* How to reach the remote: basic auth for https, a key for ssh (whose host key must be in
 * known_hosts_file: an ssh remote without one is refused), a CA bundle for https. All
 * optional; password is a secret the caller zeroes. */
struct latch_git_auth {
	const char *username;
	const char *password;
	const char *ssh_key_file;
	const char *known_hosts_file;
	const char *ca_file;
};

/* Fetch every branch and tag; a force-pushed branch is followed. auth may be NULL. */
int latch_git_fetch(struct latch_git *g, const struct latch_git_auth *auth, struct latch_error *err);
/* The commit a ref names, as 40 hex characters. */
int latch_git_resolve(struct latch_git *g, const struct latch_git_ref *ref, char ret_sha[41], struct latch_error *err);
/* The commit's signature (the gpgsig header: an armored OpenPGP or SSH signature), the data
 * it signs and the commit time; LATCH_ENOTFOUND when the commit is not signed. */
int latch_git_commit_signature(struct latch_git *g, const char *sha, struct latch_buf *ret_signature, struct latch_buf *ret_signed,
			       int64_t *ret_time, struct latch_error *err);
/* The same for an annotated tag (refs/tags/tag): the signature appended to its message, the
 * tag object without it, and the tagger's time. LATCH_ENOTFOUND for a lightweight or
 * unsigned tag. */
int latch_git_tag_signature(struct latch_git *g, const char *tag, struct latch_buf *ret_signature,
			    struct latch_buf *ret_signed,
			    int64_t *ret_time, struct latch_error *err);
struct latch_git_commits {
	char (*shas)[41];
	size_t n;
};
/* The commits reachable from tip and not from since (tip included), newest first; at most
 * max (LATCH_ELIMIT past it). LATCH_ENOTFOUND when since is not in the repository. */
int latch_git_commits_since(struct latch_git *g, const char *since, const char *tip, size_t max,
			    struct latch_git_commits *ret,
			    struct latch_error *err);
void latch_git_commits_done(struct latch_git_commits *c);
/* Every .yaml, .yml and .json file under dir ("" for the root) of the commit, sorted by path,
 * recursively; each file at most max_file bytes. */
int latch_git_read_tree(struct latch_git *g, const char *sha, const char *dir, size_t max_file,
			struct latch_git_files *ret, struct latch_error *err);
void latch_git_files_done(struct latch_git_files *files);
/* Write the commit's files into dir (which must exist), for tools that need a checkout. */
int latch_git_checkout(struct latch_git *g, const char *sha, const char *dir, struct latch_error *err);
/* Release libgit2's global state at program exit: no latch_git_open() may follow. */
void latch_git_shutdown(void);
