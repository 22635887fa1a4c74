#include "latch/http.h"

#include <curl/curl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/random.h>
#include <time.h>

#include "latch/clock.h"

struct latch_http_client {
	CURL *curl;
	struct latch_http_options opts;
	char *ca_file, *ca_pem, *server_name, *client_cert_file, *client_key_file, *client_cert_pem, *client_key_pem;
	unsigned long long rng;
};

struct attempt {
	struct latch_http_response *resp;
	const struct latch_http_request *req;
	CURL *curl;
	size_t max_body;
	bool over_cap;
	bool streamed;      /* the sink had bytes */
	bool sink_refused;
	long retry_after_s;
};

static unsigned long long now_ms(void)
{
	return (unsigned long long)(latch_monotonic_s() * 1000.0);
}

static void sleep_ms(unsigned long long ms)
{
	struct timespec ts = { (time_t)(ms / 1000), (long)(ms % 1000) * 1000000L };
	while (nanosleep(&ts, &ts) < 0)
		;
}

static unsigned long long next_random(struct latch_http_client *c)
{
	/* xorshift64: jitter only needs to differ between processes, not be unpredictable. */
	c->rng ^= c->rng << 13;
	c->rng ^= c->rng >> 7;
	c->rng ^= c->rng << 17;
	return c->rng;
}

unsigned latch_retry_delay_ms(const struct latch_retry_policy *policy, unsigned retry, unsigned long long random)
{
	unsigned long long ceiling = policy->base_delay_ms;
	for (unsigned i = 0; i < retry && ceiling < policy->max_delay_ms; i++)
		ceiling *= 2;
	if (ceiling > policy->max_delay_ms)
		ceiling = policy->max_delay_ms;
	return (unsigned)(random % (ceiling + 1));
}

static int dup_opt(const char *src, char **dst)
{
	if (!src)
		return 0;
	*dst = strdup(src);
	return *dst ? 0 : LATCH_ENOMEM;
}

static pthread_once_t curl_once = PTHREAD_ONCE_INIT;
static CURLcode curl_started;

static void start_curl(void)
{
	curl_started = curl_global_init(CURL_GLOBAL_DEFAULT);
}

int latch_http_client_new(const struct latch_http_options *opts, struct latch_http_client **ret,
			  struct latch_error *err)
{
	pthread_once(&curl_once, start_curl);
	if (curl_started != CURLE_OK)
		return latch_error_set(err, LATCH_ENOMEM, "initialising libcurl failed");
	struct latch_http_client *c = calloc(1, sizeof(*c));
	if (!c)
		return latch_error_set(err, LATCH_ENOMEM, "out of memory");
	c->opts = *opts;
	if (c->opts.retry.max_attempts == 0)
		c->opts.retry.max_attempts = 1;
	c->curl = curl_easy_init();
	if (!c->curl || dup_opt(opts->tls.ca_file, &c->ca_file) < 0 || dup_opt(opts->tls.ca_pem, &c->ca_pem) < 0 ||
	    dup_opt(opts->tls.server_name, &c->server_name) < 0 ||
	    dup_opt(opts->tls.client_cert_file, &c->client_cert_file) < 0 ||
	    dup_opt(opts->tls.client_key_file, &c->client_key_file) < 0 ||
	    dup_opt(opts->tls.client_cert_pem, &c->client_cert_pem) < 0 || dup_opt(opts->tls.client_key_pem, &c->client_key_pem) < 0) {
		latch_http_client_free(c);
		return latch_error_set(err, LATCH_ENOMEM, "out of memory");
	}
	if (getrandom(&c->rng, sizeof(c->rng), 0) != (ssize_t)sizeof(c->rng) || c->rng == 0)
		c->rng = now_ms() | 1;
	*ret = c;
	return 0;
}

int latch_http_client_clone(const struct latch_http_client *c, struct latch_http_client **ret, struct latch_error *err)
{
	struct latch_http_options o = c->opts;
	o.tls.ca_file = c->ca_file;
	o.tls.ca_pem = c->ca_pem;
	o.tls.server_name = c->server_name;
	o.tls.client_cert_file = c->client_cert_file;
	o.tls.client_key_file = c->client_key_file;
	o.tls.client_cert_pem = c->client_cert_pem;
	o.tls.client_key_pem = c->client_key_pem;
	return latch_http_client_new(&o, ret, err);
}

