//! Values written as text in a partition rule (range bounds, list values), parsed as the
//! partition column's type so they compare the way the database will compare rows: "9" < "10"
//! for integers, "2024-02-01" > "2024-01-31" for dates, 1.50 == 1.5 for decimals.

use std::cmp::Ordering;

use crate::limits::LITERAL_LEN_MAX;
use crate::types::DataType;

/// A parsed value. Values of one column's type compare totally; values of different variants
/// only ever meet through a programming error and are ordered by variant so sorting stays total.
#[derive(Debug, Clone)]
pub enum Literal {
    /// Signed integers of every width.
    Int(i128),
    /// Unsigned integers of every width.
    UInt(u128),
    /// Finite floats; -0.0 is stored as 0.0 so equal numbers are one value.
    Float(f64),
    Bool(bool),
    String(String),
    /// The bytes of the text as written.
    Binary(Vec<u8>),
    /// Days since 1970-01-01.
    Date(i64),
    /// Units of the column's precision since 1970-01-01T00:00:00Z.
    Timestamp(i64),
    /// The value times 10^scale of the column's type.
    Decimal(i128),
}

impl Literal {
    fn rank(&self) -> u8 {
        match self {
            Literal::Int(_) => 0,
            Literal::UInt(_) => 1,
            Literal::Float(_) => 2,
            Literal::Bool(_) => 3,
            Literal::String(_) => 4,
            Literal::Binary(_) => 5,
            Literal::Date(_) => 6,
            Literal::Timestamp(_) => 7,
            Literal::Decimal(_) => 8,
        }
    }
}

impl Ord for Literal {
    fn cmp(&self, other: &Self) -> Ordering {
        use Literal::*;
        match (self, other) {
            (Int(a), Int(b)) | (Decimal(a), Decimal(b)) => a.cmp(b),
            (UInt(a), UInt(b)) => a.cmp(b),
            (Float(a), Float(b)) => a.total_cmp(b),
            (Bool(a), Bool(b)) => a.cmp(b),
            (String(a), String(b)) => a.cmp(b),
            (Binary(a), Binary(b)) => a.cmp(b),
            (Date(a), Date(b)) | (Timestamp(a), Timestamp(b)) => a.cmp(b),
            (a, b) => a.rank().cmp(&b.rank()),
        }
    }
}

impl PartialOrd for Literal {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

// Equality follows the total order, so a value can be a map key and "1.0" == "1" for floats.
impl PartialEq for Literal {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}

impl Eq for Literal {}

/// Parses `text` as a value of `ty`; see [`DataType::parse_literal`].
impl DataType {
    /// Parses a partition bound or list value written as text, as a value of this type.
    pub fn parse_literal(&self, s: &str) -> Result<Literal, String> {
        parse(*self, s)
    }
}

pub(crate) fn parse(ty: DataType, text: &str) -> Result<Literal, String> {
    if text.len() > LITERAL_LEN_MAX {
        return Err(format!(
            "is {} bytes, the limit (literal_len_max) is {LITERAL_LEN_MAX}",
            text.len()
        ));
    }
    // Strings and binaries are taken as written: surrounding spaces are part of the value.
    let t = text.trim();
    match ty {
        DataType::Int8 => int(t, i8::MIN.into(), i8::MAX.into(), ty),
        DataType::Int16 => int(t, i16::MIN.into(), i16::MAX.into(), ty),
        DataType::Int32 => int(t, i32::MIN.into(), i32::MAX.into(), ty),
        DataType::Int64 => int(t, i64::MIN.into(), i64::MAX.into(), ty),
        DataType::UInt8 => uint(t, u8::MAX.into(), ty),
        DataType::UInt16 => uint(t, u16::MAX.into(), ty),
        DataType::UInt32 => uint(t, u32::MAX.into(), ty),
        DataType::UInt64 => uint(t, u64::MAX.into(), ty),
        DataType::Float32 => float(t, ty, |s| s.parse::<f32>().ok().map(f64::from)),
        DataType::Float64 => float(t, ty, |s| s.parse::<f64>().ok()),
        DataType::Bool => match t.to_ascii_lowercase().as_str() {
            "true" => Ok(Literal::Bool(true)),
            "false" => Ok(Literal::Bool(false)),
            _ => Err(format!("{text:?} is not a bool (true or false)")),
        },
        DataType::String => Ok(Literal::String(text.to_string())),
        DataType::Binary => Ok(Literal::Binary(text.as_bytes().to_vec())),
        DataType::Date => date(t)
            .map(Literal::Date)
            .ok_or_else(|| format!("{text:?} is not a date (YYYY-MM-DD)")),
        DataType::Timestamp { precision } => timestamp(t, precision).map(Literal::Timestamp),
        DataType::Decimal { precision, scale } => {
            decimal(t, precision, scale).map(Literal::Decimal)
        }
        DataType::Json | DataType::Vector { .. } => Err(format!(
            "{ty} values cannot be compared, so they cannot bound a partition"
        )),
    }
}

fn int(t: &str, min: i128, max: i128, ty: DataType) -> Result<Literal, String> {
    if !is_integer_text(t) {
        return Err(format!("{t:?} is not an integer"));
    }
    match t.parse::<i128>() {
        Ok(v) if (min..=max).contains(&v) => Ok(Literal::Int(v)),
        _ => Err(format!("{t} is out of range for {ty} ({min}..={max})")),
    }
}

fn uint(t: &str, max: u128, ty: DataType) -> Result<Literal, String> {
    if !is_integer_text(t) {
        return Err(format!("{t:?} is not an integer"));
    }
    match t.parse::<u128>() {
        Ok(v) if v <= max => Ok(Literal::UInt(v)),
        _ => Err(format!("{t} is out of range for {ty} (0..={max})")),
    }
}

/// Optional sign, then decimal digits only: no "0x", no '_' separators, no spaces.
fn is_integer_text(t: &str) -> bool {
    let digits = t.strip_prefix(['-', '+']).unwrap_or(t);
    !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit())
}

