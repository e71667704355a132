/* Size and address strings: "256M", "0x1000", "4G-256K", "1M+4K". */
#include <ctype.h>
#include <stdbool.h>
#include <errno.h>
#include <stdlib.h>

#include "moonbox.h"

/* One term: a number (decimal or 0x hex) with an optional K/M/G/T suffix. */
static int term(const char **sp, uint64_t *out)
{
	const char *s = *sp;
	char *end;
	while (isspace((unsigned char)*s))
		s++;
	if (!isdigit((unsigned char)*s))
		return -EINVAL;
	errno = 0;
	bool hex = s[0] == '0' && (s[1] == 'x' || s[1] == 'X');
	unsigned long long v = strtoull(s, &end, hex ? 16 : 10);
	if (errno || end == s)
		return -EINVAL;
	unsigned shift = 0;
	switch (*end) {
	case 'k': case 'K': shift = 10; break;
	case 'm': case 'M': shift = 20; break;
	case 'g': case 'G': shift = 30; break;
	case 't': case 'T': shift = 40; break;
	}
	if (shift) {
		end++;
		if (*end == 'i' && end[1] == 'B')
			end += 2;
		else if (*end == 'B')
			end++;
		if (v > (UINT64_MAX >> shift))
			return -ERANGE;
		v <<= shift;
	}
	while (isspace((unsigned char)*end))
		end++;
	*sp = end;
	*out = v;
	return 0;
}

int mb_parse_size(const char *s, uint64_t *out)
{
	uint64_t total, v;
	if (!s || term(&s, &total))
		return -EINVAL;
	while (*s) {
		char op = *s++;
		if ((op != '+' && op != '-') || term(&s, &v))
			return -EINVAL;
		if (op == '+' ? total + v < total : v > total)
			return -ERANGE;
		total = op == '+' ? total + v : total - v;
	}
	*out = total;
	return 0;
}
