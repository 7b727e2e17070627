/* Output chunks (docs/agent-protocol.md section 4): a zstd frame holding a
 * msgpack array of [t_ms, stream, text] lines.
 *
 * Chunks are built with msgpack-c's packer writing straight into one
 * growing buffer, so a line costs a few memcpy calls and no allocation.
 * The array header is written as array32 with a zero count and patched
 * when the chunk is sealed: msgpack allows a non-minimal header and it
 * spares a copy of the whole chunk. */
#include "agent_internal.h"

#include <msgpack.h>
#include <stdlib.h>
#include <zstd.h>

static int buf_write(void *data, const char *p, size_t n)
{
    sp_buf_add(data, p, n);
    return 0;
}

void agent__chunk_init(agent__chunk_t *c)
{
    c->nlines = 0;
    c->buf.n = 0;
    static const uint8_t hdr[5] = {0xdd, 0, 0, 0, 0};
    sp_buf_add(&c->buf, hdr, sizeof hdr);
}

void agent__chunk_add(agent__chunk_t *c, uint64_t t_ms, int stream, const char *text, size_t n)
{
    msgpack_packer pk;
    msgpack_packer_init(&pk, &c->buf, buf_write);
    sp_buf_reserve(&c->buf, n + 16);
    msgpack_pack_array(&pk, 3);
    msgpack_pack_uint64(&pk, t_ms);
    msgpack_pack_uint8(&pk, (uint8_t)stream);
    msgpack_pack_str(&pk, n);
    msgpack_pack_str_body(&pk, text, n);
    c->nlines++;
}

void agent__chunk_seal(agent__chunk_t *c)
{
    uint32_t n = c->nlines;
    c->buf.p[1] = (uint8_t)(n >> 24);
    c->buf.p[2] = (uint8_t)(n >> 16);
    c->buf.p[3] = (uint8_t)(n >> 8);
    c->buf.p[4] = (uint8_t)n;
}

void agent__chunk_free(agent__chunk_t *c)
{
    sp_buf_free(&c->buf);
    c->nlines = 0;
}

/* Frames carry a content checksum: a chunk damaged on its way is refused
 * by the decoder instead of becoming different output. */
int agent__zstd_compress(void *cctx, int level, const void *src, size_t n, sp_buf_t *dst)
{
    size_t bound = ZSTD_compressBound(n);
    dst->n = 0;
    sp_buf_reserve(dst, bound);
    ZSTD_CCtx_setParameter(cctx, ZSTD_c_compressionLevel, level);
    ZSTD_CCtx_setParameter(cctx, ZSTD_c_checksumFlag, 1);
    size_t z = ZSTD_compress2(cctx, dst->p, dst->cap, src, n);
    if (ZSTD_isError(z)) return SP_EIO;
    dst->n = z;
    return 0;
}

int agent__chunk_decode(const void *z, size_t zn, agent__line_cb cb, void *arg)
{
    unsigned long long size = ZSTD_getFrameContentSize(z, zn);
    if (size == ZSTD_CONTENTSIZE_ERROR || size == ZSTD_CONTENTSIZE_UNKNOWN || size > ((size_t)1 << 31))
        return SP_ECORRUPT;
    char *raw = malloc(size ? size : 1);
    if (raw == NULL) return SP_ECORRUPT;
    size_t got = ZSTD_decompress(raw, size, z, zn);
    if (ZSTD_isError(got) || got != size) {
        free(raw);
        return SP_ECORRUPT;
    }
    msgpack_unpacked u;
    msgpack_unpacked_init(&u);
    size_t off = 0;
    int rc = SP_ECORRUPT;
    if (msgpack_unpack_next(&u, raw, got, &off) == MSGPACK_UNPACK_SUCCESS && off == got &&
        u.data.type == MSGPACK_OBJECT_ARRAY) {
        rc = 0;
        for (uint32_t i = 0; i < u.data.via.array.size && rc == 0; i++) {
            msgpack_object *l = &u.data.via.array.ptr[i];
            if (l->type != MSGPACK_OBJECT_ARRAY || l->via.array.size != 3 ||
                l->via.array.ptr[0].type != MSGPACK_OBJECT_POSITIVE_INTEGER ||
                l->via.array.ptr[1].type != MSGPACK_OBJECT_POSITIVE_INTEGER || l->via.array.ptr[1].via.u64 > 1 ||
                l->via.array.ptr[2].type != MSGPACK_OBJECT_STR) {
                rc = SP_ECORRUPT;
                break;
            }
            rc = cb(arg, l->via.array.ptr[0].via.u64, (int)l->via.array.ptr[1].via.u64, l->via.array.ptr[2].via.str.ptr,
                    l->via.array.ptr[2].via.str.size);
        }
    }
    msgpack_unpacked_destroy(&u);
    free(raw);
    return rc;
}
