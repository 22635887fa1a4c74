#include "render.h"

#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <signal.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "fetches.h"
#include "inject.h"
#include "latch/clock.h"
#include "latch/file.h"
#include "latch/git.h"
#include "latch/log.h"
#include "latch/openpgp.h"
#include "latch/sshsig.h"
#include "latch/yaml.h"
#include "objects.h"

#define FILE_MAX (8u << 20)

/* The owner labels on every object: what prune checks before it deletes anything. */
static void label(json_t *obj, const struct sync_config *c, const struct sync_source *s)
{
	json_t *meta = json_object_get(obj, "metadata");
	json_t *labels = json_object_get(meta, "labels");
	if (!json_is_object(labels)) {
		labels = json_object();
		json_object_set_new(meta, "labels", labels);
	}
	json_object_set_new(labels, LABEL_CONFIG, json_string(c->name));
	json_object_set_new(labels, LABEL_SOURCE, json_string(s->name));
}

/* One manifest text (a file, or kustomize's output): every document injected, labelled and
 * added to objects. name says where it came from in errors. */
static int render_text(const struct sync_config *c, const struct sync_source *s, const char *name, const char *data, size_t len,
		       json_t *objects, struct latch_buf *warnings, struct latch_error *err)
{
	struct latch_inject_memo memo = { 0 };
	struct latch_inject_options io = { .image = s->inject_image, .vault_address = s->inject_vault_address,
					   .pin_vault_address = s->inject_pin_vault_address,
					   .allow_http_vault = s->inject_allow_http_vault,
					   .token_audience = s->inject_token_audience, .memo = &memo };
	struct latch_yaml_limits lim = LATCH_YAML_LIMITS_DEFAULT;
	struct latch_yaml_reader *reader = NULL;
	int r = latch_yaml_reader_new(latch_view_make(data, len), name, &lim, &reader, err);
	struct latch_yaml_doc doc;
	while (r == 0 && (r = latch_yaml_reader_next(reader, &doc, err)) == 0) {
		r = latch_inject_object(doc.root, name, &io, warnings, err);
		json_t *obj = r >= 0 ? latch_yaml_to_json(doc.root) : NULL;
		if (r >= 0 && (!json_is_object(obj) || !latch_json_get_str(obj, "kind") || !sync_object_meta(obj, "name")))
			r = latch_error_set(err, LATCH_EINVAL, "%s:%zu: a document without kind or metadata.name", name, doc.line);
		if (r >= 0) {
			label(obj, c, s);
			char origin[4096];
			snprintf(origin, sizeof(origin), "%s:%zu", name, doc.line);
			json_object_set_new(json_object_get(obj, "metadata"), "_origin", json_string(origin));
			if (s->target_namespace && !sync_object_meta(obj, "namespace"))
				json_object_set_new(json_object_get(obj, "metadata"), "_defaultNamespace", json_string(s->target_namespace));
			json_t *packed = sync_object_pack(obj);
			r = packed && json_array_append_new(objects, packed) == 0 ? 0
										 : latch_error_set(err, LATCH_ENOMEM, "out of memory");
		}
		json_decref(obj);
		latch_yaml_node_free(doc.root);
	}
	latch_yaml_reader_free(reader);
	latch_inject_memo_done(&memo);
	return r == 1 ? 0 : r;
}

/* plain: every manifest file of the commit under path, straight from the tree. */
static int render_files(const struct sync_config *c, const struct sync_source *s, struct latch_git *g, const char *sha,
			json_t *objects, struct latch_buf *warnings, struct latch_error *err)
{
	struct latch_git_files files = { 0 };
	int r = latch_git_read_tree(g, sha, s->path ? s->path : "", FILE_MAX, &files, err);
	for (size_t i = 0; r == 0 && i < files.n; i++) {
		struct latch_buf name = LATCH_BUF_INIT(8192);
		latch_buf_printf(&name, "%s@%.12s", files.items[i].path, sha);
		r = render_text(c, s, latch_buf_str(&name), files.items[i].data, files.items[i].len, objects, warnings, err);
		latch_buf_done(&name);
	}
	latch_git_files_done(&files);
	return r;
}

static int remove_entry(const char *path, const struct stat *st, int type, struct FTW *ftw)
{
	return remove(path);
}

/* kustomize follows symlinks: one in the commit that leads out of the checkout would read
 * the agent's own files (its token, other sources' credentials) into the cluster. Links that
 * stay inside are fine, as in Flux. */
static __thread const char *checkout_root; /* resolved */
static __thread size_t checkout_prefix;    /* of the paths nftw passes */
static __thread char *escaping_link; /* a copy: nftw's path does not outlive the call */

