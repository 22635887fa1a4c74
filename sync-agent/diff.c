#include "diff.h"

#include <string.h>

#include "latch/buf.h"
#include "objects.h"

#define MAX_PATHS 8

/* A copy without what the server sets on every write, and without status. */
static json_t *comparable(const json_t *obj)
{
	json_t *c = json_deep_copy(obj);
	json_t *meta = json_object_get(c, "metadata");
	static const char *const volatile_fields[] = { "managedFields", "resourceVersion", "generation", "creationTimestamp", "uid", NULL };
	for (int i = 0; volatile_fields[i]; i++)
		json_object_del(meta, volatile_fields[i]);
	json_object_del(c, "status");
	return c;
}

/* Field paths where a and b differ ("spec.replicas"), at most MAX_PATHS of them. */
static void differing_paths(const json_t *a, const json_t *b, const char *prefix, struct latch_buf *out, size_t *n)
{
	if (json_equal((json_t *)a, (json_t *)b))
		return;
	if (!json_is_object(a) || !json_is_object(b)) {
		if (++*n <= MAX_PATHS)
			latch_buf_printf(out, "%s%s", out->len ? ", " : "", *prefix ? prefix : "(whole object)");
		return;
	}
	const char *key;
	json_t *v;
	json_object_foreach((json_t *)a, key, v) {
		struct latch_buf path = LATCH_BUF_INIT(4096);
		latch_buf_printf(&path, "%s%s%s", prefix, *prefix ? "." : "", key);
		differing_paths(v, json_object_get(b, key), latch_buf_str(&path), out, n);
		latch_buf_done(&path);
	}
	json_object_foreach((json_t *)b, key, v) {
		if (json_object_get(a, key))
			continue;
		struct latch_buf path = LATCH_BUF_INIT(4096);
		latch_buf_printf(&path, "%s%s%s", prefix, *prefix ? "." : "", key);
		differing_paths(NULL, v, latch_buf_str(&path), out, n);
		latch_buf_done(&path);
	}
}

static void print_object(FILE *out, char mark, const json_t *obj, const char *detail)
{
	const char *ns = sync_object_namespace(obj);
	fprintf(out, "%c %s %s %s%s%s%s%s\n", mark, latch_json_get_str(obj, "apiVersion"), latch_json_get_str(obj, "kind"), ns ? ns : "",
		ns ? "/" : "", sync_object_meta(obj, "name"), detail ? ": " : "", detail ? detail : "");
}

size_t sync_diff_print(FILE *out, const json_t *objects, const json_t *would_store, const json_t *live, const json_t *gone)
{
	size_t changes = 0, i;
	json_t *o;
	json_array_foreach(objects, i, o) {
		_cleanup_free_ char *key = sync_object_key(o);
		const json_t *now = sync_object_live(live, o), *after = key ? json_object_get(would_store, key) : NULL;
		if (!now) {
			print_object(out, '+', o, NULL);
			changes++;
			continue;
		}
		if (!after)
			continue; /* not checked by the dry run (waits for a new Namespace or CRD) */
		json_t *x = comparable(now), *y = comparable(after);
		struct latch_buf paths = LATCH_BUF_INIT(16384);
		size_t n = 0;
		differing_paths(x, y, "", &paths, &n);
		if (n > MAX_PATHS)
			latch_buf_printf(&paths, " and %zu more", n - MAX_PATHS);
		if (n) {
			print_object(out, '~', o, latch_buf_str(&paths));
			changes++;
		}
		latch_buf_done(&paths);
		json_decref(x);
		json_decref(y);
	}
	json_array_foreach(gone, i, o) {
		json_t *obj = sync_object_from_entry(o);
		print_object(out, '-', obj, "pruned");
		json_decref(obj);
		changes++;
	}
	return changes;
}
