#include "held_output.h"

#include <malloc.h>
#include <stdlib.h>
#include <string.h>

/* The first this much is held as it is: most outputs never pay for deflate. Below the 4 MiB
 * its buffer has by then, so handing it over copies nothing. */
#define PLAIN_MAX (3u << 20)
/* Past it, text is deflated in pieces of this size: large enough for deflate to find repeats. */
#define PIECE (256u << 10)
#define CHUNK 65536u
/* Raw deflate: nothing checks a stream that never leaves the process. */
#define RAW_WINDOW (-15)

static voidpf zeroed_alloc(voidpf opaque, uInt items, uInt size)
{
	return calloc(items, size);
}

/* zlib's window and buffers hold output text. */
static void zeroing_free(voidpf opaque, voidpf p)
{
	if (p)
		explicit_bzero(p, malloc_usable_size(p));
	free(p);
}

void held_output_init(struct held_output *h, size_t max)
{
	*h = (struct held_output){ .max = max };
	latch_buf_init(&h->head, max, true);
	latch_buf_init(&h->text, max, true);
	latch_buf_init(&h->packed, max, true);
}

static int deflate_text(struct held_output *h, bool finish, unsigned char *chunk)
{
	h->z.next_in = (Bytef *)(h->text.ptr ? h->text.ptr : "");
	h->z.avail_in = (uInt)h->text.len;
	int zr;
	do {
		h->z.next_out = chunk;
		h->z.avail_out = CHUNK;
		zr = deflate(&h->z, finish ? Z_FINISH : Z_NO_FLUSH);
		if (zr == Z_STREAM_ERROR)
			return LATCH_EINVAL;
		int r = latch_buf_append(&h->packed, chunk, CHUNK - h->z.avail_out);
		if (r < 0)
			return r;
	} while (h->z.avail_out == 0 || (finish && zr != Z_STREAM_END));
	return 0;
}

/* text's first PLAIN_MAX bytes and more become the plain head; what follows is deflated. */
static int start_deflate(struct held_output *h)
{
	h->head = h->text;
	h->total = h->head.len;
	latch_buf_init(&h->text, h->max, true);
	h->z = (z_stream){ .zalloc = zeroed_alloc, .zfree = zeroing_free };
	if (deflateInit2(&h->z, 1, Z_DEFLATED, RAW_WINDOW, 8, Z_DEFAULT_STRATEGY) != Z_OK)
		return LATCH_ENOMEM;
	h->deflating = true;
	return 0;
}

static int deflate_piece(struct held_output *h, bool finish)
{
	h->total += h->text.len;
	unsigned char *chunk = malloc(CHUNK);
	int r = chunk ? deflate_text(h, finish, chunk) : LATCH_ENOMEM;
	if (chunk)
		explicit_bzero(chunk, CHUNK);
	free(chunk);
	latch_buf_reset(&h->text);
	return r;
}

int held_output_pack(struct held_output *h, bool finish, struct latch_error *err)
{
	if (latch_buf_error(&h->text) || h->total + h->text.len > h->max)
		return latch_error_set(err, LATCH_ELIMIT, "the output is larger than %zu bytes", h->max);
	if (h->finished || (!h->deflating && h->text.len < PLAIN_MAX)) {
		h->finished = finish;
		return 0;
	}
	int r = h->deflating ? 0 : start_deflate(h);
	if (r == 0 && (finish || h->text.len >= PIECE))
		r = deflate_piece(h, finish);
	h->finished = finish;
	return r < 0 ? latch_error_set(err, r, "holding the output back: %s", latch_code_name(r)) : 0;
}

static int inflate_to(z_stream *z, FILE *out, unsigned char *chunk)
{
	int zr = Z_OK;
	while (zr != Z_STREAM_END) {
		z->next_out = chunk;
		z->avail_out = CHUNK;
		zr = inflate(z, Z_NO_FLUSH);
		if (zr != Z_OK && zr != Z_STREAM_END)
			return LATCH_EINVAL;
		size_t n = CHUNK - z->avail_out;
		if (fwrite(chunk, 1, n, out) != n)
			return LATCH_EIO;
	}
	return 0;
}

static int inflate_packed(const struct held_output *h, FILE *out)
{
	z_stream z = { .zalloc = zeroed_alloc, .zfree = zeroing_free };
	z.next_in = (Bytef *)(h->packed.ptr ? h->packed.ptr : "");
	z.avail_in = (uInt)h->packed.len;
	unsigned char *chunk = malloc(CHUNK);
	if (!chunk || inflateInit2(&z, RAW_WINDOW) != Z_OK) {
		free(chunk);
		return LATCH_ENOMEM;
	}
	int r = inflate_to(&z, out, chunk);
	inflateEnd(&z);
	explicit_bzero(chunk, CHUNK);
	free(chunk);
	return r;
}

int held_output_write(const struct held_output *h, FILE *out, struct latch_error *err)
{
	const struct latch_buf *plain = h->deflating ? &h->head : &h->text;
	int r = 0;
	if (fwrite(plain->ptr ? plain->ptr : "", 1, plain->len, out) != plain->len)
		r = LATCH_EIO;
	else if (h->deflating)
		r = inflate_packed(h, out);
	if (r == 0 && fflush(out) != 0)
		r = LATCH_EIO;
	if (r == LATCH_ENOMEM)
		return latch_error_set(err, r, "out of memory");
	return r < 0 ? latch_error_set(err, r, "writing the output failed") : 0;
}

void held_output_done(struct held_output *h)
{
	if (h->deflating)
		deflateEnd(&h->z);
	h->deflating = false;
	latch_buf_done(&h->head);
	latch_buf_done(&h->text);
	latch_buf_done(&h->packed);
}
