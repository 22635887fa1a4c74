#include "fuzz.h"

#include <stdlib.h>
#include <string.h>

#include "sync.h"

static bool component_is(const char *p, size_t n, const char *what)
{
	return n == strlen(what) && memcmp(p, what, n) == 0;
}

static bool climbs(const char *path)
{
	for (const char *p = path; *p;) {
		const char *end = strchrnul(p, '/');
		if (component_is(p, (size_t)(end - p), ".."))
			return true;
		p = *end ? end + 1 : end;
	}
	return false;
}

/* A normalized folder is inside the repository and in one spelling: no "..", ".", empty
 * component, or leading or trailing '/'. */
static bool canonical(const char *path)
{
	if (*path == '/' || (*path && path[strlen(path) - 1] == '/'))
		return false;
	for (const char *p = path; *p;) {
		const char *end = strchrnul(p, '/');
		size_t n = (size_t)(end - p);
		if (n == 0 || component_is(p, n, ".") || component_is(p, n, ".."))
			return false;
		p = *end ? end + 1 : end;
	}
	return true;
}

/* A source's path (from the SyncConfig or, for a self-managed agent, from git): what latch-sync
 * keeps must stay inside the checkout, be canonical, and normalize to itself again. Only a path
 * with a ".." component is refused, and it is left as it was. */
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	char *path = strndup((const char *)data, size);
	char *before = path ? strdup(path) : NULL;
	if (!path || !before) {
		free(path);
		return 0;
	}
	if (sync_repo_path_normalize(path)) {
		if (!canonical(path))
			abort();
		char *again = strdup(path);
		if (again && (!sync_repo_path_normalize(again) || strcmp(again, path) != 0))
			abort();
		free(again);
	} else if (strcmp(path, before) != 0 || !climbs(before)) {
		abort();
	}
	free(before);
	free(path);
	return 0;
}
