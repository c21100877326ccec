//! Business hours and holidays of a group, read as a wall clock in the group's time zone.
//!
//! An interval `"09:00-17:00"` on Monday means: open while a clock on the office wall shows a
//! Monday time from 09:00 up to (not including) 17:00. The instant of a call is first turned into
//! local wall-clock time with the tz database and only then compared, which settles the days the
//! clocks change the way a person looking at that clock would:
//!
//! - when clocks go forward, the skipped times are never shown, so an interval that starts inside
//!   the gap opens when the clock jumps past it, and one that lies wholly inside the gap does not
//!   open that day;
//! - when clocks go back, the repeated times are shown twice and are inside an interval both times.
//!
//! Holidays are local dates too: "12-25" is the 25th of December as the calendar on that wall says.

use std::fmt;
use std::str::FromStr;
use std::sync::Arc;

use jiff::Timestamp;
use jiff::civil::{Date, DateTime, Weekday};
use jiff::tz::TimeZone;

/// Why an hours, date or interval text was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ScheduleError {
    #[error("\"{text}\" is not a time of day; write HH:MM from 00:00 to 24:00")]
    BadTime { text: String },
    #[error("\"{text}\" is not an interval; write \"HH:MM-HH:MM\", e.g. \"09:00-17:00\"")]
    BadInterval { text: String },
    #[error(
        "interval \"{text}\" is empty; write \"00:00-24:00\" for a whole day or two different times"
    )]
    EmptyInterval { text: String },
    #[error("\"24:00\" can only end an interval, as in \"18:00-24:00\"")]
    MidnightStart,
    #[error(
        "\"{text}\" is not a date; write \"YYYY-MM-DD\" for one day or \"MM-DD\" for every year"
    )]
    BadDate { text: String },
    #[error("holiday hours {from}-{until} are empty; \"from\" must be before \"until\"")]
    EmptyHolidayHours { from: ClockTime, until: ClockTime },
}

/// A time of day in minutes since local midnight; `24:00` is allowed only as the end of an
/// interval.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ClockTime(u16);

impl ClockTime {
    /// Midnight at the start of the day.
    pub const MIDNIGHT: ClockTime = ClockTime(0);
    /// Midnight at the end of the day ("24:00").
    pub const END_OF_DAY: ClockTime = ClockTime(24 * 60);

    /// Builds a time from hours and minutes, `None` when out of range.
    pub fn from_hm(hour: u16, minute: u16) -> Option<ClockTime> {
        let minutes = hour.checked_mul(60)?.checked_add(minute)?;
        (minute < 60 && minutes <= 24 * 60).then_some(ClockTime(minutes))
    }

    /// The wall-clock time of a civil date-time, to the minute.
    pub fn of(datetime: DateTime) -> ClockTime {
        // Hours and minutes from jiff are always within 0..24 and 0..60.
        ClockTime(datetime.hour() as u16 * 60 + datetime.minute() as u16)
    }

    /// Minutes since midnight.
    pub fn minutes(self) -> u16 {
        self.0
    }
}

impl FromStr for ClockTime {
    type Err = ScheduleError;

    /// Parses `HH:MM` with exactly two digits on each side.
    fn from_str(text: &str) -> Result<ClockTime, ScheduleError> {
        let bad = || ScheduleError::BadTime {
            text: text.to_owned(),
        };
        let bytes = text.as_bytes();
        if bytes.len() != 5 || bytes[2] != b':' {
            return Err(bad());
        }
        let two = |b: &[u8]| -> Option<u16> {
            (b[0].is_ascii_digit() && b[1].is_ascii_digit())
                .then(|| (b[0] - b'0') as u16 * 10 + (b[1] - b'0') as u16)
        };
        let (Some(hour), Some(minute)) = (two(&bytes[0..2]), two(&bytes[3..5])) else {
            return Err(bad());
        };
        ClockTime::from_hm(hour, minute).ok_or_else(bad)
    }
}

impl fmt::Display for ClockTime {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:02}:{:02}", self.0 / 60, self.0 % 60)
    }
}

/// Opening hours on one day: `start` up to `end`; an `end` at or before `start` crosses
/// midnight and ends on the next day.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Interval {
    pub start: ClockTime,
    pub end: ClockTime,
}

impl Interval {
    /// Whether the interval runs past midnight into the next day.
    pub fn crosses_midnight(self) -> bool {
        self.end <= self.start
    }

    /// The interval as half-open minute ranges from the start of its own day: one range, or
    /// two when it crosses midnight (the second one on the next day, offset by 1440).
    fn span_minutes(self) -> (u32, u32) {
        let start = self.start.0 as u32;
        let end = if self.crosses_midnight() {
            24 * 60 + self.end.0 as u32
        } else {
            self.end.0 as u32
        };
        (start, end)
    }
}

