use super::*;

fn ts(text: &str) -> Timestamp {
    text.parse().expect("test timestamp")
}

fn hours(day: Weekday, intervals: &[&str]) -> WeeklyHours {
    let mut days: [Vec<Interval>; 7] = Default::default();
    days[day.to_monday_zero_offset() as usize] = intervals
        .iter()
        .map(|i| i.parse().expect("test interval"))
        .collect();
    WeeklyHours::new(days).expect("no overlap")
}

fn schedule(zone: &str, hours: Option<WeeklyHours>, holidays: Vec<Holiday>) -> Schedule {
    Schedule {
        timezone: TimeZone::get(zone).expect("zone in the tz database"),
        timezone_name: zone.into(),
        hours,
        holidays,
    }
}

fn is_open(schedule: &Schedule, at: &str) -> bool {
    matches!(schedule.read(ts(at)).availability, Availability::Open(_))
}

/// Real minutes during which the group is open, sampling each minute of `[from, to)`.
fn open_minutes(schedule: &Schedule, from: &str, to: &str) -> i64 {
    let (mut t, end) = (ts(from), ts(to));
    let mut open = 0;
    while t < end {
        if matches!(schedule.read(t).availability, Availability::Open(_)) {
            open += 1;
        }
        t += jiff::SignedDuration::from_mins(1);
    }
    open
}

#[test]
fn clock_times_parse_strictly() {
    assert_eq!("09:05".parse::<ClockTime>().unwrap().minutes(), 545);
    assert_eq!("24:00".parse::<ClockTime>().unwrap(), ClockTime::END_OF_DAY);
    for bad in ["9:00", "24:01", "12:60", "1200", "ab:cd", "12:00 ", ""] {
        assert!(
            bad.parse::<ClockTime>().is_err(),
            "{bad:?} should be refused"
        );
    }
}

#[test]
fn intervals_parse_and_know_when_they_cross_midnight() {
    let day: Interval = "09:00-17:00".parse().unwrap();
    assert!(!day.crosses_midnight());
    let night: Interval = "22:00-06:00".parse().unwrap();
    assert!(night.crosses_midnight());
    let to_midnight: Interval = "18:00-24:00".parse().unwrap();
    assert!(!to_midnight.crosses_midnight());
    assert!(matches!(
        "09:00-09:00".parse::<Interval>(),
        Err(ScheduleError::EmptyInterval { .. })
    ));
    assert!(matches!(
        "24:00-02:00".parse::<Interval>(),
        Err(ScheduleError::MidnightStart)
    ));
    assert!(matches!(
        "09:00 17:00".parse::<Interval>(),
        Err(ScheduleError::BadInterval { .. })
    ));
}

#[test]
fn overlapping_intervals_on_one_day_are_refused() {
    let mut days: [Vec<Interval>; 7] = Default::default();
    days[0] = vec![
        "09:00-14:00".parse().unwrap(),
        "13:00-18:00".parse().unwrap(),
    ];
    let overlaps = WeeklyHours::new(days).unwrap_err();
    assert_eq!(
        overlaps,
        vec![Overlap {
            interval: IntervalRef {
                day: Weekday::Monday,
                index: 1
            },
            with: IntervalRef {
                day: Weekday::Monday,
                index: 0
            },
        }]
    );
}

#[test]
fn a_night_interval_overlapping_the_next_morning_is_refused_even_across_the_week_end() {
    let mut days: [Vec<Interval>; 7] = Default::default();
    days[6] = vec!["22:00-06:00".parse().unwrap()];
    days[0] = vec!["05:00-09:00".parse().unwrap()];
    let overlaps = WeeklyHours::new(days).unwrap_err();
    assert_eq!(
        overlaps,
        vec![Overlap {
            interval: IntervalRef {
                day: Weekday::Sunday,
                index: 0
            },
            with: IntervalRef {
                day: Weekday::Monday,
                index: 0
            },
        }]
    );
}

#[test]
fn touching_intervals_are_fine() {
    let mut days: [Vec<Interval>; 7] = Default::default();
    days[0] = vec!["22:00-06:00".parse().unwrap()];
    days[1] = vec![
        "06:00-10:00".parse().unwrap(),
        "10:00-12:00".parse().unwrap(),
    ];
    assert!(WeeklyHours::new(days).is_ok());
}

#[test]
fn a_group_without_hours_is_always_open() {
    let s = schedule("Europe/Madrid", None, vec![]);
    assert!(is_open(&s, "2026-11-22T03:00:00Z"));
    assert!(is_open(&s, "2026-11-23T12:00:00Z"));
}

