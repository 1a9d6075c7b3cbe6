//! Formatting and parsing shared by the subcommands: times, byte strings, sizes, progress.

use std::io::IsTerminal;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use jiff::civil::{Date, DateTime};
use jiff::tz::TimeZone;
use jiff::{Span, Timestamp, Zoned};

/// Work below this many bytes gets no progress bar: it is over before one would help.
const PROGRESS_MIN_BYTES: u64 = 32 << 20;

/// A progress bar on stderr when stderr is a terminal and the work is long; hidden otherwise.
pub fn progress_bar(total_bytes: u64, what: &str) -> ProgressBar {
    if !std::io::stderr().is_terminal() || total_bytes < PROGRESS_MIN_BYTES {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::with_draw_target(Some(total_bytes), ProgressDrawTarget::stderr());
    bar.set_style(
        ProgressStyle::with_template(
            "{msg} [{bar:40}] {bytes}/{total_bytes} ({bytes_per_sec}, {eta} left)",
        )
        .expect("a valid template")
        .progress_chars("=> "),
    );
    bar.set_message(what.to_owned());
    bar
}

/// Microseconds since the Unix epoch as RFC 3339 in UTC, to the microsecond:
/// `2023-11-14T22:13:20.123456Z`. A time past what RFC 3339 can write (after the year 9999,
/// as only a damaged record holds) is printed as its microseconds, which `parse_time` reads.
pub fn format_micros(micros: u64) -> String {
    i64::try_from(micros)
        .ok()
        .and_then(|m| Timestamp::from_microsecond(m).ok())
        .map_or_else(|| micros.to_string(), |t| format!("{t:.6}"))
}

/// The forms `parse_time` accepts, for its error message and the options' help.
const TIME_FORMS: &str = "RFC 3339 (2024-05-01T12:00:00Z, 2024-05-01T14:00:00.5+02:00), \
     a date (2024-05-01: local midnight), a local date and time without an offset \
     (\"2024-05-01 14:30\", 2024-05-01T14:30:00), a time before now (\"2 hours ago\", \
     \"90 minutes ago\", \"1 day ago\", -2h, now) or microseconds since the Unix epoch";

/// Parses a time given on the command line into microseconds since the Unix epoch:
///
/// - microseconds since the epoch (digits only);
/// - RFC 3339 / ISO 8601 with an offset or `Z` (`2024-05-01T12:00:00Z`,
///   `2024-05-01T14:00:00.25+02:00`), or with a time zone annotation
///   (`2024-05-01T14:00[Europe/Paris]`);
/// - a date alone (`2024-05-01`): its midnight in the system's time zone;
/// - a date and time without an offset (`2024-05-01 14:30`, `2024-05-01T14:30:00.5`): a
///   time in the system's time zone (`TZ`, else `/etc/localtime`); one that a clock change
///   skips or repeats resolves as RFC 9557's `compatible` does (a skipped time moves forward
///   by the gap, a repeated one takes its first occurrence);
/// - a time before now, a span followed by `ago` or preceded by `-` (`2 hours ago`,
///   `1 day 6 hours ago`, `-90m`, `-PT2H`), or `now`. Days and longer are calendar units in
///   the system's time zone: `1 day ago` is the same clock time yesterday.
///
/// Digits past the microsecond are dropped; a leap second (`:60`) is read as `:59`.
pub fn parse_time(s: &str) -> Result<u64, String> {
    let s = s.trim();
    if !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) {
        return s
            .parse()
            .map_err(|_| format!("{s:?}: too large for microseconds since the epoch"));
    }
    let at =
        parse_instant(s).ok_or_else(|| format!("{s:?} is not a time: give {TIME_FORMS}"))??;
    u64::try_from(at.as_microsecond()).map_err(|_| format!("{s:?} ({at}) is before the Unix epoch"))
}

/// `None` when `s` is in none of the forms; `Some(Err)` when it is but names no time.
fn parse_instant(s: &str) -> Option<Result<Timestamp, String>> {
    if s.eq_ignore_ascii_case("now") {
        return Some(Ok(Timestamp::now()));
    }
    if let Ok(t) = s.parse::<Timestamp>() {
        return Some(Ok(t));
    }
    if let Ok(z) = s.parse::<Zoned>() {
        return Some(Ok(z.timestamp()));
    }
    if let Ok(date) = Date::strptime("%Y-%m-%d", s) {
        return Some(
            date.to_zoned(TimeZone::system())
                .map(|z| z.timestamp())
                .map_err(|e| format!("{s:?}: {e}")),
        );
    }
    if let Ok(civil) = s.parse::<DateTime>() {
        return Some(
            civil
                .to_zoned(TimeZone::system())
                .map(|z| z.timestamp())
                .map_err(|e| format!("{s:?}: {e}")),
        );
    }
    let span = s.parse::<Span>().ok()?;
    if span.is_positive() {
        return Some(Err(format!(
            "{s:?} is a span, not a time: a time before now is \"{s} ago\" or \"-{s}\""
        )));
    }
    Some(
        Zoned::now()
            .checked_add(span)
            .map(|z| z.timestamp())
            .map_err(|e| format!("{s:?}: {e}")),
    )
}

/// Bytes as text: printable ASCII as is, `\\`, `\n`, `\r`, `\t`, and `\xNN` for the rest;
/// `\"` too when `quote` (for text output, where the string is in double quotes).
pub fn escape(bytes: &[u8], quote: bool) -> String {
    let mut out = String::with_capacity(bytes.len());
    for &b in bytes {
        match b {
            b'\\' => out.push_str("\\\\"),
            b'"' if quote => out.push_str("\\\""),
            b'\n' => out.push_str("\\n"),
            b'\r' => out.push_str("\\r"),
            b'\t' => out.push_str("\\t"),
            0x20..=0x7e => out.push(b as char),
            _ => out.push_str(&format!("\\x{b:02x}")),
        }
    }
    out
}

