#include "fuzz.h"

#include <stdlib.h>
#include <string.h>

#include "latch/vault.h"

/* A ServiceAccount token as latch-init reads it from its volume (for messages only). */
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	char *jwt = malloc(size + 1);
	if (!jwt)
		return 0;
	memcpy(jwt, data, size);
	jwt[size] = '\0';
	struct latch_jwt_identity id;
	if (latch_jwt_identity_parse(jwt, &id) == 0)
		latch_jwt_identity_done(&id);
	free(jwt);
	return 0;
}