fn float(t: &str, ty: DataType, parse: impl Fn(&str) -> Option<f64>) -> Result<Literal, String> {
    match parse(t) {
        // Adding 0.0 turns -0.0 into 0.0.
        Some(v) if v.is_finite() => Ok(Literal::Float(v + 0.0)),
        Some(_) => Err(format!("{t:?} is not a finite {ty}")),
        None => Err(format!("{t:?} is not a number")),
    }
}

/// "YYYY-MM-DD" with a real month and day, as days since 1970-01-01.
fn date(t: &str) -> Option<i64> {
    let b = t.as_bytes();
    if b.len() != 10 || b[4] != b'-' || b[7] != b'-' {
        return None;
    }
    let year = digits(&t[0..4])?;
    let month = digits(&t[5..7])?;
    let day = digits(&t[8..10])?;
    if !(1..=12).contains(&month) || day < 1 || day > days_in_month(year, month) {
        return None;
    }
    Some(days_from_civil(year, month, day))
}

fn digits(s: &str) -> Option<i64> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

fn days_in_month(year: i64, month: i64) -> i64 {
    match month {
        2 if (year % 4 == 0 && year % 100 != 0) || year % 400 == 0 => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm).
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let year_of_era = y - era * 400;
    let month_from_march = (month + 9) % 12;
    let day_of_year = (153 * month_from_march + 2) / 5 + day - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    era * 146_097 + day_of_era - 719_468
}