void latch_http_client_free(struct latch_http_client *c)
{
	if (!c)
		return;
	if (c->curl)
		curl_easy_cleanup(c->curl);
	free(c->ca_file);
	free(c->ca_pem);
	free(c->server_name);
	free(c->client_cert_file);
	free(c->client_key_file);
	free(c->client_cert_pem);
	latch_secret_free(c->client_key_pem);
	free(c);
}

void latch_http_client_freep(struct latch_http_client **c)
{
	latch_http_client_free(*c);
	*c = NULL;
}

void latch_http_client_set_deadline(struct latch_http_client *c, unsigned deadline_ms)
{
	c->opts.retry.deadline_ms = deadline_ms;
}

void latch_http_response_done(struct latch_http_response *resp)
{
	latch_buf_done(&resp->body);
	free(resp->content_type);
	resp->content_type = NULL;
	resp->status = 0;
}

static size_t on_body(char *ptr, size_t size, size_t nmemb, void *userdata)
{
	struct attempt *a = userdata;
	size_t n = size * nmemb;
	long status = 0;
	bool answered = a->req->sink && curl_easy_getinfo(a->curl, CURLINFO_RESPONSE_CODE, &status) == CURLE_OK;
	if (answered && status >= 200 && status < 300) {
		a->streamed = true;
		a->sink_refused = !a->req->sink(ptr, n, a->req->sink_arg);
		return a->sink_refused ? 0 : n;
	}
	if (a->resp->body.len + n > a->max_body || latch_buf_append(&a->resp->body, ptr, n) < 0) {
		a->over_cap = true;
		return 0;
	}
	return n;
}

static bool header_is(const char *line, size_t n, const char *name)
{
	size_t k = strlen(name);
	return n > k + 1 && strncasecmp(line, name, k) == 0 && line[k] == ':';
}

static char *header_value(const char *line, size_t n, size_t name_len)
{
	const char *v = line + name_len + 1;
	const char *end = line + n;
	while (v < end && (*v == ' ' || *v == '\t'))
		v++;
	while (end > v && (end[-1] == '\r' || end[-1] == '\n' || end[-1] == ' '))
		end--;
	return strndup(v, (size_t)(end - v));
}

static size_t on_header(char *line, size_t size, size_t nmemb, void *userdata)
{
	struct attempt *a = userdata;
	size_t n = size * nmemb;
	if (header_is(line, n, "Content-Type")) {
		free(a->resp->content_type);
		a->resp->content_type = header_value(line, n, strlen("Content-Type"));
	} else if (header_is(line, n, "Retry-After")) {
		_cleanup_free_ char *v = header_value(line, n, strlen("Retry-After"));
		char *end = NULL;
		long s = v ? strtol(v, &end, 10) : -1;
		a->retry_after_s = (end && end != v && *end == '\0' && s >= 0 && s < 3600) ? s : 0;
	}
	return n;
}

/* libcurl keeps copies of header strings; zero them, they may carry a token. */
static void free_headers(struct curl_slist *list)
{
	for (struct curl_slist *h = list; h; h = h->next)
		explicit_bzero(h->data, strlen(h->data));
	curl_slist_free_all(list);
}

static int build_headers(const struct latch_http_request *req, struct curl_slist **ret)
{
	struct curl_slist *list = NULL;
	for (size_t i = 0; i < req->n_headers; i++) {
		struct curl_slist *next = curl_slist_append(list, req->headers[i]);
		if (!next) {
			free_headers(list);
			return LATCH_ENOMEM;
		}
		list = next;
	}
	/* An empty Expect: avoids libcurl's 1 s wait for "100 Continue" on larger bodies. */
	struct curl_slist *next = curl_slist_append(list, "Expect:");
	if (!next) {
		free_headers(list);
		return LATCH_ENOMEM;
	}
	*ret = next;
	return 0;
}