#[test]
fn a_night_interval_belongs_to_the_day_it_starts() {
    // Monday 22:00 to Tuesday 06:00, Madrid (CET, UTC+1 in November).
    let s = schedule(
        "Europe/Madrid",
        Some(hours(Weekday::Monday, &["22:00-06:00"])),
        vec![],
    );
    assert!(!is_open(&s, "2026-11-23T20:59:00Z")); // Monday 21:59
    assert!(is_open(&s, "2026-11-23T21:00:00Z")); // Monday 22:00
    assert!(is_open(&s, "2026-11-24T04:59:00Z")); // Tuesday 05:59
    assert!(!is_open(&s, "2026-11-24T05:00:00Z")); // Tuesday 06:00
    assert!(!is_open(&s, "2026-11-24T21:30:00Z")); // Tuesday 22:30: Tuesday has no hours
    // Sunday night into Monday is not open: the interval belongs to Monday night only.
    assert!(!is_open(&s, "2026-11-23T02:00:00Z"));
}

#[test]
fn reading_reports_the_day_a_night_interval_belongs_to() {
    let s = schedule(
        "Europe/Madrid",
        Some(hours(Weekday::Sunday, &["22:00-06:00"])),
        vec![],
    );
    // Monday 2026-11-23 03:00 local is the tail of Sunday night.
    let reading = s.read(ts("2026-11-23T02:00:00Z"));
    assert_eq!(reading.local.weekday(), Weekday::Monday);
    assert_eq!(
        reading.availability,
        Availability::Open(Some((Weekday::Sunday, "22:00-06:00".parse().unwrap())))
    );
}

#[test]
fn madrid_spring_forward_office_hours_follow_the_wall_clock() {
    // 2026-03-29: at 02:00 CET clocks jump to 03:00 CEST. 09:00 CEST is 07:00 UTC.
    let s = schedule(
        "Europe/Madrid",
        Some(hours(Weekday::Sunday, &["09:00-17:00"])),
        vec![],
    );
    assert!(!is_open(&s, "2026-03-29T06:59:00Z"));
    assert!(is_open(&s, "2026-03-29T07:00:00Z"));
    assert!(is_open(&s, "2026-03-29T14:59:00Z"));
    assert!(!is_open(&s, "2026-03-29T15:00:00Z"));
    assert_eq!(
        open_minutes(&s, "2026-03-28T22:00:00Z", "2026-03-29T22:00:00Z"),
        8 * 60
    );
}

#[test]
fn madrid_spring_forward_an_interval_starting_in_the_gap_opens_when_the_clock_jumps() {
    // 02:30 does not exist on 2026-03-29; the wall clock goes 01:59 → 03:00.
    let s = schedule(
        "Europe/Madrid",
        Some(hours(Weekday::Sunday, &["02:30-04:00"])),
        vec![],
    );
    assert!(!is_open(&s, "2026-03-29T00:59:00Z")); // 01:59 CET
    assert!(is_open(&s, "2026-03-29T01:00:00Z")); // 03:00 CEST
    assert!(!is_open(&s, "2026-03-29T02:00:00Z")); // 04:00 CEST
    assert_eq!(
        open_minutes(&s, "2026-03-28T23:00:00Z", "2026-03-29T03:00:00Z"),
        60
    );
}

#[test]
fn madrid_spring_forward_an_interval_inside_the_gap_never_opens() {
    let s = schedule(
        "Europe/Madrid",
        Some(hours(Weekday::Sunday, &["02:10-02:50"])),
        vec![],
    );
    assert_eq!(
        open_minutes(&s, "2026-03-28T23:00:00Z", "2026-03-29T23:00:00Z"),
        0
    );
    // A week later the same interval opens for its 40 minutes.
    assert_eq!(
        open_minutes(&s, "2026-04-04T22:00:00Z", "2026-04-05T22:00:00Z"),
        40
    );
}

#[test]
fn madrid_fall_back_the_repeated_hour_is_inside_the_interval_both_times() {
    // 2026-10-25: at 03:00 CEST clocks go back to 02:00 CET, so 02:00-02:59 is shown twice.
    let s = schedule(
        "Europe/Madrid",
        Some(hours(Weekday::Sunday, &["02:00-02:30"])),
        vec![],
    );
    assert!(is_open(&s, "2026-10-25T00:15:00Z")); // 02:15 CEST, first time
    assert!(!is_open(&s, "2026-10-25T00:45:00Z")); // 02:45 CEST
    assert!(is_open(&s, "2026-10-25T01:15:00Z")); // 02:15 CET, second time
    assert!(!is_open(&s, "2026-10-25T01:45:00Z")); // 02:45 CET
    assert_eq!(
        open_minutes(&s, "2026-10-24T22:00:00Z", "2026-10-25T22:00:00Z"),
        60
    );
}

