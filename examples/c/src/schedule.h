// Time conditions: weekly opening hours, holidays and an admin override, on the
// location's wall-clock time (the host converts UTC to the timezone).
//
//   hours:    "Mon-Fri 09:00-17:00, Sat 10:00-13:00" — days Mon…Sun, a range (Fri-Mon
//             wraps) or Daily; 24:00 closes at midnight; a close before the open runs
//             past midnight. Empty = always open.
//   holidays: rules, each closing whole local days — a date (2026-12-25); a date every
//             year (Dec 25), with `observed` (a weekend day also closes the nearest
//             weekday: Saturday → Friday, Sunday → Monday) or `substitute` (the next
//             weekday not already a holiday); a weekday of a month (2nd Mon Jun, last Mon
//             May); Easter-relative (Easter, Easter+1, Easter-2, Good Friday, Easter
//             Monday); a national preset (@AU, @GB, @US: PRESETS in schedule.c).
//   override: "open" or "closed" beats both; anything else follows them.
#ifndef SCHEDULE_H
#define SCHEDULE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct {
    bool days[7];   // Monday first
    int open;       // minutes after midnight
    int close;      // 1 to 1440; at or before `open` means past midnight
} window_t;

typedef enum { HOLIDAY_DATE, HOLIDAY_YEARLY, HOLIDAY_NTH, HOLIDAY_EASTER } holiday_kind_t;
typedef enum { OBSERVED_NO, OBSERVED_NEAREST, OBSERVED_SUBSTITUTE } observed_t;

// One holiday rule. DATE: year, month, day. YEARLY: month, day, observed. NTH: nth (1-5,
// -1 for the last), weekday (Monday 0), month. EASTER: offset days from Easter Sunday.
typedef struct {
    holiday_kind_t kind;
    int year, month, day, nth, weekday, offset;
    observed_t observed;
} holiday_t;

typedef struct {
    window_t *windows;
    size_t window_count;
    holiday_t *holidays;
    size_t holiday_count;
} schedule_t;

// Parse NUL-terminated hours and holidays. False on a bad entry, with `*error` (a new
// string) naming it.
bool schedule_parse(const char *hours, const char *holidays, schedule_t *out, char **error);

// "open", "closed", "holiday", "override-open" or "override-closed". `weekday` counts
// from Monday = 0; `override_value` may be NULL.
const char *schedule_state(const schedule_t *schedule, int year, int month, int day,
                           int weekday, int hour, int minute, const char *override_value);

#endif