static int check_link(const char *path, const struct stat *st, int type, struct FTW *ftw)
{
	if (type != FTW_SL)
		return 0;
	_cleanup_free_ char *target = realpath(path, NULL);
	if (!target && errno == ENOENT)
		return 0; /* dangling: nothing to read through it */
	size_t n = strlen(checkout_root);
	if (target && strncmp(target, checkout_root, n) == 0 && (target[n] == '/' || target[n] == '\0'))
		return 0;
	escaping_link = strdup(path + checkout_prefix);
	return 1;
}

static int check_links_stay_inside(const char *root, const char *sha, struct latch_error *err)
{
	_cleanup_free_ char *real_root = realpath(root, NULL);
	if (!real_root)
		return latch_error_set(err, LATCH_EIO, "cannot resolve the checkout directory '%s'", root);
	checkout_root = real_root;
	checkout_prefix = strlen(root) + 1;
	int r = nftw(root, check_link, 16, FTW_PHYS);
	if (r == 1)
		r = latch_error_set(err, LATCH_EINVAL, "commit %.12s: the symlink '%s' leads out of the repository", sha,
				    escaping_link ? escaping_link : "(out of memory naming it)");
	else if (r != 0)
		r = latch_error_set(err, LATCH_EIO, "cannot walk the checkout '%s'", root);
	free(escaping_link);
	checkout_root = NULL;
	escaping_link = NULL;
	return r;
}

/* Run argv with stdout and stderr to files, killing it after timeout_s. */
static int run_tool(char *const argv[], const char *out, const char *errf, long timeout_s, int *ret_status)
{
	posix_spawn_file_actions_t fa;
	posix_spawn_file_actions_init(&fa);
	posix_spawn_file_actions_addopen(&fa, 1, out, O_WRONLY | O_CREAT | O_TRUNC, 0600);
	posix_spawn_file_actions_addopen(&fa, 2, errf, O_WRONLY | O_CREAT | O_TRUNC, 0600);
	pid_t pid;
	int r = posix_spawnp(&pid, argv[0], &fa, NULL, argv, environ);
	posix_spawn_file_actions_destroy(&fa);
	if (r != 0)
		return -r;
	double deadline = latch_monotonic_s() + (double)timeout_s;
	int status = 0;
	while (waitpid(pid, &status, WNOHANG) == 0) {
		if (latch_monotonic_s() > deadline) {
			kill(pid, SIGKILL);
			waitpid(pid, &status, 0);
			*ret_status = -1;
			return 0;
		}
		struct timespec pause = { 0, 20000000 };
		nanosleep(&pause, NULL);
	}
	*ret_status = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
	return 0;
}

/* kustomize: the commit checked out into a private directory, `kustomize build <path>`. */
static int render_kustomize(const struct sync_config *c, const struct sync_source *s, struct latch_git *g, const char *sha,
			    json_t *objects, struct latch_buf *warnings, struct latch_error *err)
{
	struct latch_buf tmp = LATCH_BUF_INIT(8192), dir = LATCH_BUF_INIT(8192), out = LATCH_BUF_INIT(8192), errf = LATCH_BUF_INIT(8192);
	latch_buf_printf(&tmp, "%s/checkout-XXXXXX", c->cache_dir);
	char *root = latch_buf_take(&tmp);
	int r = root && mkdtemp(root) ? 0 : latch_error_set(err, LATCH_EIO, "cannot make a checkout directory under '%s'", c->cache_dir);
	if (r == 0) {
		latch_buf_printf(&dir, "%s/tree", root);
		latch_buf_printf(&out, "%s/out.yaml", root);
		latch_buf_printf(&errf, "%s/err.txt", root);
		r = latch_buf_check(&dir, "checkout directory", err);
	}
	if (r == 0 && (r = latch_buf_check(&out, "kustomize output", err)) == 0)
		r = latch_buf_check(&errf, "kustomize errors", err);
	if (r == 0 && mkdir(latch_buf_str(&dir), 0700) < 0)
		r = latch_error_set(err, LATCH_EIO, "cannot make '%s'", latch_buf_str(&dir));
	if (r == 0)
		r = latch_git_checkout(g, sha, latch_buf_str(&dir), err);
	if (r == 0)
		r = check_links_stay_inside(latch_buf_str(&dir), sha, err);
	if (r == 0) {
		latch_buf_printf(&dir, "/%s", s->path ? s->path : "");
		r = latch_buf_check(&dir, "kustomize directory", err);
	}
	if (r == 0) {
		char *argv[] = { s->kustomize_path, "build", (char *)latch_buf_str(&dir), NULL };
		int status = 0;
		if (run_tool(argv, latch_buf_str(&out), latch_buf_str(&errf), s->timeout_s, &status) < 0)
			r = latch_error_set(err, LATCH_EINVAL, "cannot run kustomize '%s'", s->kustomize_path);
		else if (status != 0) {
			struct latch_buf msg = LATCH_BUF_INIT(16384);
			latch_file_read(latch_buf_str(&errf), 16000, &msg, NULL);
			r = latch_error_set(err, LATCH_EINVAL, "kustomize build %s@%.12s %s: %s", s->path ? s->path : ".", sha,
					    status < 0 ? "timed out" : "failed", latch_buf_str(&msg));
			latch_buf_done(&msg);
		}
	}
	if (r == 0) {
		struct latch_buf text = LATCH_BUF_INIT(256u << 20);
		r = latch_file_read(latch_buf_str(&out), 256u << 20, &text, err);
		struct latch_buf name = LATCH_BUF_INIT(8192);
		latch_buf_printf(&name, "kustomize build %s@%.12s", s->path ? s->path : ".", sha);
		if (r == 0)
			r = render_text(c, s, latch_buf_str(&name), latch_buf_str(&text), text.len, objects, warnings, err);
		latch_buf_done(&name);
		latch_buf_done(&text);
	}
	if (root)
		nftw(root, remove_entry, 16, FTW_DEPTH | FTW_PHYS);
	free(root);
	latch_buf_done(&dir);
	latch_buf_done(&out);
	latch_buf_done(&errf);
	return r;
}

