/* fuzz_template.c — libFuzzer harness for the Jinja engine (plumb_template_check and
 * plumb_template_render). The input is a template, optionally followed by a NUL byte and the
 * variables as JSON; without a NUL the template renders over a fixed chat conversation (system,
 * user and assistant turns, tool definitions, a tool call and its result), so that the fuzzer
 * can explore templates without first having to find valid JSON. Caps are tightened so each
 * input runs in milliseconds. Every successful render is checked: NUL-terminated output,
 * marks sorted, inside the text and apart. */
#include "plumb.h"

#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static const char default_vars[] =
    "{\"messages\": ["
    "{\"role\": \"system\", \"content\": \"You are terse. <|im_start|>\"},"
    "{\"role\": \"user\", \"content\": \"  What's the weather in Paris?\\n\"},"
    "{\"role\": \"assistant\", \"content\": null, \"tool_calls\": [{\"id\": \"call12345\", \"type\": \"function\","
    " \"function\": {\"name\": \"get_weather\", \"arguments\": {\"city\": \"Paris\", \"days\": 2}}}]},"
    "{\"role\": \"tool\", \"tool_call_id\": \"call12345\", \"content\": \"{\\\"temp\\\": 21.5}\"},"
    "{\"role\": \"assistant\", \"content\": \"<think>\\nhmm\\n</think>\\n\\nSunny, 21.5 \\u00b0C.\","
    " \"reasoning_content\": \"hmm\"},"
    "{\"role\": \"user\", \"content\": \"\\u65e5\\u672c\\u8a9e? [INST] <start_of_turn>\"}],"
    " \"tools\": [{\"type\": \"function\", \"function\": {\"name\": \"get_weather\", \"description\": \"Weather.\","
    " \"parameters\": {\"type\": \"object\", \"properties\": {\"city\": {\"type\": \"string\", \"description\": "
    "\"City\"},"
    " \"days\": {\"type\": [\"integer\", \"null\"]}}, \"required\": [\"city\"]}}}],"
    " \"add_generation_prompt\": true, \"bos_token\": \"<s>\", \"eos_token\": \"</s>\", \"documents\": null,"
    " \"enable_thinking\": false, \"n\": 3, \"f\": -2.5e-3, \"flag\": false, \"nothing\": null}";

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    const char *tmpl = (const char *)data;
    const uint8_t *nul = memchr(data, 0, size);
    size_t tmpl_len = nul ? (size_t)(nul - data) : size;
    const char *vars = nul ? (const char *)nul + 1 : default_vars;
    size_t vars_len = nul ? size - tmpl_len - 1 : sizeof default_vars - 1;

    plumb_template_limits lim = {
        .max_output = 64 << 10,
        .max_memory = 16 << 20,
        .max_depth = 48,
        .max_iterations = 20000,
        .max_work = 4 << 20,
    };
    (void)plumb_template_check(tmpl, tmpl_len, &lim);

    char *out = NULL;
    size_t out_len = 0, n_marks = 0;
    plumb_span *marks = NULL;
    plumb_status st = plumb_template_render(tmpl, tmpl_len, vars, vars_len, &lim, &out, &out_len, &marks, &n_marks);
    if (st != PLUMB_OK) {
        if (out || marks || n_marks) __builtin_trap();
        return 0;
    }
    if (!out || out[out_len] != '\0' || out_len > lim.max_output) __builtin_trap();
    size_t end = 0;
    for (size_t i = 0; i < n_marks; i++) {
        if (marks[i].len == 0 || marks[i].off < end || (i && marks[i].off == end)) __builtin_trap();
        end = marks[i].off + marks[i].len;
        if (end > out_len) __builtin_trap();
    }
    free(out);
    free(marks);
    return 0;
}
