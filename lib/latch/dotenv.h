/* Reading the environment files latch-init writes, for `latch-init exec`: format env
 * (export KEY='value', quotes escaped as '\''), format dotenv (KEY='value', or "value" with
 * \\ \" \n escapes), and hand-written files in the same forms (bare values, # comments).
 *
 * Values are secrets: the list holds "KEY=value" strings ready for execve(), zeroed when
 * freed, and an error names the file, line and column but never shows a value.
 *
 * Lifecycle: a zeroed struct latch_env_list, any number of latch_dotenv_parse() calls (a
 * later file's KEY replaces an earlier one), then latch_env_list_done(). */
#pragma once

#include <stddef.h>

#include "latch/buf.h"
#include "latch/error.h"

#define LATCH_ENV_MAX_VARS 4096

struct latch_env_list {
	char **items; /* "KEY=value" */
	size_t n;
};

int latch_dotenv_parse(struct latch_view text, const char *source, struct latch_env_list *list,
		       struct latch_error *err) _warn_unused_;
/* Set KEY=value (a copy), replacing an earlier KEY. */
int latch_env_list_set(struct latch_env_list *list, const char *key, size_t key_len,
		       struct latch_view value) _warn_unused_;
void latch_env_list_done(struct latch_env_list *list);
