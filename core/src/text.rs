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
    // Printable ASCII (every `User-Agent` of a real browser, on every check) has no control or
    // format character and no whitespace but the space: only the trim and the cut apply, one
    // copy instead of three and no per-character table lookup.
    if text.bytes().all(|b| matches!(b, b' '..=b'~')) {
        let trimmed = text.trim_matches(' ');
        let kept = &trimmed[..trimmed.len().min(max_chars)];
        return kept.trim_end_matches(' ').to_owned();
    }
    clean_any(text, max_chars)
}

/// [`clean`] for any text: every character looked up.
fn clean_any(text: &str, max_chars: usize) -> String {
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
    use super::{clean, clean_any};

    /// The printable-ASCII shortcut gives what the general path gives.
    #[test]
    fn printable_ascii_takes_the_shortcut_with_the_same_result() {
        let agent = "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36";
        let mut samples: Vec<String> = vec![
            String::new(),
            " ".into(),
            "   ".into(),
            "a".into(),
            " a ".into(),
            "ab   cd".into(),
            "~!@#$%^&*()_+{}|:\"<>?`-=[];',./".into(),
            agent.into(),
            format!("  {agent}  "),
        ];
        // Pseudo-random printable ASCII with runs of spaces, of every length up to 40.
        let mut state: u32 = 0x9e37_79b9;
        for len in 0..40 {
            let text: String = (0..len)
                .map(|_| {
                    state = state.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
                    match (state >> 24) % 4 {
                        0 => ' ',
                        _ => char::from(b' ' + ((state >> 8) % 95) as u8),
                    }
                })
                .collect();
            samples.push(text);
        }
        for text in &samples {
            for max in [0, 1, 2, 3, 5, 8, 64, 512, usize::MAX] {
                assert_eq!(clean(text, max), clean_any(text, max), "{text:?} at {max}");
            }
        }
        // Anything else takes the general path: a tab, DEL, a non-ASCII letter.
        assert_eq!(clean("a\tb", 256), "a b");
        assert_eq!(clean("a\u{7f}b", 256), "a b");
        assert_eq!(clean(" Zoë ", 256), "Zoë");
    }

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
