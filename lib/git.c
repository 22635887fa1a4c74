#include "latch/git.h"

#include <git2.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "latch/base64.h"
#include "latch/file.h"
#include "latch/http.h"

struct latch_git {
	git_repository *repo;
	char *url;
	char *shown_url; /* url without user:password@, for errors */
};

/* The one place a libgit2 error becomes ours. */
static int git_fail(struct latch_error *err, int code, const char *what, const char *object)
{
	const git_error *e = git_error_last();
	return latch_error_set(err, code, "%s '%s': %s", what, object, e && e->message ? e->message : "unknown git error");
}

static pthread_once_t initialised = PTHREAD_ONCE_INIT;
static bool started;

static void start_libgit2(void)
{
	git_libgit2_init();
	started = true;
}

void latch_git_shutdown(void)
{
	if (started)
		git_libgit2_shutdown();
	started = false;
}

int latch_git_open(const char *cache_dir, const char *url, struct latch_git **ret, struct latch_error *err)
{
	pthread_once(&initialised, start_libgit2);
	int r = latch_file_mkdir_p(cache_dir, 0700, err);
	if (r < 0)
		return r;
	struct latch_git *g = calloc(1, sizeof(*g));
	if (!g || !(g->url = strdup(url)) || !(g->shown_url = latch_url_without_userinfo(url))) {
		latch_git_close(g);
		return latch_error_set(err, LATCH_ENOMEM, "out of memory");
	}
	if (git_repository_open_bare(&g->repo, cache_dir) < 0 && git_repository_init(&g->repo, cache_dir, 1) < 0) {
		r = git_fail(err, LATCH_EIO, "opening the git cache", cache_dir);
		latch_git_close(g);
		return r;
	}
	*ret = g;
	return 0;
}

void latch_git_close(struct latch_git *g)
{
	if (!g)
		return;
	git_repository_free(g->repo);
	free(g->url);
	free(g->shown_url);
	free(g);
}

struct fetch_state {
	const struct latch_git_auth *auth;
	const char *url;
	unsigned credential_calls;
	bool refused_origin; /* credentials were asked for by another server than the configured one */
	char *host_key_problem; /* why a host key or certificate was refused, for the error */
};

static int credentials(git_credential **out, const char *url, const char *username_from_url, unsigned int allowed,
		       void *payload)
{
	struct fetch_state *f = payload;
	const struct latch_git_auth *a = f->auth;
	/* libgit2 asks again after a refusal; a second ask means these credentials were refused. */
	if (!a || f->credential_calls++ > 0)
		return GIT_PASSTHROUGH;
	if ((allowed & GIT_CREDENTIAL_SSH_KEY) && a->ssh_key_file)
		return git_credential_ssh_key_new(out, username_from_url ? username_from_url : "git", NULL, a->ssh_key_file, NULL);
	/* Only to the configured server: never to a host a redirect named. */
	if ((allowed & GIT_CREDENTIAL_USERPASS_PLAINTEXT) && a->username && a->password) {
		if (!latch_url_same_origin(url, f->url)) {
			f->refused_origin = true;
			return GIT_PASSTHROUGH;
		}
		return git_credential_userpass_plaintext_new(out, a->username, a->password);
	}
	return GIT_PASSTHROUGH;
}

/* Port of an ssh URL ("ssh://user@host:2222/path"), 22 when none. */
static long url_port(const char *url)
{
	const char *at = strchr(url + strlen("ssh://"), '@');
	const char *host = at ? at + 1 : url + strlen("ssh://");
	const char *colon = strchr(host, ':'), *slash = strchr(host, '/');
	if (!colon || (slash && colon > slash))
		return 22;
	return strtol(colon + 1, NULL, 10);
}

