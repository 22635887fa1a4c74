/* SSH signatures made by the real ssh-keygen (as git does with gpg.format=ssh), verified by
 * latch without it; where allowed_signers options decide, latch must agree with
 * `ssh-keygen -Y verify` on the same file, signature and time. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "latch/file.h"
#include "latch/sshsig.h"

static char dir[] = "/tmp/latch-test-sshsig-XXXXXX";
static const char message[] = "tree 4b825dc642cb6eb9a060e54bf8d69288fbee4904\n"
			      "author a <a@example.org> 1764000000 +0000\n"
			      "committer a <a@example.org> 1764000000 +0000\n\nsigned\n";

static void sh(const char *fmt, ...) _printf_(1, 2);
static void sh(const char *fmt, ...)
{
	char cmd[4096];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(cmd, sizeof(cmd), fmt, ap);
	va_end(ap);
	char full[4200];
	snprintf(full, sizeof(full), "cd '%s' && ( %s ) >/dev/null 2>&1", dir, cmd);
	if (system(full) != 0)
		fail_msg("failed: %s", cmd);
}

static char *read_in_dir(const char *name)
{
	char path[512];
	snprintf(path, sizeof(path), "%s/%s", dir, name);
	struct latch_buf b = LATCH_BUF_INIT(1u << 20);
	struct latch_error err = LATCH_ERROR_INIT;
	if (latch_file_read(path, 1u << 20, &b, &err) < 0)
		fail_msg("%s", latch_error_message(&err));
	latch_error_done(&err);
	return latch_buf_take(&b);
}

static void write_in_dir(const char *name, const char *text)
{
	char path[512];
	snprintf(path, sizeof(path), "%s/%s", dir, name);
	FILE *f = fopen(path, "w");
	assert_non_null(f);
	fputs(text, f);
	fclose(f);
}

/* key: a private key file in dir; the signature of message for namespace ns goes to key.sig. */
static char *sign(const char *key, const char *ns)
{
	write_in_dir("message", message);
	sh("rm -f message.sig && ssh-keygen -q -Y sign -n %s -f %s message && mv message.sig %s.sig", ns, key, key);
	char name[256];
	snprintf(name, sizeof(name), "%s.sig", key);
	return read_in_dir(name);
}

/* The "type base64" part of key.pub. */
static char *public_key(const char *key)
{
	char name[256];
	snprintf(name, sizeof(name), "%s.pub", key);
	char *pub = read_in_dir(name);
	char *space = strchr(pub, ' ');
	space = space ? strchr(space + 1, ' ') : NULL;
	if (space)
		*space = '\0';
	pub[strcspn(pub, "\n")] = '\0';
	return pub;
}

static char *fingerprint(const char *key)
{
	sh("ssh-keygen -l -E sha256 -f %s.pub | cut -d' ' -f2 > %s.fpr", key, key);
	char name[256];
	snprintf(name, sizeof(name), "%s.fpr", key);
	char *f = read_in_dir(name);
	f[strcspn(f, "\n")] = '\0';
	return f;
}

static int verify(const char *allowed, const char *sig, const char *msg, int64_t at,
		  struct latch_sshsig_signer *signer,
		  struct latch_error *err)
{
	return latch_sshsig_verify(latch_view_str(allowed), "allowed_signers", "git", latch_view_str(sig),
				   latch_view_str(msg), at, signer, err);
}

static void assert_refused(const char *allowed, const char *sig, const char *msg, int64_t at, const char *why)
{
	struct latch_error err = LATCH_ERROR_INIT;
	assert_true(verify(allowed, sig, msg, at, NULL, &err) < 0);
	if (!strstr(latch_error_message(&err), why))
		fail_msg("'%s' does not say '%s'", latch_error_message(&err), why);
	latch_error_done(&err);
}

