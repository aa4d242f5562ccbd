/* test_chat.c — unit tests of the chat formats (src/chat/chat.c): names, detection from
 * template text, the exact text of each format for every role combination, trimming, and
 * the errors for unknown or inexpressible roles. (tests/e2e/test_chat_format.py compares
 * the same function with jinja2 renderings of the real templates.) */
#include "plumb.h"
#include "test.h"

#include <stdlib.h>
#include <string.h>

#define M(role, content) ((plumb_chat_message){role, content})
#define COUNT(a) (sizeof(a) / sizeof((a)[0]))

/* Applies format f and compares with want (reports both on mismatch). */
static void check_apply(int line, plumb_chat_format f, const plumb_chat_message *msgs, size_t n, bool bos, bool gen,
                        const char *want) {
    char *out = NULL;
    size_t len = 12345;
    plumb_status st = plumb_chat_apply(f, msgs, n, bos, gen, &out, &len);
    if (st != PLUMB_OK) {
        plumb_test_fail(__FILE__, line, "plumb_chat_apply: %s: %s", plumb_status_name(st), plumb_last_error());
        return;
    }
    if (!out || strcmp(out, want) != 0 || len != strlen(want))
        plumb_test_fail(__FILE__, line, "format %s:\n    got  [%s] (len %zu)\n    want [%s]", plumb_chat_format_name(f),
                        out ? out : "(null)", len, want);
    free(out);
}

#define CHECK_APPLY(f, msgs, bos, gen, want) check_apply(__LINE__, f, msgs, COUNT(msgs), bos, gen, want)

/* Expects PLUMB_E_INVALID_ARG with *out NULL and a message containing `needle`. */
static void check_fails(int line, plumb_chat_format f, const plumb_chat_message *msgs, size_t n, const char *needle) {
    char *out = (char *)1;
    size_t len = 7;
    plumb_status st = plumb_chat_apply(f, msgs, n, true, true, &out, &len);
    if (st != PLUMB_E_INVALID_ARG)
        plumb_test_fail(__FILE__, line, "expected PLUMB_E_INVALID_ARG, got %s", plumb_status_name(st));
    if (out != NULL) plumb_test_fail(__FILE__, line, "*out not NULL after failure");
    if (st != PLUMB_OK && needle && !strstr(plumb_last_error(), needle))
        plumb_test_fail(__FILE__, line, "message [%s] lacks [%s]", plumb_last_error(), needle);
    if (st == PLUMB_OK && out != (char *)1) free(out);
}

#define CHECK_FAILS(f, msgs, needle) check_fails(__LINE__, f, msgs, COUNT(msgs), needle)

TEST(chat_names) {
    CHECK_EQ_INT(plumb_chat_format_from_name("gemma"), PLUMB_CHAT_GEMMA);
    CHECK_EQ_INT(plumb_chat_format_from_name("llama3"), PLUMB_CHAT_LLAMA3);
    CHECK_EQ_INT(plumb_chat_format_from_name("chatml"), PLUMB_CHAT_CHATML);
    CHECK_EQ_INT(plumb_chat_format_from_name("llama2"), PLUMB_CHAT_UNKNOWN);
    CHECK_EQ_INT(plumb_chat_format_from_name(""), PLUMB_CHAT_UNKNOWN);
    CHECK_EQ_INT(plumb_chat_format_from_name(NULL), PLUMB_CHAT_UNKNOWN);
    CHECK(strcmp(plumb_chat_format_name(PLUMB_CHAT_GEMMA), "gemma") == 0);
    CHECK(strcmp(plumb_chat_format_name(PLUMB_CHAT_LLAMA3), "llama3") == 0);
    CHECK(strcmp(plumb_chat_format_name(PLUMB_CHAT_CHATML), "chatml") == 0);
    CHECK(strcmp(plumb_chat_format_name(PLUMB_CHAT_UNKNOWN), "unknown") == 0);
    CHECK(strcmp(plumb_chat_format_name((plumb_chat_format)42), "unknown") == 0);
    for (int f = PLUMB_CHAT_GEMMA; f <= PLUMB_CHAT_CHATML; f++)
        CHECK_EQ_INT(plumb_chat_format_from_name(plumb_chat_format_name((plumb_chat_format)f)), f);
}

