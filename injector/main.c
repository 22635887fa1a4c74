/* latch-inject: a manifest filter (stdin or files to stdout) and a KRM function. */
#include <dirent.h>
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "held_output.h"
#include "inject.h"
#include "latch/file.h"
#include "latch/json.h"

#define INPUT_MAX (256u << 20)
#define OUTPUT_MAX (512u << 20)

static const char usage[] =
	"Usage: latch-inject [-f FILE|DIR]... [-R] [-o yaml|json] [OPTIONS]\n"
	"\n"
	"Adds the latch-init container to workloads annotated for the Vault Agent Injector\n"
	"(vault.hashicorp.com/agent-inject: \"true\", or openbao.openbao.org/...). Reads stdin when\n"
	"no -f is given; a kustomize/kpt ResourceList on stdin is handled as a KRM function.\n"
	"\n"
	"  -f, --filename PATH          a file, or a directory of .yaml/.yml/.json files\n"
	"  -R, --recursive              descend into subdirectories of a directory\n"
	"  -o, --output yaml|json       output format (default yaml)\n"
	"      --image IMAGE            latch-init image (default " LATCH_INJECT_DEFAULT_IMAGE ")\n"
	"      --vault-addr URL         Vault address when no vault.hashicorp.com/service is set\n"
	"      --pin-vault-addr         refuse a vault.hashicorp.com/service naming another address\n"
	"      --allow-http-vault       accept an http:// Vault address (the token travels in clear)\n"
	"      --token-audience AUD     audience of latch-init's ServiceAccount token (default\n"
	"                               " LATCH_INJECT_DEFAULT_TOKEN_AUDIENCE "; \"\" for the API server's own)\n"
	"      --allow-unsupported      warn about unsupported annotations instead of failing\n"
	"      --require-image-digest   refuse images not pinned by @sha256: digest\n"
	"      --allowed-registries R   comma-separated registry prefixes images must come from\n"
	"      --policy latch-image|all-images  which images those two rules check\n"
	"  -h, --help\n"
	"\n"
	"Output is all or nothing: on any error nothing is written to stdout and the exit code is 1\n"
	"(2 for usage errors).\n";

struct cli {
	const char **inputs;
	size_t n_inputs;
	bool recursive;
	bool json_output;
	struct latch_inject_options opts;
	char *registries; /* storage for opts.allowed_registries */
	char *fc_image, *fc_vault_address, *fc_token_audience; /* copies from a KRM functionConfig */
	struct latch_inject_memo memo; /* opts.memo */
};

static int parse_registries(struct cli *c, const char *list)
{
	free(c->registries);
	c->registries = strdup(list);
	const char **regs = calloc(strlen(list) + 1, sizeof(*regs));
	if (!c->registries || !regs) {
		free(regs);
		return -1;
	}
	size_t n = 0;
	char *save = NULL;
	for (char *r = strtok_r(c->registries, ",", &save); r; r = strtok_r(NULL, ",", &save))
		regs[n++] = r;
	free((void *)c->opts.allowed_registries);
	c->opts.allowed_registries = regs;
	c->opts.n_allowed_registries = n;
	return 0;
}

static int parse_policy(struct cli *c, const char *p)
{
	if (strcmp(p, "latch-image") == 0)
		c->opts.policy = LATCH_INJECT_POLICY_LATCH_IMAGE;
	else if (strcmp(p, "all-images") == 0)
		c->opts.policy = LATCH_INJECT_POLICY_ALL_IMAGES;
	else
		return -1;
	return 0;
}