/* Whether known_hosts has this host (as "host" or "[host]:port") with exactly this key. */
static bool known_host(const char *file, const char *host, long port, const char *key_b64)
{
	struct latch_buf text = LATCH_BUF_INIT(1u << 20);
	if (latch_file_read(file, 1u << 20, &text, NULL) < 0) {
		latch_buf_done(&text);
		return false;
	}
	char bracketed[512];
	snprintf(bracketed, sizeof(bracketed), "[%s]:%ld", host, port);
	bool found = false;
	char *save = NULL;
	for (char *line = strtok_r(text.ptr ? text.ptr : (char *)"", "\n", &save); line && !found; line = strtok_r(NULL, "\n", &save)) {
		char *fields[3] = { 0 };
		char *fsave = NULL;
		fields[0] = strtok_r(line, " \t", &fsave);
		fields[1] = fields[0] ? strtok_r(NULL, " \t", &fsave) : NULL;
		fields[2] = fields[1] ? strtok_r(NULL, " \t", &fsave) : NULL;
		if (!fields[2] || fields[0][0] == '#')
			continue;
		char *hsave = NULL;
		for (char *h = strtok_r(fields[0], ",", &hsave); h && !found; h = strtok_r(NULL, ",", &hsave))
			found = (strcmp(h, bracketed) == 0 || (port == 22 && strcmp(h, host) == 0)) && strcmp(fields[2], key_b64) == 0;
	}
	latch_buf_done(&text);
	return found;
}

static int certificate_check(git_cert *cert, int valid, const char *host, void *payload)
{
	struct fetch_state *f = payload;
	if (cert->cert_type != GIT_CERT_HOSTKEY_LIBSSH2) {
		/* TLS: libgit2 checked the chain and the name; say which CA and name. */
		if (valid)
			return 0;
		struct latch_buf why = LATCH_BUF_INIT(1024);
		latch_buf_printf(&why, "the TLS certificate of '%s' does not verify against %s%s (Debian's libgit2 uses mbedTLS 2, "
				       "which matches DNS names only: use a host name, not an IP address)",
				 host, f->auth && f->auth->ca_file ? "caFile " : "the system CA store",
				 f->auth && f->auth->ca_file ? f->auth->ca_file : "");
		free(f->host_key_problem);
		f->host_key_problem = latch_buf_take(&why);
		latch_buf_done(&why);
		return GIT_ECERTIFICATE;
	}
	const git_cert_hostkey *hk = (const git_cert_hostkey *)cert;
	const char *file = f->auth ? f->auth->known_hosts_file : NULL;
	struct latch_buf b64 = LATCH_BUF_INIT(8192), why = LATCH_BUF_INIT(1024);
	if (!(hk->type & GIT_CERT_SSH_RAW))
		latch_buf_printf(&why, "the server's host key was not given in full");
	else if (!file)
		latch_buf_printf(&why, "no knownHostsFile is configured, so the host key of '%s' cannot be checked", host);
	else if (latch_base64_encode(latch_view_make(hk->hostkey, hk->hostkey_len), false, &b64) < 0 ||
		 !known_host(file, host, url_port(f->url), latch_buf_str(&b64)))
		latch_buf_printf(&why, "the host key of '%s' is not in '%s'", host, file);
	free(f->host_key_problem);
	f->host_key_problem = why.len ? latch_buf_take(&why) : NULL;
	latch_buf_done(&why);
	latch_buf_done(&b64);
	return f->host_key_problem ? GIT_ECERTIFICATE : 0;
}