/// Bytes as lowercase hex.
pub fn hex(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        out.push_str(&format!("{b:02x}"));
    }
    out
}

/// A byte count for people: `1000 B`, `64.0 KiB`, `1.5 GiB`.
pub fn size(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["KiB", "MiB", "GiB", "TiB", "PiB"];
    if bytes < 1024 {
        return format!("{bytes} B");
    }
    let mut v = bytes as f64 / 1024.0;
    let mut unit = 0;
    while v >= 1024.0 && unit + 1 < UNITS.len() {
        v /= 1024.0;
        unit += 1;
    }
    format!("{v:.1} {}", UNITS[unit])
}

/// A spinner with the elapsed time on stderr when stderr is a terminal (for work whose size
/// is not known up front: a backup, a restore, a compaction); hidden otherwise.
pub fn spinner(what: &str) -> ProgressBar {
    if !std::io::stderr().is_terminal() {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr());
    bar.set_style(
        ProgressStyle::with_template("{spinner} {msg} ({elapsed})").expect("a valid template"),
    );
    bar.set_message(what.to_owned());
    bar.enable_steady_tick(std::time::Duration::from_millis(120));
    bar
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_round_trip() {
        assert_eq!(format_micros(0), "1970-01-01T00:00:00.000000Z");
        assert_eq!(
            format_micros(1_700_000_000_123_456),
            "2023-11-14T22:13:20.123456Z"
        );
        assert_eq!(
            format_micros(951_782_400_000_000),
            "2000-02-29T00:00:00.000000Z"
        );
        for t in [
            0,
            1,
            951_782_400_000_000,
            1_700_000_000_123_456,
            4_102_444_800_000_000,
        ] {
            assert_eq!(parse_time(&format_micros(t)), Ok(t));
        }
        assert_eq!(parse_time("1700000000123456"), Ok(1_700_000_000_123_456));
        assert_eq!(
            parse_time("2023-11-15T00:13:20.5+02:00"),
            Ok(1_700_000_000_500_000)
        );
        assert_eq!(
            parse_time("2023-11-14 22:13:20.123456789z"),
            Ok(1_700_000_000_123_456)
        );
        assert_eq!(
            parse_time("2016-12-31T23:59:60Z"),
            parse_time("2016-12-31T23:59:59Z")
        );
        assert_eq!(
            parse_time("2023-11-14T23:13:20[Europe/Paris]"),
            Ok(1_700_000_000_000_000)
        );
        // Past RFC 3339's years: printed as microseconds, which read back.
        assert_eq!(format_micros(u64::MAX), u64::MAX.to_string());
        assert_eq!(parse_time(&format_micros(u64::MAX)), Ok(u64::MAX));
        for bad in [
            "",
            "2023-13-01",
            "2023-02-30",
            "2023-11-14T25:00:00Z",
            "yesterday",
            "tomorrow",
            "1969-12-31T23:59:59Z",
            "2 hours",
            "2h",
            "2 fortnights ago",
        ] {
            let err = parse_time(bad).expect_err(bad);
            assert!(err.contains(&format!("{:?}", bad.trim())), "{bad}: {err}");
        }
        assert!(parse_time("yesterday")
            .unwrap_err()
            .contains("\"2 hours ago\""));
        assert!(parse_time("2h").unwrap_err().contains("\"2h ago\""));
        assert!(parse_time("1969-12-31T23:59:59Z")
            .unwrap_err()
            .contains("before the Unix epoch"));
    }

    /// A date and time without an offset, or a date alone (its midnight), is in the system's
    /// time zone, whichever it is.
    #[test]
    fn civil_times_are_local() {
        for s in [
            "2026-12-05 14:30:00",
            "2026-12-05T14:30",
            "2026-07-01T02:30:00.25",
            "2023-11-14",
        ] {
            let want = s
                .parse::<DateTime>()
                .unwrap()
                .to_zoned(TimeZone::system())
                .unwrap()
                .timestamp()
                .as_microsecond();
            assert_eq!(parse_time(s), Ok(want as u64), "{s}");
        }
    }

    #[test]
    fn relative_times_count_back_from_now() {
        let now = |back: Span| {
            Zoned::now()
                .checked_sub(back)
                .unwrap()
                .timestamp()
                .as_microsecond() as u64
        };
        let hours = |n: i64| Span::new().hours(n);
        for (s, back) in [
            ("2 hours ago", hours(2)),
            ("90 minutes ago", Span::new().minutes(90)),
            ("-2h", hours(2)),
            ("-PT2H", hours(2)),
            ("1 day ago", Span::new().days(1)),
            ("1 day, 6 hours ago", Span::new().days(1).hours(6)),
            ("now", Span::new()),
            ("0s", Span::new()),
        ] {
            let before = now(back);
            let got = parse_time(s).unwrap_or_else(|e| panic!("{s}: {e}"));
            let after = now(back);
            assert!(
                before <= got && got <= after,
                "{s}: {before} <= {got} <= {after}"
            );
        }
    }

    #[test]
    fn escapes() {
        assert_eq!(
            escape(b"a \"b\"\\\n\x00\xff", true),
            "a \\\"b\\\"\\\\\\n\\x00\\xff"
        );
        assert_eq!(escape(b"\"", false), "\"");
        assert_eq!(hex(&[0, 255, 16]), "00ff10");
        assert_eq!(size(1000), "1000 B");
        assert_eq!(size(3463), "3.4 KiB");
        assert_eq!(size(65536), "64.0 KiB");
    }
}
