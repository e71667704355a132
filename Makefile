# moonbox build. `make` builds the library, CLI and Lua module;
# `make deps` installs what is missing; `make test` runs every test.
# Sources are found by wildcard: a new device or test needs no edit here.

CC      ?= cc
PREFIX  ?= /usr/local
LUA_CFLAGS := $(shell pkg-config --cflags lua5.4 2>/dev/null || echo -I/usr/include/lua5.4)
LUA_LIBS   := $(shell pkg-config --libs lua5.4 2>/dev/null || echo -llua5.4)
WARN    := -Wall -Wextra -Werror -Wno-unused-parameter
CFLAGS  ?= -O2 -g
# override: `make CFLAGS=-O0` changes the optimisation, not the language.
override CFLAGS += -std=c11 -D_GNU_SOURCE -fPIC $(WARN) -Iinclude -I.
LDLIBS  := -lpthread -lm

B := build
# The linked outputs (moonbox, moonbox.so, libmoonbox.a/.so): at the top
# level for the default build, inside B for any other (make B=build-asan).
O := $(if $(filter build,$(B)),.,$(B))
LIB_SRC := $(wildcard core/*.c) $(wildcard devices/*.c) $(wildcard devices/virtio/*.c)
LUA_SRC := $(wildcard lua/*.c)
LIB_OBJ := $(LIB_SRC:%.c=$(B)/%.o)
LUA_OBJ := $(LUA_SRC:%.c=$(B)/%.o)
UNIT_HELPERS := $(filter-out tests/unit/test_%.c,$(wildcard tests/unit/*.c))
UNIT_TESTS   := $(patsubst tests/unit/%.c,$(B)/tests/%,$(wildcard tests/unit/test_*.c))
GUEST_SRC := $(wildcard tests/guests/*.S)
GUESTS    := $(GUEST_SRC:tests/guests/%.S=$(B)/guests/%.bin)
EXAMPLE_GUESTS := $(patsubst examples/%.S,$(B)/examples/%.bin,$(wildcard examples/*.S))
BENCH_BINS := $(patsubst bench/%.c,$(B)/bench/%,$(wildcard bench/*.c))
# C examples, compiled as an installed build would be: only include/.
EXAMPLE_BINS := $(patsubst examples/%.c,$(B)/examples/%,$(wildcard examples/*.c))
EXAMPLE_CFLAGS := -Iinclude

all: $(O)/libmoonbox.a $(O)/libmoonbox.so $(O)/moonbox $(O)/moonbox.so $(O)/moonbox-launcher $(O)/moonbox-device guests examples

$(B)/%.o: %.c $(wildcard include/*.h include/moonbox/*.h core/*.h devices/*.h devices/virtio/*.h lua/*.h)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) $(LUA_CFLAGS) -c $< -o $@

$(O)/libmoonbox.a: $(LIB_OBJ)
	rm -f $@ && ar rcs $@ $^

$(O)/libmoonbox.so: $(LIB_OBJ)
	$(CC) $(LDFLAGS) -shared -o $@ $^ $(LDLIBS)

# lua/campaign.lua and lua/tap.lua, compiled in as C strings (one line of
# C per line).
$(B)/lua/%.lua.h: lua/%.lua
	@mkdir -p $(dir $@)
	sed -e 's/\\/\\\\/g' -e 's/"/\\"/g' -e 's/^/"/' -e 's/$$/\\n"/' $< > $@
$(B)/lua/lcampaign.o: $(B)/lua/campaign.lua.h $(B)/lua/tap.lua.h
$(B)/lua/lcampaign.o: override CFLAGS += -I$(B)/lua

# The Lua module: `require "moonbox"` from stock lua5.4.
$(O)/moonbox.so: $(LUA_OBJ) $(LIB_OBJ)
	$(CC) $(LDFLAGS) -shared -o $@ $^ $(LDLIBS)

# Line editing (readline) is the command's only: the library never links it.
$(O)/moonbox: $(B)/cli/moonbox.o $(B)/cli/attach.o $(LUA_OBJ) $(O)/libmoonbox.a
	$(CC) $(LDFLAGS) -o $@ $^ $(LUA_LIBS) $(LDLIBS) -ldl -lreadline

# Helper programs the library starts (docs/sandbox.md), found next to the
# binaries in the build tree, in LIBEXECDIR once installed.
LIBEXECDIR ?= $(PREFIX)/libexec/moonbox
$(B)/core/launch.o: override CFLAGS += -DMB_LIBEXECDIR='"$(LIBEXECDIR)"'
$(O)/moonbox-launcher: $(B)/cli/moonbox-launcher.o
	$(CC) $(LDFLAGS) -o $@ $^
# The device process (docs/devproc.md): a device model on passed fds.
$(O)/moonbox-device: $(B)/cli/moonbox-device.o $(B)/cli/devserve.o $(B)/cli/devfault.o $(B)/cli/devserve_map.o \
		$(B)/cli/vhostserve.o \
		$(B)/cli/vhostmain.o $(LUA_OBJ) $(O)/libmoonbox.a
	$(CC) $(LDFLAGS) -o $@ $^ $(LUA_LIBS) $(LDLIBS) -ldl

# Tiny guests: flat binaries assembled with the host toolchain. The first
# line of each .S may name its link address: "/* at: 0x100000 */".
guests: $(GUESTS) $(EXAMPLE_GUESTS)
$(B)/guests/%.bin: $(B)/guests/%.elf
	objcopy -O binary $< $@
$(B)/examples/%.bin: $(B)/examples/%.elf
	objcopy -O binary $< $@
$(B)/guests/%.elf: tests/guests/%.S $(wildcard tests/guests/*.h)
	@mkdir -p $(dir $@)
	$(CC) -c -Itests/guests -o $(@:.elf=.o) $<
	ld -nostdlib -N --no-warn-rwx-segments -e 0 -Ttext=$$(sed -n '1s|.*at: *\(0x[0-9a-fA-F]*\).*|\1|p' $<) -o $@ $(@:.elf=.o)
$(B)/examples/%.elf: examples/%.S
	@mkdir -p $(dir $@)
	$(CC) -c -o $(@:.elf=.o) $<
	ld -nostdlib -N --no-warn-rwx-segments -e 0 -Ttext=$$(sed -n '1s|.*at: *\(0x[0-9a-fA-F]*\).*|\1|p' $<) -o $@ $(@:.elf=.o)

$(B)/tests/%: tests/unit/%.c $(UNIT_HELPERS) $(O)/libmoonbox.a
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -Itests/unit -o $@ $< $(UNIT_HELPERS) $(O)/libmoonbox.a -lcmocka $(LDLIBS)
# It compiles the back-end in whole (it is not part of the library).
$(B)/tests/test_vhostserve: cli/vhostserve.c cli/vhostserve.h
$(B)/tests/test_devserve_map: cli/devserve.c cli/devserve_map.c cli/devfault.c cli/devserve.h

examples: $(EXAMPLE_BINS)
$(B)/examples/%: examples/%.c $(wildcard examples/*.h) $(O)/libmoonbox.a
	@mkdir -p $(dir $@)
	$(CC) -O2 -g -std=c11 -D_GNU_SOURCE $(WARN) $(EXAMPLE_CFLAGS) -o $@ $< $(O)/libmoonbox.a $(LDLIBS)

$(B)/bench/%: bench/%.c $(O)/libmoonbox.a
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -o $@ $< $(O)/libmoonbox.a $(LDLIBS)

# bench/net_fault.c drives virtio-net as tests/unit's fake driver does
$(B)/bench/net_fault: bench/net_fault.c tests/unit/virtio_driver.c $(O)/libmoonbox.a
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -Itests/unit -o $@ $< tests/unit/virtio_driver.c $(O)/libmoonbox.a \
		-lcmocka $(LDLIBS)

deps:
	@scripts/deps.sh

unit: $(UNIT_TESTS)

test: deps
	@$(MAKE) --no-print-directory all unit
	@tests/run.sh

# The suite under sanitizers, each in its own build dir (build-asan...):
# units and Lua tests; the guests and C examples are the plain ones. Which
# Linux boots run is SAN_LINUX (an ERE over test names, default
# test_linux); the fuzzers (already ASan/UBSan), the install test and the
# stock-interpreter test are left out. ASan includes UBSan.
SAN_asan  := -fsanitize=address,undefined -fno-sanitize-recover=undefined
SAN_ubsan := -fsanitize=undefined -fno-sanitize-recover=undefined
SAN_tsan  := -fsanitize=thread -Wno-tsan # run.c has a fence TSan does not model
SAN_LINUX ?= linux/test_linux$$
test-asan test-ubsan test-tsan: test-%: deps
	@$(MAKE) --no-print-directory guests examples
	@$(MAKE) --no-print-directory B=build-$* CFLAGS="-O1 -g -fno-omit-frame-pointer $(SAN_$*)" \
		LDFLAGS="$(SAN_$*)" build-$*/moonbox build-$*/moonbox.so build-$*/moonbox-launcher build-$*/moonbox-device unit
	@MB_BUILD=build-$* MB_BIN=build-$* MB_SANITIZER=$* \
		TSAN_OPTIONS="suppressions=$(CURDIR)/tests/tsan.supp $$TSAN_OPTIONS" \
		MB_TEST_SKIP='^(fuzz/|lua/test_install$$|lua/stock_lua5.4$$|linux/)' \
		MB_TEST_KEEP='$(SAN_LINUX)' tests/run.sh

bench: all $(BENCH_BINS)
	@bench/run.sh

# The libFuzzer harnesses, then the hostile-guest campaign, each for
# FUZZ_SECONDS (60).
fuzz:
	@scripts/fuzz.sh
	@$(MAKE) --no-print-directory all
	MB_HOSTILE_SECONDS=$${FUZZ_SECONDS:-60} ./moonbox tests/lua/test_hostile.lua 2>build/hostile.log

run: deps
	@$(MAKE) --no-print-directory all
	./moonbox machines/linux.lua

install: all
	install -d $(DESTDIR)$(PREFIX)/bin $(DESTDIR)$(PREFIX)/lib/pkgconfig \
		$(DESTDIR)$(PREFIX)/include/moonbox $(DESTDIR)$(PREFIX)/lib/lua/5.4 \
		$(DESTDIR)$(PREFIX)/share/moonbox/machines \
		$(DESTDIR)$(PREFIX)/share/moonbox/examples
	install -m 755 moonbox $(DESTDIR)$(PREFIX)/bin/
	install -d $(DESTDIR)$(LIBEXECDIR)
	install -m 755 moonbox-launcher $(DESTDIR)$(LIBEXECDIR)/
	install -m 755 moonbox-device $(DESTDIR)$(LIBEXECDIR)/
	install -m 644 libmoonbox.a $(DESTDIR)$(PREFIX)/lib/
	install -m 755 libmoonbox.so $(DESTDIR)$(PREFIX)/lib/
	install -m 755 moonbox.so $(DESTDIR)$(PREFIX)/lib/lua/5.4/
	install -m 644 include/moonbox.h $(DESTDIR)$(PREFIX)/include/
	install -m 644 include/moonbox/*.h $(DESTDIR)$(PREFIX)/include/moonbox/
	install -m 644 machines/*.lua $(DESTDIR)$(PREFIX)/share/moonbox/machines/
	install -m 644 examples/*.c $(DESTDIR)$(PREFIX)/share/moonbox/examples/
	sed -e 's|@PREFIX@|$(PREFIX)|' -e 's|@VERSION@|$(shell sed -n 's/^#define MB_VERSION "\(.*\)"/\1/p' include/moonbox.h)|' \
		moonbox.pc.in > $(DESTDIR)$(PREFIX)/lib/pkgconfig/moonbox.pc

clean:
	rm -rf $(B) build-asan build-ubsan build-tsan libmoonbox.a libmoonbox.so moonbox moonbox.so moonbox-launcher moonbox-device

.PHONY: all guests examples deps unit test test-asan test-ubsan test-tsan bench fuzz run install clean
.DELETE_ON_ERROR:
# Keep the guests' ELF files: their symbols name the addresses tests break at.
.SECONDARY: $(GUESTS:.bin=.elf)