TEST(chat_detect) {
    static const char gemma[] = "{{ bos_token }}{%- for message in loop_messages -%}{{ '<start_of_turn>' + role + "
                                "'\\n' }}{{ message['content'] | trim }}{{ '<end_of_turn>\\n' }}{%- endfor -%}";
    static const char llama3[] = "{% for message in messages %}{% set content = '<|start_header_id|>' + "
                                 "message['role'] + '<|end_header_id|>\\n\\n' %}{% endfor %}";
    static const char chatml[] = "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\\n' + "
                                 "message['content'] + '<|im_end|>' + '\\n'}}{% endfor %}";
    CHECK_EQ_INT(plumb_chat_format_detect(gemma, strlen(gemma)), PLUMB_CHAT_GEMMA);
    CHECK_EQ_INT(plumb_chat_format_detect(llama3, strlen(llama3)), PLUMB_CHAT_LLAMA3);
    CHECK_EQ_INT(plumb_chat_format_detect(chatml, strlen(chatml)), PLUMB_CHAT_CHATML);
    CHECK_EQ_INT(plumb_chat_format_detect("[INST] {{ x }} [/INST]", 22), PLUMB_CHAT_UNKNOWN);
    CHECK_EQ_INT(plumb_chat_format_detect("", 0), PLUMB_CHAT_UNKNOWN);
    CHECK_EQ_INT(plumb_chat_format_detect(NULL, 10), PLUMB_CHAT_UNKNOWN);
    /* only len bytes are read: a marker cut by len is not seen */
    static const char cut[] = "abc<|im_start|>";
    CHECK_EQ_INT(plumb_chat_format_detect(cut, 14), PLUMB_CHAT_UNKNOWN);
    CHECK_EQ_INT(plumb_chat_format_detect(cut, 15), PLUMB_CHAT_CHATML);
    char buf[16];
    memcpy(buf, "<|im_start|>xyzw", 16); /* not NUL-terminated */
    CHECK_EQ_INT(plumb_chat_format_detect(buf, sizeof buf), PLUMB_CHAT_CHATML);
}

TEST(chat_gemma) {
    const plumb_chat_message user[] = {M("user", "Hello")};
    CHECK_APPLY(PLUMB_CHAT_GEMMA, user, true, true, "<bos><start_of_turn>user\nHello<end_of_turn>\n<start_of_turn>model\n");
    CHECK_APPLY(PLUMB_CHAT_GEMMA, user, false, true, "<start_of_turn>user\nHello<end_of_turn>\n<start_of_turn>model\n");
    CHECK_APPLY(PLUMB_CHAT_GEMMA, user, true, false, "<bos><start_of_turn>user\nHello<end_of_turn>\n");

    /* the system text opens the first user turn, untrimmed, followed by a blank line */
    const plumb_chat_message sys_user[] = {M("system", " Be brief. "), M("user", "  Hi\n")};
    CHECK_APPLY(PLUMB_CHAT_GEMMA, sys_user, true, true,
                "<bos><start_of_turn>user\n Be brief. \n\nHi<end_of_turn>\n<start_of_turn>model\n");

    const plumb_chat_message multi[] = {M("system", "S"), M("user", "u1"), M("assistant", "\n a1 \n"),
                                        M("user", "u2")};
    CHECK_APPLY(PLUMB_CHAT_GEMMA, multi, true, true,
                "<bos><start_of_turn>user\nS\n\nu1<end_of_turn>\n<start_of_turn>model\na1<end_of_turn>\n"
                "<start_of_turn>user\nu2<end_of_turn>\n<start_of_turn>model\n");

    const plumb_chat_message ends_assistant[] = {M("user", "q"), M("assistant", "a")};
    CHECK_APPLY(PLUMB_CHAT_GEMMA, ends_assistant, true, false,
                "<bos><start_of_turn>user\nq<end_of_turn>\n<start_of_turn>model\na<end_of_turn>\n");

    /* a lone system message renders nothing, as the template does */
    const plumb_chat_message only_sys[] = {M("system", "S")};
    CHECK_APPLY(PLUMB_CHAT_GEMMA, only_sys, true, true, "<bos><start_of_turn>model\n");

    /* no messages */
    char *out = NULL;
    size_t len = 0;
    CHECK_STATUS(plumb_chat_apply(PLUMB_CHAT_GEMMA, NULL, 0, true, true, &out, &len), PLUMB_OK);
    CHECK(out && strcmp(out, "<bos><start_of_turn>model\n") == 0);
    CHECK_EQ_INT(len, strlen("<bos><start_of_turn>model\n"));
    free(out);
}

