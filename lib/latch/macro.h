/* Small helpers shared by every file: scoped cleanup, ownership transfer, array size.
 * _cleanup_(fn) runs fn(&var) when var leaves scope; TAKE_PTR(p) hands p over and leaves NULL. */
#pragma once

#include <stddef.h>

#define _cleanup_(fn) __attribute__((cleanup(fn)))
#define _unused_ __attribute__((unused))
#define _printf_(a, b) __attribute__((format(printf, a, b)))
#define _warn_unused_ __attribute__((warn_unused_result))

#define TAKE_PTR(p)                           \
	({                                    \
		__typeof__(p) _taken_ = (p);  \
		(p) = NULL;                   \
		_taken_;                      \
	})

#define ELEMENTSOF(a) (sizeof(a) / sizeof((a)[0]))

/* NOLINTBEGIN(bugprone-macro-parentheses): a type name cannot be parenthesised */
#define DEFINE_FREE_FUNC(type, fn)                     \
	static inline void fn##p(type **p)              \
	{                                               \
		fn(*p);                                 \
	}
/* NOLINTEND(bugprone-macro-parentheses) */

void latch_freep(void *p);
#define _cleanup_free_ _cleanup_(latch_freep)
