#include "schedule.h"

#include <ctype.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

static bool parse_holiday(const char *entry, void *out, char **error);

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

static const char *const MONTH_NAMES[12] = {"jan", "feb", "mar", "apr", "may", "jun",
                                           "jul", "aug", "sep", "oct", "nov", "dec"};

// National holidays as rules (the Rust SDK's `schedule::PRESETS`).
static const char *const PRESETS[3][2] = {
    {"AU", "Jan 1 substitute, Jan 26 substitute, Good Friday, Easter Monday, Apr 25, "
           "2nd Mon Jun, Dec 25 substitute, Dec 26 substitute"},
    {"GB", "Jan 1 substitute, Good Friday, Easter Monday, 1st Mon May, last Mon May, "
           "last Mon Aug, Dec 25 substitute, Dec 26 substitute"},
    {"US", "Jan 1 observed, 3rd Mon Jan, 3rd Mon Feb, last Mon May, Jun 19 observed, "
           "Jul 4 observed, 1st Mon Sep, 2nd Mon Oct, Nov 11 observed, 4th Thu Nov, "
           "Dec 25 observed"},
};

static int floor_div(int a, int b) { return a / b - (a % b != 0 && (a < 0) != (b < 0)); }
static int mod(int a, int n) { return ((a % n) + n) % n; }

// Days since 1970-01-01 of a (proleptic Gregorian) date.
static int day_number(int year, int month, int day) {
    int y = month <= 2 ? year - 1 : year;
    int era = floor_div(y, 400), year_of_era = y - era * 400;
    int day_of_year = (153 * (month + (month > 2 ? -3 : 9)) + 2) / 5 + day - 1;
    int day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    return era * 146097 + day_of_era - 719468;
}

// Monday 0 … Sunday 6 (1970-01-01 was a Thursday).
static int weekday_of(int day) { return mod(day + 3, 7); }

static int month_length(int year, int month) {
    if (month == 2) return year % 4 == 0 && (year % 100 != 0 || year % 400 == 0) ? 29 : 28;
    return month == 4 || month == 6 || month == 9 || month == 11 ? 30 : 31;
}

// Easter Sunday (Gregorian; Meeus, Jones and Butcher), as a day number.
static int easter(int year) {
    int a = year % 19, b = year / 100, c = year % 100, d = b / 4, e = b % 4;
    int g = (b - (b + 8) / 25 + 1) / 3, h = (19 * a + b - d - g + 15) % 30;
    int i = c / 4, k = c % 4, l = (32 + 2 * e + 2 * i - h - k) % 7, m = (a + 11 * h + 22 * l) / 451;
    return day_number(year, (h + l - 7 * m + 114) / 31, (h + l - 7 * m + 114) % 31 + 1);
}

// The day number `rule` falls on in `year`; false if it does not.
static bool day_in(const holiday_t *rule, int year, int *out) {
    switch (rule->kind) {
        case HOLIDAY_DATE:
            if (rule->year != year || rule->day > month_length(year, rule->month)) return false;
            *out = day_number(year, rule->month, rule->day);
            return true;
        case HOLIDAY_YEARLY:
            if (rule->day > month_length(year, rule->month)) return false;
            *out = day_number(year, rule->month, rule->day);
            return true;
        case HOLIDAY_NTH: {
            int first = day_number(year, rule->month, 1), last = first + month_length(year, rule->month) - 1;
            int day = rule->nth > 0 ? first + mod(rule->weekday - weekday_of(first), 7) + 7 * (rule->nth - 1)
                                    : last - mod(weekday_of(last) - rule->weekday, 7);
            *out = day;
            return day <= last;
        }
        default:
            *out = easter(year) + rule->offset;
            return true;
    }
}

static bool contains(const int *days, size_t count, int day) {
    for (size_t i = 0; i < count; i++)
        if (days[i] == day) return true;
    return false;
}

// Whether `today` is among the days the rules close in `year`, observed days included.
static bool closes_in(const schedule_t *s, int year, int today) {
    // At most two days a rule: the day itself and the day it is observed on.
    int *days = malloc((2 * s->holiday_count + 1) * sizeof(int));
    size_t count = 0;
    for (size_t i = 0; i < s->holiday_count; i++)
        if (day_in(&s->holidays[i], year, &days[count])) count++;
    for (size_t i = 0; i < s->holiday_count; i++) {
        const holiday_t *rule = &s->holidays[i];
        int day;
        if (rule->kind != HOLIDAY_YEARLY || !day_in(rule, year, &day)) continue;
        int weekday = weekday_of(day);
        if (rule->observed == OBSERVED_NEAREST && weekday == 5) days[count++] = day - 1;
        if (rule->observed == OBSERVED_NEAREST && weekday == 6) days[count++] = day + 1;
        if (rule->observed == OBSERVED_SUBSTITUTE && weekday >= 5) {
            int substitute = day + 1;
            while (weekday_of(substitute) >= 5 || contains(days, count, substitute)) substitute++;
            days[count++] = substitute;
        }
    }
    bool found = contains(days, count, today);
    free(days);
    return found;
}

static int month_index(const char *name) {
    for (int i = 0; i < 12; i++)
        if (strcmp(name, MONTH_NAMES[i]) == 0) return i + 1;
    return 0;
}

