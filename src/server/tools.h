/* tools.h — tool calls in the syntax each model family was trained on: which syntax a chat
 * template uses, the grammar that makes a call valid (the tools' JSON Schemas, through
 * plumb_json_schema_to_gbnf), and an answer split back into text and OpenAI tool calls. */
#ifndef PLUMB_SERVER_TOOLS_H
#define PLUMB_SERVER_TOOLS_H

#include "request.h"

#include <cjson/cJSON.h>

typedef enum plumb_srv_tool_syntax {
    PLUMB_SRV_SYNTAX_HERMES,  /* Qwen 2.5/3, Hermes: <tool_call>\n{"name", "arguments"}\n</tool_call> */
    PLUMB_SRV_SYNTAX_LLAMA3,  /* Llama 3.x: {"name", "parameters"} */
    PLUMB_SRV_SYNTAX_MISTRAL, /* Mistral: [TOOL_CALLS][{"name", "arguments"}, ...] */
    PLUMB_SRV_SYNTAX_GENERIC, /* any other model: {"tool_calls": [...]} or {"content": ...}, explained
                                 to the model in a system message */
} plumb_srv_tool_syntax;

/* The syntax a chat template (NULL: none, a built-in format) writes tool calls in. */
plumb_srv_tool_syntax plumb_srv_tool_syntax_of(const char *tmpl);
const char *plumb_srv_tool_syntax_name(plumb_srv_tool_syntax s);

/* How a request's output is constrained for its tools. */
typedef struct plumb_srv_tool_grammar {
    char *gbnf;          /* malloc'd */
    const char *root;    /* the start rule */
    const char *trigger; /* tool_choice auto: the output is free until this text (or control
                            token) appears, then constrained from its first byte (from just
                            after it, for a control token, with root_after); NULL: from the
                            first token */
    const char *trigger2;   /* a second text trigger, or NULL */
    const char *root_after; /* the start rule after a control-token trigger */
    bool force_trigger;     /* required with a control-token trigger: the trigger is the first token */
} plumb_srv_tool_grammar;

/* The grammar for r's tools (r->tool_choice not NONE). PLUMB_E_INVALID_ARG with msg naming the
 * tool when a tool's parameters cannot be made a grammar; PLUMB_E_NOMEM. */
plumb_status plumb_srv_tools_grammar(plumb_srv_tool_syntax syn, const plumb_srv_request *r, plumb_srv_tool_grammar *out,
                                     char *msg, size_t msg_cap);
void plumb_srv_tool_grammar_free(plumb_srv_tool_grammar *g);

/* GENERIC: r->messages_json with a system message that lists the tools and the answer's form
 * put first (or added to the first system message). malloc'd; NULL when out of memory. */
char *plumb_srv_tools_generic_messages(const plumb_srv_request *r);

/* Splits an answer into its text (*content, malloc'd, NULL when there is none) and its calls
 * (*calls, a cJSON array of {"id", "type": "function", "function": {"name", "arguments"}},
 * NULL when none). Text that only looks like a call but does not parse stays text.
 * PLUMB_E_NOMEM. */
plumb_status plumb_srv_tools_parse(plumb_srv_tool_syntax syn, const char *text, size_t len, char **content,
                                   cJSON **calls);

/* Where a tool call may begin in text[0..len) as it streams: the length of the prefix that is
 * surely content (no call starts in it). */
size_t plumb_srv_tools_content_prefix(plumb_srv_tool_syntax syn, const char *text, size_t len);

/* A new tool call id, "call_" and 24 letters and digits. */
void plumb_srv_tools_call_id(char *id, size_t cap);

/* Streaming a Hermes call as it is written (<tool_call>{"name": "...", "arguments": {...}}</tool_call>,
 * or the same object without the tags): the head up to the arguments' first byte. Returns 1
 * with the name at text[*name, *name + *name_len) and the arguments from *args on; 0 when
 * text[0..len) may still become a head; -1 when it will not (the call is then taken whole). */
int plumb_srv_tools_call_head(const char *text, size_t len, size_t *name, size_t *name_len, size_t *args);
/* The arguments' JSON value as it streams: feed bytes, get the offset just past its end. */
typedef struct plumb_srv_json_scan {
    int depth;
    bool in_string, escape, started;
} plumb_srv_json_scan;
/* Scans text[from..len) on from state sc; returns the offset just past the end of the value
 * (an object or array) or len when it has not ended yet. */
size_t plumb_srv_json_scan_to_end(plumb_srv_json_scan *sc, const char *text, size_t from, size_t len);
/* After the arguments: the rest of a Hermes call ("}" and "</tool_call>", with white space).
 * Returns 1 with *end just past it, 0 when it may still come, -1 when text is not that. */
int plumb_srv_tools_call_tail(const char *text, size_t len, bool tagged, size_t *end);

#endif
