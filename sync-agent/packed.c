#include "packed.h"

#include <stdlib.h>
#include <string.h>
#include <zlib.h>

#include "latch/base64.h"
#include "latch/buf.h"

#define UNPACKED_MAX (64u << 20)
#define GZIP_WINDOW (15 + 16)           /* deflate's largest window, gzip framing */
#define GZIP_OR_ZLIB_WINDOW (15 + 32)   /* inflate: either framing */

static int gzip(const char *text, size_t len, struct latch_buf *out)
{
	z_stream z = { 0 };
	if (deflateInit2(&z, Z_BEST_COMPRESSION, Z_DEFLATED, GZIP_WINDOW, 8, Z_DEFAULT_STRATEGY) != Z_OK)
		return LATCH_ENOMEM;
	uLong bound = deflateBound(&z, len);
	unsigned char *dst = malloc(bound);
	z.next_in = (Bytef *)text;
	z.avail_in = (uInt)len;
	z.next_out = dst;
	z.avail_out = (uInt)bound;
	int r = LATCH_ENOMEM;
	if (dst && deflate(&z, Z_FINISH) == Z_STREAM_END)
		r = latch_buf_append(out, dst, z.total_out);
	deflateEnd(&z);
	free(dst);
	return r;
}

static int gunzip(struct latch_view in, struct latch_buf *out)
{
	z_stream z = { 0 };
	if (inflateInit2(&z, GZIP_OR_ZLIB_WINDOW) != Z_OK)
		return LATCH_ENOMEM;
	z.next_in = (Bytef *)in.ptr;
	z.avail_in = (uInt)in.len;
	unsigned char chunk[16384];
	int zr = Z_OK, r = 0;
	while (r == 0 && zr == Z_OK) {
		z.next_out = chunk;
		z.avail_out = sizeof(chunk);
		zr = inflate(&z, Z_NO_FLUSH);
		if (zr == Z_OK || zr == Z_STREAM_END)
			r = latch_buf_append(out, chunk, sizeof(chunk) - z.avail_out);
		else
			r = LATCH_EPARSE;
		if (zr == Z_OK && z.avail_in == 0 && z.avail_out != 0)
			r = LATCH_EPARSE; /* the text ends inside the stream */
	}
	inflateEnd(&z);
	return r;
}

json_t *sync_packed_from_text(const char *text)
{
	struct latch_buf zipped = LATCH_BUF_INIT(UNPACKED_MAX), b64 = LATCH_BUF_INIT(2 * UNPACKED_MAX);
	json_t *packed = NULL;
	if (gzip(text, strlen(text), &zipped) == 0 && latch_base64_encode(latch_buf_view(&zipped), false, &b64) == 0)
		packed = json_string(latch_buf_str(&b64));
	latch_buf_done(&zipped);
	latch_buf_done(&b64);
	return packed;
}

json_t *sync_packed_to_json(const char *packed)
{
	struct latch_buf zipped = LATCH_BUF_INIT(UNPACKED_MAX), text = LATCH_BUF_INIT(UNPACKED_MAX);
	json_t *v = NULL;
	if (packed && latch_base64_decode(latch_view_str(packed), false, &zipped) == 0 &&
	    gunzip(latch_buf_view(&zipped), &text) == 0)
		v = json_loadb(text.ptr ? text.ptr : "", text.len, 0, NULL);
	latch_buf_done(&zipped);
	latch_buf_done(&text);
	return v;
}
