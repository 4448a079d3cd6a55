/* names.c - name rules of the tree and UTC time strings. */
#include "battlefs/names.h"

#include <stdio.h>
#include <string.h>
#include <time.h>

int bfs_name_valid(const char *s, size_t n)
{
    if (n == 0 || n > BFS_NAME_MAX || s[0] == '.')
        return 0;
    for (size_t i = 0; i < n; i++) {
        char c = s[i];
        int ok = (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
                 c == '_' || c == '.' || c == '-';
        if (!ok)
            return 0;
    }
    return 1;
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
