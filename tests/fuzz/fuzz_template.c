#include "fuzz.h"
#include <stdlib.h>
#include <string.h>

#include "latch/template.h"

static const json_t *lookup(const char *path, const json_t *params, void *userdata)
{
	return userdata;
}

/* Parse a template and, when it parses, render it against a fixed secret. */
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	char *text = malloc(size + 1);
	if (!text)
		return 0;
	memcpy(text, data, size);
	text[size] = '\0';
	struct latch_template *t = NULL;
	if (latch_template_parse(text, "fuzz", NULL, &t, NULL) == 0) {
		json_t *secret = json_pack("{s:{s:s,s:{s:s}},s:i}", "data", "username", "u", "data", "k", "v", "lease_duration", 60);
		struct latch_buf out = LATCH_BUF_INIT(1u << 20);
		latch_template_render(t, lookup, secret, false, &out, NULL);
		latch_buf_done(&out);
		json_decref(secret);
		latch_template_free(t);
	}
	free(text);
	return 0;
}
