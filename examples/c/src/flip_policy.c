// flip-policy — who may move a live call to which of their devices, in C; the same
// behaviour as the Rust scripts/flip-policy.
//
// - Only the user's own devices are candidates (the host enforces this too).
// - Emergency calls are never flipped by this policy.
// - Users whose role is `kiosk` may not flip.
// - If a target device's name matches the `[flip] pin_devices` globs (shared desk
//   phones, e.g. "lobby-*") and the user has a PIN, the PIN is required.
//
// Memory: a fresh instance serves each request; the decision is freed by the bindings
// after the call, so its strings are heap copies.

#include <stdlib.h>
#include <string.h>

#include "flip_policy_script.h"

typedef flip_policy_script_string_t string_t;
typedef exports_wasmpbx_script_flip_policy_decision_t decision_t;

static bool string_is(const string_t *s, const char *text) {
    return s->len == strlen(text) && memcmp(s->ptr, text, s->len) == 0;
}

static bool strings_equal(const string_t *a, const string_t *b) {
    return a->len == b->len && memcmp(a->ptr, b->ptr, a->len) == 0;
}

// Shell-style `*` and `?` on a whole name, case-sensitive (one backtrack point for the
// last `*` seen, as the Rust SDK's glob).
static bool matches(const char *p, size_t plen, const uint8_t *n, size_t nlen) {
    size_t pi = 0, ni = 0, star_pi = 0, star_ni = 0;
    bool star = false;
    while (ni < nlen) {
        if (pi < plen && (p[pi] == '?' || (uint8_t)p[pi] == n[ni])) {
            pi++;
            ni++;
        } else if (pi < plen && p[pi] == '*') {
            star = true;
            star_pi = pi;
            star_ni = ni;
            pi++;
        } else if (star) {
            pi = star_pi + 1;
            ni = ++star_ni;
        } else {
            return false;
        }
    }
    while (pi < plen && p[pi] == '*') pi++;
    return pi == plen;
}

// Whether `name` matches any of the comma-separated patterns.
static bool matches_any(const char *patterns, const string_t *name) {
    for (const char *start = patterns;;) {
        const char *comma = strchr(start, ',');
        const char *end = comma ? comma : start + strlen(start);
        while (start < end && (*start == ' ' || *start == '\t')) start++;
        while (end > start && (end[-1] == ' ' || end[-1] == '\t')) end--;
        if (end > start && matches(start, (size_t)(end - start), name->ptr, name->len)) return true;
        if (!comma) return false;
        start = comma + 1;
    }
}

static void deny(decision_t *ret, const char *reason) {
    ret->tag = EXPORTS_WASMPBX_SCRIPT_FLIP_POLICY_DECISION_DENY;
    flip_policy_script_string_dup(&ret->val.deny, reason);
}

void exports_wasmpbx_script_flip_policy_decide(exports_wasmpbx_script_flip_policy_flip_request_t *request,
                                               decision_t *ret) {
    wasmpbx_script_directory_user_t user;
    if (!wasmpbx_script_directory_find_user(&request->user_id, &user)) {
        char *reason = malloc(request->user_id.len + sizeof "unknown user ");
        memcpy(stpcpy(reason, "unknown user "), request->user_id.ptr, request->user_id.len);
        reason[sizeof "unknown user " - 1 + request->user_id.len] = '\0';
        return deny(ret, reason);
    }
    if (request->call.emergency) return deny(ret, "emergency calls cannot be flipped");
    if (string_is(&user.role, "kiosk")) return deny(ret, "kiosk users may not flip calls");

    size_t count = 0;
    string_t *targets = calloc(request->candidates.len + 1, sizeof(string_t));
    for (size_t i = 0; i < request->candidates.len; i++) {
        const wasmpbx_script_directory_device_t *d = &request->candidates.ptr[i];
        if (strings_equal(&d->user_id, &request->user_id) && !strings_equal(&d->name, &request->call.current_device))
            flip_policy_script_string_dup_n(&targets[count++], (const char *)d->name.ptr, d->name.len);
    }
    if (count == 0) return deny(ret, "no other device of the user is registered");

    string_t key;
    flip_policy_script_string_dup(&key, "flip.pin_devices");
    string_t pin_devices = {0};
    char *patterns = wasmpbx_script_config_setting(&key, &pin_devices)
                         ? strndup((const char *)pin_devices.ptr, pin_devices.len)
                         : "";
    bool needs_pin = false;
    for (size_t i = 0; user.has_pin && i < count; i++) needs_pin |= matches_any(patterns, &targets[i]);

    ret->tag = needs_pin ? EXPORTS_WASMPBX_SCRIPT_FLIP_POLICY_DECISION_REQUIRE_PIN
                         : EXPORTS_WASMPBX_SCRIPT_FLIP_POLICY_DECISION_ALLOW;
    exports_wasmpbx_script_flip_policy_allow_t *allow = needs_pin ? &ret->val.require_pin : &ret->val.allow;
    allow->targets.ptr = targets;
    allow->targets.len = count;
    allow->ring_timeout_ms = 0;
}
