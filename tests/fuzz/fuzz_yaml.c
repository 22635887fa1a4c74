#include "fuzz.h"

#include "latch/yaml.h"

/* Parse, and emit what parsed: neither may crash, leak or read out of bounds. */
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct latch_yaml_limits lim = { 1u << 20, 32, 1000, 100000 };
	struct latch_yaml_stream s;
	if (latch_yaml_parse(latch_view_make((const char *)data, size), "fuzz", &lim, &s, NULL) == 0) {
		struct latch_buf out = LATCH_BUF_INIT(4u << 20);
		latch_yaml_emit(&s, &out, NULL);
		latch_buf_done(&out);
		for (size_t i = 0; i < s.n_docs; i++)
			json_decref(latch_yaml_to_json(s.docs[i].root));
		latch_yaml_stream_done(&s);
	}
	return 0;
}
