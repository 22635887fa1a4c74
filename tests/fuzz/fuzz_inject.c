#include "fuzz.h"

#include "inject.h"

/* The input parser and the mutation together, as latch-inject runs them. */
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct latch_yaml_limits lim = { 1u << 20, 32, 1000, 100000 };
	struct latch_yaml_stream s;
	if (latch_yaml_parse(latch_view_make((const char *)data, size), "fuzz", &lim, &s, NULL) < 0)
		return 0;
	struct latch_inject_options o = { .vault_address = "https://vault:8200" };
	struct latch_buf warnings = LATCH_BUF_INIT(1u << 20);
	if (latch_inject_stream(&s, "fuzz", &o, &warnings, NULL, NULL) == 0) {
		struct latch_buf out = LATCH_BUF_INIT(8u << 20);
		latch_yaml_emit(&s, &out, NULL);
		latch_buf_done(&out);
	}
	latch_buf_done(&warnings);
	latch_yaml_stream_done(&s);
	return 0;
}