TEST(chat_gemma_errors) {
    const plumb_chat_message two_users[] = {M("user", "a"), M("user", "b")};
    CHECK_FAILS(PLUMB_CHAT_GEMMA, two_users, "alternate");
    const plumb_chat_message assistant_first[] = {M("assistant", "a"), M("user", "b")};
    CHECK_FAILS(PLUMB_CHAT_GEMMA, assistant_first, "alternate");
    const plumb_chat_message sys_assistant[] = {M("system", "s"), M("assistant", "a")};
    CHECK_FAILS(PLUMB_CHAT_GEMMA, sys_assistant, "alternate");
    const plumb_chat_message sys_middle[] = {M("user", "a"), M("system", "s")};
    CHECK_FAILS(PLUMB_CHAT_GEMMA, sys_middle, "system");
    const plumb_chat_message two_sys[] = {M("system", "a"), M("system", "s"), M("user", "u")};
    CHECK_FAILS(PLUMB_CHAT_GEMMA, two_sys, "system");
    const plumb_chat_message two_assist[] = {M("user", "a"), M("assistant", "b"), M("assistant", "c")};
    CHECK_FAILS(PLUMB_CHAT_GEMMA, two_assist, "alternate");
}

TEST(chat_trim_unicode) {
    /* Python str.strip(): ASCII whitespace, \x1c-\x1f, U+0085, U+00A0, U+1680, U+2000-U+200A,
     * U+2028/9, U+202F, U+205F, U+3000 go; U+200B (zero-width space) and U+FEFF stay */
    const plumb_chat_message m[] = {
        M("user", "\t\v\f\r\n \x1c\x1f\xc2\x85\xc2\xa0\xe1\x9a\x80\xe2\x80\x80\xe2\x80\x8a\xe3\x80\x80"
                  "h\xc3\xa9llo w\xc3\xb6rld \xf0\x9f\x98\x80"
                  "\xe2\x80\xa8\xe2\x80\xa9\xe2\x80\xaf\xe2\x81\x9f\xe3\x80\x80 \n"),
        M("assistant", "\xe2\x80\x8b x \xef\xbb\xbf"),
    };
    CHECK_APPLY(PLUMB_CHAT_GEMMA, m, false, false,
                "<start_of_turn>user\nh\xc3\xa9llo w\xc3\xb6rld \xf0\x9f\x98\x80<end_of_turn>\n"
                "<start_of_turn>model\n\xe2\x80\x8b x \xef\xbb\xbf<end_of_turn>\n");
    CHECK_APPLY(PLUMB_CHAT_LLAMA3, m, false, false,
                "<|start_header_id|>user<|end_header_id|>\n\nh\xc3\xa9llo w\xc3\xb6rld \xf0\x9f\x98\x80<|eot_id|>"
                "<|start_header_id|>assistant<|end_header_id|>\n\n\xe2\x80\x8b x \xef\xbb\xbf<|eot_id|>");
    /* all whitespace trims to nothing; invalid UTF-8 is kept as it is */
    const plumb_chat_message blank[] = {M("user", " \n\xe3\x80\x80 "), M("assistant", "\xff x \xc3")};
    CHECK_APPLY(PLUMB_CHAT_GEMMA, blank, false, false,
                "<start_of_turn>user\n<end_of_turn>\n<start_of_turn>model\n\xff x \xc3<end_of_turn>\n");
    /* ChatML does not trim */
    const plumb_chat_message raw[] = {M("user", " a \n")};
    CHECK_APPLY(PLUMB_CHAT_CHATML, raw, false, false, "<|im_start|>user\n a \n<|im_end|>\n");
}

