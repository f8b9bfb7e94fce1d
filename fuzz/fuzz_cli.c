/* Fuzz the CLI's option parsing: the input is split at newlines into
 * arguments for `train` or `eval`. A final `--data` (and `--model`) to a
 * path that does not exist makes every run stop right after parsing and
 * validation (getopt keeps the last value), before any file is written. */
#define main dptrain_cli_main
#include "../src/cli/main.c"
#undef main

#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t n)
{
    if (n > 4096)
        return 0;
    char *text = malloc(n + 1);
    char *argv[80];
    int argc = 0;
    memcpy(text, data, n);
    text[n] = '\0';
    argv[argc++] = "dptrain";
    argv[argc++] = n && (data[0] & 1) ? "eval" : "train";
    for (char *tok = strtok(text, "\n"); tok && argc < 74; tok = strtok(NULL, "\n"))
        argv[argc++] = tok;
    argv[argc++] = "--data";
    argv[argc++] = "/nonexistent/dpt-fuzz";
    if (strcmp(argv[1], "eval") == 0) {
        argv[argc++] = "--model";
        argv[argc++] = "/nonexistent/dpt-fuzz.safetensors";
    }
    argv[argc] = NULL;
    FILE *saved = stdout;
    stdout = fopen("/dev/null", "w"); /* --help and usage text */
    (void)dptrain_cli_main(argc, argv);
    fclose(stdout);
    stdout = saved;
    free(text);
    return 0;
}
