/* agent.h — the server's HAProxy agent-check listener (`plumb serve --agent-port N`): a TCP
 * port on which every connection gets one ASCII line saying how the server stands, then is
 * closed. HAProxy (2.6 configuration manual, "agent-check") reads the line as words separated
 * by spaces, tabs or commas, ended by '\n': an operational state ("up", "down", "fail"), an
 * administrative one ("ready", "drain"), a weight ("75%", relative to the server line's
 * configured weight) and "maxconn:N"; text after '#' describes the state on its stats page.
 * The lines this agent sends, by the server's state:
 *   loading the model          "down #loading\n"
 *   the model failed to load   "fail #model failed to load\n"
 *   shutting down (SIGTERM)    "drain\n"
 *   the model's device lost    "down #device unavailable\n"  (until the model is loaded again)
 *   serving                    "up ready W% maxconn:S\n"   (S slots, W from the free ones)
 * The weight is 100 * free / S rounded down, but never below 1%: in HAProxy 0% means drain (the
 * server leaves the farm and takes no request from the backend's queue either), while 1% only
 * makes a full server the last choice. "ready" is in every serving line because only the agent
 * can undo its own "drain": a restarted server must lift what its predecessor set.
 * What the listener guarantees: one thread, poll(), no allocation per connection; the line is
 * sent as the connection is accepted (HAProxy sends nothing unless agent-send is set, so the
 * agent cannot wait for a request), then the sending side is shut and whatever the peer sends
 * (agent-send's text, or anything else) is read into a small buffer and dropped, until the peer
 * closes, PLUMB_SRV_AGENT_READ_MAX bytes came or read_ms passed. At most max_clients
 * connections are open; past that the oldest (already answered) is closed. It never answers
 * anything but its line: not HTTP, whatever is sent. */
#ifndef PLUMB_SERVER_AGENT_H
#define PLUMB_SERVER_AGENT_H

#include "plumb.h"

#define PLUMB_SRV_AGENT_READ_MAX 1024 /* bytes read from one connection at most */

typedef struct plumb_srv_agent plumb_srv_agent;

typedef enum plumb_srv_agent_state {
    PLUMB_SRV_AGENT_LOADING,
    PLUMB_SRV_AGENT_FAILED,
    PLUMB_SRV_AGENT_SERVING,
    PLUMB_SRV_AGENT_DRAINING,
    PLUMB_SRV_AGENT_DEVICE_LOST, /* the model's device is lost until the model is loaded again */
} plumb_srv_agent_state;

/* How the server stands, as the agent reports it. */
typedef struct plumb_srv_agent_status {
    plumb_srv_agent_state state;
    int32_t free_slots, total_slots; /* SERVING: slots free for a new request, and all of them */
} plumb_srv_agent_status;

/* Fills *out. Called on the agent's thread for each connection: thread-safe and quick. */
typedef void (*plumb_srv_agent_status_fn)(void *user, plumb_srv_agent_status *out);

typedef struct plumb_srv_agent_params {
    const char *host;    /* address to bind (NULL: 127.0.0.1) */
    int port;            /* 0: any free port */
    int32_t max_clients; /* connections open at once at most (>= 1) */
    int read_ms;         /* how long a connection is read after its answer at most (>= 1) */
} plumb_srv_agent_params;

/* The line for a status into buf[0..cap) (cap >= 64), NUL-terminated; returns its length. */
size_t plumb_srv_agent_line(const plumb_srv_agent_status *st, char *buf, size_t cap);

/* Binds and starts the agent's thread; status(user) is asked for each connection until
 * plumb_srv_agent_free. PLUMB_E_IO (the address cannot be bound), PLUMB_E_INVALID_ARG or
 * PLUMB_E_NOMEM, with the reason in err[0..err_cap). On success *out is the caller's. */
plumb_status plumb_srv_agent_start(const plumb_srv_agent_params *p, plumb_srv_agent_status_fn status, void *user,
                                   plumb_srv_agent **out, char *err, size_t err_cap);
/* The port it listens on. */
int plumb_srv_agent_port(const plumb_srv_agent *a);
/* Stops the thread, closes the listener and every connection, frees a. NULL is a no-op. */
void plumb_srv_agent_free(plumb_srv_agent *a);

#endif
