//! Calling windows: the local hours and week days in which a campaign may start calls, in the
//! contact's time zone. Daylight-saving changes are handled by the time-zone database: a
//! window opening at a local time that does not exist that day (the hour skipped in spring)
//! opens at the first moment after the gap, and one that exists twice (the hour repeated in
//! autumn) at its first occurrence.

use jiff::Timestamp;
use jiff::civil::{Date, Weekday};
use jiff::tz::TimeZone;

/// Minutes in a day; a window may end at `24:00`.
const DAY_MINUTES: u16 = 24 * 60;
/// Every day of the week, as a [`CallingWindow::days`] mask.
pub const EVERY_DAY: u8 = 0b111_1111;
/// Week-day names, Monday first, as the API reads and writes them.
const DAY_NAMES: [&str; 7] = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"];

/// Why a window setting was refused; the message names the setting.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct WindowError(pub String);

/// Local calling hours `[start, end)` on some days of the week.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CallingWindow {
    /// Minutes after local midnight when calls may start.
    pub start_min: u16,
    /// Minutes after local midnight when calls stop starting (1440: midnight).
    pub end_min: u16,
    /// Bit 0 Monday … bit 6 Sunday.
    pub days: u8,
}

impl Default for CallingWindow {
    /// 09:00–20:00 every day: inside the hours most calling rules allow (e.g. the TCPA's
    /// 8 am–9 pm), with a margin.
    fn default() -> Self {
        CallingWindow {
            start_min: 9 * 60,
            end_min: 20 * 60,
            days: EVERY_DAY,
        }
    }
}

impl CallingWindow {
    /// A window from the API's spellings: `HH:MM` times and a days list such as `mon-fri`,
    /// `mon,wed,fri`, `weekdays`, `weekends` or `all`. Missing parts keep the default's.
    pub fn parse(
        start: Option<&str>,
        end: Option<&str>,
        days: Option<&str>,
    ) -> Result<Self, WindowError> {
        let default = CallingWindow::default();
        let start_min = start.map_or(Ok(default.start_min), |s| parse_time("window_start", s))?;
        let end_min = end.map_or(Ok(default.end_min), |s| parse_time("window_end", s))?;
        if start_min == DAY_MINUTES {
            return Err(WindowError(
                "window_start: 24:00 is not a start; use 00:00".into(),
            ));
        }
        if end_min <= start_min {
            return Err(WindowError(format!(
                "the window must end after it starts (got {} to {}); a window across midnight is two campaigns, or 00:00 to 24:00 for any time",
                format_time(start_min),
                format_time(end_min)
            )));
        }
        let days = days.map_or(Ok(default.days), parse_days)?;
        Ok(CallingWindow {
            start_min,
            end_min,
            days,
        })
    }

    /// `HH:MM` of the start.
    pub fn start(&self) -> String {
        format_time(self.start_min)
    }

    /// `HH:MM` of the end.
    pub fn end(&self) -> String {
        format_time(self.end_min)
    }

    /// The days' names, Monday first.
    pub fn day_names(&self) -> Vec<&'static str> {
        DAY_NAMES
            .iter()
            .enumerate()
            .filter(|(bit, _)| self.days & (1 << bit) != 0)
            .map(|(_, name)| *name)
            .collect()
    }

    fn allows(&self, weekday: Weekday) -> bool {
        self.days & (1 << weekday.to_monday_zero_offset()) != 0
    }

    /// `None` when a call may start at `now` in `tz`; otherwise the next moment one may.
    pub fn next_opening(&self, now: Timestamp, tz: &TimeZone) -> Option<Timestamp> {
        let mut day = tz.to_datetime(now).date();
        // A window on at least one week day opens within the next seven days.
        for _ in 0..8 {
            if self.allows(day.weekday()) {
                let open = local_instant(tz, day, self.start_min)?;
                let close = local_instant(tz, day, self.end_min)?;
                if now < open {
                    return Some(open);
                }
                if now < close {
                    return None;
                }
            }
            day = day.tomorrow().ok()?;
        }
        None
    }
}

