//! The overview's usage chart: tokens per day as bars, requests per day as a
//! line, computed here and drawn by the template as inline SVG (no script, and
//! only presentation attributes and classes: the pages' CSP forbids inline styles).

use time::{Date, Duration};

use super::format::{compact, day_label, int};
use crate::store::UsageTotals;

pub const WIDTH: f64 = 960.0;
pub const HEIGHT: f64 = 280.0;
const LEFT: f64 = 56.0;
const RIGHT: f64 = 48.0;
const TOP: f64 = 16.0;
const BOTTOM: f64 = 32.0;
/// Grid lines above the baseline.
const STEPS: u16 = 4;

pub struct Bar {
    pub x: String,
    pub y: String,
    pub w: String,
    pub h: String,
}

pub struct Dot {
    pub cx: String,
    pub cy: String,
}

/// One day: its bar, its point on the line and a hover area with a tooltip.
pub struct Day {
    pub bar: Option<Bar>,
    /// Only days with requests get a dot; the line runs through every day.
    pub dot: Option<Dot>,
    pub hit_x: String,
    pub hit_w: String,
    pub tooltip: String,
}

pub struct Tick {
    /// Position along the axis (y for value ticks, x for day labels).
    pub at: String,
    pub label: String,
}

pub struct Chart {
    pub empty: bool,
    pub view_box: String,
    pub days: Vec<Day>,
    /// `points` of the requests polyline.
    pub line: String,
    pub grid: Vec<Tick>,
    /// Labels of the grid lines for tokens (left) and requests (right).
    pub left: Vec<Tick>,
    pub right: Vec<Tick>,
    pub x_labels: Vec<Tick>,
    pub plot_left: String,
    pub plot_right: String,
    pub plot_bottom: String,
    pub left_label_x: String,
    pub right_label_x: String,
    pub x_label_y: String,
    pub summary: String,
}

/// The smallest of 1, 2, 2.5, 5 x 10^k at or above `v` (a round step).
fn nice_ceil(v: f64) -> f64 {
    if v <= 0.0 {
        return 1.0;
    }
    let exp = v.log10().floor();
    let base = 10f64.powf(exp);
    for m in [1.0, 2.0, 2.5, 5.0, 10.0] {
        if v <= m * base * (1.0 + 1e-9) {
            return m * base;
        }
    }
    10.0 * base
}

/// An axis maximum that `STEPS` round ticks divide; whole ticks when `whole`.
fn axis_max(max: i64, whole: bool) -> f64 {
    let step = nice_ceil(max as f64 / f64::from(STEPS));
    let step = if whole { step.ceil().max(1.0) } else { step };
    step * f64::from(STEPS)
}

fn n(v: f64) -> String {
    format!("{v:.1}")
}