/* With a server name that differs from the URL's host, the request goes to the name (so
 * libcurl sends it as SNI and verifies the certificate against it) but connects to the
 * URL's host and port. */
static int redirect_to_server_name(struct latch_http_client *c, const char *url, char **ret_url,
				   struct curl_slist **ret_connect_to)
{
	*ret_url = NULL;
	*ret_connect_to = NULL;
	if (!c->server_name)
		return 0;
	CURLU *u = curl_url();
	char *host = NULL, *port = NULL;
	int r = LATCH_EINVAL;
	if (!u || curl_url_set(u, CURLUPART_URL, url, 0) != CURLUE_OK ||
	    curl_url_get(u, CURLUPART_HOST, &host, 0) != CURLUE_OK ||
	    curl_url_get(u, CURLUPART_PORT, &port, CURLU_DEFAULT_PORT) != CURLUE_OK ||
	    curl_url_set(u, CURLUPART_HOST, c->server_name, 0) != CURLUE_OK ||
	    curl_url_get(u, CURLUPART_URL, ret_url, 0) != CURLUE_OK)
		goto done;
	struct latch_buf b = LATCH_BUF_INIT(4096);
	if (latch_buf_printf(&b, "%s:%s:%s:%s", c->server_name, port, host, port) == 0)
		*ret_connect_to = curl_slist_append(NULL, latch_buf_str(&b));
	latch_buf_done(&b);
	r = *ret_connect_to ? 0 : LATCH_ENOMEM;
done:
	curl_free(host);
	curl_free(port);
	curl_url_cleanup(u);
	return r;
}

static void set_tls(struct latch_http_client *c)
{
	CURL *h = c->curl;
	if (c->ca_file)
		curl_easy_setopt(h, CURLOPT_CAINFO, c->ca_file);
	if (c->ca_pem) {
		struct curl_blob blob = { c->ca_pem, strlen(c->ca_pem), CURL_BLOB_COPY };
		curl_easy_setopt(h, CURLOPT_CAINFO_BLOB, &blob);
	}
	if (c->client_cert_file)
		curl_easy_setopt(h, CURLOPT_SSLCERT, c->client_cert_file);
	if (c->client_key_file)
		curl_easy_setopt(h, CURLOPT_SSLKEY, c->client_key_file);
	if (c->client_cert_pem) {
		struct curl_blob blob = { c->client_cert_pem, strlen(c->client_cert_pem), CURL_BLOB_COPY };
		curl_easy_setopt(h, CURLOPT_SSLCERT_BLOB, &blob);
		curl_easy_setopt(h, CURLOPT_SSLCERTTYPE, "PEM");
	}
	if (c->client_key_pem) {
		struct curl_blob blob = { c->client_key_pem, strlen(c->client_key_pem), CURL_BLOB_COPY };
		curl_easy_setopt(h, CURLOPT_SSLKEY_BLOB, &blob);
		curl_easy_setopt(h, CURLOPT_SSLKEYTYPE, "PEM");
	}
	long verify = c->opts.tls.insecure_skip_verify ? 0L : 1L;
	curl_easy_setopt(h, CURLOPT_SSL_VERIFYPEER, verify);
	curl_easy_setopt(h, CURLOPT_SSL_VERIFYHOST, verify ? 2L : 0L);
}

static int set_stall_timeout(void *clientp, curl_socket_t fd, curlsocktype purpose)
{
	const struct latch_http_client *c = clientp;
	unsigned ms = c->opts.stall_timeout_ms;
	if (purpose == CURLSOCKTYPE_IPCXN && ms) /* best effort: without it the kernel's own, about 15 min */
		(void)setsockopt(fd, IPPROTO_TCP, TCP_USER_TIMEOUT, &ms, sizeof(ms));
	return CURL_SOCKOPT_OK;
}

