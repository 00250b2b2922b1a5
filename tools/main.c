/*
 * sparsegate: the command line.  Each subcommand lives in its own file
 * (tools/cmd_*.c) and is found here by name; a subcommand whose file is not
 * built is reported as unavailable rather than failing the link.
 */
#include <stdio.h>
#include <string.h>

typedef int (*sg_cmd_fn)(int argc, char **argv);

#define SG_CMD(name) \
    extern int sg_cmd_##name(int argc, char **argv) __attribute__((weak))

SG_CMD(run);
SG_CMD(mkmodel);
SG_CMD(tokenize);
SG_CMD(ingest);
SG_CMD(migrate);
SG_CMD(search);
SG_CMD(context);
SG_CMD(prompts);
SG_CMD(bench);
SG_CMD(compare);
SG_CMD(plan);

static const struct {
    const char *name;
    const char *help;
} cmds[] = {
    { "run", "run a model on prompt ids (greedy/sampled, --dump)" },
    { "mkmodel", "write a random-weight DeepSeek-V3.2 checkpoint" },
    { "tokenize", "encode text to ids / decode ids to text" },
    { "ingest", "load a corpus into a passage store" },
    { "migrate", "upgrade a passage store to the current schema" },
    { "search", "query a passage store" },
    { "context", "build a RAG prompt for a question" },
    { "prompts", "build many RAG prompts as token ids (training data)" },
    { "bench", "engine micro-benchmarks" },
    { "compare", "compare dumped outputs with reference fixtures" },
    { "plan", "what a model needs per device of a group, and if it fits" },
};

static sg_cmd_fn
lookup(const char *name)
{
    if (strcmp(name, "run") == 0) return sg_cmd_run;
    if (strcmp(name, "mkmodel") == 0) return sg_cmd_mkmodel;
    if (strcmp(name, "tokenize") == 0) return sg_cmd_tokenize;
    if (strcmp(name, "ingest") == 0) return sg_cmd_ingest;
    if (strcmp(name, "migrate") == 0) return sg_cmd_migrate;
    if (strcmp(name, "search") == 0) return sg_cmd_search;
    if (strcmp(name, "context") == 0) return sg_cmd_context;
    if (strcmp(name, "prompts") == 0) return sg_cmd_prompts;
    if (strcmp(name, "bench") == 0) return sg_cmd_bench;
    if (strcmp(name, "compare") == 0) return sg_cmd_compare;
    if (strcmp(name, "plan") == 0) return sg_cmd_plan;
    return NULL;
}

static void
usage(FILE *f)
{
    fprintf(f, "usage: sparsegate COMMAND [options]   (COMMAND --help for more)\n\n");
    for (size_t i = 0; i < sizeof(cmds) / sizeof(cmds[0]); i++) {
        fprintf(f, "  %-9s %s%s\n", cmds[i].name, cmds[i].help,
                lookup(cmds[i].name) ? "" : " (not built)");
    }
}

int
main(int argc, char **argv)
{
    sg_cmd_fn fn;

    if (argc < 2 || strcmp(argv[1], "-h") == 0 || strcmp(argv[1], "--help") == 0) {
        usage(argc < 2 ? stderr : stdout);
        return argc < 2 ? 2 : 0;
    }
    fn = lookup(argv[1]);
    if (fn == NULL) {
        fprintf(stderr, "sparsegate: unknown or unavailable command '%s'\n\n",
                argv[1]);
        usage(stderr);
        return 2;
    }
    return fn(argc - 1, argv + 1);
}
