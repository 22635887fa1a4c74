#include "fuzz.h"

#include "latch/json.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct latch_json_limits lim = { 1u << 20, 32 };
	json_t *v = NULL;
	if (latch_json_parse(latch_view_make((const char *)data, size), "fuzz", &lim, &v, NULL) == 0)
		json_decref(v);
	return 0;
}
