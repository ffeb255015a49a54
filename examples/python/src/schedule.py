"""Time conditions: weekly opening hours, holidays and an admin override, on the
location's wall-clock time (the host converts UTC to the timezone).

- hours: "Mon-Fri 09:00-17:00, Sat 10:00-13:00" — days Mon…Sun, a range (Fri-Mon wraps)
  or Daily; 24:00 closes at midnight; a close before the open runs past midnight.
  Empty = always open.
- holidays: rules, each closing whole local days — a date (2026-12-25); a date every
  year (Dec 25), with `observed` (a weekend day also closes the nearest weekday:
  Saturday → Friday, Sunday → Monday) or `substitute` (the next weekday not already a
  holiday); a weekday of a month (2nd Mon Jun, last Mon May); Easter-relative (Easter,
  Easter+1, Easter-2, Good Friday, Easter Monday); a national preset (@AU, @GB, @US:
  PRESETS, the same rules).
- override: "open" or "closed" beats both; anything else follows them.
"""

import re
from dataclasses import dataclass
from typing import List, Optional, Tuple

DAY_NAMES = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"]
MONTH_NAMES = ["jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"]
ORDINALS = {"1st": 1, "2nd": 2, "3rd": 3, "4th": 4, "5th": 5, "last": -1}

# National holidays as rules (the Rust SDK's `schedule::PRESETS`).
PRESETS = {
    "AU": "Jan 1 substitute, Jan 26 substitute, Good Friday, Easter Monday, Apr 25, "
    "2nd Mon Jun, Dec 25 substitute, Dec 26 substitute",
    "GB": "Jan 1 substitute, Good Friday, Easter Monday, 1st Mon May, last Mon May, "
    "last Mon Aug, Dec 25 substitute, Dec 26 substitute",
    "US": "Jan 1 observed, 3rd Mon Jan, 3rd Mon Feb, last Mon May, Jun 19 observed, "
    "Jul 4 observed, 1st Mon Sep, 2nd Mon Oct, Nov 11 observed, 4th Thu Nov, "
    "Dec 25 observed",
}


@dataclass
class Holiday:
    """One rule: kind `date` (year, month, day), `yearly` (month, day, observed: "",
    "observed" or "substitute"), `nth` (nth 1-5 or -1, weekday Monday 0, month) or
    `easter` (offset days)."""

    kind: str
    year: int = 0
    month: int = 0
    day: int = 0
    observed: str = ""
    nth: int = 0
    weekday: int = 0
    offset: int = 0

    def day_in(self, year: int) -> Optional[int]:
        """The day number this rule falls on in `year`, if it does."""
        if self.kind == "date":
            if self.year != year or self.day > month_length(year, self.month):
                return None
            return day_number(year, self.month, self.day)
        if self.kind == "yearly":
            if self.day > month_length(year, self.month):
                return None
            return day_number(year, self.month, self.day)
        if self.kind == "nth":
            first = day_number(year, self.month, 1)
            last = first + month_length(year, self.month) - 1
            if self.nth > 0:
                day = first + (self.weekday - weekday_of(first)) % 7 + 7 * (self.nth - 1)
            else:
                day = last - (weekday_of(last) - self.weekday) % 7
            return day if day <= last else None
        return easter(year) + self.offset


@dataclass
class Window:
    days: List[bool]  # Monday first
    open: int  # minutes after midnight
    close: int  # 1 to 1440; at or before `open` means past midnight


