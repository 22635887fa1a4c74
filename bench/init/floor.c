/* The floor bench/init measures latch-init against: the same Vault login and reads, with the
 * same parallelism (up to 8 connections), made by the leanest client libcurl allows. No
 * configuration, templates, renewal state or atomic writes: each response's raw body goes to
 * OUT_DIR/s<i>. Whatever latch-init takes beyond this is latch's own.
 *
 *   latch-init-floor VAULT_ADDR CA_FILE ROLE TOKEN_FILE OUT_DIR PATH...
 */
#include <curl/curl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MAX_CONNECTIONS 8
#define MAX_PATHS 64

static CURL *vault_request(const char *addr, const char *ca_file, const char *path,
			   struct curl_slist *headers, FILE *out)
{
	char url[1024];
	CURL *h = curl_easy_init();
	snprintf(url, sizeof(url), "%s/v1/%s", addr, path);
	curl_easy_setopt(h, CURLOPT_URL, url);
	curl_easy_setopt(h, CURLOPT_CAINFO, ca_file);
	curl_easy_setopt(h, CURLOPT_HTTPHEADER, headers);
	curl_easy_setopt(h, CURLOPT_WRITEDATA, out);
	curl_easy_setopt(h, CURLOPT_FAILONERROR, 1L);
	return h;
}

/* POST auth/kubernetes/login; the client token is cut out of the response by hand. */
static int login(const char *addr, const char *ca_file, const char *role, const char *token_file, char *token,
		 size_t token_size)
{
	char jwt[4096], body[4300], response[8192];
	FILE *f = fopen(token_file, "r");
	size_t n = f ? fread(jwt, 1, sizeof(jwt) - 1, f) : 0;
	if (f)
		fclose(f);
	jwt[n] = '\0';
	jwt[strcspn(jwt, "\n")] = '\0';
	snprintf(body, sizeof(body), "{\"role\":\"%s\",\"jwt\":\"%s\"}", role, jwt);
	FILE *out = fmemopen(response, sizeof(response) - 1, "w");
	CURL *h = vault_request(addr, ca_file, "auth/kubernetes/login", NULL, out);
	curl_easy_setopt(h, CURLOPT_POSTFIELDS, body);
	CURLcode rc = curl_easy_perform(h);
	long written = ftell(out);
	fclose(out);
	curl_easy_cleanup(h);
	response[written > 0 ? written : 0] = '\0';
	const char *start = strstr(response, "\"client_token\":\"");
	if (rc != CURLE_OK || !start)
		return fprintf(stderr, "floor: login failed: %s\n", curl_easy_strerror(rc)), -1;
	start += strlen("\"client_token\":\"");
	snprintf(token, token_size, "X-Vault-Token: %.*s", (int)strcspn(start, "\""), start);
	return 0;
}

int main(int argc, char **argv)
{
	if (argc < 7 || argc - 6 > MAX_PATHS)
		return fputs("usage: latch-init-floor VAULT_ADDR CA_FILE ROLE TOKEN_FILE OUT_DIR PATH... (up to 64)\n",
			     stderr), 64;
	char token[512];
	curl_global_init(CURL_GLOBAL_DEFAULT);
	if (login(argv[1], argv[2], argv[3], argv[4], token, sizeof(token)) != 0)
		return 1;
	struct curl_slist *headers = curl_slist_append(NULL, token);
	CURLM *multi = curl_multi_init();
	curl_multi_setopt(multi, CURLMOPT_MAX_HOST_CONNECTIONS, (long)MAX_CONNECTIONS);
	int n_paths = argc - 6;
	FILE *outs[MAX_PATHS];
	for (int i = 0; i < n_paths; i++) {
		char file[1024];
		snprintf(file, sizeof(file), "%s/s%d", argv[5], i);
		outs[i] = fopen(file, "w");
		curl_multi_add_handle(multi, vault_request(argv[1], argv[2], argv[6 + i], headers, outs[i]));
	}
	int running = 1, failed = 0;
	while (running) {
		curl_multi_perform(multi, &running);
		if (running)
			curl_multi_poll(multi, NULL, 0, 1000, NULL);
	}
	CURLMsg *msg;
	int left;
	while ((msg = curl_multi_info_read(multi, &left)))
		if (msg->msg == CURLMSG_DONE && msg->data.result != CURLE_OK)
			failed = fprintf(stderr, "floor: a read failed: %s\n", curl_easy_strerror(msg->data.result));
	for (int i = 0; i < n_paths; i++)
		fclose(outs[i]);
	return failed ? 1 : 0;
}
