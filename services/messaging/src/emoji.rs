//! What counts as a reaction emoji: one Unicode emoji sequence or a short
//! name. The grammar follows the shapes of Unicode's emoji sequences (UTS
//! #51): a base emoji with an optional presentation selector, skin tone or
//! keycap; several such elements joined by ZERO WIDTH JOINER; a flag made of
//! two regional indicators; or a black flag followed by tag characters.

/// The longest Unicode emoji accepted, in bytes of UTF-8.
const MAX_EMOJI_BYTES: usize = 32;
/// The longest short name accepted, in characters.
const MAX_NAME: usize = 64;

const ZWJ: char = '\u{200D}';
const VARIATION_TEXT: char = '\u{FE0E}';
const VARIATION_EMOJI: char = '\u{FE0F}';
const KEYCAP: char = '\u{20E3}';
const BLACK_FLAG: char = '\u{1F3F4}';
const CANCEL_TAG: char = '\u{E007F}';

/// The emoji as stored: a Unicode emoji as given, a short name without its
/// colons. The error says what is wrong, for a field violation.
pub fn parse(raw: &str) -> Result<String, &'static str> {
    if raw.is_empty() {
        return Err("is required");
    }
    let name = raw.strip_prefix(':').and_then(|n| n.strip_suffix(':')).unwrap_or(raw);
    if name.is_ascii() {
        return if !name.is_empty()
            && name.len() <= MAX_NAME
            && name.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "_+-".contains(c))
        {
            Ok(name.to_string())
        } else {
            Err("must be one emoji or a short name of 1 to 64 characters from a-z, 0-9, '_', '+' and '-'")
        };
    }
    if raw.len() > MAX_EMOJI_BYTES {
        return Err("must be one emoji of at most 32 bytes");
    }
    if is_emoji_sequence(raw) { Ok(raw.to_string()) } else { Err("must be exactly one emoji") }
}

fn is_emoji_sequence(s: &str) -> bool {
    let chars: Vec<char> = s.chars().collect();
    if let [a, b] = chars.as_slice()
        && is_regional_indicator(*a)
        && is_regional_indicator(*b)
    {
        return true;
    }
    if chars.first() == Some(&BLACK_FLAG) && chars.len() > 2 {
        let (tags, end) = chars[1..].split_at(chars.len() - 2);
        return end == [CANCEL_TAG] && tags.iter().all(|c| ('\u{E0020}'..='\u{E007E}').contains(c));
    }
    chars.split(|c| *c == ZWJ).all(is_element)
}

/// One element of a ZWJ sequence: a base with at most one modifier, or a
/// keycap.
fn is_element(element: &[char]) -> bool {
    match element {
        [key, VARIATION_EMOJI, KEYCAP] | [key, KEYCAP] => key.is_ascii_digit() || *key == '#' || *key == '*',
        [base] => is_base(*base),
        [base, modifier] => {
            is_base(*base) && (is_skin_tone(*modifier) || *modifier == VARIATION_EMOJI || *modifier == VARIATION_TEXT)
        }
        [base, VARIATION_EMOJI, modifier] => is_base(*base) && is_skin_tone(*modifier),
        _ => false,
    }
}

fn is_regional_indicator(c: char) -> bool {
    ('\u{1F1E6}'..='\u{1F1FF}').contains(&c)
}

fn is_skin_tone(c: char) -> bool {
    ('\u{1F3FB}'..='\u{1F3FF}').contains(&c)
}

/// Code points that are emoji on their own (the blocks of Unicode's emoji
/// data, less the modifiers, joiners and indicators handled above).
fn is_base(c: char) -> bool {
    matches!(c,
        '\u{00A9}' | '\u{00AE}' | '\u{203C}' | '\u{2049}' | '\u{2122}' | '\u{2139}'
        | '\u{2194}'..='\u{21AA}'
        | '\u{231A}'..='\u{23FF}'
        | '\u{24C2}'
        | '\u{25AA}'..='\u{25FE}'
        | '\u{2600}'..='\u{27BF}'
        | '\u{2934}' | '\u{2935}'
        | '\u{2B05}'..='\u{2B55}'
        | '\u{3030}' | '\u{303D}' | '\u{3297}' | '\u{3299}'
        | '\u{1F000}'..='\u{1F1E5}'
        | '\u{1F200}'..='\u{1F3FA}'
        | '\u{1F400}'..='\u{1FAFF}')
}

#[cfg(test)]
mod tests {
    use super::parse;

    #[test]
    fn accepts_emoji_sequences() {
        for ok in [
            "👍",
            "👍🏽",
            "❤️",
            "☺",
            "🇫🇷",
            "1️⃣",
            "#⃣",
            "👩‍💻",
            "👨‍👩‍👧‍👦",
            "🏳️‍🌈",
            "🧑🏿‍🚀",
            "🏴\u{E0067}\u{E0062}\u{E0073}\u{E0063}\u{E0074}\u{E007F}",
        ] {
            assert_eq!(parse(ok).as_deref(), Ok(ok), "{ok:?}");
        }
    }

    #[test]
    fn accepts_short_names_with_or_without_colons() {
        assert_eq!(parse("thumbsup").as_deref(), Ok("thumbsup"));
        assert_eq!(parse(":+1:").as_deref(), Ok("+1"));
        assert_eq!(parse(":white_check_mark:").as_deref(), Ok("white_check_mark"));
    }

    #[test]
    fn refuses_anything_else() {
        for bad in [
            "",
            "::",
            "Thumbsup",
            "thumbs up",
            ":thumbsup",
            &"a".repeat(65),
            "é",
            "👍👍",
            "👍 ",
            "🇫",
            "🇫🇷🇫",
            "\u{200D}👍",
            "👍\u{200D}",
            "🏽",
            "x👍",
            "\u{FE0F}",
            "👩‍👩‍👩‍👩‍👩‍👩",
        ] {
            assert!(parse(bad).is_err(), "{bad:?} should be refused");
        }
    }
}
