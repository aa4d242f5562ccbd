/* fuzz_rpc_server.c — libFuzzer harness for what a remote server does with authenticated
 * requests: the input is a sequence of records [type u8][len u16 le][payload], each handed to
 * plumb__rpc_session_handle as a request that passed the transport's checks (the transport's
 * own parsing is fuzz_rpc_wire's). The session serves a one-thread CPU backend with a 1 MiB
 * limit, so ALLOC, SET, GET, COPY, FREE and COMPUTE (whatever its graph decoder accepts is
 * run) all act on real buffers; replies go to a socket a thread drains. No crash, no leak, no
 * access outside the connection's buffers. */
#include "backend/remote/remote_server.h"

#include <pthread.h>
#include <stdint.h>
#include <sys/socket.h>
#include <unistd.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void *drain(void *p) {
    const int fd = *(int *)p;
    char buf[65536];
    while (read(fd, buf, sizeof buf) > 0) {
    }
    return NULL;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    static plumb_backend *cpu;
    if (!cpu && plumb_backend_cpu_create(1, &cpu) != PLUMB_OK) return 0;
    int sv[2];
    if (socketpair(AF_UNIX, SOCK_STREAM, 0, sv)) return 0;
    pthread_t th;
    pthread_create(&th, NULL, drain, &sv[1]);
    plumb_rpc_conn c;
    plumb__rpc_conn_init(&c, sv[0], true, 1000);
    c.authed = true; /* as after a handshake: the requests below passed the transport */
    plumb_rpc_session s;
    if (plumb__rpc_session_init(&s, cpu, 1u << 20, 64) == PLUMB_OK) {
        while (size >= 3) {
            const uint16_t type = data[0];
            size_t len = (size_t)data[1] | (size_t)data[2] << 8;
            data += 3, size -= 3;
            if (len > size) len = size;
            if (plumb__rpc_session_handle(&s, &c, type, data, len) != PLUMB_OK) break;
            data += len, size -= len;
        }
    }
    plumb__rpc_session_free(&s);
    plumb__rpc_conn_free(&c);
    shutdown(sv[0], SHUT_RDWR);
    close(sv[0]);
    pthread_join(th, NULL);
    close(sv[1]);
    return 0;
}