static int parse_args(int argc, char **argv, struct cli *c)
{
	enum { O_IMAGE = 256, O_VAULT, O_ALLOW, O_DIGEST, O_REGISTRIES, O_POLICY, O_PIN, O_HTTP, O_AUDIENCE };
	static const struct option longopts[] = {
		{ "filename", required_argument, NULL, 'f' },    { "recursive", no_argument, NULL, 'R' },
		{ "output", required_argument, NULL, 'o' },      { "image", required_argument, NULL, O_IMAGE },
		{ "vault-addr", required_argument, NULL, O_VAULT }, { "allow-unsupported", no_argument, NULL, O_ALLOW },
		{ "require-image-digest", no_argument, NULL, O_DIGEST },
		{ "allowed-registries", required_argument, NULL, O_REGISTRIES },
		{ "policy", required_argument, NULL, O_POLICY }, { "help", no_argument, NULL, 'h' },
		{ "pin-vault-addr", no_argument, NULL, O_PIN }, { "allow-http-vault", no_argument, NULL, O_HTTP },
		{ "token-audience", required_argument, NULL, O_AUDIENCE },
		{ NULL, 0, NULL, 0 },
	};
	c->inputs = calloc((size_t)argc + 1, sizeof(*c->inputs));
	if (!c->inputs)
		return 2;
	int o;
	while ((o = getopt_long(argc, argv, "f:Ro:h", longopts, NULL)) != -1) {
		switch (o) {
		case 'f': c->inputs[c->n_inputs++] = optarg; break;
		case 'R': c->recursive = true; break;
		case 'o':
			if (strcmp(optarg, "json") != 0 && strcmp(optarg, "yaml") != 0) {
				fprintf(stderr, "latch-inject: -o '%s' is not yaml or json\n", optarg);
				return 2;
			}
			c->json_output = strcmp(optarg, "json") == 0;
			break;
		case O_IMAGE: c->opts.image = optarg; break;
		case O_VAULT: c->opts.vault_address = optarg; break;
		case O_ALLOW: c->opts.allow_unsupported = true; break;
		case O_PIN: c->opts.pin_vault_address = true; break;
		case O_HTTP: c->opts.allow_http_vault = true; break;
		case O_AUDIENCE: c->opts.token_audience = optarg; break;
		case O_DIGEST: c->opts.require_image_digest = true; break;
		case O_REGISTRIES:
			if (parse_registries(c, optarg) < 0)
				return 2;
			break;
		case O_POLICY:
			if (parse_policy(c, optarg) < 0) {
				fprintf(stderr, "latch-inject: --policy '%s' is not latch-image or all-images\n", optarg);
				return 2;
			}
			break;
		case 'h': fputs(usage, stdout); exit(0);
		default: fputs(usage, stderr); return 2;
		}
	}
	if (optind < argc) {
		fprintf(stderr, "latch-inject: unexpected argument '%s' (inputs are given with -f)\n", argv[optind]);
		return 2;
	}
	return 0;
}

static bool manifest_name(const char *name)
{
	size_t n = strlen(name);
	return (n > 5 && strcmp(name + n - 5, ".yaml") == 0) || (n > 4 && strcmp(name + n - 4, ".yml") == 0) ||
	       (n > 5 && strcmp(name + n - 5, ".json") == 0);
}

/* Every manifest file under dir, sorted, recursing when asked. */
static int list_dir(const char *dir, bool recursive, char ***files, size_t *n, struct latch_error *err)
{
	struct dirent **entries;
	int count = scandir(dir, &entries, NULL, alphasort);
	if (count < 0)
		return latch_error_set(err, LATCH_EIO, "reading directory '%s' failed", dir);
	int r = 0;
	for (int i = 0; i < count; i++) {
		const char *e = entries[i]->d_name;
		if (r == 0 && e[0] != '.') {
			struct latch_buf path = LATCH_BUF_INIT(8192);
			latch_buf_printf(&path, "%s/%s", dir, e);
			struct stat st;
			r = latch_buf_check(&path, "path", err);
			if (r == 0 && stat(latch_buf_str(&path), &st) == 0 && S_ISDIR(st.st_mode)) {
				if (recursive)
					r = list_dir(latch_buf_str(&path), recursive, files, n, err);
			} else if (r == 0 && manifest_name(e)) {
				char **p = realloc(*files, (*n + 1) * sizeof(**files));
				if (!p) {
					r = latch_error_set(err, LATCH_ENOMEM, "out of memory");
				} else {
					*files = p;
					(*files)[(*n)++] = latch_buf_take(&path);
				}
			}
			latch_buf_done(&path);
		}
		free(entries[i]);
	}
	free(entries);
	return r;
}

static int read_stdin(struct latch_buf *out, struct latch_error *err)
{
	char chunk[65536];
	size_t n;
	while ((n = fread(chunk, 1, sizeof(chunk), stdin)) > 0)
		if (latch_buf_append(out, chunk, n) < 0)
			return latch_error_set(err, LATCH_ELIMIT, "<stdin>: larger than %u bytes", INPUT_MAX);
	return ferror(stdin) ? latch_error_set(err, LATCH_EIO, "reading stdin failed") : 0;
}

/* A mapped file cut short while it is read (an editor saving in place) raises SIGBUS on the
 * pages that went: say which file and stop, having written nothing (output is all or nothing). */
static const char *volatile reading = "the input";

static void input_cut_short(int sig)
{
	static const char before[] = "latch-inject: ";
	static const char after[] = ": the file shrank while it was read; nothing was written\n";
	(void)sig;
	/* Only write(2) and _exit(2): what a signal handler may call. */
	(void)latch_write_all(2, latch_view_make(before, sizeof(before) - 1));
	(void)latch_write_all(2, latch_view_str(reading));
	(void)latch_write_all(2, latch_view_make(after, sizeof(after) - 1));
	_exit(74);
}