/// An integer in the column's units, a date (midnight UTC), or
/// "YYYY-MM-DD[T| ]HH:MM:SS[.fraction][Z|+HH:MM|-HH:MM]" (UTC when no offset is given).
fn timestamp(t: &str, precision: u8) -> Result<i64, String> {
    let ty = DataType::Timestamp { precision };
    let out_of_range = || format!("{t:?} is out of range for {ty}");
    if is_integer_text(t) {
        return t.parse::<i64>().map_err(|_| out_of_range());
    }
    let bad = || {
        format!(
            "{t:?} is not a timestamp: use an integer in the column's unit, YYYY-MM-DD, or \
             YYYY-MM-DDTHH:MM:SS[.fraction][Z|+HH:MM]"
        )
    };
    // `get` rather than slicing: the text may hold multi-byte characters anywhere.
    let day_text = t.get(..10).unwrap_or(t);
    let rest = t.get(day_text.len()..).ok_or_else(bad)?;
    let days = date(day_text).ok_or_else(bad)?;
    let mut seconds = days * 86_400;
    let mut units_fraction = 0i64;
    if !rest.is_empty() {
        let rest = rest.strip_prefix(['T', 't', ' ']).ok_or_else(bad)?;
        // Split off the zone: 'Z', or a sign after the time of day.
        let (clock, offset_seconds) = if let Some(clock) = rest.strip_suffix(['Z', 'z']) {
            (clock, 0)
        } else if let Some(pos) = rest.rfind(['+', '-']) {
            let (clock, zone) = rest.split_at(pos);
            let sign = if zone.starts_with('-') { -1 } else { 1 };
            let zb = &zone.as_bytes()[1..];
            if zb.len() != 5 || zb[2] != b':' {
                return Err(bad());
            }
            let (h, m) = (
                digits(&zone[1..3]).ok_or_else(bad)?,
                digits(&zone[4..6]).ok_or_else(bad)?,
            );
            if h > 23 || m > 59 {
                return Err(bad());
            }
            (clock, sign * (h * 3600 + m * 60))
        } else {
            (rest, 0)
        };
        let (hms, fraction) = clock.split_once('.').unwrap_or((clock, ""));
        let hb = hms.as_bytes();
        if hb.len() != 8 || hb[2] != b':' || hb[5] != b':' {
            return Err(bad());
        }
        let h = digits(&hms[0..2]).ok_or_else(bad)?;
        let m = digits(&hms[3..5]).ok_or_else(bad)?;
        let s = digits(&hms[6..8]).ok_or_else(bad)?;
        if h > 23 || m > 59 || s > 59 {
            return Err(bad());
        }
        seconds += h * 3600 + m * 60 + s - offset_seconds;
        if clock.contains('.') {
            if fraction.is_empty() || !fraction.bytes().all(|b| b.is_ascii_digit()) {
                return Err(bad());
            }
            // Refuse rather than round: a bound that silently moved would misplace rows.
            if fraction.len() > usize::from(precision) {
                return Err(format!(
                    "{t:?} has {} fractional digits, {ty} keeps {precision}",
                    fraction.len()
                ));
            }
            let padded = format!("{fraction:0<width$}", width = usize::from(precision));
            units_fraction = padded.parse().map_err(|_| bad())?;
        }
    }
    10i64
        .checked_pow(u32::from(precision))
        .and_then(|unit| seconds.checked_mul(unit))
        .and_then(|units| units.checked_add(units_fraction))
        .ok_or_else(out_of_range)
}

/// "[-+]DIGITS[.DIGITS]" within the type's digits, as the value times 10^scale.
fn decimal(t: &str, precision: u8, scale: u8) -> Result<i128, String> {
    let ty = DataType::Decimal { precision, scale };
    let (negative, unsigned) = match t.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, t.strip_prefix('+').unwrap_or(t)),
    };
    let (whole, fraction) = unsigned.split_once('.').unwrap_or((unsigned, ""));
    let all_digits = |s: &str| s.bytes().all(|b| b.is_ascii_digit());
    if whole.is_empty() || !all_digits(whole) || !all_digits(fraction) || unsigned.ends_with('.') {
        return Err(format!("{t:?} is not a decimal number"));
    }
    if fraction.len() > usize::from(scale) {
        return Err(format!(
            "{t:?} has {} digits after the point, {ty} keeps {scale}",
            fraction.len()
        ));
    }
    let whole = whole.trim_start_matches('0');
    let whole_max = usize::from(precision.saturating_sub(scale));
    if whole.len() > whole_max {
        return Err(format!(
            "{t:?} has {} digits before the point, {ty} allows {whole_max}",
            whole.len()
        ));
    }
    // At most 38 digits in all, which an i128 holds.
    let scaled = format!("{whole}{fraction:0<width$}", width = usize::from(scale));
    let magnitude: i128 = if scaled.is_empty() {
        0
    } else {
        scaled
            .parse()
            .map_err(|_| format!("{t:?} is not a decimal number"))?
    };
    Ok(if negative { -magnitude } else { magnitude })
}

#[cfg(test)]
#[path = "literal_tests.rs"]
mod tests;