/// The instant of `minutes` after midnight on `day` in `tz` (`1440` is the next midnight). A
/// local time skipped by a daylight-saving change resolves to just after the gap, one repeated
/// to its first occurrence (jiff's "compatible" rule, as RFC 5545 and most calendars do).
fn local_instant(tz: &TimeZone, day: Date, minutes: u16) -> Option<Timestamp> {
    let (day, minutes) = if minutes >= DAY_MINUTES {
        (day.tomorrow().ok()?, minutes - DAY_MINUTES)
    } else {
        (day, minutes)
    };
    let hour = i8::try_from(minutes / 60).ok()?;
    let minute = i8::try_from(minutes % 60).ok()?;
    tz.to_ambiguous_timestamp(day.at(hour, minute, 0, 0))
        .compatible()
        .ok()
}

/// `HH:MM` (00:00 to 24:00) as minutes after midnight.
fn parse_time(setting: &str, text: &str) -> Result<u16, WindowError> {
    let bad = || {
        WindowError(format!(
            "{setting}: {text:?} is not a time of day; use HH:MM, e.g. 09:00 or 20:30"
        ))
    };
    let (hours, minutes) = text.trim().split_once(':').ok_or_else(bad)?;
    let two_digits = |s: &str| s.len() == 2 && s.bytes().all(|b| b.is_ascii_digit());
    if !two_digits(hours) || !two_digits(minutes) {
        return Err(bad());
    }
    let hours: u16 = hours.parse().map_err(|_| bad())?;
    let minutes: u16 = minutes.parse().map_err(|_| bad())?;
    let total = hours * 60 + minutes;
    if minutes >= 60 || total > DAY_MINUTES {
        return Err(bad());
    }
    Ok(total)
}

fn format_time(minutes: u16) -> String {
    format!("{:02}:{:02}", minutes / 60, minutes % 60)
}

/// A days list: comma-separated names or ranges (`mon-fri,sun`), or `all`/`daily`,
/// `weekdays`, `weekends`.
fn parse_days(text: &str) -> Result<u8, WindowError> {
    let mut mask = 0u8;
    for part in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let part = part.to_ascii_lowercase();
        mask |= match part.as_str() {
            "all" | "daily" | "every day" => EVERY_DAY,
            "weekdays" => 0b001_1111,
            "weekends" => 0b110_0000,
            _ => match part.split_once('-') {
                Some((from, to)) => {
                    let (from, to) = (day_index(from)?, day_index(to)?);
                    if from > to {
                        return Err(WindowError(format!(
                            "days: {part:?} runs backwards; write it as e.g. fri-sun or sat,sun,mon"
                        )));
                    }
                    (from..=to).fold(0, |mask, day| mask | (1 << day))
                }
                None => 1 << day_index(&part)?,
            },
        };
    }
    if mask == 0 {
        return Err(WindowError(
            "days: name at least one day, e.g. mon-fri".into(),
        ));
    }
    Ok(mask)
}

fn day_index(name: &str) -> Result<u8, WindowError> {
    let name = name.trim();
    let short = name.get(..3).unwrap_or(name);
    DAY_NAMES
        .iter()
        .position(|day| *day == short && (name.len() == 3 || full_day_name(short) == name))
        .and_then(|i| u8::try_from(i).ok())
        .ok_or_else(|| {
            WindowError(format!(
                "days: {name:?} is not a day; use mon, tue, wed, thu, fri, sat, sun"
            ))
        })
}

fn full_day_name(short: &str) -> &'static str {
    match short {
        "mon" => "monday",
        "tue" => "tuesday",
        "wed" => "wednesday",
        "thu" => "thursday",
        "fri" => "friday",
        "sat" => "saturday",
        _ => "sunday",
    }
}

