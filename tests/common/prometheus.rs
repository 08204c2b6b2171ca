//! Reading the Prometheus text exposition of `/metrics`.

/// Sum of the samples of `name` whose labels include every pair of `labels`
/// (`&[]` matches every series of `name`), or None when no such sample exists.
pub fn sample(text: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    let mut found = None;
    for line in text.lines() {
        if line.starts_with('#') || line.trim().is_empty() {
            continue;
        }
        let (series, value) = line.rsplit_once(' ').expect("`series value` lines");
        let (metric, label_text) = match series.split_once('{') {
            Some((m, rest)) => (m, rest.trim_end_matches('}')),
            None => (series, ""),
        };
        if metric != name {
            continue;
        }
        let matches = labels.iter().all(|(k, v)| {
            label_text
                .split(',')
                .any(|pair| pair == format!("{k}=\"{v}\""))
        });
        if matches {
            let v: f64 = value.parse().expect("numeric sample value");
            *found.get_or_insert(0.0) += v;
        }
    }
    found
}
