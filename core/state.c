/* Helpers over state descriptions (moonbox/state.h). */
#include <string.h>

#include "moonbox.h"

uint64_t mb_field_max(const struct mb_field *f)
{
	switch (f->type) {
	case MB_FT_U8: return UINT8_MAX;
	case MB_FT_U16: return UINT16_MAX;
	case MB_FT_U32: return UINT32_MAX;
	case MB_FT_BOOL: return 1;
	default: return UINT64_MAX;
	}
}

const struct mb_field *mb_state_field(const struct mb_state_desc *d,
				      const char *name)
{
	for (size_t i = 0; i < d->nfields; i++)
		if (strcmp(d->fields[i].name, name) == 0)
			return &d->fields[i];
	return NULL;
}
