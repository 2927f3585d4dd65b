//! When a schedule fires: Azure ML's `trigger` (a `cron` expression or a `recurrence`), read
//! once into a [`Trigger`], and the decision of what to fire now ([`due`]) as a pure function
//! of the trigger, the clock and the last fire, so that every case — daylight-saving changes,
//! month ends, a server that was down — is table-tested without waiting for a clock.
//!
//! Times are whole seconds since the Unix epoch. A trigger is read on the wall clock of its
//! `time_zone` (UTC when none), as Azure ML does; where that clock jumps, Tarn does what cron
//! (Vixie cron, cronie) does:
//! - **Clocks go forward** (a wall time does not exist that day): a schedule that fires at set
//!   times of day fires once at the moment of the jump instead; one that fires every hour
//!   (a cron expression whose hour field is `*`) skips the times that did not exist.
//! - **Clocks go back** (a wall time happens twice): a set-time schedule fires once, at the
//!   first; an every-hour one fires at both.
//!
//! `recurrence` with `frequency: minute` or `hour` counts elapsed time from `start_time`, so it
//! is untouched by the wall clock. With `day`, `week` or `month` it fires at `schedule.hours`
//! and `schedule.minutes` (else at `start_time`'s time of day) on every `interval`-th day, week
//! (on `schedule.week_days`, else `start_time`'s weekday) or month (on `schedule.month_days`,
//! else `start_time`'s day) counted from `start_time`'s; a month without that day (the 31st of
//! April) is skipped, as cron skips it. Without `start_time` a schedule starts when it is
//! created, and a recurrence fires then; a cron fires at its first matching time.

use crate::cron::Cron;
use crate::timezones;
use jiff::civil::{Date, DateTime, Weekday};
use jiff::tz::{AmbiguousOffset, TimeZone};
use jiff::{Timestamp, ToSpan};
use serde_json::Value as Json;

/// How far ahead a trigger is searched for its next fire: long enough for the 29th of
/// February on a Monday.
const SEARCH_DAYS: i64 = 366 * 30;

/// At most this many missed fires are made up at once under [`MissedFires::All`].
pub const MAX_CATCH_UP: usize = 100;

/// At most this many due times are decided in one pass (the rest in the next).
const MAX_PER_DECISION: usize = 10 * MAX_CATCH_UP;

/// A parsed trigger.
#[derive(Clone, Debug)]
pub struct Trigger {
    rule: Rule,
    tz: TimeZone,
    /// The first second it may fire at.
    start: i64,
    /// The last second it may fire at.
    end: Option<i64>,
}

#[derive(Clone, Debug)]
enum Rule {
    /// Every `every` seconds from `start`.
    Elapsed { every: i64 },
    /// At times of day on some days, on the zone's wall clock.
    Wall(Wall),
}

#[derive(Clone, Debug)]
struct Wall {
    days: Days,
    hours: u64,
    minutes: u64,
    seconds: u64,
}

#[derive(Clone, Debug)]
enum Days {
    Cron(Box<Cron>),
    /// Every `n` days from `from`.
    Daily {
        from: Date,
        n: i64,
    },
    /// Every `n` weeks from the week (Monday first) of `from`, on `week_days`.
    Weekly {
        from: Date,
        n: i64,
        week_days: u8,
    },
    /// Every `n` months from `from`'s, on `month_days` (bit per day) and `week_days`.
    Monthly {
        from: Date,
        n: i64,
        month_days: u64,
        week_days: u8,
    },
}

/// A field of the trigger, and what is wrong with it.
pub type TriggerError = (String, String);

fn err(field: &str, message: impl Into<String>) -> TriggerError {
    (format!("trigger.{field}"), message.into())
}

/// Seconds since the epoch of a time as a schedule writes it: with an offset or `Z`
/// (`2026-03-08T10:00:00Z`), else on the zone's wall clock (`2026-03-08T10:00:00`, a date).
fn read_time(text: &str, tz: &TimeZone) -> Option<i64> {
    if let Ok(t) = text.parse::<Timestamp>() {
        return Some(t.as_second());
    }
    let civil = match text.parse::<DateTime>() {
        Ok(dt) => dt,
        Err(_) => text.parse::<Date>().ok()?.at(0, 0, 0, 0),
    };
    let t = tz.to_ambiguous_timestamp(civil).compatible().ok()?;
    Some(t.as_second())
}

/// `0..=max` values from an integer or a list of them, as a bit set.
fn int_set(v: &Json, field: &str, max: u64) -> Result<u64, TriggerError> {
    let items = match v {
        Json::Array(items) => items.clone(),
        one => vec![one.clone()],
    };
    let mut bits = 0u64;
    for item in &items {
        match item.as_u64().filter(|n| *n <= max) {
            Some(n) => bits |= 1 << n,
            None => {
                return Err(err(
                    field,
                    format!("{item} is not a number from 0 to {max}"),
                ));
            }
        }
    }
    if bits == 0 {
        return Err(err(field, "needs at least one value"));
    }
    Ok(bits)
}