static int setup(void **state)
{
	if (!mkdtemp(dir))
		return -1;
	sh("ssh-keygen -q -t ed25519 -N '' -C dev -f ed25519 && ssh-keygen -q -t rsa -b 3072 -N '' -f rsa && "
	   "ssh-keygen -q -t ecdsa -b 256 -N '' -f p256 && ssh-keygen -q -t ecdsa -b 384 -N '' -f p384 && "
	   "ssh-keygen -q -t ecdsa -b 521 -N '' -f p521 && ssh-keygen -q -t ed25519 -N '' -f stranger && "
	   "ssh-keygen -q -t rsa -b 1024 -N '' -f rsa1024");
	return 0;
}

static int teardown(void **state)
{
	char cmd[512];
	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
	return system(cmd) == 0 ? 0 : -1;
}

/* Every key type ssh-keygen makes for git: accepted, naming the key as ssh-keygen -l does and
 * the line's principals; the same signature over one changed byte is refused. */
static void test_sshsig__every_key_type_verifies_and_a_changed_byte_does_not(void **state)
{
	static const char *const keys[] = { "ed25519", "rsa", "p256", "p384", "p521" };
	for (size_t i = 0; i < sizeof(keys) / sizeof(*keys); i++) {
		char *sig = sign(keys[i], "git"), *pub = public_key(keys[i]), *fpr = fingerprint(keys[i]);
		char allowed[8192];
		snprintf(allowed, sizeof(allowed), "# team keys\n\nstranger@example.org ssh-ed25519 AAAA!not-base64\n"
			 "dev@example.org,ops@example.org %s comment here\n", pub);
		/* The stranger's line is not base64 of a key: only lines read are checked... */
		struct latch_sshsig_signer signer;
		struct latch_error err = LATCH_ERROR_INIT;
		int r = verify(allowed, sig, message, time(NULL), &signer, &err);
		/* ...so a line that does not parse stops the read, saying where. */
		assert_int_equal(r, LATCH_EINVAL);
		assert_non_null(strstr(latch_error_message(&err), "allowed_signers:3: the key is not base64"));
		latch_error_done(&err);

		snprintf(allowed, sizeof(allowed), "# team keys\r\n\r\ndev@example.org,ops@example.org %s comment here\r\n",
			 pub);
		r = verify(allowed, sig, message, time(NULL), &signer, &err);
		if (r < 0)
			fail_msg("%s: %s", keys[i], latch_error_message(&err));
		assert_string_equal(signer.fingerprint, fpr);
		assert_string_equal(signer.principal, "dev@example.org,ops@example.org");
		assert_int_equal(signer.line, 3);

		char *changed = strdup(message);
		changed[5] ^= 1;
		assert_refused(allowed, sig, changed, time(NULL), "does not match what it signs");
		free(changed);
		free(sig);
		free(pub);
		free(fpr);
	}
}

static void test_sshsig__unlisted_key_other_namespace_and_garbage_are_refused(void **state)
{
	char *sig = sign("stranger", "git"), *fpr = fingerprint("stranger"), *pub = public_key("ed25519");
	char allowed[4096], want[256];
	snprintf(allowed, sizeof(allowed), "dev@example.org %s\n", pub);
	snprintf(want, sizeof(want), "signed by SSH key %s, which is not in 'allowed_signers'", fpr);
	assert_refused(allowed, sig, message, time(NULL), want);
	free(sig);

	sig = sign("ed25519", "file");
	assert_refused(allowed, sig, message, time(NULL), "is for namespace 'file', not 'git'");
	assert_refused(allowed, "-----BEGIN PGP SIGNATURE-----\nabc\n", message, time(NULL),
		       "no SSH signature found");
	assert_refused(allowed, LATCH_SSHSIG_BEGIN "\n!!!!\n-----END SSH SIGNATURE-----\n", message, time(NULL),
		       "not base64");
	assert_refused(allowed, LATCH_SSHSIG_BEGIN "\nU1NIU0lH\n-----END SSH SIGNATURE-----\n", message, time(NULL),
		       "malformed");

	/* A cert-authority line lists a CA, never the signing key itself. */
	free(sig);
	sig = sign("ed25519", "git");
	snprintf(allowed, sizeof(allowed), "dev@example.org cert-authority %s\n", pub);
	assert_refused(allowed, sig, message, time(NULL), "which is not in");
	free(sig);
	free(pub);
	free(fpr);

	/* RSA under 2048 bits is refused even when listed. */
	sig = sign("rsa1024", "git");
	pub = public_key("rsa1024");
	snprintf(allowed, sizeof(allowed), "old@example.org %s\n", pub);
	assert_refused(allowed, sig, message, time(NULL), "is RSA of 1024 bits");
	free(sig);
	free(pub);
}

