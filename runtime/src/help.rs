//! Help text that shows a setting's default taken from its constant, so the default is
//! written once: `#[arg(help = with_default("Log format", DEFAULT_LOG_FORMAT))]`.

use std::fmt;
use std::time::Duration;

/// `text [default: default]`, the help line of a setting whose default the code fills in.
/// (A final full stop of `text` is dropped, as clap drops it from doc comments.)
pub fn with_default(text: &str, default: impl fmt::Display) -> String {
    format!(
        "{} [default: {default}]",
        text.strip_suffix('.').unwrap_or(text)
    )
}

/// A duration in the largest unit that divides it (`90d`, `15m`, `50ms`), as the flags
/// accept it.
#[derive(Debug, Clone, Copy)]
pub struct Shown(pub Duration);

impl fmt::Display for Shown {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let millis = self.0.as_millis();
        for (unit, size) in [
            ("d", 86_400_000),
            ("h", 3_600_000),
            ("m", 60_000),
            ("s", 1_000),
        ] {
            if millis >= size && millis.is_multiple_of(size) {
                return write!(f, "{}{unit}", millis / size);
            }
        }
        write!(f, "{millis}ms")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_show_in_their_largest_whole_unit() {
        let shown = |d: Duration| Shown(d).to_string();
        assert_eq!(shown(Duration::from_secs(90 * 86_400)), "90d");
        assert_eq!(shown(Duration::from_secs(24 * 3_600)), "1d");
        assert_eq!(shown(Duration::from_secs(15 * 60)), "15m");
        assert_eq!(shown(Duration::from_secs(2)), "2s");
        assert_eq!(shown(Duration::from_millis(50)), "50ms");
        assert_eq!(shown(Duration::ZERO), "0ms");
        for d in [90 * 86_400, 86_400, 900, 2] {
            let d = Duration::from_secs(d);
            assert_eq!(humantime::parse_duration(&shown(d)).unwrap(), d);
        }
    }
}
