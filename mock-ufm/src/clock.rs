//! Formats wall-clock times the way UFM writes them (UTC; no date crate needed).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

/// How `GET /resources/pkeys/last_updated` writes its timestamp.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
pub enum TimeFormat {
    /// Newer UFM: `03-09-2020, 11:42:39`.
    #[default]
    DayFirst,
    /// Older UFM (`date` output): `Thu Sep  3 11:42:39 UTC 2020`.
    Ctime,
}

struct Civil {
    year: i64,
    month: u32,
    day: u32,
    hour: u64,
    minute: u64,
    second: u64,
    weekday: usize,
}

fn civil(t: SystemTime) -> Civil {
    let secs = t.duration_since(UNIX_EPOCH).unwrap_or(Duration::ZERO).as_secs();
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    // Howard Hinnant's days-to-civil algorithm.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    Civil {
        year,
        month,
        day,
        hour: rem / 3_600,
        minute: rem % 3_600 / 60,
        second: rem % 60,
        // 1970-01-01 was a Thursday.
        weekday: ((days + 4).rem_euclid(7)) as usize,
    }
}

const WEEKDAYS: [&str; 7] = ["Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"];
const MONTHS: [&str; 12] = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"];

/// Formats `t` for `last_updated`.
pub fn format_last_updated(t: SystemTime, format: TimeFormat) -> String {
    let c = civil(t);
    match format {
        TimeFormat::DayFirst => {
            format!("{:02}-{:02}-{}, {:02}:{:02}:{:02}", c.day, c.month, c.year, c.hour, c.minute, c.second)
        }
        TimeFormat::Ctime => format!(
            "{} {} {:>2} {:02}:{:02}:{:02} UTC {}",
            WEEKDAYS[c.weekday],
            MONTHS[(c.month as usize).saturating_sub(1) % 12],
            c.day,
            c.hour,
            c.minute,
            c.second,
            c.year
        ),
    }
}

/// Formats `t` as `2020-09-03 11:42:39` (token `issued_at`).
pub fn format_iso(t: SystemTime) -> String {
    let c = civil(t);
    format!("{}-{:02}-{:02} {:02}:{:02}:{:02}", c.year, c.month, c.day, c.hour, c.minute, c.second)
}

/// Milliseconds since the Unix epoch.
pub fn unix_ms(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).unwrap_or(Duration::ZERO).as_millis() as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(secs: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(secs)
    }

    #[test]
    fn formats_like_ufm() {
        // 2020-09-03T11:42:39Z, a Thursday.
        let t = at(1_599_133_359);
        assert_eq!(format_last_updated(t, TimeFormat::DayFirst), "03-09-2020, 11:42:39");
        assert_eq!(format_last_updated(t, TimeFormat::Ctime), "Thu Sep  3 11:42:39 UTC 2020");
        assert_eq!(format_iso(t), "2020-09-03 11:42:39");
    }

    #[test]
    fn handles_leap_days_and_year_ends() {
        assert_eq!(format_iso(at(0)), "1970-01-01 00:00:00");
        // 2024-02-29T23:59:59Z
        assert_eq!(format_iso(at(1_709_251_199)), "2024-02-29 23:59:59");
        // 2023-12-31T00:00:00Z, a Sunday.
        assert_eq!(format_last_updated(at(1_703_980_800), TimeFormat::Ctime), "Sun Dec 31 00:00:00 UTC 2023");
    }
}