int latch_git_fetch(struct latch_git *g, const struct latch_git_auth *auth, struct latch_error *err)
{
	git_remote *remote = NULL;
	/* Without url.*.insteadOf rewriting: applying it, Debian's libgit2 1.5.1 leaks PCRE2
	 * match data for every config entry on every fetch (git_regexp_match returns early on
	 * no match without freeing it); an agent that fetches every minute cannot afford that. */
	git_remote_create_options ro;
	git_remote_create_options_init(&ro, GIT_REMOTE_CREATE_OPTIONS_VERSION);
	ro.repository = g->repo;
	ro.flags = GIT_REMOTE_CREATE_SKIP_INSTEADOF | GIT_REMOTE_CREATE_SKIP_DEFAULT_FETCHSPEC;
	if (git_remote_create_with_opts(&remote, g->url, &ro) < 0)
		return git_fail(err, LATCH_EINVAL, "git remote", g->shown_url);
	char *refspecs[] = { "+refs/heads/*:refs/remotes/origin/*", "+refs/tags/*:refs/tags/*" };
	git_strarray specs = { refspecs, 2 };
	git_fetch_options fo;
	git_fetch_options_init(&fo, GIT_FETCH_OPTIONS_VERSION);
	fo.prune = GIT_FETCH_PRUNE;
	struct fetch_state f = { auth, g->url, 0, false, NULL };
	/* A redirect to another host is not followed (libgit2 follows one on the first request). */
	fo.follow_redirects = GIT_REMOTE_REDIRECT_NONE;
	fo.callbacks.credentials = credentials;
	fo.callbacks.certificate_check = certificate_check;
	fo.callbacks.payload = &f;
	/* The CA bundle is libgit2's for the whole process: one fetch at a time uses it. */
	static pthread_mutex_t one_fetch = PTHREAD_MUTEX_INITIALIZER;
	pthread_mutex_lock(&one_fetch);
	if (auth && auth->ca_file)
		git_libgit2_opts(GIT_OPT_SET_SSL_CERT_LOCATIONS, auth->ca_file, NULL);
	int r = 0, fetched = git_remote_fetch(remote, &specs, &fo, NULL);
	pthread_mutex_unlock(&one_fetch);
	if (fetched < 0) {
		if (f.host_key_problem)
			r = latch_error_set(err, LATCH_ETLS, "fetching '%s': %s", g->shown_url, f.host_key_problem);
		else if (f.refused_origin)
			r = latch_error_set(err, LATCH_EFORBIDDEN, "fetching '%s': another server asked for the credentials; "
					    "they are only given to the configured scheme, host and port", g->shown_url);
		else if (f.credential_calls > 1)
			r = latch_error_set(err, LATCH_EFORBIDDEN, "fetching '%s': the credentials were refused", g->shown_url);
		else
			r = git_fail(err, LATCH_ECONNECT, "fetching", g->shown_url);
	}
	free(f.host_key_problem);
	git_remote_free(remote);
	return r;
}

/* The commit an object id names, peeling annotated tags. */
static int peel_to_commit(struct latch_git *g, const git_oid *oid, const char *what, char ret_sha[41], struct latch_error *err)
{
	git_object *obj = NULL, *commit = NULL;
	int r = 0;
	if (git_object_lookup(&obj, g->repo, oid, GIT_OBJECT_ANY) < 0 || git_object_peel(&commit, obj, GIT_OBJECT_COMMIT) < 0)
		r = git_fail(err, LATCH_ENOTFOUND, "resolving", what);
	else
		git_oid_tostr(ret_sha, 41, git_object_id(commit));
	git_object_free(commit);
	git_object_free(obj);
	return r;
}

/* References are looked up by name rather than through git_revparse, whose regular
 * expressions (PCRE2 in Debian's libgit2) leak match data. */
int latch_git_resolve(struct latch_git *g, const struct latch_git_ref *ref, char ret_sha[41], struct latch_error *err)
{
	git_oid oid;
	if (ref->commit) {
		if (strlen(ref->commit) != 40 || git_oid_fromstr(&oid, ref->commit) < 0)
			return latch_error_set(err, LATCH_EINVAL, "commit '%s' is not a full 40-character id", ref->commit);
		return peel_to_commit(g, &oid, ref->commit, ret_sha, err);
	}
	struct latch_buf name = LATCH_BUF_INIT(4096);
	if (ref->tag)
		latch_buf_printf(&name, "refs/tags/%s", ref->tag);
	else
		latch_buf_printf(&name, "refs/remotes/origin/%s", ref->branch ? ref->branch : "main");
	int r = latch_buf_check(&name, "reference name", err);
	if (r == 0)
		r = git_reference_name_to_id(&oid, g->repo, latch_buf_str(&name)) < 0
			? latch_error_set(err, LATCH_ENOTFOUND, "'%s' has no %s '%s'", g->shown_url, ref->tag ? "tag" : "branch",
					  ref->tag ? ref->tag : ref->branch ? ref->branch : "main")
			: peel_to_commit(g, &oid, latch_buf_str(&name), ret_sha, err);
	latch_buf_done(&name);
	return r;
}

static bool manifest_file(const char *name)
{
	size_t n = strlen(name);
	return (n > 5 && strcmp(name + n - 5, ".yaml") == 0) || (n > 4 && strcmp(name + n - 4, ".yml") == 0) ||
	       (n > 5 && strcmp(name + n - 5, ".json") == 0);
}

struct walk {
	struct latch_git *g;
	const char *dir;
	size_t max_file;
	struct latch_git_files *out;
	struct latch_error *err;
	int result;
};

