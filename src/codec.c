/* codec.c - codec names (codec.h). */
#include "battlefs/codec.h"

#include <errno.h>
#include <string.h>

static const struct {
    const char *name;
    enum bfs_codec codec;
} codecs[] = {
    {"null", BFS_CODEC_NULL},
    {"deflate", BFS_CODEC_DEFLATE},
    {"snappy", BFS_CODEC_SNAPPY},
};

int bfs_codec_parse(const char *name, size_t len, enum bfs_codec *out)
{
    for (size_t i = 0; i < sizeof codecs / sizeof codecs[0]; i++) {
        if (strlen(codecs[i].name) == len && memcmp(codecs[i].name, name, len) == 0) {
            *out = codecs[i].codec;
            return 0;
        }
    }
    return -EINVAL;
}

bool bfs_codec_valid(enum bfs_codec c)
{
    for (size_t i = 0; i < sizeof codecs / sizeof codecs[0]; i++)
        if (codecs[i].codec == c)
            return true;
    return false;
}

const char *bfs_codec_name(enum bfs_codec c)
{
    for (size_t i = 0; i < sizeof codecs / sizeof codecs[0]; i++)
        if (codecs[i].codec == c)
            return codecs[i].name;
    return "unknown";
}