impl FromStr for Interval {
    type Err = ScheduleError;

    fn from_str(text: &str) -> Result<Interval, ScheduleError> {
        let (start, end) = text
            .split_once('-')
            .ok_or_else(|| ScheduleError::BadInterval {
                text: text.to_owned(),
            })?;
        let start: ClockTime = start.parse()?;
        let end: ClockTime = end.parse()?;
        if start == ClockTime::END_OF_DAY {
            return Err(ScheduleError::MidnightStart);
        }
        if start == end {
            return Err(ScheduleError::EmptyInterval {
                text: text.to_owned(),
            });
        }
        Ok(Interval { start, end })
    }
}

impl fmt::Display for Interval {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}", self.start, self.end)
    }
}

/// Where an interval sits in the weekly hours: its day and its position in that day's list.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct IntervalRef {
    pub day: Weekday,
    pub index: usize,
}

/// Two intervals of the weekly hours that share some minutes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Overlap {
    /// The interval found to overlap (the later one in reading order).
    pub interval: IntervalRef,
    /// The interval it overlaps.
    pub with: IntervalRef,
}

/// The seven days of a week, Monday first, as the configuration lists them.
pub const WEEK: [Weekday; 7] = [
    Weekday::Monday,
    Weekday::Tuesday,
    Weekday::Wednesday,
    Weekday::Thursday,
    Weekday::Friday,
    Weekday::Saturday,
    Weekday::Sunday,
];

/// Weekly business hours: a list of intervals per weekday.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct WeeklyHours {
    days: [Vec<Interval>; 7],
}

impl WeeklyHours {
    /// Builds weekly hours, refusing intervals that share minutes, including the part of a
    /// late interval that runs into the next morning (Sunday night runs into Monday).
    pub fn new(days: [Vec<Interval>; 7]) -> Result<WeeklyHours, Vec<Overlap>> {
        const WEEK_MINUTES: u32 = 7 * 24 * 60;
        // Every interval as one or two ranges on a week-long line starting Monday 00:00.
        let mut ranges: Vec<(u32, u32, IntervalRef)> = Vec::new();
        for (d, intervals) in days.iter().enumerate() {
            for (index, interval) in intervals.iter().enumerate() {
                let at = IntervalRef {
                    day: WEEK[d],
                    index,
                };
                let (start, end) = interval.span_minutes();
                let offset = d as u32 * 24 * 60;
                let (start, end) = (offset + start, offset + end);
                if end > WEEK_MINUTES {
                    ranges.push((start, WEEK_MINUTES, at));
                    ranges.push((0, end - WEEK_MINUTES, at));
                } else {
                    ranges.push((start, end, at));
                }
            }
        }
        let reading_order = |r: IntervalRef| (r.day.to_monday_zero_offset(), r.index);
        let mut overlaps = Vec::new();
        for (i, a) in ranges.iter().enumerate() {
            for b in &ranges[i + 1..] {
                if a.2 != b.2 && a.0 < b.1 && b.0 < a.1 {
                    let (first, second) = if reading_order(a.2) <= reading_order(b.2) {
                        (a.2, b.2)
                    } else {
                        (b.2, a.2)
                    };
                    let overlap = Overlap {
                        interval: second,
                        with: first,
                    };
                    if !overlaps.contains(&overlap) {
                        overlaps.push(overlap);
                    }
                }
            }
        }
        if overlaps.is_empty() {
            Ok(WeeklyHours { days })
        } else {
            Err(overlaps)
        }
    }

    /// The intervals of one weekday.
    pub fn day(&self, day: Weekday) -> &[Interval] {
        &self.days[day.to_monday_zero_offset() as usize]
    }

    /// The interval, and the weekday it belongs to, that a wall-clock moment falls in.
    pub fn interval_at(&self, day: Weekday, time: ClockTime) -> Option<(Weekday, Interval)> {
        let today = self
            .day(day)
            .iter()
            .find(|i| time >= i.start && (i.crosses_midnight() || time < i.end));
        if let Some(interval) = today {
            return Some((day, *interval));
        }
        let yesterday = day.previous();
        self.day(yesterday)
            .iter()
            .find(|i| i.crosses_midnight() && time < i.end)
            .map(|i| (yesterday, *i))
    }
}

/// The date a holiday falls on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HolidayDate {
    /// One day: "2026-05-15".
    Once(Date),
    /// The same day every year: "12-25". "02-29" only happens in leap years.
    Yearly { month: i8, day: i8 },
}

impl HolidayDate {
    /// Whether the holiday falls on a local date.
    pub fn matches(self, date: Date) -> bool {
        match self {
            HolidayDate::Once(d) => d == date,
            HolidayDate::Yearly { month, day } => date.month() == month && date.day() == day,
        }
    }
}

impl FromStr for HolidayDate {
    type Err = ScheduleError;