/* A file is mapped and given back as it is read (see latch_input_open); stdin is held whole. */
static int open_input(const char *name, bool from_stdin, struct latch_input *in, struct latch_error *err)
{
	if (!from_stdin)
		return latch_input_open(name, INPUT_MAX, in, err);
	*in = (struct latch_input){ .buf = LATCH_BUF_INIT(INPUT_MAX) };
	int r = read_stdin(&in->buf, err);
	in->text = latch_buf_view(&in->buf);
	return r;
}

static bool is_resource_list(const struct latch_yaml_node *doc)
{
	const char *api = latch_yaml_map_get_str(doc, "apiVersion");
	return latch_yaml_is_scalar(latch_yaml_map_get(doc, "kind"), "ResourceList") && api &&
	       strncmp(api, "config.kubernetes.io/", 21) == 0;
}

static int copy_option(const struct latch_yaml_node *data, const char *key, char **storage, const char **ret)
{
	const char *v = latch_yaml_map_get_str(data, key);
	if (!v)
		return 0;
	free(*storage);
	*ret = *storage = strdup(v);
	return *storage ? 0 : -1;
}

/* KRM function options from functionConfig.data (a ConfigMap) or functionConfig.spec. */
static int function_config(struct cli *c, const struct latch_yaml_node *doc)
{
	const struct latch_yaml_node *fc = latch_yaml_map_get(doc, "functionConfig");
	const struct latch_yaml_node *data = latch_yaml_map_get(fc, "data");
	if (!data)
		data = latch_yaml_map_get(fc, "spec");
	const char *v;
	/* Copied: the document is freed once injected, the options live on. */
	if (copy_option(data, "image", &c->fc_image, &c->opts.image) < 0 ||
	    copy_option(data, "vaultAddress", &c->fc_vault_address, &c->opts.vault_address) < 0 ||
	    copy_option(data, "tokenAudience", &c->fc_token_audience, &c->opts.token_audience) < 0)
		return -1;
	if ((v = latch_yaml_map_get_str(data, "allowUnsupported")))
		c->opts.allow_unsupported = strcmp(v, "true") == 0;
	if ((v = latch_yaml_map_get_str(data, "pinVaultAddress")))
		c->opts.pin_vault_address = strcmp(v, "true") == 0;
	if ((v = latch_yaml_map_get_str(data, "allowHttpVault")))
		c->opts.allow_http_vault = strcmp(v, "true") == 0;
	if ((v = latch_yaml_map_get_str(data, "requireImageDigest")))
		c->opts.require_image_digest = strcmp(v, "true") == 0;
	if ((v = latch_yaml_map_get_str(data, "allowedRegistries")) && parse_registries(c, v) < 0)
		return -1;
	if ((v = latch_yaml_map_get_str(data, "policy")) && parse_policy(c, v) < 0)
		return -1;
	return 0;
}

/* Where the documents go: YAML text as they come (one emitter for the whole output), or JSON
 * values collected for the end. */
struct sink {
	bool json;
	struct held_output *out;
	struct latch_yaml_writer *yaml; /* made at the first document */
	json_t *items;
};

static int sink_add(struct sink *k, struct latch_yaml_doc *doc, const char *name, struct latch_error *err)
{
	if (k->json) {
		json_t *j = latch_yaml_to_json(doc->root);
		if (!j || json_array_append_new(k->items, j) < 0)
			return latch_error_set(err, LATCH_EINVAL, "%s:%zu: the document cannot be written as JSON", name, doc->line);
		return 0;
	}
	int r = k->yaml ? 0 : latch_yaml_writer_new(&k->out->text, &k->yaml, err);
	if (r == 0)
		r = latch_yaml_writer_add(k->yaml, doc->root, err);
	return r < 0 ? r : held_output_pack(k->out, false, err);
}

static int sink_finish(struct sink *k, struct latch_error *err)
{
	if (!k->json) {
		int r = k->yaml ? latch_yaml_writer_finish(k->yaml, err) : 0;
		return r < 0 ? r : held_output_pack(k->out, true, err);
	}
	json_t *doc = json_array_size(k->items) == 1 ? json_incref(json_array_get(k->items, 0))
						     : json_pack("{s:s,s:s,s:O}", "apiVersion", "v1", "kind", "List", "items", k->items);
	char *text = json_dumps(doc, JSON_INDENT(2) | JSON_ENCODE_ANY);
	int r = text ? latch_buf_append_str(&k->out->text, text) : LATCH_ENOMEM;
	if (r == 0)
		r = latch_buf_putc(&k->out->text, '\n');
	latch_secret_free(text);
	json_decref(doc);
	if (r == LATCH_ENOMEM)
		return latch_error_set(err, r, "out of memory");
	return held_output_pack(k->out, true, err);
}