fn weekday_index(w: Weekday) -> u32 {
    w.to_sunday_zero_offset() as u32
}

fn week_day_set(v: &Json, field: &str) -> Result<u8, TriggerError> {
    const NAMES: [&str; 7] = [
        "sunday",
        "monday",
        "tuesday",
        "wednesday",
        "thursday",
        "friday",
        "saturday",
    ];
    let items = match v {
        Json::Array(items) => items.clone(),
        one => vec![one.clone()],
    };
    let mut bits = 0u8;
    for item in &items {
        let name = item.as_str().unwrap_or_default().to_ascii_lowercase();
        let i = NAMES
            .iter()
            .position(|n| *n == name || (name.len() == 3 && n.starts_with(&name)))
            .ok_or_else(|| {
                err(
                    field,
                    format!("{item} is not a day of the week (monday … sunday)"),
                )
            })?;
        bits |= 1 << i;
    }
    if bits == 0 {
        return Err(err(field, "needs at least one day"));
    }
    Ok(bits)
}

impl Trigger {
    /// Reads a trigger (its normalised spec); a schedule without `start_time` starts at
    /// `created_s`. Errors name the field, and a trigger that would never fire is one.
    pub fn parse(spec: &Json, created_s: i64) -> Result<Trigger, TriggerError> {
        let str_field = |name: &str| spec.get(name).and_then(Json::as_str);
        let tz = match str_field("time_zone") {
            Some(name) => timezones::zone(name).map_err(|e| err("time_zone", e))?,
            None => TimeZone::UTC,
        };
        let time = |name: &str| -> Result<Option<i64>, TriggerError> {
            match str_field(name) {
                None => Ok(None),
                Some(text) => read_time(text, &tz).map(Some).ok_or_else(|| {
                    err(
                        name,
                        format!("{text:?} is not a time such as 2026-07-01T09:00:00 (in the trigger's time_zone) or 2026-07-01T09:00:00Z"),
                    )
                }),
            }
        };
        let start = time("start_time")?.unwrap_or(created_s);
        let end = time("end_time")?;
        if let Some(end) = end
            && end <= start
        {
            return Err(err("end_time", "is not after the start time"));
        }
        let kind = str_field("type").unwrap_or("cron");
        let only_for = |fields: &[&str], kind: &str| -> Result<(), TriggerError> {
            match fields.iter().find(|f| spec.get(**f).is_some()) {
                Some(f) => Err(err(f, format!("is not used by {kind} triggers"))),
                None => Ok(()),
            }
        };
        let rule = match kind {
            "cron" => {
                only_for(&["frequency", "interval", "schedule"], "cron")?;
                let expr = str_field("expression")
                    .ok_or_else(|| err("expression", "a cron trigger needs an expression"))?;
                let cron = Cron::parse(expr).map_err(|e| err("expression", e))?;
                let (hours, minutes, seconds) = cron.time_sets();
                Rule::Wall(Wall {
                    days: Days::Cron(Box::new(cron)),
                    hours,
                    minutes,
                    seconds,
                })
            }
            "recurrence" => {
                only_for(&["expression"], "recurrence")?;
                let frequency = str_field("frequency").ok_or_else(|| {
                    err(
                        "frequency",
                        "a recurrence needs a frequency: minute, hour, day, week or month",
                    )
                })?;
                let interval = match spec.get("interval") {
                    None => 1,
                    Some(v) => v
                        .as_i64()
                        .filter(|n| (1..=100_000).contains(n))
                        .ok_or_else(|| {
                            err("interval", format!("{v} is not a whole number from 1"))
                        })?,
                };
                let pattern = spec.get("schedule").filter(|p| !p.is_null());
                let local_start = tz.to_datetime(Timestamp::from_second(start).expect("in range"));
                let get = |f: &str| pattern.and_then(|p| p.get(f));
                if let Some(p) = pattern {
                    let known = ["hours", "minutes", "week_days", "month_days"];
                    if let Some((k, _)) = p
                        .as_object()
                        .into_iter()
                        .flatten()
                        .find(|(k, _)| !known.contains(&k.as_str()))
                    {
                        return Err(err(
                            &format!("schedule.{k}"),
                            "is not a recurrence field: use hours, minutes, week_days or month_days",
                        ));
                    }
                }
                match frequency {
                    "minute" | "hour" => {
                        if pattern.is_some() {
                            return Err(err(
                                "schedule",
                                format!(
                                    "a {frequency}ly recurrence takes no schedule: it fires every interval from start_time"
                                ),
                            ));
                        }
                        let unit = if frequency == "minute" { 60 } else { 3_600 };
                        Rule::Elapsed {
                            every: unit * interval,
                        }
                    }
                    "day" | "week" | "month" => {
                        let hours = match get("hours") {
                            Some(v) => int_set(v, "schedule.hours", 23)?,
                            None => 1 << local_start.hour(),
                        };
                        let minutes = match get("minutes") {
                            Some(v) => int_set(v, "schedule.minutes", 59)?,
                            None => 1 << local_start.minute(),
                        };
                        // A pattern fires on the minute; without one, at start_time's second.
                        let seconds = if pattern.is_some() {
                            1
                        } else {
                            1 << local_start.second()
                        };
                        let week_days = get("week_days")
                            .map(|v| week_day_set(v, "schedule.week_days"))
                            .transpose()?;
                        let month_days = get("month_days")
                            .map(|v| int_set(v, "schedule.month_days", 31))
                            .transpose()?;
                        if month_days.is_some_and(|d| d & 1 != 0) {
                            return Err(err(
                                "schedule.month_days",
                                "days of the month run from 1 to 31",
                            ));
                        }
                        let from = local_start.date();
                        let days = match frequency {
                            "day" => {
                                if let Some(f) = ["week_days", "month_days"]
                                    .iter()
                                    .find(|f| get(f).is_some())
                                {
                                    return Err(err(
                                        &format!("schedule.{f}"),
                                        "is for weekly or monthly recurrences",
                                    ));
                                }
                                Days::Daily { from, n: interval }
                            }
                            "week" => {
                                if get("month_days").is_some() {
                                    return Err(err(
                                        "schedule.month_days",
                                        "is for monthly recurrences",
                                    ));
                                }
                                Days::Weekly {
                                    from,
                                    n: interval,
                                    week_days: week_days
                                        .unwrap_or(1 << weekday_index(from.weekday())),
                                }
                            }
                            _ => {
                                let (month_days, week_days) = match (month_days, week_days) {
                                    (None, None) => (1u64 << from.day(), 0x7f),
                                    (d, w) => (d.unwrap_or(!0), w.unwrap_or(0x7f)),
                                };
                                Days::Monthly {
                                    from,
                                    n: interval,
                                    month_days,
                                    week_days,
                                }
                            }
                        };
                        Rule::Wall(Wall {
                            days,
                            hours,
                            minutes,
                            seconds,
                        })
                    }
                    other => {
                        return Err(err(
                            "frequency",
                            format!("{other:?} is not one of minute, hour, day, week, month"),
                        ));
                    }
                }
            }
            other => {
                return Err(err(
                    "type",
                    format!("{other:?} is not one of cron, recurrence"),
                ));
            }
        };
        let trigger = Trigger {
            rule,
            tz,
            start,
            end,
        };
        if trigger.next_after(start - 1).is_none() {
            let field = if kind == "cron" {
                "expression"
            } else {
                "schedule"
            };
            return Err(err(field, "never fires between the start and end times"));
        }
        Ok(trigger)
    }

