#include "fuzz.h"

#include "sync.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct sync_config c;
	struct latch_error err = LATCH_ERROR_INIT;
	if (sync_config_parse(latch_view_make((const char *)data, size), "fuzz", &c, &err) == 0)
		sync_config_done(&c);
	latch_error_done(&err);
	return 0;
}
