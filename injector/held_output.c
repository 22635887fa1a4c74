#include "held_output.h"

#include <malloc.h>
#include <stdlib.h>
#include <string.h>

/* Text is deflated in pieces of this size: large enough for deflate to find its repeats. */
#define PIECE (256u << 10)
#define CHUNK 65536u

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

int held_output_init(struct held_output *h, size_t max, struct latch_error *err)
{
	*h = (struct held_output){ .max = max };
	latch_buf_init(&h->text, max, true);
	latch_buf_init(&h->packed, max, true);
	h->z.zalloc = zeroed_alloc;
	h->z.zfree = zeroing_free;
	if (deflateInit(&h->z, 1) != Z_OK)
		return latch_error_set(err, LATCH_ENOMEM, "out of memory");
	h->open = true;
	return 0;
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

int held_output_pack(struct held_output *h, bool finish, struct latch_error *err)
{
	if (latch_buf_error(&h->text) || h->total + h->text.len > h->max)
		return latch_error_set(err, LATCH_ELIMIT, "the output is larger than %zu bytes", h->max);
	if (!h->open || (!finish && h->text.len < PIECE))
		return 0;
	h->total += h->text.len;
	unsigned char *chunk = malloc(CHUNK);
	int r = chunk ? deflate_text(h, finish, chunk) : LATCH_ENOMEM;
	if (chunk)
		explicit_bzero(chunk, CHUNK);
	free(chunk);
	latch_buf_reset(&h->text);
	if (finish) {
		deflateEnd(&h->z);
		h->open = false;
	}
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

int held_output_write(const struct held_output *h, FILE *out, struct latch_error *err)
{
	z_stream z = { .zalloc = zeroed_alloc, .zfree = zeroing_free };
	z.next_in = (Bytef *)(h->packed.ptr ? h->packed.ptr : "");
	z.avail_in = (uInt)h->packed.len;
	unsigned char *chunk = malloc(CHUNK);
	if (!chunk || inflateInit(&z) != Z_OK) {
		free(chunk);
		return latch_error_set(err, LATCH_ENOMEM, "out of memory");
	}
	int r = inflate_to(&z, out, chunk);
	inflateEnd(&z);
	explicit_bzero(chunk, CHUNK);
	free(chunk);
	if (r == 0 && fflush(out) != 0)
		r = LATCH_EIO;
	return r < 0 ? latch_error_set(err, r, "writing the output failed") : 0;
}

void held_output_done(struct held_output *h)
{
	if (h->open)
		deflateEnd(&h->z);
	h->open = false;
	latch_buf_done(&h->text);
	latch_buf_done(&h->packed);
}
