//! Unit tests of literal parsing and ordering, per type.

use super::*;
use DataType::*;

fn lit(ty: DataType, s: &str) -> Literal {
    ty.parse_literal(s)
        .unwrap_or_else(|e| panic!("{ty} {s:?}: {e}"))
}

fn err(ty: DataType, s: &str) -> std::string::String {
    ty.parse_literal(s).unwrap_err()
}

/// Each list is strictly increasing when parsed as `ty`.
fn assert_increasing(ty: DataType, values: &[&str]) {
    for pair in values.windows(2) {
        assert!(
            lit(ty, pair[0]) < lit(ty, pair[1]),
            "{ty}: {} < {}",
            pair[0],
            pair[1]
        );
    }
}

#[test]
fn ordering_per_type() {
    assert_increasing(Int8, &["-128", "-1", "0", "9", "10", "127"]);
    assert_increasing(
        Int64,
        &["-9223372036854775808", "-5", "+7", "9223372036854775807"],
    );
    assert_increasing(UInt64, &["0", "9", "10", "18446744073709551615"]);
    assert_increasing(Float64, &["-1e300", "-2.5", "0", "0.1", "1e10"]);
    assert_increasing(Float32, &["-3.5", "0", "1.25"]);
    assert_increasing(String, &["", "A", "a", "ab", "b"]);
    assert_increasing(Binary, &["a", "b"]);
    assert_increasing(Bool, &["false", "TRUE"]);
    assert_increasing(
        Date,
        &[
            "1969-12-31",
            "1970-01-01",
            "2024-01-31",
            "2024-02-01",
            "2024-02-29",
        ],
    );
    let ms = Timestamp { precision: 3 };
    assert_increasing(
        ms,
        &[
            "-1",
            "0",
            "1970-01-01T00:00:00.001Z",
            "2024-01-01",
            "2024-01-01 00:00:01",
        ],
    );
    let dec = Decimal {
        precision: 5,
        scale: 2,
    };
    assert_increasing(dec, &["-999.99", "-1", "0", "0.5", "1.49", "1.5", "999.99"]);
}

#[test]
fn equal_values_written_differently_are_equal() {
    assert_eq!(lit(Int32, "007"), lit(Int32, " 7 "));
    assert_eq!(lit(Float64, "-0"), lit(Float64, "0.0"));
    assert_eq!(
        lit(
            Decimal {
                precision: 5,
                scale: 2
            },
            "1.5"
        ),
        lit(
            Decimal {
                precision: 5,
                scale: 2
            },
            "1.50"
        )
    );
    assert_eq!(lit(Date, "1970-01-02"), Literal::Date(1));
    assert_eq!(
        lit(Timestamp { precision: 3 }, "1970-01-01T00:00:01Z"),
        Literal::Timestamp(1000)
    );
    assert_eq!(
        lit(Timestamp { precision: 0 }, "1970-01-01T01:00:00+01:00"),
        Literal::Timestamp(0)
    );
    assert_eq!(
        lit(Timestamp { precision: 6 }, "1970-01-01 00:00:00.5"),
        Literal::Timestamp(500_000)
    );
    assert_ne!(lit(String, " a"), lit(String, "a"));
}

#[test]
fn bad_values_are_explained() {
    let cases = [
        (Int8, "128", "128 is out of range for int8 (-128..=127)"),
        (Int64, "1.5", "\"1.5\" is not an integer"),
        (Int64, "0x10", "is not an integer"),
        (UInt8, "-1", "-1 is out of range for uint8 (0..=255)"),
        (UInt64, "18446744073709551616", "out of range for uint64"),
        (Float64, "NaN", "\"NaN\" is not a finite float64"),
        (Float32, "1e39", "is not a finite float32"),
        (Float64, "abc", "is not a number"),
        (Bool, "yes", "is not a bool"),
        (Date, "2023-02-29", "is not a date (YYYY-MM-DD)"),
        (Date, "2023-13-01", "is not a date"),
        (Date, "2023-1-01", "is not a date"),
        (
            Timestamp { precision: 3 },
            "2024-01-01T00:00:00.1234",
            "has 4 fractional digits, timestamp(3) keeps 3",
        ),
        (
            Timestamp { precision: 3 },
            "2024-01-01T25:00:00",
            "is not a timestamp",
        ),
        (
            Timestamp { precision: 9 },
            "3000-01-01",
            "out of range for timestamp(9)",
        ),
        (
            Decimal {
                precision: 5,
                scale: 2,
            },
            "1.234",
            "has 3 digits after the point, decimal(5,2) keeps 2",
        ),
        (
            Decimal {
                precision: 5,
                scale: 2,
            },
            "1234",
            "has 4 digits before the point, decimal(5,2) allows 3",
        ),
        (
            Decimal {
                precision: 5,
                scale: 2,
            },
            "1.",
            "is not a decimal number",
        ),
        (Json, "{}", "json values cannot be compared"),
        (
            Vector { dim: 3 },
            "[1,2,3]",
            "vector(3) values cannot be compared",
        ),
    ];
    for (ty, input, want) in cases {
        let e = err(ty, input);
        assert!(e.contains(want), "{ty} {input:?}: {e}");
    }
    let long = "a".repeat(LITERAL_LEN_MAX + 1);
    assert_eq!(
        err(String, &long),
        "is 1025 bytes, the limit (literal_len_max) is 1024"
    );
}

#[test]
fn largest_decimal_fits() {
    let ty = Decimal {
        precision: 38,
        scale: 0,
    };
    let nines = "9".repeat(38);
    assert_eq!(lit(ty, &nines), Literal::Decimal(nines.parse().unwrap()));
    assert_eq!(
        lit(
            Decimal {
                precision: 38,
                scale: 38
            },
            "0.5"
        ),
        Literal::Decimal(5 * 10i128.pow(37))
    );
}

#[test]
fn leap_days_and_epoch() {
    assert_eq!(date("2000-02-29"), Some(11_016));
    assert_eq!(date("1900-02-29"), None);
    assert_eq!(date("1970-01-01"), Some(0));
    assert_eq!(date("1969-12-31"), Some(-1));
}

#[test]
fn timestamp_offsets_and_units() {
    let s = Timestamp { precision: 0 };
    assert_eq!(
        lit(s, "1970-01-01T00:00:00-05:00"),
        Literal::Timestamp(5 * 3600)
    );
    assert_eq!(lit(s, "1970-01-01t00:00:00z"), Literal::Timestamp(0));
    assert_eq!(
        lit(Timestamp { precision: 9 }, "1970-01-01T00:00:01.000000001Z"),
        Literal::Timestamp(1_000_000_001)
    );
    assert_eq!(lit(s, "-5"), Literal::Timestamp(-5));
    for bad in [
        "1970-01-01T00:00",
        "1970-01-01T00:00:00+5",
        "1970-01-01T00:00:00.",
        "1970-01-01X00:00:00",
        "1970-01-0é",
    ] {
        assert!(
            err(s, bad).contains("is not a timestamp"),
            "{bad}: {}",
            err(s, bad)
        );
    }
}