/// The time zone named `name` (IANA, e.g. `America/New_York`), or why not.
pub fn time_zone(name: &str) -> Result<TimeZone, WindowError> {
    TimeZone::get(name).map_err(|_| {
        WindowError(format!(
            "unknown time zone {name:?}; use an IANA name such as America/New_York or Europe/London"
        ))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(text: &str) -> Timestamp {
        text.parse().expect("a timestamp")
    }

    fn new_york() -> TimeZone {
        time_zone("America/New_York").expect("tzdb")
    }

    #[test]
    fn inside_the_window_a_call_may_start_now() {
        let window = CallingWindow::default();
        // 10:00 in New York (EST, UTC-5).
        assert_eq!(
            window.next_opening(at("2026-12-01T15:00:00Z"), &new_york()),
            None
        );
    }

    #[test]
    fn before_and_after_the_window_it_opens_at_the_next_start() {
        let window = CallingWindow::default();
        let tz = new_york();
        // 07:00 local → 09:00 local the same day.
        assert_eq!(
            window.next_opening(at("2026-12-01T12:00:00Z"), &tz),
            Some(at("2026-12-01T14:00:00Z"))
        );
        // 20:00 local is closed (the end is exclusive) → 09:00 the next day.
        assert_eq!(
            window.next_opening(at("2026-12-02T01:00:00Z"), &tz),
            Some(at("2026-12-02T14:00:00Z"))
        );
    }

    #[test]
    fn days_outside_the_list_are_skipped() {
        let window = CallingWindow::parse(None, None, Some("mon-fri")).unwrap();
        // Saturday 2026-12-05, 10:00 local → Monday 2026-12-07 09:00 local.
        assert_eq!(
            window.next_opening(at("2026-12-05T15:00:00Z"), &new_york()),
            Some(at("2026-12-07T14:00:00Z"))
        );
    }

    #[test]
    fn the_window_follows_daylight_saving_time() {
        let window = CallingWindow::default();
        let tz = new_york();
        // Saturday 2026-03-07 21:00 EST; clocks go forward on Sunday 03-08 at 02:00, so
        // 09:00 that morning is EDT (UTC-4): 13:00Z, not 14:00Z.
        assert_eq!(
            window.next_opening(at("2026-03-08T02:00:00Z"), &tz),
            Some(at("2026-03-08T13:00:00Z"))
        );
        // And back on Sunday 2026-11-01: 09:00 EST is 14:00Z.
        assert_eq!(
            window.next_opening(at("2026-11-01T05:00:00Z"), &tz),
            Some(at("2026-11-01T14:00:00Z"))
        );
    }

    #[test]
    fn a_start_in_the_skipped_hour_opens_after_the_gap() {
        let window = CallingWindow::parse(Some("02:30"), Some("05:00"), None).unwrap();
        // 02:30 does not exist in New York on 2026-03-08: the window opens at 03:30 EDT.
        assert_eq!(
            window.next_opening(at("2026-03-08T05:00:00Z"), &new_york()),
            Some(at("2026-03-08T07:30:00Z"))
        );
        // 01:30 happens twice on 2026-11-01; the window opens at the first (EDT).
        let window = CallingWindow::parse(Some("01:30"), Some("05:00"), None).unwrap();
        assert_eq!(
            window.next_opening(at("2026-11-01T04:00:00Z"), &new_york()),
            Some(at("2026-11-01T05:30:00Z"))
        );
    }

    #[test]
    fn any_time_is_00_00_to_24_00() {
        let window = CallingWindow::parse(Some("00:00"), Some("24:00"), Some("all")).unwrap();
        assert_eq!(
            window.next_opening(at("2026-12-01T03:17:00Z"), &new_york()),
            None
        );
        assert_eq!(
            (window.start(), window.end()),
            ("00:00".into(), "24:00".into())
        );
    }

    #[test]
    fn settings_are_read_and_refused_with_their_names() {
        let window =
            CallingWindow::parse(Some("08:30"), Some("21:00"), Some("Mon-Wed, sat")).unwrap();
        assert_eq!(window.day_names(), ["mon", "tue", "wed", "sat"]);
        assert_eq!(window.start(), "08:30");
        for (start, end, days, named) in [
            (Some("9:00"), None, None, "window_start"),
            (None, Some("25:00"), None, "window_end"),
            (Some("20:00"), Some("09:00"), None, "must end after"),
            (None, None, Some("fri-mon"), "backwards"),
            (None, None, Some("funday"), "not a day"),
            (None, None, Some(" , "), "at least one day"),
        ] {
            let error = CallingWindow::parse(start, end, days).unwrap_err();
            assert!(error.0.contains(named), "{error}");
        }
        assert!(time_zone("Mars/Olympus").is_err());
        assert_eq!(parse_days("weekdays,sunday").unwrap(), 0b101_1111);
    }
}