/* Credentials are read at every pass, so a rotated password is picked up. */
static int fetch_with_credentials(struct latch_git *g, const struct sync_source *s, struct latch_error *err)
{
	struct latch_buf user = LATCH_SECRET_BUF_INIT(65536), pass = LATCH_SECRET_BUF_INIT(65536);
	int r = 0;
	if (s->username_file)
		r = latch_file_read_line(s->username_file, 65536, &user, err);
	if (r == 0 && s->password_file)
		r = latch_file_read_line(s->password_file, 65536, &pass, err);
	struct latch_git_auth auth = { s->username_file ? latch_buf_str(&user) : NULL, s->password_file ? latch_buf_str(&pass) : NULL,
				       s->ssh_key_file, s->known_hosts_file, s->ca_file };
	if (r == 0)
		r = latch_git_fetch(g, &auth, err);
	latch_buf_done(&user);
	latch_buf_done(&pass);
	return r;
}

struct fetch_arg {
	const char *dir;
	const struct sync_source *s;
};

/* On a repository of its own: the passes sharing the fetch open theirs once it is done, so
 * none opens a cache another is still creating. */
static int fetch_repository(void *arg, struct latch_error *err)
{
	const struct fetch_arg *a = arg;
	struct latch_git *g = NULL;
	int r = latch_git_open(a->dir, a->s->url, &g, err);
	if (r == 0)
		r = fetch_with_credentials(g, a->s, err);
	latch_git_close(g);
	return r;
}

/* A signature checked against the keys of its kind; ret_key names the key that made it. */
static int check_signature(const struct sync_config *c, const struct sync_source *s,
			   struct latch_view signature,
			   struct latch_view data, int64_t signed_at, struct latch_buf *ret_key, struct latch_error *err)
{
	if (latch_view_has_prefix(signature, LATCH_SSHSIG_BEGIN)) {
		struct latch_sshsig_signer signer;
		if (!s->verify_allowed_signers_file)
			return latch_error_set(err, LATCH_EFORBIDDEN, "it is signed with an SSH key, and verify names no "
					       "allowedSignersFile");
		int r = latch_sshsig_verify_file(s->verify_allowed_signers_file, "git", signature, data, signed_at, &signer,
						 err);
		if (r == 0 && latch_buf_printf(ret_key, "%s (%s)", signer.fingerprint, signer.principal) < 0)
			r = latch_error_set(err, LATCH_ENOMEM, "out of memory");
		return r;
	}
	char fingerprint[65] = "";
	if (!s->verify_keyring_file)
		return latch_error_set(err, LATCH_EFORBIDDEN,
				       "it has an OpenPGP signature, and verify names no keyringFile");
	int r = latch_openpgp_verify(s->verify_keyring_file, c->cache_dir, signature, data, fingerprint, err);
	if (r == 0 && latch_buf_append_str(ret_key, fingerprint) < 0)
		r = latch_error_set(err, LATCH_ENOMEM, "out of memory");
	return r;
}

