/* moonbox attach PATH (cli/attach.c): 0 on a clean end, 1 on an error. */
#ifndef MB_CLI_ATTACH_H
#define MB_CLI_ATTACH_H
int mb_cli_attach(const char *path);
#endif