static void set_request(struct latch_http_client *c, const struct latch_http_request *req, const char *url,
			struct curl_slist *headers, struct curl_slist *connect_to, struct attempt *a,
			unsigned long long timeout_ms, char *errbuf)
{
	CURL *h = c->curl;
	curl_easy_reset(h);
	curl_easy_setopt(h, CURLOPT_URL, url);
	curl_easy_setopt(h, CURLOPT_CUSTOMREQUEST, req->method);
	curl_easy_setopt(h, CURLOPT_HTTPHEADER, headers);
	curl_easy_setopt(h, CURLOPT_CONNECT_TO, connect_to);
	curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
	curl_easy_setopt(h, CURLOPT_PROTOCOLS_STR, "http,https");
	curl_easy_setopt(h, CURLOPT_FOLLOWLOCATION, 0L);
	curl_easy_setopt(h, CURLOPT_ERRORBUFFER, errbuf);
	curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, on_body);
	curl_easy_setopt(h, CURLOPT_WRITEDATA, a);
	curl_easy_setopt(h, CURLOPT_HEADERFUNCTION, on_header);
	curl_easy_setopt(h, CURLOPT_HEADERDATA, a);
	curl_easy_setopt(h, CURLOPT_CONNECTTIMEOUT_MS, (long)c->opts.connect_timeout_ms);
	curl_easy_setopt(h, CURLOPT_SOCKOPTFUNCTION, set_stall_timeout);
	curl_easy_setopt(h, CURLOPT_SOCKOPTDATA, c);
	curl_easy_setopt(h, CURLOPT_TIMEOUT_MS, (long)timeout_ms);
	if (req->body.ptr) {
		curl_easy_setopt(h, CURLOPT_POSTFIELDS, req->body.ptr);
		curl_easy_setopt(h, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)req->body.len);
	} else if (strcmp(req->method, "GET") == 0) {
		curl_easy_setopt(h, CURLOPT_HTTPGET, 1L);
	}
	set_tls(c);
}

/* The one place a CURLcode becomes a latch code. */
static int curl_code_to_latch(CURLcode cc, bool over_cap)
{
	if (over_cap)
		return LATCH_ELIMIT;
	switch (cc) {
	case CURLE_OK: return 0;
	case CURLE_OPERATION_TIMEDOUT: return LATCH_ETIMEOUT;
	case CURLE_PEER_FAILED_VERIFICATION:
	case CURLE_SSL_CONNECT_ERROR:
	case CURLE_SSL_CERTPROBLEM:
	case CURLE_SSL_CIPHER:
	case CURLE_SSL_CACERT_BADFILE:
	case CURLE_SSL_ISSUER_ERROR:
	case CURLE_SSL_PINNEDPUBKEYNOTMATCH:
	case CURLE_SSL_CRL_BADFILE:
	case CURLE_USE_SSL_FAILED:
	case CURLE_SSL_ENGINE_NOTFOUND:
	case CURLE_SSL_ENGINE_SETFAILED: return LATCH_ETLS;
	case CURLE_OUT_OF_MEMORY: return LATCH_ENOMEM;
	case CURLE_URL_MALFORMAT:
	case CURLE_UNSUPPORTED_PROTOCOL: return LATCH_EINVAL;
	default: return LATCH_ECONNECT;
	}
}

int latch_http_status_code(long status)
{
	switch (status) {
	case 400:
	case 422: return LATCH_EINVAL;
	case 401:
	case 403: return LATCH_EFORBIDDEN;
	case 404: return LATCH_ENOTFOUND;
	case 409: return LATCH_ECONFLICT;
	default: return LATCH_EHTTP;
	}
}

static bool transport_retryable(int code)
{
	return code == LATCH_ECONNECT || code == LATCH_ETIMEOUT;
}

char *latch_url_without_userinfo(const char *url)
{
	const char *scheme = strstr(url, "://");
	const char *authority = scheme ? scheme + 3 : url;
	const char *end = authority + strcspn(authority, "/?#");
	const char *at = memrchr(authority, '@', (size_t)(end - authority));
	if (!at)
		return strdup(url);
	size_t head = (size_t)(authority - url);
	size_t tail = strlen(at + 1);
	char *out = malloc(head + tail + 1);
	if (out) {
		memcpy(out, url, head);
		memcpy(out + head, at + 1, tail + 1);
	}
	return out;
}

/* Scheme, host and port of a URL ("https://u@Host:443/x" -> "https", "host", 443); false
 * when it is not scheme://authority. */