static int add_blob(struct walk *w, const char *root, const git_tree_entry *entry)
{
	git_blob *blob = NULL;
	struct latch_buf path = LATCH_BUF_INIT(8192);
	latch_buf_printf(&path, "%s%s%s%s", w->dir, *w->dir ? "/" : "", root, git_tree_entry_name(entry));
	if (git_blob_lookup(&blob, w->g->repo, git_tree_entry_id(entry)) < 0) {
		w->result = git_fail(w->err, LATCH_EIO, "reading", latch_buf_str(&path));
		latch_buf_done(&path);
		return -1;
	}
	size_t size = (size_t)git_blob_rawsize(blob);
	if (size > w->max_file) {
		w->result = latch_error_set(w->err, LATCH_ELIMIT, "'%s' is %zu bytes, more than the limit of %zu",
					    latch_buf_str(&path), size, w->max_file);
	} else {
		void *p = realloc(w->out->items, (w->out->n + 1) * sizeof(*w->out->items));
		char *data = malloc(size + 1);
		if (p)
			w->out->items = p; /* moved even when malloc failed: the old block is gone */
		if (!p || !data) {
			free(data);
			w->result = latch_error_set(w->err, LATCH_ENOMEM, "out of memory");
		} else {
			memcpy(data, git_blob_rawcontent(blob), size);
			data[size] = '\0';
			w->out->items[w->out->n++] = (struct latch_git_file){ latch_buf_take(&path), data, size };
		}
	}
	git_blob_free(blob);
	latch_buf_done(&path);
	return w->result < 0 ? -1 : 0;
}

static int walk_entry(const char *root, const git_tree_entry *entry, void *payload)
{
	struct walk *w = payload;
	if (git_tree_entry_type(entry) != GIT_OBJECT_BLOB || !manifest_file(git_tree_entry_name(entry)))
		return 0;
	return add_blob(w, root, entry);
}

static int compare_files(const void *a, const void *b)
{
	return strcmp(((const struct latch_git_file *)a)->path, ((const struct latch_git_file *)b)->path);
}

static int copy_signed(struct latch_view signature, struct latch_view data, const char *what,
		       const char *name,
		       struct latch_buf *ret_signature, struct latch_buf *ret_signed, struct latch_error *err)
{
	if (latch_buf_append_view(ret_signature, signature) < 0 || latch_buf_append_view(ret_signed, data) < 0)
		return latch_error_set(err, LATCH_ENOMEM, "the signature of %s %.40s is too large", what, name);
	return 0;
}

int latch_git_commit_signature(struct latch_git *g, const char *sha, struct latch_buf *ret_signature, struct latch_buf *ret_signed,
			       int64_t *ret_time, struct latch_error *err)
{
	git_oid oid;
	git_buf signature = GIT_BUF_INIT, signed_data = GIT_BUF_INIT;
	git_commit *commit = NULL;
	if (git_oid_fromstr(&oid, sha) < 0)
		return latch_error_set(err, LATCH_EINVAL, "'%s' is not a commit id", sha);
	int g_r = git_commit_extract_signature(&signature, &signed_data, g->repo, &oid, NULL);
	int r = 0;
	if (g_r == GIT_ENOTFOUND)
		r = latch_error_set(err, LATCH_ENOTFOUND, "commit %.12s is not signed", sha);
	else if (g_r < 0 || git_commit_lookup(&commit, g->repo, &oid) < 0)
		r = git_fail(err, LATCH_EIO, "reading the signature of commit", sha);
	else
		r = copy_signed(latch_view_make(signature.ptr, signature.size),
				latch_view_make(signed_data.ptr, signed_data.size),
				"commit", sha, ret_signature, ret_signed, err);
	if (r == 0)
		*ret_time = (int64_t)git_commit_time(commit);
	git_commit_free(commit);
	git_buf_dispose(&signature);
	git_buf_dispose(&signed_data);
	return r;
}

/* Where the signature appended to a tag's message starts: the last line that opens an
 * OpenPGP or SSH signature, as git reads it. */
