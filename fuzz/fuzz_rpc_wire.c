/* fuzz_rpc_wire.c — libFuzzer harness for the remote backend's transport: the input is the byte
 * stream a server receives. The first byte picks the mode:
 *   bit 0 clear: the rest goes raw to plumb__rpc_handshake_server (then recv until it fails);
 *   bit 0 set:   a writer thread first runs the real client handshake with the server's key,
 *                then sends the rest after it: raw (bit 1 clear), or (bit 1 set) as records
 *                [type u8][flags u8][len u16 le][payload] turned into frames with valid tags
 *                under the client's session key (flags bit 0: skew the sequence number; bit 1:
 *                flip a tag byte), so the checks past the tag are reached too.
 * The server loops plumb__rpc_recv until it fails. Deadlines are 100 ms. */
#include "backend/remote/remote_wire.h"

#include <pthread.h>
#include <stdint.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static const uint8_t kKey[] = "plumb-fuzz-key-0123456789abcdef";
#define KEY_LEN (sizeof kKey - 1)

typedef struct {
    int fd;
    uint8_t mode;
    const uint8_t *data;
    size_t size;
} writer_arg;

static int write_all(int fd, const uint8_t *p, size_t n) {
    while (n) {
        ssize_t w = send(fd, p, n, MSG_NOSIGNAL);
        if (w <= 0) return -1;
        p += w;
        n -= (size_t)w;
    }
    return 0;
}

static void write_records(int fd, const plumb_rpc_conn *c, const uint8_t *p, size_t n) {
    uint64_t seq = 0;
    while (n >= 4) {
        uint8_t type = p[0], flags = p[1];
        size_t len = (size_t)(p[2] | (p[3] << 8));
        p += 4;
        n -= 4;
        if (len > n) len = n;
        uint8_t hdr[PLUMB_RPC_HEADER_BYTES], tag[PLUMB_RPC_TAG_BYTES];
        plumb__rpc_write_header(hdr, PLUMB_RPC_VERSION, type, (uint32_t)len, seq + ((flags & 1) ? (flags >> 2) + 1 : 0));
        struct iovec part = {(void *)p, len};
        if (plumb__rpc_frame_tag(c->session, 'C', hdr, &part, 1, tag) != PLUMB_OK) return;
        if (flags & 2) tag[flags % PLUMB_RPC_TAG_BYTES] ^= 0x80;
        if (write_all(fd, hdr, sizeof hdr) || write_all(fd, p, len) || write_all(fd, tag, sizeof tag)) return;
        p += len;
        n -= len;
        seq++;
    }
}

static void *writer(void *v) {
    writer_arg *a = v;
    if (a->mode & 1) {
        plumb_rpc_conn cli;
        plumb__rpc_conn_init(&cli, a->fd, false, 100);
        if (plumb__rpc_handshake_client(&cli, kKey, KEY_LEN, NULL) == PLUMB_OK) {
            if (a->mode & 2) write_records(a->fd, &cli, a->data, a->size);
            else (void)write_all(a->fd, a->data, a->size);
        }
        plumb__rpc_conn_free(&cli);
    } else {
        (void)write_all(a->fd, a->data, a->size);
    }
    shutdown(a->fd, SHUT_WR);
    return NULL;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size < 1) return 0;
    int sv[2];
    if (socketpair(AF_UNIX, SOCK_STREAM, 0, sv) != 0) return 0;
    writer_arg a = {sv[0], data[0], data + 1, size - 1};
    pthread_t th;
    if (pthread_create(&th, NULL, writer, &a) != 0) {
        close(sv[0]);
        close(sv[1]);
        return 0;
    }
    plumb_rpc_conn srv;
    plumb__rpc_conn_init(&srv, sv[1], true, 100);
    volatile size_t sink = 0;
    if (plumb__rpc_handshake_server(&srv, kKey, KEY_LEN, 0) == PLUMB_OK) {
        uint16_t type;
        const uint8_t *payload;
        size_t len;
        while (plumb__rpc_recv(&srv, &type, &payload, &len) == PLUMB_OK)
            sink += type + len + (len ? payload[0] + payload[len - 1] : 0);
    }
    (void)sink;
    shutdown(sv[1], SHUT_RDWR); /* unblocks a writer still sending */
    pthread_join(th, NULL);
    plumb__rpc_conn_free(&srv);
    close(sv[0]);
    close(sv[1]);
    return 0;
}
