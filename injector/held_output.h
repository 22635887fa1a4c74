/* latch-inject's output, held back until every document has passed (all or nothing): its
 * first 3 MiB as they are, the rest deflated. Manifests shrink twenty- to thirtyfold, so the
 * 16 MB of YAML that 10,000 injected Deployments make are held in about 3.5 MB, and an output
 * under 3 MiB never pays for deflate. Everything it held is zeroed when it is freed: Secrets
 * pass through. */
#pragma once

#include <stdbool.h>
#include <stdio.h>
#include <zlib.h>

#include "latch/buf.h"
#include "latch/error.h"

struct held_output {
	struct latch_buf text;   /* what the writer appended since the last deflate */
	struct latch_buf head;   /* the plain start, once deflating */
	struct latch_buf packed; /* deflated */
	z_stream z;
	size_t total, max;       /* bytes held but not in text, and the most allowed in all */
	bool deflating, finished;
};

void held_output_init(struct held_output *h, size_t max);
/* Called after each addition to text: deflates what text holds once there is enough of it,
 * and all of it when finishing (then nothing more may be added). */
int held_output_pack(struct held_output *h, bool finish, struct latch_error *err);
/* The whole output to out (after the pack that finishes). */
int held_output_write(const struct held_output *h, FILE *out, struct latch_error *err);
void held_output_done(struct held_output *h);