static const char *tag_signature_start(const char *data, size_t size)
{
	static const char *const begins[] = { "-----BEGIN PGP SIGNATURE-----", "-----BEGIN SSH SIGNATURE-----" };
	const char *found = NULL, *end = data + size;
	for (const char *line = data; line < end;) {
		for (size_t i = 0; i < 2; i++)
			if ((size_t)(end - line) >= strlen(begins[i]) && memcmp(line, begins[i], strlen(begins[i])) == 0)
				found = line;
		const char *nl = memchr(line, '\n', (size_t)(end - line));
		line = nl ? nl + 1 : end;
	}
	return found;
}

static int tag_object(struct latch_git *g, const char *tag, git_tag **ret, struct latch_error *err)
{
	struct latch_buf name = LATCH_BUF_INIT(4096);
	git_oid oid;
	git_object *obj = NULL;
	int r = 0;
	if (latch_buf_printf(&name, "refs/tags/%s", tag) < 0)
		r = latch_error_set(err, LATCH_ELIMIT, "tag name '%s' is too long", tag);
	else if (git_reference_name_to_id(&oid, g->repo, latch_buf_str(&name)) < 0 ||
		 git_object_lookup(&obj, g->repo, &oid, GIT_OBJECT_ANY) < 0)
		r = latch_error_set(err, LATCH_ENOTFOUND, "'%s' has no tag '%s'", g->shown_url, tag);
	else if (git_object_type(obj) != GIT_OBJECT_TAG)
		r = latch_error_set(err, LATCH_ENOTFOUND, "tag '%s' is a lightweight tag, which cannot be signed", tag);
	latch_buf_done(&name);
	if (r == 0)
		*ret = (git_tag *)obj;
	else
		git_object_free(obj);
	return r;
}

int latch_git_tag_signature(struct latch_git *g, const char *tag, struct latch_buf *ret_signature,
			    struct latch_buf *ret_signed,
			    int64_t *ret_time, struct latch_error *err)
{
	git_tag *t = NULL;
	git_odb *odb = NULL;
	git_odb_object *raw = NULL;
	int r = tag_object(g, tag, &t, err);
	/* A signed tag object of another name (an old release) pushed under this one would roll back. */
	if (r == 0 && strcmp(git_tag_name(t), tag) != 0)
		r = latch_error_set(err, LATCH_EFORBIDDEN, "refs/tags/%s points to a tag object named '%s'", tag,
				    git_tag_name(t));
	if (r == 0 && (git_repository_odb(&odb, g->repo) < 0 || git_odb_read(&raw, odb, git_tag_id(t)) < 0))
		r = git_fail(err, LATCH_EIO, "reading tag", tag);
	if (r == 0) {
		const char *data = git_odb_object_data(raw);
		size_t size = git_odb_object_size(raw);
		const char *sig = tag_signature_start(data, size);
		const git_signature *tagger = git_tag_tagger(t);
		r = sig ? copy_signed(latch_view_make(sig, (size_t)(data + size - sig)),
				      latch_view_make(data, (size_t)(sig - data)),
				      "tag", tag, ret_signature, ret_signed, err)
			: latch_error_set(err, LATCH_ENOTFOUND, "tag '%s' is not signed", tag);
		if (r == 0)
			*ret_time = tagger ? (int64_t)tagger->when.time : 0;
	}
	git_odb_object_free(raw);
	git_odb_free(odb);
	git_tag_free(t);
	return r;
}

static int walk_new_commits(struct latch_git *g, git_revwalk *walk, size_t max, struct latch_git_commits *ret,
			    struct latch_error *err)
{
	git_oid oid;
	int g_r;
	while ((g_r = git_revwalk_next(&oid, walk)) == 0) {
		if (ret->n == max)
			return latch_error_set(err, LATCH_ELIMIT, "more than %zu new commits to verify", max);
		void *p = realloc(ret->shas, (ret->n + 1) * sizeof(*ret->shas));
		if (!p)
			return latch_error_set(err, LATCH_ENOMEM, "out of memory");
		ret->shas = p;
		git_oid_tostr(ret->shas[ret->n++], 41, &oid);
	}
	return g_r == GIT_ITEROVER ? 0 : git_fail(err, LATCH_EIO, "walking the history of", g->shown_url);
}

