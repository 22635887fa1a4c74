/* Replays a fuzz corpus through a harness, so every `meson test` runs the corpus without a
 * fuzzer. Built with clang -fsanitize=fuzzer, the harness links libFuzzer's main instead. */
#include <dirent.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

#include "fuzz.h"
#include "latch/file.h"



int main(int argc, char **argv)
{
	if (argc != 2) {
		fprintf(stderr, "usage: %s CORPUS_DIR\n", argv[0]);
		return 2;
	}
	struct dirent **entries;
	int n = scandir(argv[1], &entries, NULL, alphasort);
	if (n < 0) {
		perror(argv[1]);
		return 1;
	}
	int replayed = 0;
	for (int i = 0; i < n; i++) {
		if (entries[i]->d_name[0] != '.') {
			char path[4096];
			snprintf(path, sizeof(path), "%s/%s", argv[1], entries[i]->d_name);
			struct latch_buf b = LATCH_BUF_INIT(16u << 20);
			if (latch_file_read(path, 16u << 20, &b, NULL) == 0) {
				LLVMFuzzerTestOneInput((const uint8_t *)(b.ptr ? b.ptr : ""), b.len);
				replayed++;
			}
			latch_buf_done(&b);
		}
		free(entries[i]);
	}
	free(entries);
	printf("replayed %d inputs from %s\n", replayed, argv[1]);
	return replayed > 0 ? 0 : 1;
}