    /// The first fire strictly after `after_s`, if there is one.
    pub fn next_after(&self, after_s: i64) -> Option<i64> {
        let lower = (after_s + 1).max(self.start);
        let fire = match &self.rule {
            Rule::Elapsed { every } => {
                let k = (lower - self.start + every - 1).div_euclid(*every).max(0);
                Some(self.start + k * every)
            }
            Rule::Wall(wall) => self.next_on_wall(wall, lower),
        }?;
        match self.end {
            Some(end) if fire > end => None,
            _ => Some(fire),
        }
    }

    /// The next `n` fires after `after_s`.
    pub fn upcoming(&self, after_s: i64, n: usize) -> Vec<i64> {
        let mut out = Vec::with_capacity(n);
        let mut t = after_s;
        while out.len() < n {
            match self.next_after(t) {
                Some(next) => {
                    out.push(next);
                    t = next;
                }
                None => break,
            }
        }
        out
    }

    /// The first wall-clock fire at or after `lower` (whole seconds).
    fn next_on_wall(&self, wall: &Wall, lower: i64) -> Option<i64> {
        let lower_ts = Timestamp::from_second(lower).ok()?;
        // The earliest wall time that can map to an instant at or after `lower`: `lower` read
        // with the smallest offset in force in the day after it (a clock that goes back
        // repeats wall times that are earlier than `lower`'s own).
        let mut offset = self.tz.to_offset(lower_ts);
        if let Some(tr) = self.tz.following(lower_ts).next()
            && tr.timestamp().as_second() - lower < 86_400
        {
            offset = offset.min(tr.offset());
        }
        let floor = offset.to_datetime(lower_ts);
        let every_hour = wall.hours & 0xff_ffff == 0xff_ffff;
        let mut date = floor.date();
        for _ in 0..SEARCH_DAYS {
            if wall.days.matches(date) {
                for h in bits(wall.hours, 23) {
                    if date.at(h as i8, 59, 59, 0) < floor {
                        continue;
                    }
                    for m in bits(wall.minutes, 59) {
                        if date.at(h as i8, m as i8, 59, 0) < floor {
                            continue;
                        }
                        for s in bits(wall.seconds, 59) {
                            let dt = date.at(h as i8, m as i8, s as i8, 0);
                            if dt < floor {
                                continue;
                            }
                            for t in self.instants(dt, every_hour) {
                                if t >= lower {
                                    return Some(t);
                                }
                            }
                        }
                    }
                }
            }
            date = date.tomorrow().ok()?;
        }
        None
    }

