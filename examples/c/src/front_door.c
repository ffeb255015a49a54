// front-door — active mode in C: time conditions, a welcome, a menu and departments;
// the same behaviour as the Rust scripts/front-door.
//
// Location vars: timezone (IANA), hours, holidays, sales, billing, operator, optional
// after_hours_number, menu_timeout_ms (default 5000) and record ("true" records every
// call). Key-value entries: override (open/closed), and hours / holidays, which win over
// the vars of the same name.
//
// Open: welcome, then the menu (1 sales, 2 billing, 0 operator); an invalid or missing
// choice repeats the menu once, then goes to the operator. Closed: the closed prompt,
// then after_hours_number or goodbye. A failed forward goes to the fallback number.
//
// Memory: a fresh instance serves each event, so nothing is freed by hand; what the
// host receives is freed by the bindings after the call (so every string in an action
// is a heap copy).

#include <ctype.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

#include "routing_script.h"
#include "schedule.h"

typedef routing_script_string_t string_t;
typedef exports_wasmpbx_script_router_action_t action_t;

enum { RING_TIMEOUT_MS = 30000, MENU_TIMEOUT_MS = 5000, MAX_ACTIONS = 8 };

// Menu key → department (a location var, and the `department` tag's value).
static const char *const MENU[][2] = {{"1", "sales"}, {"2", "billing"}, {"0", "operator"}};

static string_t heap_string(const char *text) {
    string_t s;
    routing_script_string_dup(&s, text);
    return s;
}

// A WIT string as a NUL-terminated C string.
static char *c_string(const string_t *s) {
    return strndup((const char *)s->ptr, s->len);
}

// The concatenation of NUL-terminated strings, the list ending with NULL. (No printf:
// it would pull in WASI stdio, which these scripts do not need.)
static char *concat(const char *first, ...) {
    va_list args;
    size_t len = 0;
    va_start(args, first);
    for (const char *part = first; part; part = va_arg(args, const char *)) len += strlen(part);
    va_end(args);
    char *text = malloc(len + 1), *end = text;
    va_start(args, first);
    for (const char *part = first; part; part = va_arg(args, const char *)) end = stpcpy(end, part);
    va_end(args);
    return text;
}

// A number's decimal digits, in a new string.
static char *decimal(unsigned n) {
    char digits[12], *d = digits + sizeof digits;
    *--d = '\0';
    do *--d = (char)('0' + n % 10);
    while (n /= 10);
    return strdup(d);
}

static void log_line(wasmpbx_script_log_level_t level, const char *text) {
    string_t message = {(uint8_t *)text, strlen(text)};
    wasmpbx_script_log_write(level, &message);
}

static char *location_var(const char *name) {
    string_t key = {(uint8_t *)name, strlen(name)}, value;
    return wasmpbx_script_config_location_var(&key, &value) ? c_string(&value) : NULL;
}

// A location var, with an empty value treated as unset.
static char *non_empty_var(const char *name) {
    char *value = location_var(name);
    for (const char *c = value; c && *c; c++)
        if (!isspace((unsigned char)*c)) return value;
    return NULL;
}

static char *kv_get(const char *name) {
    string_t key = {(uint8_t *)name, strlen(name)}, value;
    return wasmpbx_script_kv_get(&key, &value) ? c_string(&value) : NULL;
}

// hours / holidays from the key-value store if an admin set them, else the vars.
static char *live_setting(const char *name) {
    char *value = kv_get(name);
    return value ? value : location_var(name);
}

static const char *call_tag(const exports_wasmpbx_script_router_call_context_t *call, const char *name) {
    for (size_t i = 0; i < call->tags.len; i++) {
        const string_t *n = &call->tags.ptr[i].f0;
        if (n->len == strlen(name) && memcmp(n->ptr, name, n->len) == 0) return c_string(&call->tags.ptr[i].f1);
    }
    return NULL;
}

