// {{name}} — a wasmpbx routing script. Every call to a location that runs it goes on to
// the location's `return_number` var; if that number fails, the caller hears its failure
// (busy stays busy).
//
// Memory: a fresh instance serves each event and the bindings free the returned actions
// after the call, so every string in them is a heap copy.

#include <stdlib.h>
#include <string.h>

#include "routing_script.h"

typedef routing_script_string_t string_t;
typedef exports_wasmpbx_script_router_action_t action_t;

// How long the return number may ring.
enum { RING_TIMEOUT_MS = 60000 };

static void log_line(wasmpbx_script_log_level_t level, const char *text) {
    string_t message = {(uint8_t *)text, strlen(text)};
    wasmpbx_script_log_write(level, &message);
}

// A one-action list.
static action_t *single_action(exports_wasmpbx_script_router_list_action_t *ret, uint8_t tag) {
    ret->ptr = calloc(1, sizeof(action_t));
    ret->len = 1;
    ret->ptr->tag = tag;
    return ret->ptr;
}

static void incoming(exports_wasmpbx_script_router_list_action_t *ret) {
    string_t key = {(uint8_t *)"return_number", strlen("return_number")}, number;
    if (!wasmpbx_script_config_location_var(&key, &number) || number.len == 0) {
        // No action: the host sends the call to the location's fallback number.
        log_line(WASMPBX_SCRIPT_LOG_LEVEL_ERROR, "{{name}}: the location has no return_number var");
        return;
    }
    exports_wasmpbx_script_router_forward_t *forward =
        &single_action(ret, EXPORTS_WASMPBX_SCRIPT_ROUTER_ACTION_FORWARD)->val.forward;
    forward->target.tag = EXPORTS_WASMPBX_SCRIPT_ROUTER_FORWARD_TARGET_NUMBER;
    forward->target.val.number = number;
    forward->ring_timeout_ms = RING_TIMEOUT_MS;
}

void exports_wasmpbx_script_router_handle(exports_wasmpbx_script_router_call_context_t *call,
                                          exports_wasmpbx_script_router_event_t *event,
                                          exports_wasmpbx_script_router_list_action_t *ret) {
    (void)call;
    ret->ptr = NULL;
    ret->len = 0;
    if (event->tag == EXPORTS_WASMPBX_SCRIPT_ROUTER_EVENT_INCOMING) {
        incoming(ret);
    } else if (event->tag == EXPORTS_WASMPBX_SCRIPT_ROUTER_EVENT_FORWARD_FAILED) {
        exports_wasmpbx_script_router_forward_failure_t *failure = &event->val.forward_failed;
        exports_wasmpbx_script_router_reject_t *reject =
            &single_action(ret, EXPORTS_WASMPBX_SCRIPT_ROUTER_ACTION_REJECT)->val.reject;
        reject->status = failure->status;
        reject->reason.is_some = true;
        routing_script_string_dup_n(&reject->reason.val, (const char *)failure->reason.ptr, failure->reason.len);
    }
    // digits-gathered, call-ended, external: nothing to do.
}