    /// The instants a wall time fires at (see the module's notes on clock changes).
    fn instants(&self, dt: DateTime, every_hour: bool) -> Vec<i64> {
        let at = |offset: jiff::tz::Offset| {
            offset
                .to_timestamp(dt)
                .map(|t| t.as_second())
                .unwrap_or(i64::MAX)
        };
        match self.tz.to_ambiguous_timestamp(dt).offset() {
            AmbiguousOffset::Unambiguous { offset } => vec![at(offset)],
            AmbiguousOffset::Gap { .. } if every_hour => vec![],
            AmbiguousOffset::Gap { after, .. } => {
                // The moment the clock jumped: the first transition after this wall time
                // read with the new offset (which lands before the jump).
                let early = Timestamp::from_second(at(after)).unwrap_or(Timestamp::MAX);
                self.tz
                    .following(early)
                    .next()
                    .map(|tr| vec![tr.timestamp().as_second()])
                    .unwrap_or_default()
            }
            AmbiguousOffset::Fold { before, after } if every_hour => {
                vec![at(before), at(after)]
            }
            AmbiguousOffset::Fold { before, .. } => vec![at(before)],
        }
    }
}

/// The set bits of `set` up to `max`, in order.
fn bits(set: u64, max: u32) -> impl Iterator<Item = u32> {
    (0..=max).filter(move |v| set & (1 << v) != 0)
}

fn months_between(from: Date, to: Date) -> i64 {
    (i64::from(to.year()) * 12 + i64::from(to.month()))
        - (i64::from(from.year()) * 12 + i64::from(from.month()))
}

fn days_between(from: Date, to: Date) -> i64 {
    let day = |d: Date| {
        d.to_zoned(TimeZone::UTC)
            .map(|z| z.timestamp().as_second().div_euclid(86_400))
            .unwrap_or(0)
    };
    day(to) - day(from)
}

impl Days {
    fn matches(&self, date: Date) -> bool {
        let weekday = weekday_index(date.weekday());
        match self {
            Days::Cron(cron) => cron.day_matches(date.month() as u32, date.day() as u32, weekday),
            Days::Daily { from, n } => {
                let d = days_between(*from, date);
                d >= 0 && d % n == 0
            }
            Days::Weekly { from, n, week_days } => {
                // Weeks start on Monday, counted from the week `from` is in.
                let monday =
                    |d: Date| d.checked_sub((d.weekday().to_monday_zero_offset() as i64).days());
                let (Ok(a), Ok(b)) = (monday(*from), monday(date)) else {
                    return false;
                };
                let d = days_between(a, b);
                d >= 0 && (d / 7) % n == 0 && week_days & (1 << weekday) != 0 && date >= *from
            }
            Days::Monthly {
                from,
                n,
                month_days,
                week_days,
            } => {
                let m = months_between(*from, date);
                m >= 0
                    && m % n == 0
                    && month_days & (1 << date.day()) != 0
                    && week_days & (1 << weekday) != 0
            }
        }
    }
}

/// A fire time as RFC 3339 in UTC (`2026-07-01T09:00:00Z`).
pub fn rfc3339(s: i64) -> String {
    Timestamp::from_second(s)
        .map(|t| t.to_string())
        .unwrap_or_default()
}

/// Milliseconds since the epoch as RFC 3339 in UTC, to the millisecond
/// (`2026-07-01T09:00:00.250Z`): protobuf's JSON form of a `Timestamp`.
pub fn rfc3339_ms(ms: i64) -> String {
    Timestamp::from_millisecond(ms)
        .map(|t| t.strftime("%Y-%m-%dT%H:%M:%S%.3fZ").to_string())
        .unwrap_or_default()
}

/// An RFC 3339 time as milliseconds since the epoch.
pub fn parse_rfc3339_ms(text: &str) -> Option<i64> {
    text.parse::<Timestamp>().ok().map(|t| t.as_millisecond())
}

