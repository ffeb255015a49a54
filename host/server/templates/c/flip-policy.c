// {{name}} — a wasmpbx flip policy: a user may move a live call to any of their other
// registered devices; emergency calls stay where they are.
//
// Memory: a fresh instance serves each request and the bindings free the decision after
// the call, so its strings are heap copies.

#include <stdlib.h>
#include <string.h>

#include "flip_policy_script.h"

typedef flip_policy_script_string_t string_t;
typedef exports_wasmpbx_script_flip_policy_decision_t decision_t;

static bool strings_equal(const string_t *a, const string_t *b) {
    return a->len == b->len && memcmp(a->ptr, b->ptr, a->len) == 0;
}

static void deny(decision_t *ret, const char *reason) {
    ret->tag = EXPORTS_WASMPBX_SCRIPT_FLIP_POLICY_DECISION_DENY;
    flip_policy_script_string_dup(&ret->val.deny, reason);
}

void exports_wasmpbx_script_flip_policy_decide(exports_wasmpbx_script_flip_policy_flip_request_t *request,
                                               decision_t *ret) {
    if (request->call.emergency) return deny(ret, "emergency calls cannot be flipped");
    size_t count = 0;
    string_t *targets = calloc(request->candidates.len + 1, sizeof(string_t));
    for (size_t i = 0; i < request->candidates.len; i++) {
        const wasmpbx_script_directory_device_t *d = &request->candidates.ptr[i];
        if (strings_equal(&d->user_id, &request->user_id) && !strings_equal(&d->name, &request->call.current_device))
            flip_policy_script_string_dup_n(&targets[count++], (const char *)d->name.ptr, d->name.len);
    }
    if (count == 0) return deny(ret, "no other device of the user is registered");
    ret->tag = EXPORTS_WASMPBX_SCRIPT_FLIP_POLICY_DECISION_ALLOW;
    ret->val.allow.targets.ptr = targets;
    ret->val.allow.targets.len = count;
    ret->val.allow.ring_timeout_ms = 0;
}
