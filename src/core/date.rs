//! Calendar dates as the guideline uses them: proleptic Gregorian, written `YYYY-MM-DD`, with day
//! arithmetic. No clock: the evaluation date is always an input.

use std::fmt;

/// Earliest year a case may name.
pub const MIN_YEAR: i32 = 1900;
/// Latest year a case may name.
pub const MAX_YEAR: i32 = 2100;

/// A calendar date, stored as days since 1970-01-01 so that differences and offsets are exact.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Date {
    days_since_epoch: i64,
}

/// Why a date string was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DateError {
    /// Empty string.
    Missing,
    /// Not exactly `YYYY-MM-DD` with ASCII digits.
    Format,
    /// Well formed but not a day of the calendar (`2026-02-30`).
    NoSuchDay,
    /// A real day outside 1900–2100.
    OutOfRange,
}

impl DateError {
    /// A sentence for the field violation.
    pub fn describe(self) -> &'static str {
        match self {
            DateError::Missing => "is required (YYYY-MM-DD)",
            DateError::Format => "must be a date written exactly YYYY-MM-DD",
            DateError::NoSuchDay => "is not a real calendar date",
            DateError::OutOfRange => "must lie between 1900-01-01 and 2100-12-31",
        }
    }
}

impl Date {
    /// Parses exactly `YYYY-MM-DD` (four-digit year, two-digit month and day), a real day in
    /// 1900–2100.
    pub fn parse(text: &str) -> Result<Date, DateError> {
        if text.is_empty() {
            return Err(DateError::Missing);
        }
        let bytes = text.as_bytes();
        let well_formed = bytes.len() == 10
            && bytes[4] == b'-'
            && bytes[7] == b'-'
            && bytes
                .iter()
                .enumerate()
                .all(|(index, byte)| index == 4 || index == 7 || byte.is_ascii_digit());
        if !well_formed {
            return Err(DateError::Format);
        }
        let number = |range: std::ops::Range<usize>| -> i64 {
            bytes[range]
                .iter()
                .fold(0_i64, |acc, digit| acc * 10 + i64::from(digit - b'0'))
        };
        let (year, month, day) = (number(0..4), number(5..7), number(8..10));
        if !(1..=12).contains(&month) || day < 1 || day > days_in_month(year, month) {
            return Err(DateError::NoSuchDay);
        }
        if year < i64::from(MIN_YEAR) || year > i64::from(MAX_YEAR) {
            return Err(DateError::OutOfRange);
        }
        Ok(Date {
            days_since_epoch: days_from_civil(year, month, day),
        })
    }

    /// The date `days` calendar days later (earlier when negative).
    pub fn add_days(self, days: i64) -> Date {
        Date {
            days_since_epoch: self.days_since_epoch + days,
        }
    }

    /// Calendar days from `earlier` to `self` (negative when `self` is earlier).
    pub fn days_since(self, earlier: Date) -> i64 {
        self.days_since_epoch - earlier.days_since_epoch
    }

    /// Year, month and day.
    pub fn ymd(self) -> (i64, i64, i64) {
        civil_from_days(self.days_since_epoch)
    }
}

impl fmt::Display for Date {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (year, month, day) = self.ymd();
        write!(formatter, "{year:04}-{month:02}-{day:02}")
    }
}

fn is_leap_year(year: i64) -> bool {
    (year % 4 == 0 && year % 100 != 0) || year % 400 == 0
}

fn days_in_month(year: i64, month: i64) -> i64 {
    match month {
        2 if is_leap_year(year) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

// Howard Hinnant's days-from-civil algorithm: exact for the whole proleptic Gregorian calendar.
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let year = if month <= 2 { year - 1 } else { year };
    let era = year.div_euclid(400);
    let year_of_era = year - era * 400;
    let shifted_month = (month + 9) % 12;
    let day_of_year = (153 * shifted_month + 2) / 5 + day - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    era * 146_097 + day_of_era - 719_468
}

fn civil_from_days(days: i64) -> (i64, i64, i64) {
    let shifted = days + 719_468;
    let era = shifted.div_euclid(146_097);
    let day_of_era = shifted - era * 146_097;
    let year_of_era =
        (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let shifted_month = (5 * day_of_year + 2) / 153;
    let day = day_of_year - (153 * shifted_month + 2) / 5 + 1;
    let month = if shifted_month < 10 {
        shifted_month + 3
    } else {
        shifted_month - 9
    };
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_prints_real_dates() {
        for text in [
            "1900-01-01",
            "2000-02-29",
            "2026-11-26",
            "2100-12-31",
            "2024-02-29",
        ] {
            assert_eq!(
                Date::parse(text).map(|date| date.to_string()),
                Ok(text.to_string())
            );
        }
    }

    #[test]
    fn refuses_malformed_impossible_and_out_of_range_dates() {
        let cases = [
            ("", DateError::Missing),
            ("2026-2-01", DateError::Format),
            ("2026/02/01", DateError::Format),
            ("+026-02-01", DateError::Format),
            ("2026-02-01 ", DateError::Format),
            ("２０２６-02-01", DateError::Format),
            ("2026-02-30", DateError::NoSuchDay),
            ("1900-02-29", DateError::NoSuchDay),
            ("2026-13-01", DateError::NoSuchDay),
            ("2026-00-10", DateError::NoSuchDay),
            ("2026-01-00", DateError::NoSuchDay),
            ("1899-12-31", DateError::OutOfRange),
            ("2101-01-01", DateError::OutOfRange),
        ];
        for (text, expected) in cases {
            assert_eq!(Date::parse(text), Err(expected), "{text}");
        }
    }

    #[test]
    fn day_arithmetic_crosses_months_years_and_leap_days() {
        let surgery = Date::parse("2026-10-27").unwrap();
        assert_eq!(surgery.add_days(28).to_string(), "2026-11-24");
        assert_eq!(surgery.add_days(42).to_string(), "2026-12-08");
        let leap = Date::parse("2024-02-01").unwrap();
        assert_eq!(leap.add_days(28).to_string(), "2024-02-29");
        assert_eq!(
            Date::parse("2100-12-31").unwrap().add_days(42).to_string(),
            "2101-02-11"
        );
        assert_eq!(
            Date::parse("2026-11-26")
                .unwrap()
                .days_since(Date::parse("2026-08-18").unwrap()),
            100
        );
    }

    #[test]
    fn every_day_round_trips_through_the_civil_conversion() {
        let first = Date::parse("1900-01-01").unwrap();
        let last = Date::parse("2100-12-31").unwrap();
        let mut day = first;
        while day <= last {
            assert_eq!(Date::parse(&day.to_string()), Ok(day));
            day = day.add_days(1);
        }
    }
}
