/* The Vault (and OpenBao) client: login with the kubernetes or jwt auth method or a token
 * file, read and write-style issue, token and lease renewal, revoke-self, Enterprise
 * namespaces. Vault's own {"errors":[...]} text is carried into the error. Connection
 * errors, 412, 429 and 5xx except 501 are retried under the client's policy; 400, 403 and
 * 404 fail at once, a 403 at login with a hint naming the role, the ServiceAccount the token
 * belongs to and the auth path.
 *
 * Lifecycle: latch_vault_new() / latch_vault_free(). The client holds the token after a
 * login (or latch_vault_set_token) and zeroes it on free. Results are jansson objects, the
 * caller's to json_decref (their strings are zeroed on free, see json.h). */
#pragma once

#include <stdbool.h>

#include "latch/buf.h"
#include "latch/error.h"
#include "latch/http.h"
#include "latch/json.h"

struct latch_vault_options {
	const char *address;   /* https://vault:8200 */
	const char *namespace; /* X-Vault-Namespace, NULL for none */
	struct latch_http_options http;
};

struct latch_vault_auth {
	long lease_duration; /* seconds */
	bool renewable;
};

struct latch_vault;

int latch_vault_new(const struct latch_vault_options *opts, struct latch_vault **ret, struct latch_error *err);
void latch_vault_free(struct latch_vault *v);
void latch_vault_freep(struct latch_vault **v);

/* The total time the calls that follow may take, retries included (0 = the policy's own). */
void latch_vault_set_deadline(struct latch_vault *v, unsigned deadline_ms);

/* Log in at auth_path ("auth/kubernetes") with role and a JWT; the client keeps the token. */
int latch_vault_login_jwt(struct latch_vault *v, const char *auth_path, const char *role, const char *jwt,
			  struct latch_vault_auth *ret, struct latch_error *err);
/* Use a token as it is (token file, dev); it is copied. */
int latch_vault_set_token(struct latch_vault *v, const char *token, struct latch_error *err);
bool latch_vault_has_token(const struct latch_vault *v);
/* The current token, for the token sink file only; NULL before a login. */
const char *latch_vault_token(const struct latch_vault *v);

/* GET /v1/<path>. ret is the whole response envelope (lease_id, lease_duration, data...). */
int latch_vault_read(struct latch_vault *v, const char *path, json_t **ret, struct latch_error *err);
/* PUT /v1/<path> with params (an object, may be NULL). */
int latch_vault_write(struct latch_vault *v, const char *path, const json_t *params, json_t **ret,
		      struct latch_error *err);

int latch_vault_renew_self(struct latch_vault *v, long increment_s, struct latch_vault_auth *ret,
			   struct latch_error *err);
/* Renew a lease; ret_duration is the lease duration Vault granted (it may be less than asked). */
int latch_vault_lease_renew(struct latch_vault *v, const char *lease_id, long increment_s, long *ret_duration,
			    struct latch_error *err);
int latch_vault_revoke_self(struct latch_vault *v, struct latch_error *err);

/* The parts of Vault's answers the client reads, for callers that hold the text (and the
 * fuzz harness). errors_text: the {"errors":[...]} of an error body joined with "; ", or
 * "no error text in the response". auth_parse: auth.client_token of a login or renewal
 * (NULL when absent; it points into resp) and, when ret is set, its duration and renewable. */
void latch_vault_errors_text(struct latch_view body, struct latch_buf *out);
const char *latch_vault_auth_parse(const json_t *resp, struct latch_vault_auth *ret);

/* Who a Kubernetes JWT claims to be and for whom, for messages only (the signature is not
 * checked). Any field may be NULL; audience joins several with ','. */
struct latch_jwt_identity {
	char *namespace;
	char *name;
	char *audience;
};
int latch_jwt_identity_parse(const char *jwt, struct latch_jwt_identity *ret);
void latch_jwt_identity_done(struct latch_jwt_identity *id);