/// `rows` are per-day totals (`group` = `YYYY-MM-DD`); days without a row are zero.
pub fn build(rows: &[UsageTotals], from: Date, days: u16) -> Chart {
    let series: Vec<(Date, i64, i64)> = (0..days)
        .map(|i| {
            let day = from + Duration::days(i64::from(i));
            let key = day.to_string();
            let (tokens, requests) = rows.iter().find(|r| r.group == key).map_or((0, 0), |r| {
                (r.prompt_tokens + r.completion_tokens, r.requests)
            });
            (day, tokens, requests)
        })
        .collect();
    let total_tokens: i64 = series.iter().map(|s| s.1).sum();
    let total_requests: i64 = series.iter().map(|s| s.2).sum();
    let max_tokens = axis_max(series.iter().map(|s| s.1).max().unwrap_or(0), true);
    // Requests get their own scale (the right axis).
    let max_requests = axis_max(series.iter().map(|s| s.2).max().unwrap_or(0), true);
    let plot_w = WIDTH - LEFT - RIGHT;
    let plot_h = HEIGHT - TOP - BOTTOM;
    let slot = plot_w / f64::from(days.max(1));
    let bar_w = (slot * 0.62).max(1.0);
    let bottom = TOP + plot_h;
    let y_of = |v: f64, max: f64| bottom - (v / max) * plot_h;

    let mut line = Vec::new();
    let day_views = series
        .iter()
        .enumerate()
        .map(|(i, &(day, tokens, requests))| {
            let x0 = LEFT + slot * i as f64;
            let center = x0 + slot / 2.0;
            let bar = (tokens > 0).then(|| {
                // At least 2 units tall, so a small day is still visible.
                let h = ((tokens as f64 / max_tokens) * plot_h).max(2.0);
                Bar {
                    x: n(center - bar_w / 2.0),
                    y: n(bottom - h),
                    w: n(bar_w),
                    h: n(h),
                }
            });
            let cy = y_of(requests as f64, max_requests);
            line.push(format!("{},{}", n(center), n(cy)));
            Day {
                bar,
                dot: (requests > 0).then(|| Dot {
                    cx: n(center),
                    cy: n(cy),
                }),
                hit_x: n(x0),
                hit_w: n(slot),
                tooltip: format!(
                    "{}: {} tokens, {} requests",
                    day_label(day),
                    int(tokens),
                    int(requests)
                ),
            }
        })
        .collect();

    let steps = STEPS;
    let mut grid = Vec::new();
    let mut left = Vec::new();
    let mut right = Vec::new();
    for s in 0..=steps {
        let f = f64::from(s) / f64::from(steps);
        let at = n(bottom - f * plot_h);
        grid.push(Tick {
            at: at.clone(),
            label: String::new(),
        });
        left.push(Tick {
            at: n(bottom - f * plot_h + 4.0),
            label: compact(max_tokens * f),
        });
        right.push(Tick {
            at: n(bottom - f * plot_h + 4.0),
            label: compact(max_requests * f),
        });
    }
    let x_labels = series
        .iter()
        .enumerate()
        .filter(|(i, _)| i % 5 == 0 || *i + 1 == series.len())
        .filter(|(i, _)| *i + 1 == series.len() || series.len() - 1 - i >= 3)
        .map(|(i, &(day, _, _))| Tick {
            at: n(LEFT + slot * i as f64 + slot / 2.0),
            label: day_label(day),
        })
        .collect();
    Chart {
        empty: total_tokens == 0 && total_requests == 0,
        view_box: format!("0 0 {WIDTH} {HEIGHT}"),
        days: day_views,
        line: line.join(" "),
        grid,
        left,
        right,
        x_labels,
        plot_left: n(LEFT),
        plot_right: n(WIDTH - RIGHT),
        plot_bottom: n(bottom),
        left_label_x: n(LEFT - 8.0),
        right_label_x: n(WIDTH - RIGHT + 8.0),
        x_label_y: n(HEIGHT - 10.0),
        summary: format!(
            "Tokens and requests per day over the last {days} days: {} tokens, {} requests in total.",
            int(total_tokens),
            int(total_requests)
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::date;

    fn day(group: &str, requests: i64, tokens: i64) -> UsageTotals {
        UsageTotals {
            group: group.into(),
            requests,
            prompt_tokens: tokens,
            completion_tokens: 0,
            cached_tokens: 0,
            cache_write_tokens: 0,
            reasoning_tokens: 0,
            cost_nanousd: 0,
        }
    }

    #[test]
    fn scales() {
        assert_eq!(nice_ceil(0.0), 1.0);
        assert_eq!(nice_ceil(7.0), 10.0);
        assert_eq!(nice_ceil(10.0), 10.0);
        assert_eq!(nice_ceil(11.0), 20.0);
        assert_eq!(nice_ceil(2100.0), 2500.0);
        assert_eq!(nice_ceil(4.0), 5.0);
        assert_eq!(axis_max(0, true), 4.0);
        assert_eq!(axis_max(3, true), 4.0);
        assert_eq!(axis_max(5, true), 8.0);
        assert_eq!(axis_max(28, true), 40.0);
        assert_eq!(axis_max(1700, true), 2000.0);
    }

    #[test]
    fn empty_and_filled() {
        let c = build(&[], date!(2026 - 03 - 01), 30);
        assert!(c.empty);
        assert_eq!(c.days.len(), 30);
        assert!(c.days.iter().all(|d| d.bar.is_none()));

        let c = build(
            &[day("2026-03-01", 2, 100), day("2026-03-30", 4, 400)],
            date!(2026 - 03 - 01),
            30,
        );
        assert!(!c.empty);
        assert!(c.days[0].bar.is_some() && c.days[29].bar.is_some());
        assert!(c.days[1].bar.is_none());
        assert_eq!(c.days[29].tooltip, "Mar 30: 400 tokens, 4 requests");
        // The tallest bar reaches the top of the plot (400 tokens is a round maximum).
        assert_eq!(c.days[29].bar.as_ref().unwrap().y, n(TOP));
        assert!(c.days[1].dot.is_none() && c.days[29].dot.is_some());
        assert_eq!(c.line.split(' ').count(), 30);
        assert_eq!(c.left.last().unwrap().label, "400");
        assert_eq!(c.x_labels.first().unwrap().label, "Mar 1");
        assert_eq!(c.x_labels.last().unwrap().label, "Mar 30");
    }
}
