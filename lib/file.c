#include "latch/file.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define TEMP_INFIX ".latch-tmp-"

static int errno_to_code(int e)
{
	switch (e) {
	case ENOSPC:
	case EDQUOT: return LATCH_ENOSPC;
	case ENOENT: return LATCH_ENOTFOUND;
	case EACCES:
	case EPERM: return LATCH_EFORBIDDEN;
	case ENOMEM: return LATCH_ENOMEM;
	default: return LATCH_EIO;
	}
}

static int fail_errno(struct latch_error *err, int e, const char *what, const char *path)
{
	return latch_error_set(err, errno_to_code(e), "%s '%s': %s", what, path, latch_errno_message(e));
}

static void close_fdp(int *fd)
{
	if (*fd >= 0)
		close(*fd);
}
#define _cleanup_close_ _cleanup_(close_fdp)

/* Split path into a newly allocated directory and a pointer to the base name inside path. */
static int split_path(const char *path, char **ret_dir, const char **ret_base)
{
	const char *slash = strrchr(path, '/');
	char *dir = slash ? strndup(path, slash == path ? 1 : (size_t)(slash - path)) : strdup(".");
	if (!dir)
		return LATCH_ENOMEM;
	*ret_base = slash ? slash + 1 : path;
	*ret_dir = dir;
	return 0;
}

static bool is_temp_of(const char *entry, const char *base)
{
	size_t n = strlen(base);
	return entry[0] == '.' && strncmp(entry + 1, base, n) == 0 &&
	       strncmp(entry + 1 + n, TEMP_INFIX, strlen(TEMP_INFIX)) == 0;
}

