#include "fuzz.h"

#include <stdlib.h>

#include "health.h"
#include "latch/k8s.h"
#include "objects.h"

/* A client that is never called: every path below is answered from what it learned. */
static const char kubeconfig[] =
	"apiVersion: v1\nkind: Config\ncurrent-context: c\n"
	"contexts: [{name: c, context: {cluster: k, user: u}}]\n"
	"clusters: [{name: k, cluster: {server: 'https://127.0.0.1:1'}}]\n"
	"users: [{name: u, user: {token: t}}]\n";

/* As a live object: its health, drift fingerprint and inventory entry. */
static void read_as_object(const json_t *obj)
{
	char reason[256];
	sync_health_of(obj, reason, sizeof(reason));
	free(sync_object_fingerprint(obj));
	free(sync_object_key(obj));
	json_decref(sync_object_entry(obj));
}

static struct latch_k8s *client(void)
{
	static struct latch_k8s *k;
	if (!k && latch_k8s_from_kubeconfig_text(latch_view_str(kubeconfig), "fuzz", &k, NULL) < 0)
		abort();
	return k;
}

/* As discovery: its groupVersion checked, its resources learned (always under one group
 * version, so what the client holds stays bounded), then the path of each kind it taught,
 * named by the document's own metadata (ns and name come from a manifest in latch-sync). */
static void read_as_discovery(const json_t *doc)
{
	struct latch_k8s *k = client();
	const char *gv = latch_json_get_str(doc, "groupVersion");
	if (gv)
		latch_k8s_learn_resources(k, gv, NULL);
	if (latch_k8s_learn_resources(k, "fuzz.latch.dev/v1", doc) < 0)
		return;
	const json_t *meta = json_object_get(doc, "metadata");
	size_t i;
	json_t *res;
	json_array_foreach(json_object_get(doc, "resources"), i, res) {
		const char *kind = latch_json_get_str(res, "kind");
		if (!latch_k8s_serves(k, "fuzz.latch.dev/v1", kind))
			continue;
		char *path = NULL;
		if (latch_k8s_object_path(k, "fuzz.latch.dev/v1", kind, latch_json_get_str(meta, "namespace"),
					  latch_json_get_str(meta, "name"), NULL, &path, NULL, NULL) == 0 && !path)
			abort();
		free(path);
	}
}

static int read_listed(json_t *item, void *arg)
{
	read_as_object(item);
	return 0;
}

/* One body as the API server might answer: an object, a list of them (streamed as latch-sync
 * reads lists, then whole), or discovery. */
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	json_t *meta = NULL;
	latch_k8s_list_body_each(latch_view_make((const char *)data, size), read_listed, NULL, &meta);
	json_decref(meta);
	struct latch_json_limits lim = LATCH_JSON_LIMITS_DEFAULT;
	json_t *doc = NULL;
	if (latch_json_parse(latch_view_make((const char *)data, size), "fuzz", &lim, &doc, NULL) < 0)
		return 0;
	read_as_object(doc);
	size_t i;
	json_t *item;
	json_array_foreach(json_object_get(doc, "items"), i, item) read_as_object(item);
	read_as_discovery(doc);
	json_decref(doc);
	return 0;
}
