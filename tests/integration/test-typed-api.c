/*
 * test-typed-api.c: the typed object API is checked by the compiler. Each case compiles a
 * snippet against poolmalloc.h with the system compiler (cc): the README's example program
 * and a correct snippet must compile with -Wall -Wextra -Werror; a ref_offsets array of the
 * wrong element type, and PM_ macros given something that is not an object, must not
 * compile, each with the diagnostic that names the mistake. Without a compiler: SKIP.
 */
#include <criterion/criterion.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

static char diagnostics[16384];

static const char *srcdir(void) {
    const char *d = getenv("PM_TOP_SRCDIR");
    return d != NULL ? d : ".";
}

static void need_compiler(void) {
    if (system("command -v cc >/dev/null 2>&1") != 0)
        cr_skip_test("no C compiler (cc) on PATH");
}

/* Compiles file (-c, warnings as errors); returns the compiler's exit status. */
static int compile_file(const char *file) {
    char cmd[4096];
    snprintf(cmd, sizeof cmd, "cc -std=gnu11 -Wall -Wextra -Werror -I'%s/src' -c '%s' -o /dev/null 2>&1",
             srcdir(), file);
    FILE *p = popen(cmd, "r");
    cr_assert_not_null(p);
    size_t n = fread(diagnostics, 1, sizeof diagnostics - 1, p);
    diagnostics[n] = 0;
    int status = pclose(p);
    cr_assert(WIFEXITED(status), "the compiler did not exit normally");
    return WEXITSTATUS(status);
}

static int compile_snippet(const char *body) {
    char path[] = "/tmp/pm-typed-api-XXXXXX.c";
    int fd = mkstemps(path, 2);
    cr_assert_geq(fd, 0);
    FILE *f = fdopen(fd, "w");
    fprintf(f, "#include <stddef.h>\n#include \"poolmalloc.h\"\n"
               "typedef struct node { pm_object base; struct node *a; pm_object *b; } node;\n"
               "%s\n", body);
    fclose(f);
    int rc = compile_file(path);
    unlink(path);
    return rc;
}

static void expect_rejected(const char *body, const char *diagnostic) {
    need_compiler();
    cr_assert_neq(compile_snippet(body), 0, "compiled, but must not:\n%s", body);
    cr_assert(strstr(diagnostics, diagnostic) != NULL, "rejected, but not for \"%s\":\n%s",
              diagnostic, diagnostics);
}

Test(typed_api, readme_example_compiles_with_werror) {
    need_compiler();
    char path[4096];
    snprintf(path, sizeof path, "%s/tests/integration/example-objects.c", srcdir());
    cr_assert_eq(compile_file(path), 0, "example-objects.c:\n%s", diagnostics);
}

static const char good[] =
    "static const pm_ref_offset node_refs[] = {offsetof(node, a), offsetof(node, b), 0};\n"
    "static const pm_type node_type = {.name = \"node\", .size = sizeof(node),\n"
    "                                  .ref_offsets = PM_REFS(node_refs)};\n"
    "static int trav(pm_object *self, pm_visit_fn visit, void *arg) {\n"
    "    node *n = (node *)self; PM_VISIT(n->a); PM_VISIT(n->b); return 0; }\n"
    "void use(pm_object *o, node *n);\n"
    "void use(pm_object *o, node *n) {\n"
    "    PM_INCREF(o); PM_DECREF(o); PM_INCREF(n); node *m = PM_NEWREF(n); PM_DECREF(m);\n"
    "    PM_XDECREF(n->a); PM_CLEAR(n->b); node *k = PM_NEW(node, &node_type);\n"
    "    PM_DECREF(k); (void)trav; }\n";

Test(typed_api, correct_snippet_compiles) {
    need_compiler();
    cr_assert_eq(compile_snippet(good), 0, "%s", diagnostics);
}

Test(typed_api, ref_offsets_of_size_t_do_not_compile) {
    expect_rejected("static const size_t refs[] = {offsetof(node, a), 0};\n"
                    "const pm_type t = {.name = \"t\", .size = sizeof(node),\n"
                    "                   .ref_offsets = PM_REFS(refs)};\n",
                    "_Generic");
}

Test(typed_api, incref_of_a_struct_without_the_header_first_does_not_compile) {
    expect_rejected("struct late { long x; pm_object base; };\n"
                    "void f(struct late *p);\nvoid f(struct late *p) { PM_INCREF(p); }\n",
                    "the pm_object header must be the first member");
}

Test(typed_api, incref_of_a_struct_without_a_header_does_not_compile) {
    expect_rejected("struct plain { long x; pm_object *base; };\n"
                    "void f(struct plain *p);\nvoid f(struct plain *p) { PM_DECREF(p); }\n",
                    "not an object");
}

Test(typed_api, incref_of_void_pointer_does_not_compile) {
    expect_rejected("void f(void *p);\nvoid f(void *p) { PM_INCREF(p); }\n", "base");
}

Test(typed_api, visit_of_a_non_object_field_does_not_compile) {
    expect_rejected("struct box { pm_object base; int *n; };\n"
                    "int trav(pm_object *self, pm_visit_fn visit, void *arg);\n"
                    "int trav(pm_object *self, pm_visit_fn visit, void *arg) {\n"
                    "    PM_VISIT(((struct box *)self)->n); return 0; }\n",
                    "base");
}
