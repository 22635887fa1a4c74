#include "fuzz.h"

#include "latch/dotenv.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct latch_env_list list = { 0 };
	struct latch_error err = LATCH_ERROR_INIT;
	if (latch_dotenv_parse(latch_view_make((const char *)data, size), "fuzz", &list, &err) < 0)
		latch_error_done(&err);
	latch_env_list_done(&list);
	return 0;
}