TEST(chat_llama3) {
    const plumb_chat_message user[] = {M("user", "Hello")};
    CHECK_APPLY(PLUMB_CHAT_LLAMA3, user, true, true,
                "<|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\nHello<|eot_id|>"
                "<|start_header_id|>assistant<|end_header_id|>\n\n");
    CHECK_APPLY(PLUMB_CHAT_LLAMA3, user, false, false, "<|start_header_id|>user<|end_header_id|>\n\nHello<|eot_id|>");
    const plumb_chat_message all[] = {M("system", " sys "), M("user", "u1"), M("assistant", "a1\n"),
                                      M("user", "u2")};
    CHECK_APPLY(PLUMB_CHAT_LLAMA3, all, true, true,
                "<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\nsys<|eot_id|>"
                "<|start_header_id|>user<|end_header_id|>\n\nu1<|eot_id|>"
                "<|start_header_id|>assistant<|end_header_id|>\n\na1<|eot_id|>"
                "<|start_header_id|>user<|end_header_id|>\n\nu2<|eot_id|>"
                "<|start_header_id|>assistant<|end_header_id|>\n\n");
    /* any order of the three roles is expressible */
    const plumb_chat_message odd[] = {M("assistant", "a"), M("system", "s"), M("user", "u"), M("user", "v")};
    CHECK_APPLY(PLUMB_CHAT_LLAMA3, odd, false, false,
                "<|start_header_id|>assistant<|end_header_id|>\n\na<|eot_id|>"
                "<|start_header_id|>system<|end_header_id|>\n\ns<|eot_id|>"
                "<|start_header_id|>user<|end_header_id|>\n\nu<|eot_id|>"
                "<|start_header_id|>user<|end_header_id|>\n\nv<|eot_id|>");
}

TEST(chat_chatml) {
    const plumb_chat_message all[] = {M("system", "You are helpful."), M("user", "Hi"), M("assistant", "Hello!"),
                                      M("user", "Bye")};
    /* add_bos adds nothing: ChatML has no BOS text */
    CHECK_APPLY(PLUMB_CHAT_CHATML, all, true, true,
                "<|im_start|>system\nYou are helpful.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n"
                "<|im_start|>assistant\nHello!<|im_end|>\n<|im_start|>user\nBye<|im_end|>\n"
                "<|im_start|>assistant\n");
    const plumb_chat_message user[] = {M("user", "")};
    CHECK_APPLY(PLUMB_CHAT_CHATML, user, false, false, "<|im_start|>user\n<|im_end|>\n");
}

TEST(chat_errors) {
    const plumb_chat_message tool[] = {M("user", "a"), M("tool", "b")};
    for (int f = PLUMB_CHAT_GEMMA; f <= PLUMB_CHAT_CHATML; f++) {
        check_fails(__LINE__, (plumb_chat_format)f, tool, COUNT(tool), "tool");
        const plumb_chat_message upper[] = {M("User", "a")};
        check_fails(__LINE__, (plumb_chat_format)f, upper, 1, "User");
        const plumb_chat_message null_role[] = {M(NULL, "a")};
        check_fails(__LINE__, (plumb_chat_format)f, null_role, 1, "role");
        const plumb_chat_message null_content[] = {M("user", NULL)};
        check_fails(__LINE__, (plumb_chat_format)f, null_content, 1, "content");
        check_fails(__LINE__, (plumb_chat_format)f, NULL, 2, NULL);
    }
    const plumb_chat_message user[] = {M("user", "a")};
    check_fails(__LINE__, PLUMB_CHAT_UNKNOWN, user, 1, "format");
    check_fails(__LINE__, (plumb_chat_format)7, user, 1, "format");
    CHECK_STATUS(plumb_chat_apply(PLUMB_CHAT_CHATML, user, 1, false, false, NULL, NULL), PLUMB_E_INVALID_ARG);
    /* out_len is optional */
    char *out = NULL;
    CHECK_STATUS(plumb_chat_apply(PLUMB_CHAT_CHATML, user, 1, false, false, &out, NULL), PLUMB_OK);
    CHECK(out && strcmp(out, "<|im_start|>user\na<|im_end|>\n") == 0);
    free(out);
}

TEST(chat_long_conversation) {
    /* 1000 alternating turns of 1000 bytes: sizes add up and nothing is cut */
    enum { TURNS = 1000, LEN = 1000 };
    static plumb_chat_message msgs[TURNS];
    static char text[LEN + 1];
    memset(text, 'x', LEN);
    text[LEN] = '\0';
    for (int i = 0; i < TURNS; i++) msgs[i] = M(i % 2 ? "assistant" : "user", text);
    char *out = NULL;
    size_t len = 0;
    CHECK_STATUS(plumb_chat_apply(PLUMB_CHAT_GEMMA, msgs, TURNS, true, true, &out, &len), PLUMB_OK);
    size_t want = strlen("<bos>") + TURNS / 2 * (strlen("<start_of_turn>user\n") + strlen("<start_of_turn>model\n")) +
                  TURNS * (LEN + strlen("<end_of_turn>\n")) + strlen("<start_of_turn>model\n");
    CHECK_EQ_INT(len, want);
    CHECK(out && strlen(out) == want);
    free(out);
}
