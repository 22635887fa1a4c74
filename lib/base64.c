#include "latch/base64.h"

#include "latch/error.h"

static const char std_alphabet[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
static const char url_alphabet[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

int latch_base64_encode(struct latch_view in, bool url, struct latch_buf *out)
{
	const char *a = url ? url_alphabet : std_alphabet;
	const unsigned char *p = (const unsigned char *)in.ptr;
	int r = 0;
	size_t i = 0;
	for (; i + 3 <= in.len && r == 0; i += 3) {
		unsigned v = (unsigned)p[i] << 16 | (unsigned)p[i + 1] << 8 | p[i + 2];
		char q[4] = { a[v >> 18], a[(v >> 12) & 63], a[(v >> 6) & 63], a[v & 63] };
		r = latch_buf_append(out, q, 4);
	}
	size_t rest = in.len - i;
	if (r == 0 && rest) {
		unsigned v = (unsigned)p[i] << 16 | (rest == 2 ? (unsigned)p[i + 1] << 8 : 0);
		char q[4] = { a[v >> 18], a[(v >> 12) & 63], rest == 2 ? a[(v >> 6) & 63] : '=', '=' };
		r = latch_buf_append(out, q, url ? rest + 1 : 4);
	}
	return r;
}

static int decode_char(char c, bool url)
{
	if (c >= 'A' && c <= 'Z')
		return c - 'A';
	if (c >= 'a' && c <= 'z')
		return c - 'a' + 26;
	if (c >= '0' && c <= '9')
		return c - '0' + 52;
	if (c == (url ? '-' : '+'))
		return 62;
	if (c == (url ? '_' : '/'))
		return 63;
	return -1;
}

int latch_base64_decode(struct latch_view in, bool url, struct latch_buf *out)
{
	size_t len = in.len;
	while (len > 0 && in.ptr[len - 1] == '=' && in.len - len < 2)
		len--;
	if (len % 4 == 1)
		return LATCH_EINVAL;
	unsigned acc = 0;
	int bits = 0;
	for (size_t i = 0; i < len; i++) {
		int d = decode_char(in.ptr[i], url);
		if (d < 0)
			return LATCH_EINVAL;
		acc = (acc << 6) | (unsigned)d;
		bits += 6;
		if (bits >= 8) {
			bits -= 8;
			int r = latch_buf_putc(out, (char)((acc >> bits) & 0xff));
			if (r < 0)
				return r;
		}
	}
	return 0;
}