/* One input, a document at a time: parse, inject, write to the sink, free, and give back the
 * input read so far. Only the output text is kept (all or nothing: it is written once every
 * document has passed), so memory grows with the output alone. */
static int process(struct cli *c, const char *name, bool from_stdin, struct sink *k, struct latch_buf *warnings,
		   struct latch_error *err)
{
	struct latch_input in;
	struct latch_yaml_reader *reader = NULL;
	struct latch_yaml_limits lim = LATCH_YAML_LIMITS_DEFAULT;
	lim.max_bytes = INPUT_MAX;
	reading = name;
	int r = open_input(name, from_stdin, &in, err);
	if (r == 0)
		r = latch_yaml_reader_new(in.text, name, &lim, &reader, err);
	bool first = true;
	struct latch_yaml_doc doc;
	while (r == 0 && (r = latch_yaml_reader_next(reader, &doc, err)) == 0) {
		if (first && from_stdin && is_resource_list(doc.root) && function_config(c, doc.root) < 0)
			r = latch_error_set(err, LATCH_EINVAL, "%s: functionConfig has a bad allowedRegistries or policy", name);
		first = false;
		struct latch_yaml_stream one = { &doc, 1 };
		if (r == 0)
			r = latch_inject_stream(&one, name, &c->opts, warnings, NULL, err);
		if (r == 0)
			r = sink_add(k, &doc, name, err);
		latch_yaml_node_free(doc.root);
		latch_input_release_before(&in, latch_yaml_reader_offset(reader));
	}
	latch_yaml_reader_free(reader);
	latch_input_close(&in);
	return r == 1 ? 0 : r;
}

static int collect_inputs(struct cli *c, char ***files, size_t *n_files, struct latch_error *err)
{
	for (size_t i = 0; i < c->n_inputs; i++) {
		struct stat st;
		if (strcmp(c->inputs[i], "-") != 0 && stat(c->inputs[i], &st) == 0 && S_ISDIR(st.st_mode)) {
			int r = list_dir(c->inputs[i], c->recursive, files, n_files, err);
			if (r < 0)
				return r;
			continue;
		}
		char **p = realloc(*files, (*n_files + 1) * sizeof(**files));
		if (!p)
			return latch_error_set(err, LATCH_ENOMEM, "out of memory");
		*files = p;
		if (!((*files)[(*n_files)++] = strdup(c->inputs[i])))
			return latch_error_set(err, LATCH_ENOMEM, "out of memory");
	}
	return 0;
}

static int run(struct cli *c, struct held_output *out, struct latch_buf *warnings, struct latch_error *err)
{
	char **files = NULL;
	size_t n_files = 0;
	struct sink k = { .json = c->json_output, .out = out, .items = c->json_output ? json_array() : NULL };
	int r = collect_inputs(c, &files, &n_files, err);
	if (r == 0 && c->n_inputs == 0)
		r = process(c, "<stdin>", true, &k, warnings, err);
	for (size_t i = 0; r == 0 && i < n_files; i++) {
		bool dash = strcmp(files[i], "-") == 0;
		r = process(c, dash ? "<stdin>" : files[i], dash, &k, warnings, err);
	}
	if (r == 0)
		r = sink_finish(&k, err);
	latch_yaml_writer_free(k.yaml);
	json_decref(k.items);
	for (size_t i = 0; i < n_files; i++)
		free(files[i]);
	free(files);
	return r;
}

static void cli_done(struct cli *c)
{
	latch_inject_memo_done(&c->memo);
	free((void *)c->opts.allowed_registries);
	free(c->registries);
	free(c->fc_image);
	free(c->fc_vault_address);
	free(c->fc_token_audience);
	free(c->inputs);
}

int main(int argc, char **argv)
{
	struct cli c = { 0 };
	c.opts.memo = &c.memo;
	struct sigaction bus = { .sa_handler = input_cut_short };
	sigaction(SIGBUS, &bus, NULL);
	int r = parse_args(argc, argv, &c);
	if (r != 0) {
		cli_done(&c);
		return r;
	}
	struct held_output out;
	struct latch_buf warnings = LATCH_BUF_INIT(1u << 20);
	struct latch_error err = LATCH_ERROR_INIT;
	held_output_init(&out, OUTPUT_MAX);
	r = run(&c, &out, &warnings, &err);
	fputs(latch_buf_str(&warnings), stderr);
	if (r == 0)
		r = held_output_write(&out, stdout, &err);
	if (r < 0)
		fprintf(stderr, "latch-inject: %s\n", latch_error_message(&err));
	held_output_done(&out);
	latch_buf_done(&warnings);
	latch_error_done(&err);
	cli_done(&c);
	return r < 0 ? 1 : 0;
}
