//! Reading a Prometheus registry as a scraper does, for the metrics tests
//! of every backend (`crates/segwal/tests/metrics.rs`,
//! `crates/segwal-nats/tests/metrics.rs`).

/// The text exposition of everything in `registry`.
pub fn scrape(registry: &prometheus::Registry) -> String {
    let mut text = String::new();
    prometheus::TextEncoder::new()
        .encode_utf8(&registry.gather(), &mut text)
        .expect("the families encode");
    text
}

/// The value of the sample line of `text` that starts with `series` (name
/// and labels exactly as exposed); panics, showing `text`, if there is
/// none.
pub fn sample(text: &str, series: &str) -> f64 {
    let line = text
        .lines()
        .find(|line| line.starts_with(series) && line[series.len()..].starts_with(' '))
        .unwrap_or_else(|| panic!("no sample {series} in:\n{text}"));
    line[series.len()..].trim().parse().expect("a number")
}