/* ssh-keygen's answer for the same file, signature and time: 1 accepted, 0 refused. */
static int ssh_keygen_accepts(const char *allowed, const char *sig, int64_t at)
{
	write_in_dir("allowed", allowed);
	write_in_dir("check.sig", sig);
	write_in_dir("message", message);
	char when[32], cmd[1024], full[1200];
	time_t t = (time_t)at;
	strftime(when, sizeof(when), "%Y%m%d%H%M%S", gmtime(&t));
	snprintf(cmd, sizeof(cmd), "TZ=UTC ssh-keygen -Y verify -f allowed -I dev@example.org -n git -s check.sig "
		 "-Overify-time=%s < message", when);
	snprintf(full, sizeof(full), "cd '%s' && %s >/dev/null 2>&1", dir, cmd);
	return system(full) == 0;
}

/* The options that make a listed key refuse: latch decides as ssh-keygen does. */
static void test_sshsig__allowed_signers_options_agree_with_ssh_keygen(void **state)
{
	char *sig = sign("ed25519", "git"), *pub = public_key("ed25519");
	static const struct {
		const char *options;
		bool accepted;
	} cases[] = {
		{ "namespaces=\"git\"", true },
		{ "namespaces=\"file,gi*\"", true },
		{ "namespaces=\"file\"", false },
		{ "namespaces=\"*,!git\"", false },
		{ "valid-after=\"20200101\"", true },
		{ "valid-after=\"20990101\"", false },
		{ "valid-before=\"20200101\"", false },
		{ "valid-before=\"20990101\",valid-after=\"20200101000000\"", true },
		{ "namespaces=\"git\",valid-before=\"202001010000\"", false },
		{ "VALID-AFTER=\"20200101\"", true },
	};
	int64_t now = time(NULL);
	for (size_t i = 0; i < sizeof(cases) / sizeof(*cases); i++) {
		char allowed[4096];
		snprintf(allowed, sizeof(allowed), "\"dev@example.org\" %s %s\n", cases[i].options, pub);
		struct latch_error err = LATCH_ERROR_INIT;
		int r = verify(allowed, sig, message, now, NULL, &err);
		bool ssh_keygen = ssh_keygen_accepts(allowed, sig, now);
		if ((r == 0) != cases[i].accepted || ssh_keygen != cases[i].accepted)
			fail_msg("%s: latch %s (%s), ssh-keygen %s, expected %s", cases[i].options, r == 0 ? "accepts" : "refuses",
				 latch_error_message(&err), ssh_keygen ? "accepts" : "refuses",
				 cases[i].accepted ? "accepted" : "refused");
		if (r < 0 &&
		    !strstr(latch_error_message(&err), "is listed in allowed_signers:1, but not for this signature"))
			fail_msg("%s: %s", cases[i].options, latch_error_message(&err));
		latch_error_done(&err);
	}
	/* An option neither knows is an error with the line. */
	char allowed[4096];
	snprintf(allowed, sizeof(allowed), "dev@example.org no-such-option %s\n", pub);
	assert_refused(allowed, sig, message, now, "allowed_signers:1: not an allowed_signers line");
	snprintf(allowed, sizeof(allowed), "dev@example.org valid-after=\"2020\" %s\n", pub);
	assert_refused(allowed, sig, message, now, "allowed_signers:1: not an allowed_signers line");
	free(sig);
	free(pub);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_sshsig__every_key_type_verifies_and_a_changed_byte_does_not),
		cmocka_unit_test(test_sshsig__unlisted_key_other_namespace_and_garbage_are_refused),
		cmocka_unit_test(test_sshsig__allowed_signers_options_agree_with_ssh_keygen),
	};
	return cmocka_run_group_tests(tests, setup, teardown);
}
