-- make install: binaries, header, pkg-config file and Lua module land under
-- DESTDIR/PREFIX and work from there.
local T = dofile((arg[0]:match("^(.*)/[^/]*$") or ".") .. "/harness.lua")

local function sh(cmd)
  local p = io.popen("cd " .. T.root .. " && " .. cmd .. " 2>&1; echo \"rc=$?\"")
  local out = p:read("a"); p:close()
  return out:gsub("rc=%d+\n$", ""), tonumber(out:match("rc=(%d+)\n$"))
end

local dest = os.tmpname(); os.remove(dest)
local pre = dest .. "/opt/mb"

T.case("install with PREFIX and DESTDIR", function()
  local out, rc = sh("make -s install PREFIX=/opt/mb DESTDIR=" .. dest)
  T.eq(rc, 0, out)
  for _, f in ipairs { "/bin/moonbox", "/lib/libmoonbox.a", "/lib/libmoonbox.so", "/include/moonbox.h",
    "/lib/pkgconfig/moonbox.pc", "/lib/lua/5.4/moonbox.so", "/share/moonbox/machines/linux.lua",
    "/libexec/moonbox/moonbox-launcher" } do
    T.ok(io.open(pre .. f), "installed " .. f)
  end
end)

T.case("the installed moonbox finds the installed launcher (docs/sandbox.md)", function()
  local out, rc = sh("env -u MOONBOX_LIBEXEC " .. pre .. "/bin/moonbox --info")
  T.eq(rc, 0, out)
  T.ok(out:find("launcher: " .. pre:gsub("%p", "%%%0") .. "/libexec/moonbox/moonbox%-launcher\n"), out)
end)

T.case("pkg-config file builds a program against the library", function()
  local c = dest .. "/t.c"
  local h = io.open(c, "w")
  h:write('#include <moonbox.h>\n#include <stdio.h>\nint main(void){uint64_t v; mb_parse_size("4G-256K",&v);' ..
    'printf("%llx\\n",(unsigned long long)v);return 0;}\n')
  h:close()
  local out, rc = sh("PKG_CONFIG_SYSROOT_DIR=" .. dest .. " PKG_CONFIG_PATH=" .. pre ..
    "/lib/pkgconfig cc -o " .. dest .. "/t " .. c .. " $(PKG_CONFIG_SYSROOT_DIR=" .. dest ..
    " PKG_CONFIG_PATH=" .. pre .. "/lib/pkgconfig pkg-config --cflags --libs moonbox | sed 's/-lmoonbox/-l:libmoonbox.a/') && " ..
    dest .. "/t")
  T.eq(rc, 0, out); T.eq(out, "fffc0000\n")
end)

T.case("the installed embed_pc.c builds with pkg-config", function()
  local src = pre .. "/share/moonbox/examples/embed_pc.c"
  T.ok(io.open(src), "installed " .. src)
  local pc = "PKG_CONFIG_SYSROOT_DIR=" .. dest .. " PKG_CONFIG_PATH=" .. pre .. "/lib/pkgconfig"
  local out, rc = sh(pc .. " cc -std=c11 -D_GNU_SOURCE -Wall -Wextra -Werror -o " .. dest ..
    "/embed_pc " .. src .. " $(" .. pc .. " pkg-config --cflags --libs moonbox | sed 's/-lmoonbox/-l:libmoonbox.a/')")
  T.eq(rc, 0, out)
  T.ok(io.open(dest .. "/embed_pc"), "built")
end)

T.case("stock lua5.4 finds the installed module", function()
  local out, rc = sh("LUA_CPATH='" .. pre .. "/lib/lua/5.4/?.so' lua5.4 -e 'print(require(\"moonbox\").version)'")
  T.eq(rc, 0, out); T.ok(out:match("^%d+%.%d+%.%d+\n$"), out)
end)

os.execute("rm -rf " .. dest)
T.done()