static bool url_origin(const char *url, char scheme[16], char host[256], long *port)
{
	const char *sep = strstr(url, "://");
	if (!sep || sep == url || (size_t)(sep - url) >= 16)
		return false;
	snprintf(scheme, 16, "%.*s", (int)(sep - url), url);
	const char *authority = sep + 3, *end = authority + strcspn(authority, "/?#");
	const char *at = memrchr(authority, '@', (size_t)(end - authority));
	const char *h = at ? at + 1 : authority;
	const char *h_end = *h == '[' ? memchr(h, ']', (size_t)(end - h)) : NULL;
	h_end = h_end ? h_end + 1 : h;
	const char *colon = memchr(h_end, ':', (size_t)(end - h_end));
	const char *host_end = colon ? colon : end;
	if (host_end == h || (size_t)(host_end - h) >= 256)
		return false;
	snprintf(host, 256, "%.*s", (int)(host_end - h), h);
	static const struct {
		const char *scheme;
		long port;
	} defaults[] = { { "http", 80 }, { "https", 443 }, { "ssh", 22 }, { "git", 9418 } };
	*port = 0;
	for (size_t i = 0; i < ELEMENTSOF(defaults); i++)
		if (strcasecmp(scheme, defaults[i].scheme) == 0)
			*port = defaults[i].port;
	if (colon) {
		char *port_end;
		*port = strtol(colon + 1, &port_end, 10);
		if (port_end != end || *port <= 0 || *port > 65535)
			return false;
	}
	return true;
}

bool latch_url_same_origin(const char *a, const char *b)
{
	char scheme_a[16], scheme_b[16], host_a[256], host_b[256];
	long port_a, port_b;
	return url_origin(a, scheme_a, host_a, &port_a) && url_origin(b, scheme_b, host_b, &port_b) &&
	       strcasecmp(scheme_a, scheme_b) == 0 && strcasecmp(host_a, host_b) == 0 && port_a == port_b;
}

/* The URL as errors show it, never with credentials in it; *owned is freed by the caller. */
static const char *shown_url(const char *url, char **owned)
{
	*owned = latch_url_without_userinfo(url);
	return *owned ? *owned : "(the URL)";
}

static int transport_error(struct latch_http_client *c, const struct latch_http_request *req, int code,
			   const char *errbuf, unsigned attempts, struct latch_error *err)
{
	const char *detail = errbuf[0] ? errbuf : latch_code_name(code);
	_cleanup_free_ char *shown = NULL;
	if (code == LATCH_ELIMIT)
		return latch_error_set(err, code, "%s %s: response body larger than the limit of %zu bytes",
				       req->method, shown_url(req->url, &shown), c->opts.max_body);
	if (code == LATCH_ETLS)
		return latch_error_set(err, code, "%s %s: TLS verification of '%s' against %s%s failed: %s", req->method,
				       shown_url(req->url, &shown), c->server_name ? c->server_name : "the URL's host",
				       c->ca_file ? "CA file " : c->ca_pem ? "the configured CA" : "the system CA store",
				       c->ca_file ? c->ca_file : "", detail);
	return latch_error_set(err, code, "%s %s: %s (after %u attempt%s)", req->method, shown_url(req->url, &shown),
			       detail, attempts, attempts == 1 ? "" : "s");
}

/* The shortest time worth giving one more attempt before the deadline. */
#define MIN_ATTEMPT_MS 200ull

/* Wait before the next attempt; false when the deadline leaves no room for one. A wait that
 * would cross the deadline is shortened, so the last attempt still happens before it. */
static bool backoff(struct latch_http_client *c, unsigned retry, long retry_after_s, unsigned long long deadline)
{
	unsigned long long wait = latch_retry_delay_ms(&c->opts.retry, retry, next_random(c));
	if (retry_after_s > 0 && (unsigned long long)retry_after_s * 1000ull > wait)
		wait = (unsigned long long)retry_after_s * 1000ull;
	if (deadline) {
		unsigned long long now = now_ms();
		if (now + MIN_ATTEMPT_MS >= deadline)
			return false;
		if (now + wait + MIN_ATTEMPT_MS > deadline)
			wait = deadline - now - MIN_ATTEMPT_MS;
	}
	sleep_ms(wait);
	return true;
}

