//! Free text from outside — token display names, `User-Agent` headers, administrators'
//! reasons — made safe to store, log and show.
//!
//! Unicode control characters (`Cc`: NUL, CR, LF, ESC, C1 controls…) and the line and
//! paragraph separators become a space: they separate words, but must never split a log line
//! or reach a terminal. Format characters (`Cf`: the bidi overrides and isolates such as
//! U+202E, zero-width space/joiners, U+FEFF, tag characters) are removed: they are invisible,
//! and make one name look like another or reorder what an administrator reads.
//! Leading and trailing whitespace is trimmed.

use unicode_properties::{GeneralCategory, UnicodeGeneralCategory};

/// `text` without control and format characters (see the module docs), trimmed, and at most
/// `max_chars` characters long (counted after cleaning).
pub fn clean(text: &str, max_chars: usize) -> String {
    let cleaned: String = text
        .chars()
        .filter_map(|c| match c.general_category() {
            GeneralCategory::Control
            | GeneralCategory::LineSeparator
            | GeneralCategory::ParagraphSeparator => Some(' '),
            GeneralCategory::Format => None,
            _ => Some(c),
        })
        .collect();
    let kept: String = cleaned.trim().chars().take(max_chars).collect();
    // Cut at `max_chars`, the text may end in whitespace again (found by fuzzing).
    match kept.trim_end().len() {
        len if len == kept.len() => kept,
        len => kept[..len].to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::clean;

    #[test]
    fn controls_become_spaces_and_format_characters_go() {
        assert_eq!(clean("Ada Lovelace", 256), "Ada Lovelace");
        assert_eq!(
            clean("a\0b\r\nc\td\u{1b}[31me\u{85}f", 256),
            "a b  c d [31me f"
        );
        assert_eq!(clean("x\u{2028}y\u{2029}z", 256), "x y z");
        // Bidi override and isolates, zero-width space/joiners, word joiner, BOM, soft hyphen,
        // a tag character.
        assert_eq!(
            clean(
                "\u{202e}nimda\u{202c} \u{2066}a\u{2069}\u{200b}\u{200c}\u{200d}\u{2060}\u{feff}\u{ad}b\u{e0041}",
                256
            ),
            "nimda ab"
        );
        assert_eq!(clean(" \n\u{200b} ", 256), "");
        assert_eq!(clean("  spaced  ", 256), "spaced");
        // Letters, marks and symbols of every script stay.
        assert_eq!(clean("Zoë 李 Ωμέγα 😀", 256), "Zoë 李 Ωμέγα 😀");
        assert_eq!(clean("abcdef", 3), "abc");
        assert_eq!(clean("\u{200b}abcdef", 3), "abc");
    }

    /// Found by the `policy_spec` fuzz target: a revocation reason cut at its limit right after
    /// a run of whitespace kept that whitespace at its end.
    #[test]
    fn text_cut_at_the_limit_is_trimmed_again() {
        assert_eq!(clean("ab   cd", 4), "ab");
        assert_eq!(clean("a\u{3000}\u{3000}b", 2), "a");
        assert_eq!(clean("a\tb", 2), "a");
        let reason = format!("2{}x", " ".repeat(2000));
        assert_eq!(clean(&reason, 1024), "2");
    }
}
