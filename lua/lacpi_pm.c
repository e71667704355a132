/* The acpi_pm device (moonbox/acpi_pm.h): mb.machine { acpi = true } makes
 * it, so it has no constructor; its handle is in m:devices() like any. */
#include <string.h>

#include "lua/lmoonbox.h"

static int attach(lua_State *L, struct mbl_machine *mm, struct mbl_dev *d)
{
	(void)mm, (void)d;
	return luaL_error(L, "acpi_pm: made by mb.machine { acpi = true }");
}

static const char *const keys[] = { NULL };

static const struct mbl_class acpi_pm_class = {
	.name = "acpi_pm", .keys = keys, .attach = attach, .machine_made = true,
};

void mbl_acpi_pm_adopt(lua_State *L, int midx)
{
	struct mb_machine *m = mbl_checkmachine(L, midx)->m;
	for (size_t i = 0; i < mb_machine_ndevices(m); i++) {
		struct mb_device *d = mb_machine_device_at(m, i);
		if (mb_device_ops_of(d) && !strcmp(mb_device_kind(d), "acpi_pm"))
			mbl_dev_adopt(L, midx, &acpi_pm_class, d);
	}
}