/// A fire time as a name part (`20260701T090000`, UTC).
pub fn compact(s: i64) -> String {
    Timestamp::from_second(s)
        .map(|t| t.strftime("%Y%m%dT%H%M%S").to_string())
        .unwrap_or_default()
}

/// What becomes of fires that were due while no server was deciding (Tarn's setting,
/// `missed_fires` on a schedule).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MissedFires {
    /// Missed fires are skipped; only what is due now fires.
    None,
    /// The latest due fire is made up, once (the default).
    Latest,
    /// Every missed fire is made up, oldest first (at most [`MAX_CATCH_UP`]).
    All,
}

impl MissedFires {
    pub const NAMES: &'static [&'static str] = &["none", "latest", "all"];

    pub fn parse(s: Option<&str>) -> MissedFires {
        match s {
            Some("none") => MissedFires::None,
            Some("all") => MissedFires::All,
            _ => MissedFires::Latest,
        }
    }
}

/// A decision: the due times to fire now, and the one to remember as decided up to.
#[derive(Debug, PartialEq, Eq)]
pub struct Due {
    pub fire: Vec<i64>,
    /// Due times passed over without firing.
    pub skipped: usize,
    /// The latest due time decided (fired or skipped); `None` when nothing was due.
    pub through: Option<i64>,
}

/// What to fire at `now_s`, when everything up to `decided_through` (the last due time
/// decided, or the second before the schedule began) is done, by a server that has been
/// deciding since `deciding_since`. Due times since then are on time and all fire (a slow pass
/// skips nothing); earlier ones fell due while no server decided — it was down, or not leading
/// — and are *missed*: [`MissedFires`] says which of them fire.
pub fn due(
    trigger: &Trigger,
    decided_through: i64,
    now_s: i64,
    missed: MissedFires,
    deciding_since: i64,
) -> Due {
    let missed_until = deciding_since.saturating_sub(1).min(now_s);
    let (missed_times, seen) = if missed_until > decided_through {
        let wanted = match missed {
            MissedFires::All => MAX_CATCH_UP,
            // Even with none made up, the latest tells how far was decided.
            MissedFires::Latest | MissedFires::None => 1,
        };
        last_dues(trigger, decided_through, missed_until, wanted)
    } else {
        (vec![], 0)
    };
    let on_time = dues_between(
        trigger,
        decided_through.max(missed_until),
        now_s,
        MAX_PER_DECISION,
    );
    let through = on_time.last().or(missed_times.last()).copied();
    let mut fire: Vec<i64> = match missed {
        MissedFires::None => vec![],
        _ => missed_times,
    };
    let made_up = fire.len();
    fire.extend(on_time);
    Due {
        skipped: seen - made_up,
        fire,
        through,
    }
}

/// The due times in `(after, until]`, oldest first, at most `cap`.
fn dues_between(trigger: &Trigger, after: i64, until: i64, cap: usize) -> Vec<i64> {
    let mut out = vec![];
    let mut t = after;
    while out.len() < cap {
        match trigger.next_after(t) {
            Some(next) if next <= until => {
                out.push(next);
                t = next;
            }
            _ => break,
        }
    }
    out
}

/// The newest `n` due times in `(after, until]`, oldest first, and how many there are — exactly
/// up to [`MAX_COUNTED`]; a longer backlog is not walked whole: the window widens from the
/// end only until it holds `n`, and the count says at least that many.
fn last_dues(trigger: &Trigger, after: i64, until: i64, n: usize) -> (Vec<i64>, usize) {
    let all = dues_between(trigger, after, until, MAX_COUNTED);
    if all.len() < MAX_COUNTED {
        let newest = all[all.len().saturating_sub(n)..].to_vec();
        return (newest, all.len());
    }
    let mut window = 3_600i64;
    loop {
        let from = until.saturating_sub(window).max(after);
        let found = dues_between(trigger, from, until, usize::MAX);
        if found.len() >= n || from == after {
            let newest = found[found.len().saturating_sub(n)..].to_vec();
            return (newest, MAX_COUNTED.max(found.len()));
        }
        window = window.saturating_mul(4);
    }
}

