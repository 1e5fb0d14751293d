"""HL7 DTM, the date and time of XDS metadata (ITI TF-3 4.2.3.1.7): YYYY[MM[DD[hh[mm[ss]]]]],
always in UTC. The one place that writes, checks, pads and shows it.

    dtm(moment)          "20261207032619": what the registry writes (lastUpdateTime), and a
                         Document Source its submissionTime and creationTime
    check(value)         None when `value` is a DTM, else the reason it is not
    padded(value)        "2026120700" -> "20261207000000": how the registry stores and compares
                         times of any precision
    readable(value)      "2026-12-07 03:26:19": for people, at the precision the value has
"""

from __future__ import annotations

import re
from datetime import datetime, timezone

LENGTH = 14  # YYYYMMDDhhmmss
PATTERN = re.compile(r"[0-9]{4}(?:[0-9]{2}){0,5}", re.ASCII)
_DAYS = (31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31)

def dtm(moment: datetime) -> str:
    """`moment` as a DTM in UTC to the second."""
    return moment.astimezone(timezone.utc).strftime("%Y%m%d%H%M%S")


def check(value: str) -> str | None:
    """None when `value` is a DTM of a real date and time, else the reason it is not."""
    if not PATTERN.fullmatch(value):
        return "not 4, 6, 8, 10, 12 or 14 digits"
    n = len(value)
    year = int(value[:4])
    if n >= 6:
        month = int(value[4:6])
        if not 1 <= month <= 12:
            return "no such month"
        if n >= 8:
            leap = year % 4 == 0 and (year % 100 != 0 or year % 400 == 0)
            last = 29 if month == 2 and leap else _DAYS[month - 1]
            if not 1 <= int(value[6:8]) <= last:
                return "no such day"
    if n >= 10 and int(value[8:10]) > 23:
        return "no such hour"
    if n >= 12 and int(value[10:12]) > 59:
        return "no such minute"
    if n >= 14 and int(value[12:14]) > 59:
        return "no such second"
    return None


def padded(value: str | None) -> str | None:
    """A DTM right-padded with '0' to 14 characters.

    Padded values of any precision compare as strings in time order, so the time parameters
    of stored queries become plain range conditions on an indexable column. The exact value
    stays in the object's XML. Longer values (a validator lets none through) are cut so that
    PostgreSQL's column length never turns a bad value into a database error."""
    if value is None:
        return None
    return value[:LENGTH].ljust(LENGTH, "0")


def readable(value: str | None) -> str:
    """A DTM as people read it: 20261207032619 -> 2026-12-07 03:26:19, 202612 -> 2026-12;
    anything that is not a DTM is returned as it is."""
    if not value or not PATTERN.fullmatch(value):
        return value or ""
    date = "-".join(part for part in (value[:4], value[4:6], value[6:8]) if part)
    time = ":".join(part for part in (value[8:10], value[10:12], value[12:14]) if part)
    return f"{date} {time}" if time else date