// Whether `text` is one or more ASCII digits.
static bool all_digits(const char *text) {
    if (!*text) return false;
    for (; *text; text++)
        if (!isdigit((unsigned char)*text)) return false;
    return true;
}

static void add_rule(schedule_t *schedule, holiday_t rule) {
    schedule->holidays = realloc(schedule->holidays, (schedule->holiday_count + 1) * sizeof(holiday_t));
    schedule->holidays[schedule->holiday_count++] = rule;
}

// One entry's rules (a preset gives several); false if it is not a rule. `words` are
// lower-case.
static bool parse_rule(char **words, int count, schedule_t *schedule, char **error) {
    if (count == 1 && words[0][0] == '@') {
        for (int i = 0; i < 3; i++)
            if (strcasecmp(words[0] + 1, PRESETS[i][0]) == 0)
                return each_entry(PRESETS[i][1], parse_holiday, schedule, error);
        return false;
    }
    if (count == 2 && strcmp(words[0], "good") == 0 && strcmp(words[1], "friday") == 0)
        return add_rule(schedule, (holiday_t){.kind = HOLIDAY_EASTER, .offset = -2}), true;
    if (count == 2 && strcmp(words[0], "easter") == 0 && strcmp(words[1], "monday") == 0)
        return add_rule(schedule, (holiday_t){.kind = HOLIDAY_EASTER, .offset = 1}), true;
    if (count == 1 && strncmp(words[0], "easter", 6) == 0) {
        const char *offset = words[0] + 6;
        if (*offset == '\0') return add_rule(schedule, (holiday_t){.kind = HOLIDAY_EASTER}), true;
        if ((offset[0] != '+' && offset[0] != '-') || !all_digits(offset + 1) || strlen(offset + 1) > 3)
            return false;
        int days = atoi(offset + 1);
        if (days > 100) return false;
        return add_rule(schedule, (holiday_t){.kind = HOLIDAY_EASTER, .offset = offset[0] == '-' ? -days : days}), true;
    }
    if (count == 1) {
        const char *text = words[0];
        int y1, y2, m, d;
        if (strlen(text) != 10 || text[4] != '-' || text[7] != '-' || !two_digits(text, &y1) ||
            !two_digits(text + 2, &y2) || !two_digits(text + 5, &m) || !two_digits(text + 8, &d) ||
            m < 1 || m > 12 || d < 1 || d > 31)
            return false;
        return add_rule(schedule, (holiday_t){.kind = HOLIDAY_DATE, .year = y1 * 100 + y2, .month = m, .day = d}), true;
    }
    int month = month_index(words[0]);
    if ((count == 2 || count == 3) && month) {
        if (!all_digits(words[1]) || strlen(words[1]) > 2) return false;
        int day = atoi(words[1]);
        if (day < 1 || day > month_length(2000, month)) return false;
        observed_t observed = OBSERVED_NO;
        if (count == 3 && strcmp(words[2], "observed") == 0) observed = OBSERVED_NEAREST;
        else if (count == 3 && strcmp(words[2], "substitute") == 0) observed = OBSERVED_SUBSTITUTE;
        else if (count == 3) return false;
        return add_rule(schedule, (holiday_t){.kind = HOLIDAY_YEARLY, .month = month, .day = day, .observed = observed}), true;
    }
    if (count == 3) {
        static const char *const ORDINALS[6] = {"1st", "2nd", "3rd", "4th", "5th", "last"};
        int nth = 0, weekday = day_index(words[1]), month = month_index(words[2]);
        for (int i = 0; i < 6; i++)
            if (strcmp(words[0], ORDINALS[i]) == 0) nth = i == 5 ? -1 : i + 1;
        if (!nth || weekday < 0 || !month) return false;
        return add_rule(schedule, (holiday_t){.kind = HOLIDAY_NTH, .nth = nth, .weekday = weekday, .month = month}), true;
    }
    return false;
}

static bool parse_holiday(const char *entry, void *out, char **error) {
    // The entry's words, lower-cased, in one copy.
    char *copy = strdup(entry), *words[4];
    int count = 0;
    for (char *c = copy; *c; c++) *c = (char)tolower((unsigned char)*c);
    for (char *word = strtok(copy, " \t\n\r"); word; word = strtok(NULL, " \t\n\r"))
        if (count < 4) words[count++] = word;
        else count = 5;
    bool ok = count <= 4 && parse_rule(words, count, out, error);
    free(copy);
    if (!ok && !*error)
        *error = joined("holiday \"", entry,
                        "\": expected YYYY-MM-DD, Dec 25 [observed|substitute], 2nd Mon Jun, last Mon May, "
                        "Easter+1, Good Friday, Easter Monday or @AU/@GB/@US",
                        "");
    return ok;
}

bool schedule_parse(const char *hours, const char *holidays, schedule_t *out, char **error) {
    *out = (schedule_t){0};
    *error = NULL;
    return each_entry(hours, parse_window, out, error) && each_entry(holidays, parse_holiday, out, error);
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
    // Next year's 1 January on a Saturday is observed this year's 31 December.
    int today = day_number(year, month, day);
    if (closes_in(s, year, today) || closes_in(s, year + 1, today)) return "holiday";
    return within_hours(s, weekday, hour, minute) ? "open" : "closed";
}
