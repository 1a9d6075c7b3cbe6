//! Formatting and parsing shared by the subcommands: times, byte strings, sizes, progress.

use std::io::IsTerminal;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

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
/// `2023-11-14T22:13:20.123456Z`.
pub fn format_micros(micros: u64) -> String {
    let secs = micros / 1_000_000;
    let frac = micros % 1_000_000;
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    let (y, m, d) = civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{frac:06}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// Days since 1970-01-01 to (year, month, day), proleptic Gregorian (H. Hinnant's algorithm).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

/// (year, month, day) to days since 1970-01-01.
fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let m = i64::from(m);
    let mp = if m > 2 { m - 3 } else { m + 9 };
    let doy = (153 * mp + 2) / 5 + i64::from(d) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// Parses a time given on the command line: microseconds since the Unix epoch (digits only),
/// or RFC 3339 (`2024-05-01T12:00:00Z`, `2024-05-01T14:00:00.25+02:00`, `2024-05-01`
/// for midnight UTC). Returns microseconds since the epoch.
pub fn parse_time(s: &str) -> Result<u64, String> {
    let s = s.trim();
    if !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) {
        return s
            .parse()
            .map_err(|_| format!("{s:?}: too large for microseconds since the epoch"));
    }
    parse_rfc3339(s).ok_or_else(|| {
        format!(
            "{s:?} is neither RFC 3339 (2024-05-01T12:00:00Z, 2024-05-01T12:00:00.5+02:00, 2024-05-01) nor microseconds since the Unix epoch"
        )
    })
}

fn parse_rfc3339(s: &str) -> Option<u64> {
    let b = s.as_bytes();
    let num = |from: usize, len: usize| -> Option<i64> {
        let part = b.get(from..from + len)?;
        part.iter()
            .all(u8::is_ascii_digit)
            .then(|| std::str::from_utf8(part).ok()?.parse().ok())?
    };
    let (y, mo, d) = (num(0, 4)?, num(5, 2)?, num(8, 2)?);
    if b.get(4) != Some(&b'-') || b.get(7) != Some(&b'-') {
        return None;
    }
    if !(1..=12).contains(&mo) || d < 1 || d > days_in_month(y, mo as u32) {
        return None;
    }
    let days = days_from_civil(y, mo as u32, d as u32);
    let mut secs = days * 86_400;
    let mut micros = 0i64;
    if b.len() > 10 {
        if !matches!(b[10], b'T' | b't' | b' ') || b.get(13) != Some(&b':') {
            return None;
        }
        let (h, mi) = (num(11, 2)?, num(14, 2)?);
        if b.get(16) != Some(&b':') {
            return None;
        }
        let sec = num(17, 2)?;
        if h > 23 || mi > 59 || sec > 60 {
            return None;
        }
        secs += h * 3600 + mi * 60 + sec.min(59);
        let mut i = 19;
        if b.get(i) == Some(&b'.') {
            i += 1;
            let start = i;
            while b.get(i).is_some_and(u8::is_ascii_digit) {
                i += 1;
            }
            if i == start {
                return None;
            }
            let digits = &s[start..i];
            let six: String = digits
                .chars()
                .chain(std::iter::repeat('0'))
                .take(6)
                .collect();
            micros = six.parse().ok()?;
        }
        match b.get(i) {
            Some(b'Z' | b'z') if i + 1 == b.len() => {}
            Some(&sign @ (b'+' | b'-')) if i + 6 == b.len() && b[i + 3] == b':' => {
                let (oh, om) = (num(i + 1, 2)?, num(i + 4, 2)?);
                if oh > 23 || om > 59 {
                    return None;
                }
                let offset = oh * 3600 + om * 60;
                secs += if sign == b'+' { -offset } else { offset };
            }
            _ => return None,
        }
    }
    let total = secs.checked_mul(1_000_000)?.checked_add(micros)?;
    u64::try_from(total).ok()
}

fn days_in_month(y: i64, m: u32) -> i64 {
    match m {
        2 if (y % 4 == 0 && y % 100 != 0) || y % 400 == 0 => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
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
        assert_eq!(parse_time("2023-11-14"), Ok(1_699_920_000_000_000));
        for bad in [
            "",
            "2023-13-01",
            "2023-02-30",
            "2023-11-14T25:00:00Z",
            "yesterday",
            "2023-11-14T10:00:00",
        ] {
            assert!(parse_time(bad).is_err(), "{bad}");
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