#[test]
fn madrid_fall_back_office_hours_are_one_real_hour_longer_overnight() {
    // Saturday 22:00 to Sunday 06:00 across the change lasts nine real hours.
    let s = schedule(
        "Europe/Madrid",
        Some(hours(Weekday::Saturday, &["22:00-06:00"])),
        vec![],
    );
    assert_eq!(
        open_minutes(&s, "2026-10-24T18:00:00Z", "2026-10-25T08:00:00Z"),
        9 * 60
    );
    assert!(is_open(&s, "2026-10-24T20:00:00Z")); // Saturday 22:00 CEST
    assert!(!is_open(&s, "2026-10-25T05:00:00Z")); // Sunday 06:00 CET
}

#[test]
fn sao_paulo_midnight_that_did_not_exist_in_2018() {
    // 2018-11-04: Brazil's last DST start; 00:00 -03 jumped to 01:00 -02.
    let s = schedule(
        "America/Sao_Paulo",
        Some(hours(Weekday::Sunday, &["00:00-08:00"])),
        vec![],
    );
    assert!(!is_open(&s, "2018-11-04T02:59:00Z")); // Saturday 23:59 -03
    assert!(is_open(&s, "2018-11-04T03:00:00Z")); // Sunday 01:00 -02
    assert_eq!(
        open_minutes(&s, "2018-11-04T00:00:00Z", "2018-11-04T12:00:00Z"),
        7 * 60
    );
}

#[test]
fn sao_paulo_night_shift_across_the_2018_change_is_one_real_hour_shorter() {
    let s = schedule(
        "America/Sao_Paulo",
        Some(hours(Weekday::Saturday, &["22:00-02:00"])),
        vec![],
    );
    assert!(is_open(&s, "2018-11-04T01:00:00Z")); // Saturday 22:00 -03
    assert!(is_open(&s, "2018-11-04T03:30:00Z")); // Sunday 01:30 -02
    assert!(!is_open(&s, "2018-11-04T04:00:00Z")); // Sunday 02:00 -02
    assert_eq!(
        open_minutes(&s, "2018-11-03T20:00:00Z", "2018-11-04T08:00:00Z"),
        3 * 60
    );
}

#[test]
fn sao_paulo_has_no_daylight_saving_time_since_2019() {
    let s = schedule(
        "America/Sao_Paulo",
        Some(hours(Weekday::Thursday, &["09:00-18:00"])),
        vec![],
    );
    // January (southern summer) and July: 09:00 local is 12:00 UTC both times.
    assert!(is_open(&s, "2026-01-15T12:00:00Z"));
    assert!(!is_open(&s, "2026-01-15T11:59:00Z"));
    assert!(is_open(&s, "2026-07-16T12:00:00Z"));
    assert!(!is_open(&s, "2026-07-16T11:59:00Z"));
}

#[test]
fn sydney_dst_ends_in_april_and_the_night_interval_is_nine_real_hours() {
    // 2026-04-05 03:00 AEDT → 02:00 AEST.
    let s = schedule(
        "Australia/Sydney",
        Some(hours(Weekday::Saturday, &["22:00-06:00"])),
        vec![],
    );
    assert!(is_open(&s, "2026-04-04T11:00:00Z")); // Saturday 22:00 AEDT
    assert!(!is_open(&s, "2026-04-04T10:59:00Z"));
    assert!(is_open(&s, "2026-04-04T19:59:00Z")); // Sunday 05:59 AEST
    assert!(!is_open(&s, "2026-04-04T20:00:00Z")); // Sunday 06:00 AEST
    assert_eq!(
        open_minutes(&s, "2026-04-04T08:00:00Z", "2026-04-04T23:00:00Z"),
        9 * 60
    );
}

#[test]
fn sydney_dst_starts_in_october_and_business_hours_still_open_at_nine() {
    // 2026-10-04 02:00 AEST → 03:00 AEDT; Sunday 09:00 AEDT is Saturday 22:00 UTC.
    let s = schedule(
        "Australia/Sydney",
        Some(hours(Weekday::Sunday, &["09:00-17:00"])),
        vec![],
    );
    assert!(!is_open(&s, "2026-10-03T21:59:00Z"));
    assert!(is_open(&s, "2026-10-03T22:00:00Z"));
    assert!(!is_open(&s, "2026-10-04T06:00:00Z"));
    // The week before, 09:00 AEST is 23:00 UTC.
    assert!(!is_open(&s, "2026-09-26T22:00:00Z"));
    assert!(is_open(&s, "2026-09-26T23:00:00Z"));
}

