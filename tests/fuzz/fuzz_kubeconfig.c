#include "fuzz.h"

#include <fcntl.h>
#include <unistd.h>

#include "latch/k8s.h"

/* A kubeconfig as latch-sync reads it. Its file names are relative to a folder that does not
 * exist; stdin is /dev/null so a tokenFile of /dev/stdin cannot stall the run. */
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static bool stdin_closed;
	if (!stdin_closed) {
		int fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
		if (fd >= 0 && dup2(fd, 0) >= 0)
			stdin_closed = true;
		if (fd > 0)
			close(fd);
	}
	struct latch_k8s *k = NULL;
	struct latch_error err = LATCH_ERROR_INIT;
	struct latch_view text = latch_view_make((const char *)data, size);
	if (latch_k8s_from_kubeconfig_text(text, "/nonexistent-latch-fuzz/config", &k, &err) == 0)
		latch_k8s_free(k);
	latch_error_done(&err);
	return 0;
}