    fn from_str(text: &str) -> Result<HolidayDate, ScheduleError> {
        let bad = || ScheduleError::BadDate {
            text: text.to_owned(),
        };
        let all_digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
        let parts: Vec<&str> = text.split('-').collect();
        match parts.as_slice() {
            [y, m, d] if y.len() == 4 && m.len() == 2 && d.len() == 2 => {
                if !parts.iter().all(|p| all_digits(p)) {
                    return Err(bad());
                }
                let year: i16 = y.parse().map_err(|_| bad())?;
                let month: i8 = m.parse().map_err(|_| bad())?;
                let day: i8 = d.parse().map_err(|_| bad())?;
                Date::new(year, month, day)
                    .map(HolidayDate::Once)
                    .map_err(|_| bad())
            }
            [m, d] if m.len() == 2 && d.len() == 2 && all_digits(m) && all_digits(d) => {
                let month: i8 = m.parse().map_err(|_| bad())?;
                let day: i8 = d.parse().map_err(|_| bad())?;
                // 2024 is a leap year, so "02-29" is accepted and "02-30" is not.
                Date::new(2024, month, day).map_err(|_| bad())?;
                Ok(HolidayDate::Yearly { month, day })
            }
            _ => Err(bad()),
        }
    }
}

impl fmt::Display for HolidayDate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HolidayDate::Once(d) => write!(f, "{d}"),
            HolidayDate::Yearly { month, day } => write!(f, "{month:02}-{day:02} (every year)"),
        }
    }
}

/// A day, or part of a day, on which a group takes no calls.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Holiday {
    pub name: Arc<str>,
    pub date: HolidayDate,
    /// Start of a partial-day holiday; midnight when the whole morning is off.
    pub from: ClockTime,
    /// End of a partial-day holiday; `24:00` when the rest of the day is off.
    pub until: ClockTime,
}

impl Holiday {
    /// A holiday on `date`, from `from` (default: midnight) until `until` (default: end of day).
    pub fn new(
        name: Arc<str>,
        date: HolidayDate,
        from: Option<ClockTime>,
        until: Option<ClockTime>,
    ) -> Result<Holiday, ScheduleError> {
        let from = from.unwrap_or(ClockTime::MIDNIGHT);
        let until = until.unwrap_or(ClockTime::END_OF_DAY);
        if from >= until {
            return Err(ScheduleError::EmptyHolidayHours { from, until });
        }
        Ok(Holiday {
            name,
            date,
            from,
            until,
        })
    }

    /// Whether the holiday covers a local wall-clock moment.
    pub fn covers(&self, local: DateTime) -> bool {
        let time = ClockTime::of(local);
        self.date.matches(local.date()) && self.from <= time && time < self.until
    }

    /// Whether the holiday lasts only part of its day.
    pub fn is_partial(&self) -> bool {
        self.from != ClockTime::MIDNIGHT || self.until != ClockTime::END_OF_DAY
    }
}

/// Whether a group takes calls at some moment, and why not.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Availability<'s> {
    /// Inside the interval shown (which may belong to the previous day when it crosses midnight),
    /// or always open when the group has no hours.
    Open(Option<(Weekday, Interval)>),
    /// Outside every interval.
    OutOfHours,
    /// On a holiday.
    Holiday(&'s Holiday),
}

/// A group's time zone, weekly hours and holidays.
#[derive(Clone, Debug)]
pub struct Schedule {
    pub timezone: TimeZone,
    /// The IANA name the configuration gave, kept for explanations.
    pub timezone_name: Arc<str>,
    /// `None` means always open.
    pub hours: Option<WeeklyHours>,
    /// Own holidays, and the global ones when the group uses them.
    pub holidays: Vec<Holiday>,
}

/// The outcome of reading a group's schedule at one instant.
#[derive(Clone, Debug)]
pub struct Reading<'s> {
    /// What the clock on the group's wall showed.
    pub local: DateTime,
    pub availability: Availability<'s>,
}

impl Schedule {
    /// Reads the schedule at an instant: holidays first, then hours.
    pub fn read(&self, at: Timestamp) -> Reading<'_> {
        let local = self.timezone.to_datetime(at);
        Reading {
            local,
            availability: self.read_local(local),
        }
    }

    /// Reads the schedule at a wall-clock time already converted to the group's zone.
    pub fn read_local(&self, local: DateTime) -> Availability<'_> {
        if let Some(holiday) = self.holidays.iter().find(|h| h.covers(local)) {
            return Availability::Holiday(holiday);
        }
        let Some(hours) = &self.hours else {
            return Availability::Open(None);
        };
        match hours.interval_at(local.weekday(), ClockTime::of(local)) {
            Some(found) => Availability::Open(Some(found)),
            None => Availability::OutOfHours,
        }
    }
}

#[cfg(test)]
mod tests;