// The actions being returned.
typedef struct {
    action_t *items;
    size_t len;
} actions_t;

static action_t *push(actions_t *list, uint8_t tag) {
    action_t *action = &list->items[list->len++];
    memset(action, 0, sizeof *action);
    action->tag = tag;
    return action;
}

static void set_tag(actions_t *list, const char *name, const char *value) {
    action_t *a = push(list, EXPORTS_WASMPBX_SCRIPT_ROUTER_ACTION_SET_TAG);
    a->val.set_tag.f0 = heap_string(name);
    a->val.set_tag.f1 = heap_string(value);
}

static void play(actions_t *list, const char *prompt) {
    push(list, EXPORTS_WASMPBX_SCRIPT_ROUTER_ACTION_PLAY)->val.play.prompt = heap_string(prompt);
}

// Forward to `number`, or to the location's fallback number when it is NULL.
static void forward(actions_t *list, const char *number) {
    exports_wasmpbx_script_router_forward_t *f = &push(list, EXPORTS_WASMPBX_SCRIPT_ROUTER_ACTION_FORWARD)->val.forward;
    if (number) {
        f->target.tag = EXPORTS_WASMPBX_SCRIPT_ROUTER_FORWARD_TARGET_NUMBER;
        f->target.val.number = heap_string(number);
    } else {
        f->target.tag = EXPORTS_WASMPBX_SCRIPT_ROUTER_FORWARD_TARGET_FALLBACK;
    }
    f->ring_timeout_ms = RING_TIMEOUT_MS;
}

// A whole number in `text`, spaces around it allowed; false if there is none or it does
// not fit 32 bits.
static bool parse_u32(const char *text, uint32_t *out) {
    while (isspace((unsigned char)*text)) text++;
    size_t digits = 0;
    while (isdigit((unsigned char)text[digits])) digits++;
    for (const char *rest = text + digits; *rest; rest++)
        if (!isspace((unsigned char)*rest)) return false;
    if (digits == 0 || digits > 10) return false;
    unsigned long long value = strtoull(text, NULL, 10);
    if (value > UINT32_MAX) return false;
    *out = (uint32_t)value;
    return true;
}

static void menu(actions_t *list) {
    uint32_t timeout_ms = MENU_TIMEOUT_MS;
    char *configured = location_var("menu_timeout_ms");
    if (configured && !parse_u32(configured, &timeout_ms)) timeout_ms = MENU_TIMEOUT_MS;
    exports_wasmpbx_script_router_gather_t *g = &push(list, EXPORTS_WASMPBX_SCRIPT_ROUTER_ACTION_GATHER)->val.gather;
    g->max_digits = 1;
    g->timeout_ms = timeout_ms;
    g->prompt.is_some = true;
    g->prompt.val = heap_string("menu");
}

static void hang_up(actions_t *list) {
    push(list, EXPORTS_WASMPBX_SCRIPT_ROUTER_ACTION_HANGUP);
}

static void incoming(actions_t *list) {
    char *timezone = non_empty_var("timezone");
    char *hours = live_setting("hours"), *holidays = live_setting("holidays");
    schedule_t schedule;
    char *error;
    if (!schedule_parse(hours ? hours : "", holidays ? holidays : "", &schedule, &error)) {
        log_line(WASMPBX_SCRIPT_LOG_LEVEL_ERROR, concat("front-door: ", error, NULL));
        return;  // no actions: the host falls back
    }
    wasmpbx_script_clock_instant_t now;
    wasmpbx_script_clock_now(&now);
    string_t zone = heap_string(timezone ? timezone : "UTC"), why;
    wasmpbx_script_clock_local_time_t local;
    if (!wasmpbx_script_clock_to_local(&now, &zone, &local, &why)) {
        log_line(WASMPBX_SCRIPT_LOG_LEVEL_ERROR, concat("front-door: timezone var: ", c_string(&why), NULL));
        return;
    }
    const char *state = schedule_state(&schedule, local.year, local.month, local.day, local.weekday,
                                       local.hour, local.minute, kv_get("override"));
    set_tag(list, "hours", state);
    char *record = location_var("record");
    if (record && strcmp(record, "true") == 0)
        push(list, EXPORTS_WASMPBX_SCRIPT_ROUTER_ACTION_RECORDING)->val.recording = true;
    if (strcmp(state, "open") == 0 || strcmp(state, "override-open") == 0) {
        push(list, EXPORTS_WASMPBX_SCRIPT_ROUTER_ACTION_ANSWER);
        play(list, "welcome");
        menu(list);
        return;
    }
    play(list, "closed");
    char *after_hours = non_empty_var("after_hours_number");
    if (after_hours) {
        set_tag(list, "department", "after-hours");
        forward(list, after_hours);
    } else {
        play(list, "goodbye");
        hang_up(list);
    }
}