int latch_git_commits_since(struct latch_git *g, const char *since, const char *tip, size_t max,
			    struct latch_git_commits *ret,
			    struct latch_error *err)
{
	*ret = (struct latch_git_commits){ 0 };
	git_oid tip_oid, since_oid;
	git_revwalk *walk = NULL;
	if (git_oid_fromstr(&tip_oid, tip) < 0 || git_oid_fromstr(&since_oid, since) < 0)
		return latch_error_set(err, LATCH_EINVAL, "'%s' or '%s' is not a commit id", since, tip);
	int r = 0;
	if (git_revwalk_new(&walk, g->repo) < 0 || git_revwalk_push(walk, &tip_oid) < 0)
		r = git_fail(err, LATCH_EIO, "walking the history of", g->shown_url);
	else if (git_revwalk_hide(walk, &since_oid) < 0)
		r = latch_error_set(err, LATCH_ENOTFOUND, "the last applied commit %.12s is not in '%s' (history "
				    "rewritten, or another repository): which commits are new cannot be told", since,
				    g->shown_url);
	else
		r = walk_new_commits(g, walk, max, ret, err);
	git_revwalk_free(walk);
	if (r < 0)
		latch_git_commits_done(ret);
	return r;
}

void latch_git_commits_done(struct latch_git_commits *c)
{
	free(c->shas);
	*c = (struct latch_git_commits){ 0 };
}

int latch_git_read_tree(struct latch_git *g, const char *sha, const char *dir, size_t max_file,
			struct latch_git_files *ret, struct latch_error *err)
{
	git_oid oid;
	git_commit *commit = NULL;
	git_tree *tree = NULL, *sub = NULL;
	git_tree_entry *entry = NULL;
	struct latch_git_files files = { 0 };
	struct walk w = { g, dir ? dir : "", max_file, &files, err, 0 };
	int r = 0;
	if (git_oid_fromstr(&oid, sha) < 0 || git_commit_lookup(&commit, g->repo, &oid) < 0 || git_commit_tree(&tree, commit) < 0)
		r = git_fail(err, LATCH_ENOTFOUND, "reading commit", sha);
	else if (*w.dir && (git_tree_entry_bypath(&entry, tree, w.dir) < 0 || git_tree_entry_type(entry) != GIT_OBJECT_TREE))
		r = latch_error_set(err, LATCH_ENOTFOUND, "commit %.12s has no directory '%s'", sha, w.dir);
	else if (*w.dir && git_tree_lookup(&sub, g->repo, git_tree_entry_id(entry)) < 0)
		r = git_fail(err, LATCH_EIO, "reading directory", w.dir);
	else if (git_tree_walk(sub ? sub : tree, GIT_TREEWALK_PRE, walk_entry, &w) < 0)
		r = w.result < 0 ? w.result : git_fail(err, LATCH_EIO, "walking", w.dir);
	git_tree_entry_free(entry);
	git_tree_free(sub);
	git_tree_free(tree);
	git_commit_free(commit);
	if (r < 0) {
		latch_git_files_done(&files);
		return r;
	}
	qsort(files.items, files.n, sizeof(*files.items), compare_files);
	*ret = files;
	return 0;
}

int latch_git_checkout(struct latch_git *g, const char *sha, const char *dir, struct latch_error *err)
{
	git_oid oid;
	git_commit *commit = NULL;
	git_tree *tree = NULL;
	int r = 0;
	git_checkout_options co;
	git_checkout_options_init(&co, GIT_CHECKOUT_OPTIONS_VERSION);
	co.checkout_strategy = GIT_CHECKOUT_FORCE | GIT_CHECKOUT_DONT_UPDATE_INDEX;
	co.target_directory = dir;
	if (git_oid_fromstr(&oid, sha) < 0 || git_commit_lookup(&commit, g->repo, &oid) < 0 || git_commit_tree(&tree, commit) < 0)
		r = git_fail(err, LATCH_ENOTFOUND, "reading commit", sha);
	else if (git_checkout_tree(g->repo, (git_object *)tree, &co) < 0)
		r = git_fail(err, LATCH_EIO, "checking out into", dir);
	git_tree_free(tree);
	git_commit_free(commit);
	return r;
}

void latch_git_files_done(struct latch_git_files *files)
{
	for (size_t i = 0; i < files->n; i++) {
		free(files->items[i].path);
		free(files->items[i].data);
	}
	free(files->items);
	*files = (struct latch_git_files){ 0 };
}
