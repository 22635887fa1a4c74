/* The HTTP client, on libcurl (the only file that speaks CURLcode). One client keeps one
 * connection pool and the TLS settings; each request runs under a retry policy with
 * exponential backoff and full jitter, a total deadline and a response-body cap.
 *
 * Transport failures (connect, reset, per-attempt timeout) are retried; TLS failures and the
 * body cap are not. Whether an HTTP status is retried is the caller's decision, through
 * request.retry_status. latch_http_do() returns 0 whenever a response arrived, whatever its
 * status, and the response body buffer is secret (zeroed on release).
 *
 * Lifecycle: latch_http_client_new() / latch_http_client_free(); a response is released
 * with latch_http_response_done(). A client is not thread-safe. */
#pragma once

#include <stdbool.h>

#include "latch/buf.h"
#include "latch/error.h"

struct latch_tls_options {
	const char *ca_file;        /* PEM bundle; NULL uses the system store */
	const char *ca_pem;         /* PEM text, instead of ca_file */
	const char *server_name;    /* name to verify (and send as SNI) instead of the URL's host */
	const char *client_cert_file;
	const char *client_key_file;
	const char *client_cert_pem;  /* PEM text, instead of the files (kubeconfig *-data) */
	const char *client_key_pem;   /* secret: zeroed when the client is freed */
	bool insecure_skip_verify;  /* only when a user asked for it; the program warns */
};

struct latch_retry_policy {
	unsigned max_attempts;      /* including the first; 1 = no retry */
	unsigned base_delay_ms;     /* backoff before retry n is random in [0, min(max, base*2^n)] */
	unsigned max_delay_ms;
	unsigned deadline_ms;       /* over all attempts and waits; 0 = none */
};

struct latch_http_options {
	struct latch_tls_options tls;
	struct latch_retry_policy retry;
	unsigned connect_timeout_ms;
	unsigned request_timeout_ms; /* one attempt */
	/* A connection whose sent bytes stay unacknowledged this long is dead (TCP_USER_TIMEOUT):
	 * a link cut under a kept-alive connection fails the attempt, which is then retried,
	 * instead of holding it to request_timeout_ms. A slow server still acknowledges. */
	unsigned stall_timeout_ms;
	size_t max_body;             /* response body cap */
};

#define LATCH_HTTP_OPTIONS_DEFAULT                                                       \
	((struct latch_http_options){ .retry = { 5, 250, 8000, 60000 }, .connect_timeout_ms = 5000, \
				      .request_timeout_ms = 30000, .stall_timeout_ms = 10000, .max_body = 8u << 20 })

/* The latch error code for an HTTP status the caller did not accept: 400 and 422 LATCH_EINVAL,
 * 401 and 403 LATCH_EFORBIDDEN, 404 LATCH_ENOTFOUND, 409 LATCH_ECONFLICT, else LATCH_EHTTP. */
int latch_http_status_code(long status);

/* A copy of url without its user:password@ part, for errors and logs (NULL when out of
 * memory). "https://u:p@host/x" -> "https://host/x". */
char *latch_url_without_userinfo(const char *url);
/* Whether two URLs have the same scheme, host and port (the default port when none). */
bool latch_url_same_origin(const char *a, const char *b);

struct latch_http_request {
	const char *method;         /* GET, POST, PUT, PATCH, DELETE */
	const char *url;
	const char *const *headers; /* "Name: value"; values may be secret, they are zeroed */
	size_t n_headers;
	struct latch_view body;
	/* Return true to retry this status (e.g. 429, 5xx); NULL retries no status. */
	bool (*retry_status)(long status, void *userdata);
	void *userdata;
	/* With a sink, a 2xx answer's body goes to it as it arrives instead of into the response
	 * (the body cap is then the sink's to keep); it returns false to stop the transfer, which
	 * fails with LATCH_EPARSE. An attempt that fails once the sink had bytes is not retried:
	 * they cannot be taken back. */
	bool (*sink)(const char *data, size_t len, void *sink_arg);
	void *sink_arg;
};

struct latch_http_response {
	long status;
	struct latch_buf body;
	unsigned attempts;
	char *content_type;
};

struct latch_http_client;

int latch_http_client_new(const struct latch_http_options *opts, struct latch_http_client **ret,
			  struct latch_error *err);
/* A new client with the same options and its own connection: one per thread. */
int latch_http_client_clone(const struct latch_http_client *client, struct latch_http_client **ret, struct latch_error *err);
void latch_http_client_free(struct latch_http_client *client);
void latch_http_client_freep(struct latch_http_client **client);

/* Change the total deadline for the requests that follow (0 = none). */
void latch_http_client_set_deadline(struct latch_http_client *client, unsigned deadline_ms);

int latch_http_do(struct latch_http_client *client, const struct latch_http_request *req,
		  struct latch_http_response *ret, struct latch_error *err);
void latch_http_response_done(struct latch_http_response *resp);

/* The delay before retry number `retry` (0-based) under policy, given a random value. */
unsigned latch_retry_delay_ms(const struct latch_retry_policy *policy, unsigned retry, unsigned long long random);
