//! A hand-written progress bar for stderr: bar, percentage, bytes, throughput, ETA.

use std::io::{IsTerminal, Write};
use std::time::{Duration, Instant};

use super::output::{bytes, clock, rate};

const WIDTH: usize = 24;

/// One line of the bar for `done` of `total` bytes after `elapsed`.
pub fn render(label: &str, done: u64, total: u64, elapsed: Duration) -> String {
    let frac = if total == 0 {
        1.0
    } else {
        (done as f64 / total as f64).min(1.0)
    };
    let filled = (frac * WIDTH as f64).round() as usize;
    let secs = elapsed.as_secs_f64();
    let speed = if secs > 0.0 {
        done as f64 / secs
    } else {
        f64::NAN
    };
    let eta = if speed.is_finite() && speed > 0.0 && done < total {
        clock(Duration::from_secs_f64((total - done) as f64 / speed))
    } else {
        "-".into()
    };
    format!(
        "{label} [{}{}] {:>3.0}% {} / {}  {}  ETA {eta}",
        "#".repeat(filled),
        "-".repeat(WIDTH - filled),
        frac * 100.0,
        bytes(done),
        bytes(total),
        rate(speed),
    )
}

/// Draws [`render`] to stderr at most 10 times a second, only when stderr is a terminal.
pub struct Progress {
    label: String,
    total: u64,
    start: Instant,
    last: Option<Instant>,
    enabled: bool,
}

impl Progress {
    pub fn new(label: &str, total: u64, quiet: bool) -> Progress {
        Progress {
            label: label.into(),
            total,
            start: Instant::now(),
            last: None,
            enabled: !quiet && std::io::stderr().is_terminal(),
        }
    }

    pub fn update(&mut self, done: u64) {
        if !self.enabled {
            return;
        }
        let now = Instant::now();
        if self
            .last
            .is_some_and(|l| now - l < Duration::from_millis(100))
            && done < self.total
        {
            return;
        }
        self.last = Some(now);
        let line = render(&self.label, done, self.total, now - self.start);
        let _ = write!(std::io::stderr(), "\r{line}\x1b[K");
    }

    /// Clears the line.
    pub fn finish(&mut self) {
        if self.enabled && self.last.is_some() {
            let _ = write!(std::io::stderr(), "\r\x1b[K");
        }
    }

    pub fn elapsed(&self) -> Duration {
        self.start.elapsed()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders() {
        let s = render("send", 1 << 20, 4 << 20, Duration::from_secs(1));
        assert_eq!(
            s,
            "send [######------------------]  25% 1.0 MiB / 4.0 MiB  1.0 MiB/s  ETA 0:03"
        );
        let s = render("recv", 10, 10, Duration::from_secs(2));
        assert!(s.contains("100%") && s.ends_with("ETA -"), "{s}");
        let s = render("recv", 0, 0, Duration::ZERO);
        assert!(s.contains("100%"), "{s}");
    }
}
