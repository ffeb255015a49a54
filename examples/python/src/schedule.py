"""Time conditions: weekly opening hours, holidays and an admin override, on the
location's wall-clock time (the host converts UTC to the timezone).

- hours: "Mon-Fri 09:00-17:00, Sat 10:00-13:00" — days Mon…Sun, a range (Fri-Mon wraps)
  or Daily; 24:00 closes at midnight; a close before the open runs past midnight.
  Empty = always open.
- holidays: "2026-12-25, 2027-01-01" — closed the whole local day.
- override: "open" or "closed" beats both; anything else follows them.
"""

import re
from dataclasses import dataclass
from typing import List, Optional, Tuple

DAY_NAMES = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"]


@dataclass
class Window:
    days: List[bool]  # Monday first
    open: int  # minutes after midnight
    close: int  # 1 to 1440; at or before `open` means past midnight


@dataclass
class Schedule:
    windows: List[Window]
    holidays: List[Tuple[int, int, int]]

    @staticmethod
    def parse(hours: str, holidays: str) -> "Schedule":
        """Raises ValueError naming the bad part."""
        return Schedule([parse_window(e) for e in entries(hours)], [parse_date(e) for e in entries(holidays)])

    def state(self, at, override: Optional[str]) -> str:
        """`open`, `closed`, `holiday`, `override-open` or `override-closed` at `at` (a
        local-time from the host)."""
        forced = (override or "").strip().lower()
        if forced == "open":
            return "override-open"
        if forced == "closed":
            return "override-closed"
        if (at.year, at.month, at.day) in self.holidays:
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
    match = re.fullmatch(r"(\d{4})-(\d\d)-(\d\d)", text)
    if not match or not 1 <= int(match[2]) <= 12 or not 1 <= int(match[3]) <= 31:
        raise ValueError(f'holiday "{text}": expected YYYY-MM-DD')
    return int(match[1]), int(match[2]), int(match[3])
