/* remote_key.c — the remote backend's pre-shared key file: private to its owner, at least 128
 * bits, trailing whitespace trimmed. */
#include "backend/remote/remote_wire.h"

#include "core/error.h"

#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <openssl/crypto.h>

plumb_status plumb__rpc_key_load(const char *path, uint8_t *key, size_t cap, size_t *len) {
    if (!path || !key || !len) return plumb__fail(PLUMB_E_INVALID_ARG, "rpc key: NULL argument");
    *len = 0;
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY);
    if (fd < 0) {
        int e = errno;
        return plumb__fail(e == ENOENT ? PLUMB_E_NOT_FOUND : PLUMB_E_IO, "rpc key file %s: %s", path,
                           strerror(e));
    }
    struct stat sb;
    if (fstat(fd, &sb) != 0) {
        int e = errno;
        close(fd);
        return plumb__fail(PLUMB_E_IO, "rpc key file %s: %s", path, strerror(e));
    }
    if (!S_ISREG(sb.st_mode)) {
        close(fd);
        return plumb__fail(PLUMB_E_INVALID_ARG, "rpc key file %s is not a regular file", path);
    }
    if (sb.st_mode & 077) {
        close(fd);
        return plumb__fail(PLUMB_E_INVALID_ARG,
                           "rpc key file %s can be read by its group or others (mode %03o): chmod 600 %s",
                           path, (unsigned)(sb.st_mode & 0777), path);
    }
    uint8_t buf[PLUMB_RPC_KEY_FILE_MAX + 1];
    size_t n = 0;
    plumb_status st = PLUMB_OK;
    while (n < sizeof buf) {
        ssize_t r = read(fd, buf + n, sizeof buf - n);
        if (r > 0) {
            n += (size_t)r;
        } else if (r == 0) {
            break;
        } else if (errno != EINTR) {
            st = plumb__fail(PLUMB_E_IO, "rpc key file %s: %s", path, strerror(errno));
            break;
        }
    }
    close(fd);
    if (st == PLUMB_OK && n > PLUMB_RPC_KEY_FILE_MAX)
        st = plumb__fail(PLUMB_E_INVALID_ARG, "rpc key file %s is over %d bytes", path, PLUMB_RPC_KEY_FILE_MAX);
    while (st == PLUMB_OK && n > 0 &&
           (buf[n - 1] == ' ' || buf[n - 1] == '\t' || buf[n - 1] == '\r' || buf[n - 1] == '\n'))
        n--;
    if (st == PLUMB_OK && n < PLUMB_RPC_KEY_MIN)
        st = plumb__fail(PLUMB_E_INVALID_ARG,
                         "rpc key file %s holds a %zu-byte key: a key needs at least %d bytes (128 bits); "
                         "make one with `openssl rand -base64 32`",
                         path, n, PLUMB_RPC_KEY_MIN);
    if (st == PLUMB_OK && n > cap)
        st = plumb__fail(PLUMB_E_RANGE, "rpc key file %s holds a %zu-byte key, over the %zu bytes room", path, n,
                         cap);
    if (st == PLUMB_OK) {
        memcpy(key, buf, n);
        *len = n;
    }
    OPENSSL_cleanse(buf, sizeof buf);
    return st;
}
