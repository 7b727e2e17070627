/* libFuzzer target: the log record decoder and redaction.
 *
 * Input: 8 bytes of sequence number, 1 mode byte, then the record. With
 * mode bit 0 set the harness first writes a correct checksum into the
 * record's last 8 bytes, so the fuzzer explores the envelope parser
 * behind the checksum instead of stopping at it. Nothing may crash or
 * read out of bounds; a decoded record can be redacted and the
 * tombstone decodes again. */
#include "log/log.h"

#include <stdlib.h>
#include <xxhash.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t n)
{
    if (n < 9) return 0;
    uint64_t seq = sp_be64_get(data);
    uint8_t mode = data[8];
    size_t len = n - 9;
    uint8_t *rec = malloc(len ? len : 1);
    memcpy(rec, data + 9, len);
    if ((mode & 1) && len >= 9) sp_be64_put(rec + len - 8, XXH3_64bits_withSeed(rec, len - 9, seq));
    log_event_t ev;
    char why[128];
    if (log_record_decode(seq, (sp_slice_t){rec, len}, &ev, why, sizeof why) == 0 && !ev.redacted) {
        sp_buf_t r = {0};
        if (log_record_redact(seq, (sp_slice_t){rec, len}, 1, &r) != 0) __builtin_trap();
        log_event_t red;
        if (log_record_decode(seq, sp_buf_slice(&r), &red, NULL, 0) != 0 || !red.redacted) __builtin_trap();
        sp_buf_free(&r);
    }
    free(rec);
    return 0;
}
