#include "fuzz.h"

#include "latch/config.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct latch_config c;
	if (latch_config_parse(latch_view_make((const char *)data, size), "fuzz", &c, NULL) == 0)
		latch_config_done(&c);
	return 0;
}
