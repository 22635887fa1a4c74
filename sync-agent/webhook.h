/* Push webhooks: whether a request to POST /hook/<source> carries the source's secret.
 *
 * Accepted, each compared in constant time with what the secret gives:
 *   X-Hub-Signature-256: sha256=<hex HMAC-SHA256 of the raw body>   (GitHub, Gitea, Forgejo)
 *   X-Latch-Signature:   sha256=<hex HMAC-SHA256 of the raw body>   (any other sender)
 *   X-Gitlab-Token:      <the secret itself>                        (GitLab)
 * The secret's trailing newlines (a file written with echo) are not part of it. */
#pragma once

#include <stdbool.h>

#include "latch/buf.h"

bool sync_webhook_signed(struct latch_view secret, struct latch_view body, const char *hub_signature,
			 const char *latch_signature, const char *gitlab_token);