/* The tag's signature (tag) or the commit's, checked. */
static int verify_signed(const struct sync_config *c, const struct sync_source *s, struct latch_git *g,
			 const char *sha,
			 bool tag, struct latch_error *err)
{
	struct latch_buf signature = LATCH_BUF_INIT(1u << 20), signed_data = LATCH_BUF_INIT(64u << 20);
	struct latch_buf key = LATCH_BUF_INIT(512);
	int64_t signed_at = 0;
	int r = tag ? latch_git_tag_signature(g, s->tag, &signature, &signed_data, &signed_at, err)
		    : latch_git_commit_signature(g, sha, &signature, &signed_data, &signed_at, err);
	if (r == 0)
		r = check_signature(c, s, latch_buf_view(&signature), latch_buf_view(&signed_data), signed_at, &key, err);
	if (r < 0 && tag)
		latch_error_prefix(err, "refusing tag '%s' (commit %.12s)", s->tag, sha);
	else if (r < 0)
		latch_error_prefix(err, "refusing commit %.12s", sha);
	else
		LATCH_LOG(LATCH_LOG_INFO, tag ? "verified tag signature" : "verified commit signature",
			  { "source", s->name },
			  { "revision", sha }, { "key", latch_buf_str(&key) });
	latch_buf_done(&signature);
	latch_buf_done(&signed_data);
	latch_buf_done(&key);
	return r;
}

/* verify.everyCommit: each commit between the applied revision and the tip, the tip aside
 * (verify.mode decides for it). With nothing applied yet, only the tip counts: history from
 * before signing began is not judged. */
static int verify_commits_since(const struct sync_config *c, const struct sync_source *s, struct latch_git *g,
				const char *applied, const char *sha, struct latch_error *err)
{
	struct latch_git_commits commits;
	int r = latch_git_commits_since(g, applied, sha, SYNC_VERIFY_MAX_COMMITS, &commits, err);
	for (size_t i = 0; r == 0 && i < commits.n; i++)
		if (strcmp(commits.shas[i], sha) != 0)
			r = verify_signed(c, s, g, commits.shas[i], false, err);
	if (r == LATCH_ENOTFOUND && !commits.n)
		latch_error_prefix(err, "verify.everyCommit: from %.12s to %.12s (to accept the new history, set "
				   "everyCommit: false for one pass)", applied, sha);
	else if (r < 0)
		latch_error_prefix(err, "verify.everyCommit: from %.12s to %.12s", applied, sha);
	latch_git_commits_done(&commits);
	return r;
}

/* With verify, nothing is rendered unless what verify.mode names is signed by a trusted key:
 * the commit (HEAD), the annotated tag (Tag), or both; with everyCommit, every new commit. */
static int verify_revision(const struct sync_config *c, const struct sync_source *s, struct latch_git *g,
			   const char *applied, const char *sha, struct latch_error *err)
{
	int r = 0;
	if (s->verify_mode & SYNC_VERIFY_TAG)
		r = verify_signed(c, s, g, sha, true, err);
	if (r == 0 && (s->verify_mode & SYNC_VERIFY_HEAD))
		r = verify_signed(c, s, g, sha, false, err);
	if (r == 0 && s->verify_every_commit && applied && strcmp(applied, sha) != 0)
		r = verify_commits_since(c, s, g, applied, sha, err);
	return r;
}

/* Fetch (once per round for the sources sharing the repository), resolve the ref, verify,
 * render the commit (plain or kustomize). */
int sync_render_revision(const struct sync_config *c, const struct sync_source *s, const char *applied,
			 char sha[41], json_t *objects, struct sync_observed *observed, struct latch_error *err)
{
	struct latch_buf warnings = LATCH_BUF_INIT(1u << 20);
	_cleanup_free_ char *dir = sync_fetch_dir(c, s);
	struct latch_git *g = NULL;
	struct latch_git_ref ref = { s->branch, s->tag, s->commit };
	struct fetch_arg arg = { dir, s };
	int r = dir ? sync_fetch_once(c->round, dir, fetch_repository, &arg, observed, err)
		    : latch_error_set(err, LATCH_ENOMEM, "out of memory");
	if (r == 0)
		r = latch_git_open(dir, s->url, &g, err);
	if (r == 0)
		r = latch_git_resolve(g, &ref, sha, err);
	if (r == 0 && s->verify_mode)
		r = verify_revision(c, s, g, applied, sha, err);
	if (r == 0)
		r = s->kustomize ? render_kustomize(c, s, g, sha, objects, &warnings, err) : render_files(c, s, g, sha, objects, &warnings, err);
	if (warnings.len)
		LATCH_LOG(LATCH_LOG_WARN, "latch-inject warnings", { "source", s->name }, { "warnings", latch_buf_str(&warnings) });
	latch_git_close(g);
	latch_buf_done(&warnings);
	return r;
}
