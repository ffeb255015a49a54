#include "schedule.h"

#include <ctype.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

static const char *const DAY_NAMES[7] = {"mon", "tue", "wed", "thu", "fri", "sat", "sun"};

// A trimmed copy of text[start, end).
static char *trimmed(const char *start, const char *end) {
    while (start < end && isspace((unsigned char)*start)) start++;
    while (end > start && isspace((unsigned char)end[-1])) end--;
    char *copy = malloc((size_t)(end - start) + 1);
    memcpy(copy, start, (size_t)(end - start));
    copy[end - start] = '\0';
    return copy;
}

// The comma-separated, non-empty entries of `list`, each passed to `parse`.
static bool each_entry(const char *list, bool (*parse)(const char *, void *, char **), void *out,
                       char **error) {
    for (const char *start = list;;) {
        const char *comma = strchr(start, ',');
        const char *end = comma ? comma : start + strlen(start);
        char *entry = trimmed(start, end);
        bool ok = entry[0] == '\0' || parse(entry, out, error);
        free(entry);
        if (!ok) return false;
        if (!comma) return true;
        start = comma + 1;
    }
}

// a, b, c and d, one after another, in a new string.
static char *joined(const char *a, const char *b, const char *c, const char *d) {
    char *text = malloc(strlen(a) + strlen(b) + strlen(c) + strlen(d) + 1);
    stpcpy(stpcpy(stpcpy(stpcpy(text, a), b), c), d);
    return text;
}

static int day_index(const char *name) {
    for (int i = 0; i < 7; i++)
        if (strcasecmp(name, DAY_NAMES[i]) == 0) return i;
    return -1;
}

static bool parse_days(const char *spec, bool days[7]) {
    if (strcasecmp(spec, "daily") == 0) {
        for (int i = 0; i < 7; i++) days[i] = true;
        return true;
    }
    int first, last;
    const char *dash = strchr(spec, '-');
    if (dash) {
        char *a = strndup(spec, (size_t)(dash - spec));
        first = day_index(a);
        last = day_index(dash + 1);
        free(a);
    } else {
        first = last = day_index(spec);
    }
    if (first < 0 || last < 0) return false;
    for (int i = 0; i < 7; i++) days[i] = false;
    for (int d = first;; d = (d + 1) % 7) {
        days[d] = true;
        if (d == last) return true;
    }
}

static bool two_digits(const char *s, int *value) {
    if (!isdigit((unsigned char)s[0]) || !isdigit((unsigned char)s[1])) return false;
    *value = (s[0] - '0') * 10 + (s[1] - '0');
    return true;
}

// `HH:MM` to minutes after midnight (24:00 allowed); -1 if malformed.
static int parse_minutes(const char *start, const char *end) {
    char *text = trimmed(start, end);
    int h, m, minutes = -1;
    if (strlen(text) == 5 && text[2] == ':' && two_digits(text, &h) && two_digits(text + 3, &m) &&
        m < 60 && h <= 24 && !(h == 24 && m != 0))
        minutes = h * 60 + m;
    free(text);
    return minutes;
}

static bool parse_window(const char *entry, void *out, char **error) {
    schedule_t *schedule = out;
    const char *why = NULL;
    const char *space = entry;
    while (*space && !isspace((unsigned char)*space)) space++;
    window_t w;
    if (!*space) {
        why = "expected DAYS HH:MM-HH:MM";
    } else {
        char *days = trimmed(entry, space);
        bool days_ok = parse_days(days, w.days);
        free(days);
        const char *dash = strchr(space, '-');
        if (!days_ok) why = "days must be like Mon, Mon-Fri or Daily";
        else if (!dash) why = "expected HH:MM-HH:MM";
        else if ((w.open = parse_minutes(space, dash)) < 0 || w.open >= 1440) why = "bad opening time";
        else if ((w.close = parse_minutes(dash + 1, dash + 1 + strlen(dash + 1))) <= 0)
            why = "bad closing time";
        else if (w.open == w.close) why = "opening and closing times are equal";
    }
    if (why) {
        *error = joined("hours entry \"", entry, "\": ", why);
        return false;
    }
    schedule->windows = realloc(schedule->windows, (schedule->window_count + 1) * sizeof(window_t));
    schedule->windows[schedule->window_count++] = w;
    return true;
}

static bool parse_date(const char *text, void *out, char **error) {
    schedule_t *schedule = out;
    int y1, y2, m, d;
    if (strlen(text) != 10 || text[4] != '-' || text[7] != '-' || !two_digits(text, &y1) ||
        !two_digits(text + 2, &y2) || !two_digits(text + 5, &m) || !two_digits(text + 8, &d) ||
        m < 1 || m > 12 || d < 1 || d > 31) {
        *error = joined("holiday \"", text, "\": expected YYYY-MM-DD", "");
        return false;
    }
    schedule->holidays = realloc(schedule->holidays, (schedule->holiday_count + 1) * sizeof(int[3]));
    int *date = schedule->holidays[schedule->holiday_count++];
    date[0] = y1 * 100 + y2;
    date[1] = m;
    date[2] = d;
    return true;
}

bool schedule_parse(const char *hours, const char *holidays, schedule_t *out, char **error) {
    *out = (schedule_t){0};
    return each_entry(hours, parse_window, out, error) && each_entry(holidays, parse_date, out, error);
}

static bool within_hours(const schedule_t *s, int weekday, int hour, int minute_of_hour) {
    if (s->window_count == 0) return true;
    int yesterday = (weekday + 6) % 7, minute = hour * 60 + minute_of_hour;
    for (size_t i = 0; i < s->window_count; i++) {
        const window_t *w = &s->windows[i];
        bool in = w->open < w->close
                      ? w->days[weekday] && minute >= w->open && minute < w->close
                      : (w->days[weekday] && minute >= w->open) || (w->days[yesterday] && minute < w->close);
        if (in) return true;
    }
    return false;
}

const char *schedule_state(const schedule_t *s, int year, int month, int day, int weekday, int hour,
                           int minute, const char *override_value) {
    if (override_value) {
        char *forced = trimmed(override_value, override_value + strlen(override_value));
        bool open = strcasecmp(forced, "open") == 0, closed = strcasecmp(forced, "closed") == 0;
        free(forced);
        if (open) return "override-open";
        if (closed) return "override-closed";
    }
    for (size_t i = 0; i < s->holiday_count; i++)
        if (s->holidays[i][0] == year && s->holidays[i][1] == month && s->holidays[i][2] == day)
            return "holiday";
    return within_hours(s, weekday, hour, minute) ? "open" : "closed";
}