/* Remove temporary files a killed writer of `base` left in the directory. */
static void sweep_stale_temps(int dirfd, const char *base)
{
	int fd = openat(dirfd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (fd < 0)
		return;
	DIR *d = fdopendir(fd);
	if (!d) {
		close(fd);
		return;
	}
	struct dirent *de;
	while ((de = readdir(d)))
		if (is_temp_of(de->d_name, base))
			unlinkat(dirfd, de->d_name, 0);
	closedir(d);
}

static int temp_name(const char *base, char **ret)
{
	unsigned long long r;
	if (getrandom(&r, sizeof(r), 0) != (ssize_t)sizeof(r))
		r = (unsigned long long)getpid() ^ (unsigned long long)time(NULL);
	struct latch_buf b = LATCH_BUF_INIT(4096);
	if (latch_buf_printf(&b, ".%s%s%016llx", base, TEMP_INFIX, r) < 0) {
		latch_buf_done(&b);
		return LATCH_ENOMEM;
	}
	*ret = latch_buf_take(&b);
	return *ret ? 0 : LATCH_ENOMEM;
}

int latch_write_all(int fd, struct latch_view data)
{
	const char *p = data.ptr;
	size_t n = data.len;
	while (n > 0) {
		ssize_t w = write(fd, p, n);
		if (w < 0 && errno == EINTR)
			continue;
		if (w < 0)
			return -errno;
		p += w;
		n -= (size_t)w;
	}
	return 0;
}

/* An unnamed inode needs /proc/self/fd to be given a name without privileges; a static
 * binary in an empty root has no /proc, so it uses a named temporary file instead. */
static bool can_link_unnamed(void)
{
	return access("/proc/self/fd", X_OK) == 0;
}

static int open_temp(int dirfd, const char *base, mode_t mode, bool *ret_unnamed, char **ret_name)
{
	if (can_link_unnamed()) {
		int fd = openat(dirfd, ".", O_TMPFILE | O_WRONLY | O_CLOEXEC, mode);
		if (fd >= 0) {
			*ret_unnamed = true;
			return fd;
		}
		if (errno != EOPNOTSUPP && errno != EISDIR && errno != EINVAL)
			return -errno;
	}
	int r = temp_name(base, ret_name);
	if (r < 0)
		return -ENOMEM;
	*ret_unnamed = false;
	int fd = openat(dirfd, *ret_name, O_CREAT | O_EXCL | O_WRONLY | O_CLOEXEC | O_NOFOLLOW, mode);
	if (fd < 0)
		return -errno;
	return fd;
}

static int link_unnamed(int fd, int dirfd, const char *base, char **ret_name)
{
	int r = temp_name(base, ret_name);
	if (r < 0)
		return -ENOMEM;
	char proc[64];
	snprintf(proc, sizeof(proc), "/proc/self/fd/%d", fd);
	if (linkat(AT_FDCWD, proc, dirfd, *ret_name, AT_SYMLINK_FOLLOW) < 0)
		return -errno;
	return 0;
}

static int apply_mode_and_owner(int fd, const struct latch_file_opts *opts)
{
	/* Set explicitly: the mode given at creation was filtered by the umask. */
	if (fchmod(fd, opts->mode) < 0)
		return -errno;
	if (opts->set_owner && fchown(fd, opts->uid, opts->gid) < 0)
		return -errno;
	return 0;
}

int latch_file_write_atomic(const char *path, struct latch_view data, const struct latch_file_opts *opts,
			    struct latch_error *err)
{
	_cleanup_free_ char *dir = NULL;
	const char *base;
	if (split_path(path, &dir, &base) < 0)
		return latch_error_set(err, LATCH_ENOMEM, "out of memory");
	_cleanup_close_ int dirfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (dirfd < 0)
		return fail_errno(err, errno, "opening directory", dir);
	return latch_file_write_atomic_at(dirfd, base, path, data, opts, err);
}

int latch_file_write_atomic_at(int dirfd, const char *base, const char *shown, struct latch_view data,
			       const struct latch_file_opts *opts, struct latch_error *err)
{
	if (opts->mode & (S_IWGRP | S_IWOTH | S_ISUID | S_ISGID))
		return latch_error_set(err, LATCH_EINVAL, "refusing mode %04o for '%s': group/other-writable or set-id",
				       (unsigned)opts->mode, shown);
	if (*base == '\0' || strchr(base, '/'))
		return latch_error_set(err, LATCH_EINVAL, "'%s' names a directory, not a file", shown);
	sweep_stale_temps(dirfd, base);

	bool unnamed = false;
	_cleanup_free_ char *tmp = NULL;
	_cleanup_close_ int fd = open_temp(dirfd, base, opts->mode & 07777, &unnamed, &tmp);
	if (fd < 0)
		return fail_errno(err, -fd, "creating a temporary file for", shown);

	int r = apply_mode_and_owner(fd, opts);
	if (r == 0)
		r = latch_write_all(fd, data);
	if (r == 0 && fsync(fd) < 0)
		r = -errno;
	if (r == 0 && unnamed)
		r = link_unnamed(fd, dirfd, base, &tmp);
	/* rename replaces whatever is named base, a symlink included, and never follows it. */
	if (r == 0 && renameat(dirfd, tmp, dirfd, base) < 0)
		r = -errno;
	if (r < 0) {
		if (tmp)
			unlinkat(dirfd, tmp, 0);
		return fail_errno(err, -r, "writing", shown);
	}
	if (fsync(dirfd) < 0)
		return fail_errno(err, errno, "syncing the directory of", shown);
	return 0;
}

/* One component beneath dirfd, made when missing; never a symlink (O_NOFOLLOW fails on
 * one with ELOOP, or ENOTDIR with O_DIRECTORY). */
static int open_component(int dirfd, const char *name, mode_t mode)
{
	if (strcmp(name, "..") == 0 || strcmp(name, ".") == 0)
		return -EINVAL;
	int fd = openat(dirfd, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
	if (fd < 0 && errno == ENOENT) {
		if (mkdirat(dirfd, name, mode) < 0 && errno != EEXIST)
			return -errno;
		fd = openat(dirfd, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
	}
	if (fd < 0)
		return -errno;
	return fd;
}

int latch_file_open_dir_beneath(const char *root, const char *rel, mode_t mode, int *ret_fd,
				struct latch_error *err)
{
	int fd = open(root, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (fd < 0)
		return fail_errno(err, errno, "opening directory", root);
	_cleanup_free_ char *copy = strdup(rel);
	if (!copy) {
		close(fd);
		return latch_error_set(err, LATCH_ENOMEM, "out of memory");
	}
	char *save = NULL;
	for (char *name = strtok_r(copy, "/", &save); name; name = strtok_r(NULL, "/", &save)) {
		int next = open_component(fd, name, mode);
		close(fd);
		if (next == -ELOOP || next == -ENOTDIR || next == -EINVAL)
			return latch_error_set(err, LATCH_EINVAL, "'%s' in '%s/%s' is a symlink, a file or a dot-dot: "
					       "files go only into real directories under %s", name, root, rel, root);
		if (next < 0)
			return fail_errno(err, -next, "creating directory", name);
		fd = next;
	}
	*ret_fd = fd;
	return 0;
}

/* Append everything fd holds to ret; path names it in errors. */
static int read_all(int fd, const char *path, size_t max, struct latch_buf *ret, struct latch_error *err)
{
	char chunk[16384];
	size_t start = ret->len;
	for (;;) {
		ssize_t n = read(fd, chunk, sizeof(chunk));
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0) {
			int e = errno;
			explicit_bzero(chunk, sizeof(chunk));
			return fail_errno(err, e, "reading", path);
		}
		if (n == 0)
			break;
		if (ret->len - start + (size_t)n > max || latch_buf_append(ret, chunk, (size_t)n) < 0) {
			explicit_bzero(chunk, sizeof(chunk));
			return latch_error_set(err, LATCH_ELIMIT, "'%s' is larger than the limit of %zu bytes", path, max);
		}
	}
	explicit_bzero(chunk, sizeof(chunk));
	return 0;
}

int latch_file_read(const char *path, size_t max, struct latch_buf *ret, struct latch_error *err)
{
	_cleanup_close_ int fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return fail_errno(err, errno, "opening", path);
	return read_all(fd, path, max, ret, err);
}

/* A regular file is mapped; anything else is read from fd. */
static int map_or_read(int fd, const char *path, size_t max, struct latch_input *ret, struct latch_error *err)
{
	struct stat st;
	if (fstat(fd, &st) < 0)
		return fail_errno(err, errno, "reading", path);
	if (!S_ISREG(st.st_mode) || st.st_size == 0) {
		int r = read_all(fd, path, max, &ret->buf, err);
		if (r == 0)
			ret->text = latch_buf_view(&ret->buf);
		return r;
	}
	if ((uintmax_t)st.st_size > max)
		return latch_error_set(err, LATCH_ELIMIT, "'%s' is larger than the limit of %zu bytes", path, max);
	void *p = mmap(NULL, (size_t)st.st_size, PROT_READ, MAP_PRIVATE, fd, 0);
	if (p == MAP_FAILED)
		return fail_errno(err, errno, "mapping", path);
	madvise(p, (size_t)st.st_size, MADV_SEQUENTIAL);
	ret->text = (struct latch_view){ p, (size_t)st.st_size };
	ret->mapped_len = (size_t)st.st_size;
	return 0;
}

int latch_input_open(const char *path, size_t max, struct latch_input *ret, struct latch_error *err)
{
	*ret = (struct latch_input){ .text = { "", 0 }, .buf = LATCH_BUF_INIT(max) };
	_cleanup_close_ int fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return fail_errno(err, errno, "opening", path);
	return map_or_read(fd, path, max, ret, err);
}

void latch_input_release_before(struct latch_input *in, size_t offset)
{
	size_t page = (size_t)sysconf(_SC_PAGESIZE);
	size_t end = offset / page * page;
	if (in->mapped_len == 0 || end <= in->released)
		return;
	madvise((char *)in->text.ptr + in->released, end - in->released, MADV_DONTNEED);
	in->released = end;
}

void latch_input_close(struct latch_input *in)
{
	if (in->mapped_len)
		munmap((void *)in->text.ptr, in->mapped_len);
	latch_buf_done(&in->buf);
	*in = (struct latch_input){ .text = { "", 0 } };
}

int latch_file_read_line(const char *path, size_t max, struct latch_buf *ret, struct latch_error *err)
{
	int r = latch_file_read(path, max, ret, err);
	while (r == 0 && ret->len > 0 && (ret->ptr[ret->len - 1] == '\n' || ret->ptr[ret->len - 1] == '\r'))
		ret->ptr[--ret->len] = '\0';
	return r;
}

int latch_file_mkdir_p(const char *dir, mode_t mode, struct latch_error *err)
{
	_cleanup_free_ char *copy = strdup(dir);
	if (!copy)
		return latch_error_set(err, LATCH_ENOMEM, "out of memory");
	for (char *p = copy + 1; *p; p++) {
		if (*p != '/')
			continue;
		*p = '\0';
		if (mkdir(copy, mode) < 0 && errno != EEXIST)
			return fail_errno(err, errno, "creating directory", copy);
		*p = '/';
	}
	if (mkdir(copy, mode) < 0 && errno != EEXIST)
		return fail_errno(err, errno, "creating directory", copy);
	return 0;
}
