//! Cron expressions for schedules (compute instances' `schedules.compute_start_stop`): the five
//! standard fields `minute hour day-of-month month day-of-week`, or six with a leading
//! `second` field (a Tarn extension, for schedules finer than a minute). Each field takes `*`,
//! numbers, `a-b` ranges, `/step`, comma lists, and month and weekday names (`JAN`, `MON`).
//! As in cron, when both day fields are restricted a time matches either. Times are UTC.

/// A parsed expression: the allowed values of each field as bit sets.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Cron {
    seconds: u64,
    minutes: u64,
    hours: u64,
    days: u64,
    months: u64,
    weekdays: u64,
    days_any: bool,
    weekdays_any: bool,
}

const MONTHS: &[&str] = &[
    "JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC",
];
const WEEKDAYS: &[&str] = &["SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT"];

/// One field: its allowed values as a bit set, and whether it was `*`.
fn field(
    text: &str,
    what: &str,
    min: u32,
    max: u32,
    names: &[&str],
    name_base: u32,
) -> Result<(u64, bool), String> {
    let value = |s: &str| -> Result<u32, String> {
        if let Some(i) = names.iter().position(|n| n.eq_ignore_ascii_case(s)) {
            return Ok(i as u32 + name_base);
        }
        let v: u32 = s
            .parse()
            .map_err(|_| format!("{what}: {s:?} is not a number"))?;
        if v < min || v > max {
            return Err(format!("{what}: {v} is outside {min}-{max}"));
        }
        Ok(v)
    };
    let mut bits = 0u64;
    for part in text.split(',') {
        let (range, step) = match part.split_once('/') {
            Some((r, s)) => {
                let step: u32 = s
                    .parse()
                    .ok()
                    .filter(|s| *s > 0)
                    .ok_or_else(|| format!("{what}: step {s:?} must be a positive number"))?;
                (r, step)
            }
            None => (part, 1),
        };
        let (lo, hi) = if range == "*" {
            (min, max)
        } else if let Some((a, b)) = range.split_once('-') {
            (value(a)?, value(b)?)
        } else {
            let v = value(range)?;
            // `5/15` means from 5 to the end, every 15.
            (v, if part.contains('/') { max } else { v })
        };
        if lo > hi {
            return Err(format!("{what}: the range {range:?} runs backwards"));
        }
        let mut v = lo;
        while v <= hi {
            bits |= 1 << v;
            v += step;
        }
    }
    Ok((bits, text == "*" || text == "?"))
}

impl Cron {
    pub fn parse(expression: &str) -> Result<Cron, String> {
        let parts: Vec<&str> = expression.split_whitespace().collect();
        let (seconds, rest) = match parts.len() {
            5 => ("0", &parts[..]),
            6 => (parts[0], &parts[1..]),
            n => {
                return Err(format!(
                    "a cron expression has 5 fields (minute hour day month weekday) or 6 (with seconds first), not {n}"
                ));
            }
        };
        fn any(s: &str) -> &str {
            if s == "?" { "*" } else { s }
        }
        let (seconds, _) = field(seconds, "seconds", 0, 59, &[], 0)?;
        let (minutes, _) = field(rest[0], "minutes", 0, 59, &[], 0)?;
        let (hours, _) = field(rest[1], "hours", 0, 23, &[], 0)?;
        let (days, days_any) = field(any(rest[2]), "day of month", 1, 31, &[], 0)?;
        let (months, _) = field(rest[3], "month", 1, 12, MONTHS, 1)?;
        let (mut weekdays, weekdays_any) = field(any(rest[4]), "day of week", 0, 7, WEEKDAYS, 0)?;
        if weekdays & (1 << 7) != 0 {
            weekdays |= 1; // 7 is Sunday too
        }
        Ok(Cron {
            seconds,
            minutes,
            hours,
            days,
            months,
            weekdays,
            days_any: days_any || rest[2] == "?",
            weekdays_any: weekdays_any || rest[4] == "?",
        })
    }

    /// Whether the second starting at `epoch_s` (UTC) matches.
    pub fn matches(&self, epoch_s: i64) -> bool {
        let t = Civil::from_epoch(epoch_s);
        let has = |set: u64, v: u32| set & (1 << v) != 0;
        has(self.seconds, t.second)
            && has(self.minutes, t.minute)
            && has(self.hours, t.hour)
            && self.day_matches(t.month, t.day, t.weekday)
    }

    /// Whether a calendar day (`weekday` 0 is Sunday) matches the day and month fields.
    pub(crate) fn day_matches(&self, month: u32, day: u32, weekday: u32) -> bool {
        let has = |set: u64, v: u32| set & (1 << v) != 0;
        let day_ok = match (self.days_any, self.weekdays_any) {
            (true, true) => true,
            (false, true) => has(self.days, day),
            (true, false) => has(self.weekdays, weekday),
            (false, false) => has(self.days, day) || has(self.weekdays, weekday),
        };
        has(self.months, month) && day_ok
    }

