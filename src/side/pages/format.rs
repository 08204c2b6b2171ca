//! How numbers, money and times read on the dashboard.

use time::macros::format_description;
use time::OffsetDateTime;

/// `1234567` -> `1,234,567`.
pub fn int(n: i64) -> String {
    let digits = n.unsigned_abs().to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3 + 1);
    if n < 0 {
        out.push('-');
    }
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// Short numbers for axes and small print: `950`, `1.5K`, `12M`.
pub fn compact(n: f64) -> String {
    let (value, suffix) = if n.abs() >= 1e9 {
        (n / 1e9, "B")
    } else if n.abs() >= 1e6 {
        (n / 1e6, "M")
    } else if n.abs() >= 1e3 {
        (n / 1e3, "K")
    } else {
        (n, "")
    };
    let text = if value.fract().abs() < 0.05 || value.abs() >= 100.0 {
        format!("{value:.0}")
    } else {
        format!("{value:.1}")
    };
    format!("{text}{suffix}")
}

/// Nano-USD as dollars: cents for normal amounts, more digits for tiny ones.
pub fn usd(nanousd: i64) -> String {
    let dollars = nanousd as f64 / 1e9;
    if nanousd == 0 {
        "$0.00".into()
    } else if dollars.abs() < 0.0001 {
        "< $0.0001".into()
    } else if dollars.abs() < 1.0 {
        format!("${dollars:.4}")
    } else {
        let cents = (dollars * 100.0).round() as i64;
        format!("${}.{:02}", int(cents / 100), (cents % 100).abs())
    }
}

/// Whole dollars from the config (`monthly_credits_usd`).
pub fn usd_f(dollars: f64) -> String {
    usd((dollars * 1e9).round() as i64)
}

fn utc(ms: i64) -> OffsetDateTime {
    OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
        .unwrap_or(OffsetDateTime::UNIX_EPOCH)
}

/// `2026-03-05` (UTC).
pub fn date(ms: i64) -> String {
    utc(ms)
        .format(format_description!("[year]-[month]-[day]"))
        .unwrap_or_default()
}

/// `2026-03-05 14:02 UTC`, for tooltips.
pub fn datetime(ms: i64) -> String {
    utc(ms)
        .format(format_description!(
            "[year]-[month]-[day] [hour]:[minute] UTC"
        ))
        .unwrap_or_default()
}

/// `Mar 5, 14:02:33`, for the request log.
pub fn short_time(ms: i64) -> String {
    utc(ms)
        .format(format_description!(
            "[month repr:short] [day padding:none], [hour]:[minute]:[second]"
        ))
        .unwrap_or_default()
}

/// `Mar 5` for a `YYYY-MM-DD` day.
pub fn day_label(day: time::Date) -> String {
    day.format(format_description!("[month repr:short] [day padding:none]"))
        .unwrap_or_default()
}

/// A limit, or the word for none.
pub fn limit(v: Option<u64>, unit: &str) -> String {
    match v {
        Some(n) => format!("{}{unit}", int(n as i64)),
        None => "Unlimited".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers() {
        assert_eq!(int(0), "0");
        assert_eq!(int(999), "999");
        assert_eq!(int(1000), "1,000");
        assert_eq!(int(-1234567), "-1,234,567");
        assert_eq!(compact(950.0), "950");
        assert_eq!(compact(1500.0), "1.5K");
        assert_eq!(compact(2_000_000.0), "2M");
        assert_eq!(usd(0), "$0.00");
        assert_eq!(usd(50), "< $0.0001");
        assert_eq!(usd(1_234_000), "$0.0012");
        assert_eq!(usd(1_234_560_000_000), "$1,234.56");
        assert_eq!(usd_f(10.0), "$10.00");
        assert_eq!(limit(None, "/min"), "Unlimited");
        assert_eq!(limit(Some(60_000), "/min"), "60,000/min");
    }

    #[test]
    fn times() {
        // 2026-03-05 14:02:33 UTC
        let ms = 1_772_719_353_000;
        assert_eq!(date(ms), "2026-03-05");
        assert_eq!(datetime(ms), "2026-03-05 14:02 UTC");
        assert_eq!(short_time(ms), "Mar 5, 14:02:33");
    }
}
