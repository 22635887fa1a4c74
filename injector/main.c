/* latch-inject: a manifest filter (stdin or files to stdout) and a KRM function. */
#include <dirent.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

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
};

struct input {
	char *name;
	struct latch_yaml_stream stream;
};

static int parse_registries(struct cli *c, const char *list)
{
	free(c->registries);
	c->registries = strdup(list);
	const char **regs = calloc(strlen(list) + 1, sizeof(*regs));
	if (!c->registries || !regs)
		return -1;
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
	enum { O_IMAGE = 256, O_VAULT, O_ALLOW, O_DIGEST, O_REGISTRIES, O_POLICY };
	static const struct option longopts[] = {
		{ "filename", required_argument, NULL, 'f' },    { "recursive", no_argument, NULL, 'R' },
		{ "output", required_argument, NULL, 'o' },      { "image", required_argument, NULL, O_IMAGE },
		{ "vault-addr", required_argument, NULL, O_VAULT }, { "allow-unsupported", no_argument, NULL, O_ALLOW },
		{ "require-image-digest", no_argument, NULL, O_DIGEST },
		{ "allowed-registries", required_argument, NULL, O_REGISTRIES },
		{ "policy", required_argument, NULL, O_POLICY }, { "help", no_argument, NULL, 'h' },
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
			if (stat(latch_buf_str(&path), &st) == 0 && S_ISDIR(st.st_mode)) {
				if (recursive)
					r = list_dir(latch_buf_str(&path), recursive, files, n, err);
			} else if (manifest_name(e)) {
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

static int load(const char *name, bool from_stdin, struct input *in, struct latch_error *err)
{
	struct latch_buf text = LATCH_BUF_INIT(INPUT_MAX);
	int r = from_stdin ? read_stdin(&text, err) : latch_file_read(name, INPUT_MAX, &text, err);
	struct latch_yaml_limits lim = LATCH_YAML_LIMITS_DEFAULT;
	lim.max_bytes = INPUT_MAX;
	in->name = strdup(name);
	if (r == 0)
		r = latch_yaml_parse(latch_buf_view(&text), name, &lim, &in->stream, err);
	latch_buf_done(&text);
	return r;
}

static bool is_resource_list(const struct input *in, size_t n)
{
	if (n != 1 || in[0].stream.n_docs != 1)
		return false;
	const struct latch_yaml_node *doc = in[0].stream.docs[0].root;
	const char *api = latch_yaml_map_get_str(doc, "apiVersion");
	return latch_yaml_is_scalar(latch_yaml_map_get(doc, "kind"), "ResourceList") && api &&
	       strncmp(api, "config.kubernetes.io/", 21) == 0;
}

/* KRM function options from functionConfig.data (a ConfigMap) or functionConfig.spec. */
static int function_config(struct cli *c, const struct latch_yaml_node *doc)
{
	const struct latch_yaml_node *fc = latch_yaml_map_get(doc, "functionConfig");
	const struct latch_yaml_node *data = latch_yaml_map_get(fc, "data");
	if (!data)
		data = latch_yaml_map_get(fc, "spec");
	const char *v;
	if ((v = latch_yaml_map_get_str(data, "image")))
		c->opts.image = v;
	if ((v = latch_yaml_map_get_str(data, "vaultAddress")))
		c->opts.vault_address = v;
	if ((v = latch_yaml_map_get_str(data, "allowUnsupported")))
		c->opts.allow_unsupported = strcmp(v, "true") == 0;
	if ((v = latch_yaml_map_get_str(data, "requireImageDigest")))
		c->opts.require_image_digest = strcmp(v, "true") == 0;
	if ((v = latch_yaml_map_get_str(data, "allowedRegistries")) && parse_registries(c, v) < 0)
		return -1;
	if ((v = latch_yaml_map_get_str(data, "policy")) && parse_policy(c, v) < 0)
		return -1;
	return 0;
}

static int emit_json(const struct input *in, size_t n, struct latch_buf *out, struct latch_error *err)
{
	json_t *items = json_array();
	for (size_t i = 0; i < n; i++)
		for (size_t d = 0; d < in[i].stream.n_docs; d++) {
			json_t *j = latch_yaml_to_json(in[i].stream.docs[d].root);
			if (!j) {
				json_decref(items);
				return latch_error_set(err, LATCH_EINVAL, "%s:%zu: a document cannot be written as JSON", in[i].name,
						       in[i].stream.docs[d].line);
			}
			json_array_append_new(items, j);
		}
	json_t *doc = json_array_size(items) == 1 ? json_incref(json_array_get(items, 0))
						  : json_pack("{s:s,s:s,s:O}", "apiVersion", "v1", "kind", "List", "items", items);
	char *text = json_dumps(doc, JSON_INDENT(2) | JSON_ENCODE_ANY);
	int r = text ? latch_buf_append_str(out, text) : LATCH_ENOMEM;
	if (r == 0)
		r = latch_buf_putc(out, '\n');
	free(text);
	json_decref(doc);
	json_decref(items);
	return r < 0 ? latch_error_set(err, r, "JSON output too large") : 0;
}

static int emit_yaml(const struct input *in, size_t n, struct latch_buf *out, struct latch_error *err)
{
	struct latch_yaml_stream all = { 0 };
	for (size_t i = 0; i < n; i++)
		all.n_docs += in[i].stream.n_docs;
	all.docs = calloc(all.n_docs ? all.n_docs : 1, sizeof(*all.docs));
	if (!all.docs)
		return latch_error_set(err, LATCH_ENOMEM, "out of memory");
	size_t k = 0;
	for (size_t i = 0; i < n; i++)
		for (size_t d = 0; d < in[i].stream.n_docs; d++)
			all.docs[k++] = in[i].stream.docs[d]; /* borrowed */
	int r = latch_yaml_emit(&all, out, err);
	free(all.docs);
	return r;
}

static int run(struct cli *c, struct latch_buf *out, struct latch_buf *warnings, struct latch_error *err)
{
	char **files = NULL;
	size_t n_files = 0;
	int r = 0;
	for (size_t i = 0; r == 0 && i < c->n_inputs; i++) {
		struct stat st;
		if (strcmp(c->inputs[i], "-") != 0 && stat(c->inputs[i], &st) == 0 && S_ISDIR(st.st_mode)) {
			r = list_dir(c->inputs[i], c->recursive, &files, &n_files, err);
		} else {
			char **p = realloc(files, (n_files + 1) * sizeof(*files));
			if (!p)
				return latch_error_set(err, LATCH_ENOMEM, "out of memory");
			files = p;
			files[n_files++] = strdup(c->inputs[i]);
		}
	}
	bool use_stdin = c->n_inputs == 0;
	size_t n_in = use_stdin ? 1 : n_files;
	struct input *in = calloc(n_in ? n_in : 1, sizeof(*in));
	for (size_t i = 0; r == 0 && in && i < n_in; i++) {
		const char *name = use_stdin || strcmp(files[i], "-") == 0 ? "<stdin>" : files[i];
		r = load(name, use_stdin || strcmp(files[i], "-") == 0, &in[i], err);
	}
	bool krm = r == 0 && in && use_stdin && is_resource_list(in, n_in);
	if (krm && function_config(c, in[0].stream.docs[0].root) < 0)
		r = latch_error_set(err, LATCH_EINVAL, "<stdin>: functionConfig has a bad allowedRegistries or policy");
	for (size_t i = 0; r == 0 && in && i < n_in; i++)
		r = latch_inject_stream(&in[i].stream, in[i].name, &c->opts, warnings, NULL, err);
	if (r == 0 && in)
		r = c->json_output ? emit_json(in, n_in, out, err) : emit_yaml(in, n_in, out, err);
	for (size_t i = 0; in && i < n_in; i++) {
		latch_yaml_stream_done(&in[i].stream);
		free(in[i].name);
	}
	free(in);
	for (size_t i = 0; i < n_files; i++)
		free(files[i]);
	free(files);
	return r;
}

int main(int argc, char **argv)
{
	struct cli c = { 0 };
	int r = parse_args(argc, argv, &c);
	if (r != 0)
		return r;
	struct latch_buf out = LATCH_BUF_INIT(OUTPUT_MAX), warnings = LATCH_BUF_INIT(1u << 20);
	struct latch_error err = LATCH_ERROR_INIT;
	r = run(&c, &out, &warnings, &err);
	fputs(latch_buf_str(&warnings), stderr);
	if (r < 0) {
		fprintf(stderr, "latch-inject: %s\n", latch_error_message(&err));
	} else if (fwrite(out.ptr ? out.ptr : "", 1, out.len, stdout) != out.len || fflush(stdout) != 0) {
		fprintf(stderr, "latch-inject: writing the output failed\n");
		r = -1;
	}
	latch_buf_done(&out);
	latch_buf_done(&warnings);
	latch_error_done(&err);
	free((void *)c.opts.allowed_registries);
	free(c.registries);
	free(c.inputs);
	return r < 0 ? 1 : 0;
}