/* Attempts until a response the caller does not want retried, a failure that is not worth
 * retrying, the attempt count or the deadline. When the deadline cuts off a retry, the last
 * answer the server gave is returned: it says more than "timed out". */
static int run_attempts(struct latch_http_client *c, const struct latch_http_request *req, const char *url,
			struct curl_slist *headers, struct curl_slist *connect_to, struct latch_http_response *resp,
			struct latch_error *err)
{
	const struct latch_retry_policy *p = &c->opts.retry;
	unsigned long long deadline = p->deadline_ms ? now_ms() + p->deadline_ms : 0;
	struct latch_http_response previous = { 0 };
	char errbuf[CURL_ERROR_SIZE];
	for (unsigned attempt = 0;; attempt++) {
		latch_buf_init(&resp->body, c->opts.max_body, true);
		resp->attempts = attempt + 1;
		struct attempt a = { .resp = resp, .req = req, .curl = c->curl, .max_body = c->opts.max_body };
		unsigned long long timeout = c->opts.request_timeout_ms;
		if (deadline) {
			unsigned long long now = now_ms();
			unsigned long long left = deadline > now ? deadline - now : 1;
			if (left < timeout || timeout == 0)
				timeout = left;
		}
		if (timeout == 0)
			timeout = 1; /* 0 would mean no timeout at all to libcurl */
		errbuf[0] = '\0';
		set_request(c, req, url, headers, connect_to, &a, timeout, errbuf);
		CURLcode cc = curl_easy_perform(c->curl);
		int code = a.sink_refused ? LATCH_EPARSE : curl_code_to_latch(cc, a.over_cap);
		bool last = attempt + 1 >= p->max_attempts;
		if (code == 0) {
			curl_easy_getinfo(c->curl, CURLINFO_RESPONSE_CODE, &resp->status);
			bool retry = req->retry_status && req->retry_status(resp->status, req->userdata);
			if (!retry || last || !backoff(c, attempt, a.retry_after_s, deadline)) {
				latch_http_response_done(&previous);
				return 0;
			}
			latch_http_response_done(&previous);
			previous = *resp;
			*resp = (struct latch_http_response){ 0 };
			continue;
		}
		latch_http_response_done(resp);
		if (transport_retryable(code) && !a.streamed && !last && backoff(c, attempt, 0, deadline))
			continue;
		if (previous.status && code == LATCH_ETIMEOUT) {
			*resp = previous;
			return 0;
		}
		latch_http_response_done(&previous);
		if (code == LATCH_ETIMEOUT && deadline && now_ms() >= deadline) {
			_cleanup_free_ char *shown = NULL;
			return latch_error_set(err, code, "%s %s: no answer within the deadline of %u ms (%u attempt%s)",
					       req->method, shown_url(req->url, &shown), p->deadline_ms, attempt + 1,
					       attempt == 0 ? "" : "s");
		}
		return transport_error(c, req, code, errbuf, attempt + 1, err);
	}
}

int latch_http_do(struct latch_http_client *c, const struct latch_http_request *req,
		  struct latch_http_response *ret, struct latch_error *err)
{
	struct curl_slist *headers = NULL, *connect_to = NULL;
	char *url = NULL;
	int r = build_headers(req, &headers);
	if (r < 0)
		return latch_error_set(err, r, "out of memory");
	r = redirect_to_server_name(c, req->url, &url, &connect_to);
	if (r < 0) {
		free_headers(headers);
		_cleanup_free_ char *shown = NULL;
		return latch_error_set(err, r, "cannot use TLS server name '%s' with URL '%s'", c->server_name,
				       shown_url(req->url, &shown));
	}
	struct latch_http_response resp = { 0 };
	r = run_attempts(c, req, url ? url : req->url, headers, connect_to, &resp, err);
	/* Nothing may keep a pointer into the request once it returns. */
	curl_easy_reset(c->curl);
	free_headers(headers);
	curl_slist_free_all(connect_to);
	curl_free(url);
	if (r < 0) {
		latch_http_response_done(&resp);
		return r;
	}
	*ret = resp;
	return 0;
}