    /// The allowed hours, minutes and seconds as bit sets.
    pub(crate) fn time_sets(&self) -> (u64, u64, u64) {
        (self.hours, self.minutes, self.seconds)
    }

    /// The latest matching second in `(after_s, until_s]`, looking back at most a day.
    pub fn last_fire(&self, after_s: i64, until_s: i64) -> Option<i64> {
        let from = after_s.max(until_s - 86_400);
        (from + 1..=until_s).rev().find(|t| self.matches(*t))
    }
}

/// A UTC calendar time.
#[derive(Debug, PartialEq, Eq)]
struct Civil {
    month: u32,
    day: u32,
    hour: u32,
    minute: u32,
    second: u32,
    /// 0 is Sunday.
    weekday: u32,
}

impl Civil {
    fn from_epoch(s: i64) -> Civil {
        let days = s.div_euclid(86_400);
        let secs = s.rem_euclid(86_400) as u32;
        // Howard Hinnant's days-to-civil.
        let z = days + 719_468;
        let era = z.div_euclid(146_097);
        let doe = z.rem_euclid(146_097);
        let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
        let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
        let mp = (5 * doy + 2) / 153;
        let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
        let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
        let _year = yoe + era * 400 + i64::from(month <= 2);
        Civil {
            month,
            day,
            hour: secs / 3_600,
            minute: secs / 60 % 60,
            second: secs % 60,
            weekday: (days + 4).rem_euclid(7) as u32,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// 2026-11-27 19:00:00 UTC, a Friday.
    const FRI_19H: i64 = 1_795_806_000;

    #[test]
    fn calendar_times_are_right() {
        assert_eq!(
            Civil::from_epoch(FRI_19H),
            Civil {
                month: 11,
                day: 27,
                hour: 19,
                minute: 0,
                second: 0,
                weekday: 5
            }
        );
        assert_eq!(Civil::from_epoch(0).weekday, 4, "1970-01-01 was a Thursday");
        assert_eq!(
            Civil::from_epoch(951_782_400), // 2000-02-29
            Civil {
                month: 2,
                day: 29,
                hour: 0,
                minute: 0,
                second: 0,
                weekday: 2
            }
        );
    }

    #[test]
    fn expressions_match_the_times_they_name() {
        let weekday_evenings = Cron::parse("0 19 * * 1-5").unwrap();
        assert!(weekday_evenings.matches(FRI_19H));
        assert!(
            !weekday_evenings.matches(FRI_19H + 1),
            "only the minute's first second"
        );
        assert!(!weekday_evenings.matches(FRI_19H + 86_400), "Saturday");
        assert!(Cron::parse("0 19 * * MON-FRI").unwrap().matches(FRI_19H));
        assert!(Cron::parse("0 19 27 NOV *").unwrap().matches(FRI_19H));
        assert!(
            Cron::parse("*/15 * * * *")
                .unwrap()
                .matches(FRI_19H + 45 * 60)
        );
        assert!(
            !Cron::parse("*/15 * * * *")
                .unwrap()
                .matches(FRI_19H + 50 * 60)
        );
        assert!(
            Cron::parse("5/20 * * * *")
                .unwrap()
                .matches(FRI_19H + 25 * 60)
        );
        assert!(
            Cron::parse("0 19 * * 7")
                .unwrap()
                .matches(FRI_19H + 2 * 86_400),
            "7 is Sunday"
        );
        // Both day fields restricted: either matches.
        assert!(Cron::parse("0 19 1 * 5").unwrap().matches(FRI_19H));
        // Six fields: seconds first.
        let every_5s = Cron::parse("*/5 * * * * *").unwrap();
        assert!(every_5s.matches(FRI_19H + 10));
        assert!(!every_5s.matches(FRI_19H + 11));
    }

    #[test]
    fn the_last_fire_in_a_window_is_found() {
        let c = Cron::parse("0 19 * * *").unwrap();
        assert_eq!(c.last_fire(FRI_19H - 10, FRI_19H + 10), Some(FRI_19H));
        assert_eq!(
            c.last_fire(FRI_19H, FRI_19H + 10),
            None,
            "the window excludes its start"
        );
        assert_eq!(c.last_fire(FRI_19H + 1, FRI_19H + 3_600), None);
        let every_5s = Cron::parse("*/5 * * * * *").unwrap();
        assert_eq!(
            every_5s.last_fire(FRI_19H, FRI_19H + 12),
            Some(FRI_19H + 10)
        );
    }

    #[test]
    fn bad_expressions_say_what_is_wrong() {
        for (expr, says) in [
            ("* * *", "5 fields"),
            ("61 * * * *", "minutes: 61 is outside 0-59"),
            ("* 24 * * *", "hours"),
            ("* * * FOO *", "month: \"FOO\" is not a number"),
            ("*/0 * * * *", "step"),
            ("30-10 * * * *", "backwards"),
        ] {
            let err = Cron::parse(expr).unwrap_err();
            assert!(err.contains(says), "{expr}: {err}");
        }
    }
}