#[test]
fn holiday_dates_parse_and_refuse_impossible_days() {
    assert_eq!(
        "2026-05-15".parse::<HolidayDate>().unwrap(),
        HolidayDate::Once(jiff::civil::date(2026, 5, 15))
    );
    assert_eq!(
        "12-25".parse::<HolidayDate>().unwrap(),
        HolidayDate::Yearly { month: 12, day: 25 }
    );
    assert!("02-29".parse::<HolidayDate>().is_ok());
    for bad in [
        "2026-02-29",
        "02-30",
        "13-01",
        "2026-1-05",
        "25/12",
        "2026-12-25T00:00",
        "",
    ] {
        assert!(
            bad.parse::<HolidayDate>().is_err(),
            "{bad:?} should be refused"
        );
    }
}

#[test]
fn yearly_holidays_repeat_and_one_day_holidays_do_not() {
    let christmas = Holiday::new("Navidad".into(), "12-25".parse().unwrap(), None, None).unwrap();
    let san_isidro = Holiday::new(
        "San Isidro".into(),
        "2026-05-15".parse().unwrap(),
        None,
        None,
    )
    .unwrap();
    let s = schedule("Europe/Madrid", None, vec![christmas, san_isidro]);
    assert!(!is_open(&s, "2026-12-25T11:00:00Z"));
    assert!(!is_open(&s, "2031-12-25T11:00:00Z"));
    assert!(!is_open(&s, "2026-05-15T11:00:00Z"));
    assert!(is_open(&s, "2027-05-15T11:00:00Z"));
}

#[test]
fn a_yearly_february_29_holiday_only_happens_in_leap_years() {
    let leap = Holiday::new("Leap".into(), "02-29".parse().unwrap(), None, None).unwrap();
    let s = schedule("UTC", None, vec![leap]);
    assert!(!is_open(&s, "2028-02-29T12:00:00Z"));
    assert!(is_open(&s, "2027-02-28T12:00:00Z"));
    assert!(is_open(&s, "2027-03-01T12:00:00Z"));
}

#[test]
fn a_partial_day_holiday_closes_only_its_hours() {
    let eve = Holiday::new(
        "Nochebuena".into(),
        "12-24".parse().unwrap(),
        Some("14:00".parse().unwrap()),
        None,
    )
    .unwrap();
    assert!(eve.is_partial());
    let s = schedule("Europe/Madrid", None, vec![eve]);
    assert!(is_open(&s, "2026-12-24T12:59:00Z")); // 13:59
    assert!(!is_open(&s, "2026-12-24T13:00:00Z")); // 14:00
    assert!(!is_open(&s, "2026-12-24T22:59:00Z")); // 23:59
    assert!(is_open(&s, "2026-12-24T23:00:00Z")); // 25th, 00:00
    assert!(matches!(
        Holiday::new(
            "x".into(),
            "12-24".parse().unwrap(),
            Some("15:00".parse().unwrap()),
            Some("14:00".parse().unwrap())
        ),
        Err(ScheduleError::EmptyHolidayHours { .. })
    ));
}

#[test]
fn holidays_are_local_dates() {
    // 23:30 UTC on the 24th is already Christmas in Madrid but not in São Paulo.
    let christmas = Holiday::new("Natal".into(), "12-25".parse().unwrap(), None, None).unwrap();
    let madrid = schedule("Europe/Madrid", None, vec![christmas.clone()]);
    let sao_paulo = schedule("America/Sao_Paulo", None, vec![christmas]);
    assert!(!is_open(&madrid, "2026-12-24T23:30:00Z"));
    assert!(is_open(&sao_paulo, "2026-12-24T23:30:00Z"));
}

#[test]
fn a_holiday_wins_over_business_hours() {
    let holiday = Holiday::new("Fiesta".into(), "2026-11-23".parse().unwrap(), None, None).unwrap();
    let s = schedule(
        "Europe/Madrid",
        Some(hours(Weekday::Monday, &["09:00-17:00"])),
        vec![holiday],
    );
    let reading = s.read(ts("2026-11-23T10:00:00Z"));
    assert!(matches!(reading.availability, Availability::Holiday(h) if &*h.name == "Fiesta"));
}