/// Missed due times are counted one by one up to this many.
const MAX_COUNTED: usize = 10_000;

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn at(s: &str) -> i64 {
        s.parse::<Timestamp>().unwrap().as_second()
    }

    fn show(t: i64) -> String {
        Timestamp::from_second(t).unwrap().to_string()
    }

    fn fires(spec: Json, created: &str, n: usize) -> Vec<String> {
        let t = Trigger::parse(&spec, at(created)).unwrap();
        t.upcoming(at(created) - 1, n)
            .into_iter()
            .map(show)
            .collect()
    }

    #[test]
    fn cron_fires_on_the_wall_clock_of_its_zone() {
        // 09:00 in New York is 14:00Z in winter and 13:00Z in summer.
        let spec = json!({"type": "cron", "expression": "0 9 * * *", "time_zone": "Eastern Standard Time"});
        assert_eq!(
            fires(spec, "2026-03-06T00:00:00Z", 4),
            [
                "2026-03-06T14:00:00Z",
                "2026-03-07T14:00:00Z",
                "2026-03-08T13:00:00Z",
                "2026-03-09T13:00:00Z"
            ]
        );
    }

    #[test]
    fn clocks_going_forward_fire_skipped_set_times_at_the_jump_and_skip_hourly_ones() {
        // New York, 2026-03-08: 02:00 EST becomes 03:00 EDT (07:00Z).
        let daily =
            json!({"type": "cron", "expression": "30 2 * * *", "time_zone": "America/New_York"});
        assert_eq!(
            fires(daily, "2026-03-07T00:00:00Z", 3),
            [
                "2026-03-07T07:30:00Z", // 02:30 EST
                "2026-03-08T07:00:00Z", // 02:30 does not exist: at the jump
                "2026-03-09T06:30:00Z"  // 02:30 EDT
            ]
        );
        let hourly =
            json!({"type": "cron", "expression": "30 * * * *", "time_zone": "America/New_York"});
        assert_eq!(
            fires(hourly, "2026-03-08T05:00:00Z", 3),
            [
                "2026-03-08T05:30:00Z", // 00:30 EST
                "2026-03-08T06:30:00Z", // 01:30 EST; 02:30 does not exist
                "2026-03-08T07:30:00Z"  // 03:30 EDT
            ]
        );
        // Several skipped set times fire once, at the jump.
        let two =
            json!({"type": "cron", "expression": "0,45 2 * * *", "time_zone": "America/New_York"});
        assert_eq!(
            fires(two, "2026-03-08T00:00:00Z", 2),
            ["2026-03-08T07:00:00Z", "2026-03-09T06:00:00Z"]
        );
    }

    #[test]
    fn clocks_going_back_fire_set_times_once_and_hourly_ones_twice() {
        // New York, 2026-11-01: 02:00 EDT becomes 01:00 EST (06:00Z); 01:xx happens twice.
        let daily =
            json!({"type": "cron", "expression": "30 1 * * *", "time_zone": "America/New_York"});
        assert_eq!(
            fires(daily, "2026-11-01T00:00:00Z", 2),
            ["2026-11-01T05:30:00Z", "2026-11-02T06:30:00Z"]
        );
        let hourly =
            json!({"type": "cron", "expression": "30 * * * *", "time_zone": "America/New_York"});
        assert_eq!(
            fires(hourly, "2026-11-01T04:00:00Z", 3),
            [
                "2026-11-01T04:30:00Z", // 00:30 EDT
                "2026-11-01T05:30:00Z", // 01:30 EDT
                "2026-11-01T06:30:00Z"  // 01:30 EST
            ]
        );
        // A daily recurrence at 01:30 is a set time too.
        let rec = json!({"type": "recurrence", "frequency": "day", "interval": 1,
            "schedule": {"hours": 1, "minutes": [30]}, "time_zone": "America/New_York"});
        assert_eq!(
            fires(rec, "2026-11-01T00:00:00Z", 2),
            ["2026-11-01T05:30:00Z", "2026-11-02T06:30:00Z"]
        );
    }

    #[test]
    fn recurrences_count_from_their_start() {
        // Minutes and hours are elapsed time from the start, which fires itself.
        let every_90m = json!({"type": "recurrence", "frequency": "minute", "interval": 90});
        assert_eq!(
            fires(every_90m, "2026-03-08T05:10:07Z", 3),
            [
                "2026-03-08T05:10:07Z",
                "2026-03-08T06:40:07Z",
                "2026-03-08T08:10:07Z"
            ]
        );
        let hourly_from = json!({"type": "recurrence", "frequency": "hour", "interval": 2,
            "start_time": "2026-03-08T01:00:00", "time_zone": "America/New_York"});
        assert_eq!(
            fires(hourly_from, "2026-03-01T00:00:00Z", 3),
            [
                "2026-03-08T06:00:00Z",
                "2026-03-08T08:00:00Z",
                "2026-03-08T10:00:00Z"
            ],
            "elapsed time, across the change"
        );
        // Every other day at 04:00 and 05:30 (pattern: every hour × every minute listed).
        let every_other_day = json!({"type": "recurrence", "frequency": "day", "interval": 2,
            "schedule": {"hours": [4, 5], "minutes": [0, 30]}, "start_time": "2026-07-01T00:00:00Z"});
        assert_eq!(
            fires(every_other_day, "2026-06-01T00:00:00Z", 5),
            [
                "2026-07-01T04:00:00Z",
                "2026-07-01T04:30:00Z",
                "2026-07-01T05:00:00Z",
                "2026-07-01T05:30:00Z",
                "2026-07-03T04:00:00Z"
            ]
        );
        // Every two weeks on Monday and Friday at 09:15 (2026-07-01 is a Wednesday).
        let fortnightly = json!({"type": "recurrence", "frequency": "week", "interval": 2,
            "schedule": {"hours": 9, "minutes": 15, "week_days": ["monday", "Friday"]},
            "start_time": "2026-07-01T00:00:00Z"});
        assert_eq!(
            fires(fortnightly, "2026-07-01T00:00:00Z", 4),
            [
                "2026-07-03T09:15:00Z",
                "2026-07-13T09:15:00Z",
                "2026-07-17T09:15:00Z",
                "2026-07-27T09:15:00Z"
            ]
        );
        // Weekly without a pattern: start_time's weekday and time.
        let weekly = json!({"type": "recurrence", "frequency": "week", "interval": 1,
            "start_time": "2026-07-01T08:00:00Z"});
        assert_eq!(
            fires(weekly, "2026-06-01T00:00:00Z", 2),
            ["2026-07-01T08:00:00Z", "2026-07-08T08:00:00Z"]
        );
    }

    #[test]
    fn month_ends_skip_months_without_the_day() {
        let on_31st = json!({"type": "recurrence", "frequency": "month", "interval": 1,
            "start_time": "2026-01-31T06:00:00Z"});
        assert_eq!(
            fires(on_31st, "2026-01-01T00:00:00Z", 4),
            [
                "2026-01-31T06:00:00Z",
                "2026-03-31T06:00:00Z",
                "2026-05-31T06:00:00Z",
                "2026-07-31T06:00:00Z"
            ]
        );
        let leap = json!({"type": "cron", "expression": "0 0 29 2 *"});
        assert_eq!(
            fires(leap, "2026-01-01T00:00:00Z", 2),
            ["2028-02-29T00:00:00Z", "2032-02-29T00:00:00Z"]
        );
        let quarterly = json!({"type": "recurrence", "frequency": "month", "interval": 3,
            "schedule": {"month_days": [1, 15], "hours": 0, "minutes": 0},
            "start_time": "2026-01-10T00:00:00Z"});
        assert_eq!(
            fires(quarterly, "2026-01-01T00:00:00Z", 3),
            [
                "2026-01-15T00:00:00Z",
                "2026-04-01T00:00:00Z",
                "2026-04-15T00:00:00Z"
            ]
        );
    }

    #[test]
    fn start_and_end_bound_the_fires() {
        let spec = json!({"type": "cron", "expression": "0 * * * *",
            "start_time": "2026-07-01T10:30:00Z", "end_time": "2026-07-01T12:00:00Z"});
        assert_eq!(
            fires(spec, "2026-06-01T00:00:00Z", 5),
            ["2026-07-01T11:00:00Z", "2026-07-01T12:00:00Z"]
        );
    }

    #[test]
    fn the_decision_follows_the_missed_fires_policy() {
        let hourly = Trigger::parse(
            &json!({"type": "cron", "expression": "0 * * * *"}),
            at("2026-07-01T00:00:00Z"),
        )
        .unwrap();
        let last = at("2026-07-01T09:00:00Z");
        let long_ago = at("2026-06-01T00:00:00Z");
        // On time: the 10:00 fire decided at 10:00:01, under every policy.
        for policy in [MissedFires::None, MissedFires::Latest, MissedFires::All] {
            let d = due(&hourly, last, at("2026-07-01T10:00:01Z"), policy, long_ago);
            assert_eq!(d.fire, [at("2026-07-01T10:00:00Z")], "{policy:?}");
            assert_eq!(d.skipped, 0);
        }
        // A slow pass misses nothing: three due while the same server decided, all fire.
        let d = due(
            &hourly,
            last,
            at("2026-07-01T12:30:00Z"),
            MissedFires::Latest,
            long_ago,
        );
        assert_eq!(d.fire.len(), 3, "{d:?}");
        // Nothing due yet.
        let d = due(
            &hourly,
            last,
            at("2026-07-01T09:59:59Z"),
            MissedFires::Latest,
            long_ago,
        );
        assert_eq!(
            d,
            Due {
                fire: vec![],
                skipped: 0,
                through: None
            }
        );
        // Down from 09:30 to 13:10 (deciding again since 13:10): 10, 11, 12 and 13 were missed.
        let now = at("2026-07-01T13:10:00Z");
        let d = due(&hourly, last, now, MissedFires::Latest, now);
        assert_eq!(d.fire, [at("2026-07-01T13:00:00Z")]);
        assert_eq!(
            (d.skipped, d.through),
            (3, Some(at("2026-07-01T13:00:00Z")))
        );
        let d = due(&hourly, last, now, MissedFires::All, now);
        assert_eq!(d.fire.len(), 4);
        assert_eq!(d.fire[0], at("2026-07-01T10:00:00Z"));
        let d = due(&hourly, last, now, MissedFires::None, now);
        assert_eq!((d.fire.len(), d.skipped), (0, 4));
        assert_eq!(
            d.through,
            Some(at("2026-07-01T13:00:00Z")),
            "decided all the same"
        );
        // Back at 12:59:30: the missed 10, 11 and 12, then 13:00 on time.
        let back = at("2026-07-01T12:59:30Z");
        let d = due(
            &hourly,
            last,
            at("2026-07-01T13:00:00Z"),
            MissedFires::Latest,
            back,
        );
        assert_eq!(
            d.fire,
            [at("2026-07-01T12:00:00Z"), at("2026-07-01T13:00:00Z")]
        );
        assert_eq!(d.skipped, 2);
        // Decided once, never again.
        let d = due(
            &hourly,
            at("2026-07-01T13:00:00Z"),
            now,
            MissedFires::All,
            now,
        );
        assert!(d.fire.is_empty());
    }

    #[test]
    fn catching_up_is_bounded() {
        let every_second = Trigger::parse(
            &json!({"type": "cron", "expression": "* * * * * *"}),
            at("2026-01-01T00:00:00Z"),
        )
        .unwrap();
        // Half a year missed: the newest hundred are made up, without walking them all.
        let now = at("2026-07-01T06:00:00Z");
        let d = due(
            &every_second,
            at("2026-01-01T00:00:00Z"),
            now,
            MissedFires::All,
            now,
        );
        // The newest hundred missed, then `now` itself, on time.
        assert_eq!(d.fire.len(), MAX_CATCH_UP + 1);
        assert_eq!(d.fire[MAX_CATCH_UP - 1], now - 1);
        assert_eq!(d.through, Some(now));
        assert!(d.skipped >= MAX_COUNTED - MAX_CATCH_UP, "{}", d.skipped);
    }

    #[test]
    fn bad_triggers_name_the_field() {
        for (spec, field, says) in [
            (
                json!({"type": "cron"}),
                "trigger.expression",
                "needs an expression",
            ),
            (
                json!({"type": "cron", "expression": "0 0 31 2 *"}),
                "trigger.expression",
                "never fires",
            ),
            (
                json!({"type": "cron", "expression": "* * *"}),
                "trigger.expression",
                "5 fields",
            ),
            (
                json!({"type": "cron", "expression": "0 * * * *", "frequency": "day"}),
                "trigger.frequency",
                "not used by cron",
            ),
            (
                json!({"type": "cron", "expression": "0 * * * *", "time_zone": "Nowhere"}),
                "trigger.time_zone",
                "IANA",
            ),
            (
                json!({"type": "cron", "expression": "0 * * * *", "start_time": "yesterday"}),
                "trigger.start_time",
                "not a time",
            ),
            (
                json!({"type": "cron", "expression": "0 * * * *", "start_time": "2026-07-02", "end_time": "2026-07-01"}),
                "trigger.end_time",
                "not after",
            ),
            (
                json!({"type": "recurrence", "interval": 1}),
                "trigger.frequency",
                "needs a frequency",
            ),
            (
                json!({"type": "recurrence", "frequency": "day", "interval": 0}),
                "trigger.interval",
                "from 1",
            ),
            (
                json!({"type": "recurrence", "frequency": "hour", "interval": 1, "schedule": {"minutes": 5}}),
                "trigger.schedule",
                "takes no schedule",
            ),
            (
                json!({"type": "recurrence", "frequency": "day", "interval": 1, "schedule": {"hours": 24}}),
                "trigger.schedule.hours",
                "0 to 23",
            ),
            (
                json!({"type": "recurrence", "frequency": "day", "interval": 1, "schedule": {"week_days": "monday"}}),
                "trigger.schedule.week_days",
                "weekly or monthly",
            ),
            (
                json!({"type": "recurrence", "frequency": "week", "interval": 1, "schedule": {"week_days": "moonday"}}),
                "trigger.schedule.week_days",
                "day of the week",
            ),
            (
                json!({"type": "recurrence", "frequency": "month", "interval": 1, "schedule": {"month_days": 0}}),
                "trigger.schedule.month_days",
                "1 to 31",
            ),
            (
                json!({"type": "recurrence", "frequency": "month", "interval": 1, "schedule": {"days": 3}}),
                "trigger.schedule.days",
                "not a recurrence field",
            ),
        ] {
            let (f, m) = Trigger::parse(&spec, at("2026-07-01T00:00:00Z")).unwrap_err();
            assert_eq!(f, field, "{spec}: {m}");
            assert!(m.contains(says), "{spec}: {m}");
        }
    }
}
