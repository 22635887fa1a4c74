/* Files that hold secrets or state: written atomically, read with a cap.
 *
 * latch_file_write_atomic() writes into an unnamed temporary inode in the target's own
 * directory (O_TMPFILE; a named ".<name>.latch-tmp-*" file where that is not available),
 * with the final mode from creation, fsyncs it, links it in place with rename() and fsyncs
 * the directory. A reader sees the old file or the new one, never a partial one, also when
 * the writer is killed; temporary files a killed writer left behind are removed by the next
 * write to the same name. */
#pragma once

#include <stdbool.h>
#include <sys/types.h>

#include "latch/buf.h"
#include "latch/error.h"

struct latch_file_opts {
	mode_t mode;    /* permission bits; group/other write bits are refused */
	bool set_owner; /* chown to uid:gid */
	uid_t uid;
	gid_t gid;
};

/* All of data to fd, across short writes and EINTR: 0 or -errno. */
int latch_write_all(int fd, struct latch_view data);

int latch_file_write_atomic(const char *path, struct latch_view data, const struct latch_file_opts *opts,
			    struct latch_error *err);

/* The same into directory dirfd under the name base (no slash); shown names the file in
 * errors. */
int latch_file_write_atomic_at(int dirfd, const char *base, const char *shown, struct latch_view data,
			       const struct latch_file_opts *opts, struct latch_error *err);

/* Open the directory rel ("a/b", may be "") under root, creating missing components with mode,
 * following no symlink and no "..": a planted link cannot send a file outside root. */
int latch_file_open_dir_beneath(const char *root, const char *rel, mode_t mode, int *ret_fd,
				struct latch_error *err);

/* Read a whole file into ret (appending), failing with LATCH_ELIMIT past max bytes. */
int latch_file_read(const char *path, size_t max, struct latch_buf *ret, struct latch_error *err);

/* A file to be read once, front to back: a regular file is mapped, anything else (a pipe,
 * /dev/stdin) is read into memory. latch_input_release_before() gives back the pages before
 * offset, so a long input need not stay resident while it is read; reading them again later
 * (to place an error) still gives the file's bytes. */
struct latch_input {
	struct latch_view text;
	size_t mapped_len; /* 0 when text is held in buf instead */
	size_t released;
	struct latch_buf buf;
};
int latch_input_open(const char *path, size_t max, struct latch_input *ret, struct latch_error *err);
void latch_input_release_before(struct latch_input *in, size_t offset);
void latch_input_close(struct latch_input *in);

/* The same for a one-line file (a token, a password): trailing newlines are dropped. */
int latch_file_read_line(const char *path, size_t max, struct latch_buf *ret, struct latch_error *err);

/* Create dir and its missing parents with mode (like mkdir -p). */
int latch_file_mkdir_p(const char *dir, mode_t mode, struct latch_error *err);
