/* names.c - name rules of the tree and UTC time strings. */
#include "battlefs/names.h"

#include <stdio.h>
#include <string.h>
#include <time.h>

/* The characters of a name: [A-Za-z0-9_.-]. A table, as every index row's
 * dataset name is checked when a manifest is read (a rebuild checks
 * hundreds of thousands). */
static const unsigned char name_char[256] = {
    ['A'] = 1, ['B'] = 1, ['C'] = 1, ['D'] = 1, ['E'] = 1, ['F'] = 1, ['G'] = 1, ['H'] = 1,
    ['I'] = 1, ['J'] = 1, ['K'] = 1, ['L'] = 1, ['M'] = 1, ['N'] = 1, ['O'] = 1, ['P'] = 1,
    ['Q'] = 1, ['R'] = 1, ['S'] = 1, ['T'] = 1, ['U'] = 1, ['V'] = 1, ['W'] = 1, ['X'] = 1,
    ['Y'] = 1, ['Z'] = 1, ['a'] = 1, ['b'] = 1, ['c'] = 1, ['d'] = 1, ['e'] = 1, ['f'] = 1,
    ['g'] = 1, ['h'] = 1, ['i'] = 1, ['j'] = 1, ['k'] = 1, ['l'] = 1, ['m'] = 1, ['n'] = 1,
    ['o'] = 1, ['p'] = 1, ['q'] = 1, ['r'] = 1, ['s'] = 1, ['t'] = 1, ['u'] = 1, ['v'] = 1,
    ['w'] = 1, ['x'] = 1, ['y'] = 1, ['z'] = 1, ['0'] = 1, ['1'] = 1, ['2'] = 1, ['3'] = 1,
    ['4'] = 1, ['5'] = 1, ['6'] = 1, ['7'] = 1, ['8'] = 1, ['9'] = 1, ['_'] = 1, ['.'] = 1,
    ['-'] = 1};

int bfs_name_valid(const char *s, size_t n)
{
    if (n == 0 || n > BFS_NAME_MAX || s[0] == '.')
        return 0;
    const unsigned char *p = (const unsigned char *)s;
    unsigned char ok = 1;
    for (size_t i = 0; i < n; i++)
        ok &= name_char[p[i]];
    return ok;
}

int bfs_node_char(char c)
{
    return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_' ||
           c == '-';
}

int bfs_node_valid(const char *s)
{
    size_t n = s ? strlen(s) : 0;
    if (n == 0 || n > BFS_NODE_MAX)
        return 0;
    for (size_t i = 0; i < n; i++)
        if (!bfs_node_char(s[i]))
            return 0;
    return 1;
}

int bfs_table_reserved(const char *s, size_t n)
{
    static const char *const reserved[] = {"incoming", "_battlefs"};
    for (size_t i = 0; i < sizeof reserved / sizeof reserved[0]; i++)
        if (n == strlen(reserved[i]) && memcmp(s, reserved[i], n) == 0)
            return 1;
    return 0;
}

size_t bfs_escape_ctl(char *dst, size_t cap, const char *src)
{
    size_t o = 0;
    if (cap == 0)
        return 0;
    for (const unsigned char *p = (const unsigned char *)src; *p; p++) {
        if (*p < 0x20 || *p == 0x7f) {
            if (o + 4 >= cap)
                break;
            snprintf(dst + o, 5, "\\x%02x", *p);
            o += 4;
        } else {
            if (o + 1 >= cap)
                break;
            dst[o++] = (char)*p;
        }
    }
    dst[o] = '\0';
    return o;
}

void bfs_utc_date(char out[11])
{
    time_t now = time(NULL);
    struct tm tm;
    gmtime_r(&now, &tm);
    strftime(out, 11, "%Y-%m-%d", &tm);
}

void bfs_utc_timestamp(char out[21])
{
    time_t now = time(NULL);
    struct tm tm;
    gmtime_r(&now, &tm);
    strftime(out, 21, "%Y-%m-%dT%H:%M:%SZ", &tm);
}

int bfs_name_index(const char *const *names, unsigned n, const char *name)
{
    for (unsigned i = 0; name && i < n; i++)
        if (strcmp(name, names[i]) == 0)
            return (int)i;
    return -1;
}
