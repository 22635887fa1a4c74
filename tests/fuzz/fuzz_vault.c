#include "fuzz.h"

#include <stdlib.h>

#include "init.h"
#include "latch/vault.h"

/* Every output format latch-init has, each reading the one fetched path "x". */
static const char config_text[] =
	"{\"version\":1,\"vault\":{\"address\":\"https://vault:8200\"},\"auth\":{\"role\":\"app\"},"
	"\"secrets\":["
	"{\"name\":\"map\",\"path\":\"x\"},"
	"{\"name\":\"json\",\"path\":\"x\",\"format\":\"json\"},"
	"{\"name\":\"env\",\"path\":\"x\",\"format\":\"env\"},"
	"{\"name\":\"dotenv\",\"path\":\"x\",\"format\":\"dotenv\"},"
	"{\"name\":\"raw\",\"path\":\"x\",\"format\":\"raw\",\"key\":\"password\"},"
	"{\"name\":\"pem\",\"path\":\"x\",\"format\":\"pem\"},"
	"{\"name\":\"tpl\",\"format\":\"template\",\"template\":"
	"\"{{ with secret \\\"x\\\" }}{{ range $k, $v := .Data }}{{ $k }}={{ $v }}\\n{{ end }}"
	"{{ .Data.data.password }}{{ .LeaseDuration }}{{ end }}\"}]}";

static struct latch_config *config(void)
{
	static struct latch_config c;
	static bool parsed;
	if (!parsed && latch_config_parse(latch_view_str(config_text), "fuzz", &c, NULL) < 0)
		abort();
	parsed = true;
	return &c;
}

static void render_every_format(const struct init_state *s)
{
	for (size_t i = 0; i < s->config->n_secrets; i++) {
		struct init_output files[3] = { 0 };
		size_t n = 0;
		struct latch_error err = LATCH_ERROR_INIT;
		if (init_render_secret(s, &s->config->secrets[i], files, &n, &err) == 0)
			init_outputs_done(files, n);
		latch_error_done(&err);
	}
}

/* One body as Vault might answer: its error text, its auth block, and as a secret's envelope
 * held by latch-init and rendered into every format. */
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct latch_view body = latch_view_make((const char *)data, size);
	struct latch_buf text = LATCH_BUF_INIT(1u << 20);
	latch_vault_errors_text(body, &text);
	latch_buf_done(&text);

	struct latch_json_limits lim = LATCH_JSON_LIMITS_DEFAULT;
	json_t *resp = NULL;
	if (latch_json_parse(body, "fuzz", &lim, &resp, NULL) < 0)
		return 0;
	struct latch_vault_auth auth = { 0 };
	latch_vault_auth_parse(resp, &auth);

	struct init_state s = { .config = config() };
	if (init_collect_requests(&s) < 0)
		abort();
	if (init_request_take(&s.requests[0], resp) == 0)
		render_every_format(&s);
	json_decref(s.requests[0].envelope);
	free(s.requests[0].lease_id);
	free(s.requests);
	return 0;
}
