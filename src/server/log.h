/* log.h — the server's lines on stderr, each written whole with one write(2), so lines from
 * connection threads and the scheduler never interleave. */
#ifndef PLUMB_SERVER_LOG_H
#define PLUMB_SERVER_LOG_H

/* Writes "plumb serve: <formatted>\n" (cut at 1 KiB). */
void plumb_srv_log(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

#endif