@dataclass
class Schedule:
    windows: List[Window]
    holidays: List[Holiday]

    @staticmethod
    def parse(hours: str, holidays: str) -> "Schedule":
        """Raises ValueError naming the bad part."""
        rules = [rule for e in entries(holidays) for rule in parse_holiday(e)]
        return Schedule([parse_window(e) for e in entries(hours)], rules)

    def is_holiday(self, at) -> bool:
        """Whether `at` falls on a holiday or a day a weekend holiday is observed on."""
        today = day_number(at.year, at.month, at.day)
        # Next year's 1 January on a Saturday is observed this year's 31 December.
        return any(today in self.holidays_of(year) for year in (at.year, at.year + 1))

    def holidays_of(self, year: int) -> List[int]:
        """Every day (a day number) the rules close in `year`, observed days included."""
        days = [d for d in (rule.day_in(year) for rule in self.holidays) if d is not None]
        for rule in self.holidays:
            day = rule.day_in(year)
            if rule.kind != "yearly" or day is None:
                continue
            weekday = weekday_of(day)
            if rule.observed == "observed" and weekday == 5:
                days.append(day - 1)
            elif rule.observed == "observed" and weekday == 6:
                days.append(day + 1)
            elif rule.observed == "substitute" and weekday >= 5:
                substitute = day + 1
                while weekday_of(substitute) >= 5 or substitute in days:
                    substitute += 1
                days.append(substitute)
        return days

    def state(self, at, override: Optional[str]) -> str:
        """`open`, `closed`, `holiday`, `override-open` or `override-closed` at `at` (a
        local-time from the host)."""
        forced = (override or "").strip().lower()
        if forced == "open":
            return "override-open"
        if forced == "closed":
            return "override-closed"
        if self.is_holiday(at):
            return "holiday"
        return "open" if self.within_hours(at) else "closed"

    def within_hours(self, at) -> bool:
        if not self.windows:
            return True
        day = at.weekday.value  # the WIT enum is Monday first, like the windows
        yesterday = (day + 6) % 7
        minute = at.hour * 60 + at.minute
        return any(
            (w.days[day] and w.open <= minute < w.close)
            if w.open < w.close
            else (w.days[day] and minute >= w.open) or (w.days[yesterday] and minute < w.close)
            for w in self.windows
        )


def entries(text: str) -> List[str]:
    return [e.strip() for e in text.split(",") if e.strip()]


def parse_window(entry: str) -> Window:
    def bad(why: str) -> ValueError:
        return ValueError(f'hours entry "{entry}": {why}')

    parts = re.split(r"\s", entry, maxsplit=1)
    if len(parts) != 2:
        raise bad("expected DAYS HH:MM-HH:MM")
    days = parse_days(parts[0].strip())
    if days is None:
        raise bad("days must be like Mon, Mon-Fri or Daily")
    times = parts[1].strip()
    if "-" not in times:
        raise bad("expected HH:MM-HH:MM")
    open_text, close_text = times.split("-", 1)
    opens = parse_minutes(open_text)
    if opens is None or opens >= 1440:
        raise bad("bad opening time")
    closes = parse_minutes(close_text)
    if closes is None or closes == 0:
        raise bad("bad closing time")
    if opens == closes:
        raise bad("opening and closing times are equal")
    return Window(days, opens, closes)


def parse_days(spec: str) -> Optional[List[bool]]:
    if spec.lower() == "daily":
        return [True] * 7

    def day(name: str) -> Optional[int]:
        return DAY_NAMES.index(name.lower()) if name.lower() in DAY_NAMES else None

    first, last = (day(a) for a in spec.split("-", 1)) if "-" in spec else (day(spec), day(spec))
    if first is None or last is None:
        return None
    days = [False] * 7
    d = first
    while True:
        days[d] = True
        if d == last:
            return days
        d = (d + 1) % 7


def parse_minutes(text: str) -> Optional[int]:
    """`HH:MM` to minutes after midnight (24:00 allowed); None if malformed."""
    match = re.fullmatch(r"(\d\d):(\d\d)", text.strip())
    if not match:
        return None
    h, m = int(match[1]), int(match[2])
    if m >= 60 or h > 24 or (h == 24 and m != 0):
        return None
    return h * 60 + m


def parse_date(text: str) -> Tuple[int, int, int]:
    match = re.fullmatch(r"([0-9]{4})-([0-9][0-9])-([0-9][0-9])", text)
    if not match or not 1 <= int(match[2]) <= 12 or not 1 <= int(match[3]) <= 31:
        raise ValueError(f'holiday "{text}": expected YYYY-MM-DD')
    return int(match[1]), int(match[2]), int(match[3])