// Send the caller to a department's number, or the operator's if it has none.
static void transfer(actions_t *list, const char *wanted) {
    const char *department = wanted;
    char *number = non_empty_var(wanted);
    if (!number) {
        department = "operator";
        number = non_empty_var("operator");
    }
    if (!number) {
        log_line(WASMPBX_SCRIPT_LOG_LEVEL_ERROR, concat("front-door: no ", wanted, " or operator var", NULL));
        set_tag(list, "department", "fallback");
        forward(list, NULL);
        return;
    }
    set_tag(list, "department", department);
    play(list, "transferring");
    forward(list, number);
}

static void digits_gathered(actions_t *list, const exports_wasmpbx_script_router_call_context_t *call,
                            const exports_wasmpbx_script_router_gathered_t *gathered) {
    char *digits = c_string(&gathered->digits);
    for (size_t i = 0; i < sizeof MENU / sizeof MENU[0]; i++)
        if (strcmp(digits, MENU[i][0]) == 0) return transfer(list, MENU[i][1]);
    if (!call_tag(call, "menu_repeated")) {
        set_tag(list, "menu_repeated", "true");
        if (digits[0] != '\0') play(list, "invalid-choice");
        menu(list);
        return;
    }
    transfer(list, "operator");
}

static void forward_failed(actions_t *list, const exports_wasmpbx_script_router_call_context_t *call,
                           const exports_wasmpbx_script_router_forward_failure_t *failure) {
    log_line(WASMPBX_SCRIPT_LOG_LEVEL_WARN, concat("front-door: forward failed with ", decimal(failure->status),
                                                   " ", c_string(&failure->reason), NULL));
    const char *department = call_tag(call, "department");
    if (failure->target.tag == EXPORTS_WASMPBX_SCRIPT_ROUTER_FORWARD_TARGET_FALLBACK ||
        (department && strcmp(department, "fallback") == 0)) {
        play(list, "goodbye");
        hang_up(list);
        return;
    }
    set_tag(list, "department", "fallback");
    forward(list, NULL);
}

void exports_wasmpbx_script_router_handle(exports_wasmpbx_script_router_call_context_t *call,
                                          exports_wasmpbx_script_router_event_t *event,
                                          exports_wasmpbx_script_router_list_action_t *ret) {
    actions_t list = {calloc(MAX_ACTIONS, sizeof(action_t)), 0};
    switch (event->tag) {
        case EXPORTS_WASMPBX_SCRIPT_ROUTER_EVENT_INCOMING:
            incoming(&list);
            break;
        case EXPORTS_WASMPBX_SCRIPT_ROUTER_EVENT_DIGITS_GATHERED:
            digits_gathered(&list, call, &event->val.digits_gathered);
            break;
        case EXPORTS_WASMPBX_SCRIPT_ROUTER_EVENT_FORWARD_FAILED:
            forward_failed(&list, call, &event->val.forward_failed);
            break;
        default:  // call-ended, external: nothing to do
            break;
    }
    ret->ptr = list.items;
    ret->len = list.len;
}