def day_number(year: int, month: int, day: int) -> int:
    """Days since 1970-01-01 of a (proleptic Gregorian) date."""
    y = year - 1 if month <= 2 else year
    era = y // 400
    year_of_era = y - era * 400
    day_of_year = (153 * (month + (-3 if month > 2 else 9)) + 2) // 5 + day - 1
    day_of_era = year_of_era * 365 + year_of_era // 4 - year_of_era // 100 + day_of_year
    return era * 146097 + day_of_era - 719468


def weekday_of(day: int) -> int:
    """Monday 0 … Sunday 6 (1970-01-01 was a Thursday)."""
    return (day + 3) % 7


def month_length(year: int, month: int) -> int:
    if month == 2:
        return 29 if year % 4 == 0 and (year % 100 != 0 or year % 400 == 0) else 28
    return 30 if month in (4, 6, 9, 11) else 31


def easter(year: int) -> int:
    """Easter Sunday (Gregorian; Meeus, Jones and Butcher), as a day number."""
    a, b, c = year % 19, year // 100, year % 100
    d, e = b // 4, b % 4
    g = (b - (b + 8) // 25 + 1) // 3
    h = (19 * a + b - d - g + 15) % 30
    i, k = c // 4, c % 4
    l = (32 + 2 * e + 2 * i - h - k) % 7
    m = (a + 11 * h + 22 * l) // 451
    return day_number(year, (h + l - 7 * m + 114) // 31, (h + l - 7 * m + 114) % 31 + 1)


def parse_holiday(entry: str) -> List[Holiday]:
    """One entry of the holidays list as rules (a preset gives several)."""
    bad = ValueError(
        f'holiday "{entry}": expected YYYY-MM-DD, Dec 25 [observed|substitute], 2nd Mon Jun, '
        "last Mon May, Easter+1, Good Friday, Easter Monday or @AU/@GB/@US"
    )
    words = entry.lower().split()

    def month(name: str) -> Optional[int]:
        return MONTH_NAMES.index(name) + 1 if name in MONTH_NAMES else None

    if len(words) == 1 and words[0].startswith("@"):
        preset = next((rules for name, rules in PRESETS.items() if name.lower() == words[0][1:]), None)
        if preset is None:
            raise bad
        return [rule for e in entries(preset) for rule in parse_holiday(e)]
    if words == ["good", "friday"]:
        return [Holiday("easter", offset=-2)]
    if words == ["easter", "monday"]:
        return [Holiday("easter", offset=1)]
    if len(words) == 1 and words[0].startswith("easter"):
        offset = words[0][6:]
        if offset == "":
            return [Holiday("easter", offset=0)]
        if not re.fullmatch(r"[+-][0-9]+", offset) or abs(int(offset)) > 100:
            raise bad
        return [Holiday("easter", offset=int(offset))]
    if len(words) == 1:
        try:
            y, m, d = parse_date(words[0])
        except ValueError:
            raise bad from None
        return [Holiday("date", year=y, month=m, day=d)]
    if len(words) in (2, 3) and month(words[0]) is not None:
        number = month(words[0])
        if not re.fullmatch(r"[0-9]+", words[1]) or not 1 <= int(words[1]) <= month_length(2000, number):
            raise bad
        observed = words[2] if len(words) == 3 else ""
        if observed not in ("", "observed", "substitute"):
            raise bad
        return [Holiday("yearly", month=number, day=int(words[1]), observed=observed)]
    if len(words) == 3:
        nth, weekday, number = ORDINALS.get(words[0]), words[1], month(words[2])
        if nth is None or weekday not in DAY_NAMES or number is None:
            raise bad
        return [Holiday("nth", nth=nth, weekday=DAY_NAMES.index(weekday), month=number)]
    raise bad
