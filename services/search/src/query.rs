//! The query language: words, `prefixes*`, "quoted phrases", `-negations`
//! and `key:value` filters (see `SearchMessagesRequest.query`), parsed once
//! into clauses that every index and the matcher understand alike.

use tantivy::tokenizer::TextAnalyzer;

use crate::analysis::{self, query_analyzer};

/// One thing the text must (or must not) contain, as analyzed terms.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Clause {
    /// A single term.
    Term(String),
    /// Terms starting with this.
    Prefix(String),
    /// Terms in a row.
    Phrase(Vec<String>),
    /// Terms in a row, the last one only its start.
    PhrasePrefix(Vec<String>),
}

impl Clause {
    /// Every term but the last must match whole; the last one may be a
    /// prefix.
    pub fn terms(&self) -> (&[String], bool) {
        match self {
            Clause::Term(t) | Clause::Prefix(t) => (std::slice::from_ref(t), matches!(self, Clause::Prefix(_))),
            Clause::Phrase(ts) => (ts, false),
            Clause::PhrasePrefix(ts) => (ts, true),
        }
    }
}

/// The filters written in a query.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Filters {
    /// `from:@username`, each as written (without the @).
    pub from_usernames: Vec<String>,
    /// `in:#name`, each as written (without the #).
    pub in_channels: Vec<String>,
    pub has_file: bool,
    pub has_link: bool,
    pub is_thread: bool,
    /// Microseconds since the epoch: only what was sent before / at or after.
    pub before: Option<i64>,
    pub after: Option<i64>,
}

/// A parsed query.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Parsed {
    pub must: Vec<Clause>,
    pub must_not: Vec<Clause>,
    pub filters: Filters,
}

impl Parsed {
    /// Nothing to look for: no clause and no filter.
    pub fn is_empty(&self) -> bool {
        self.must.is_empty() && self.must_not.is_empty() && self.filters == Filters::default()
    }
}

/// Why a query was refused; the message is for the person who typed it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct QueryError(pub String);

const DAY_MICROS: i64 = 86_400_000_000;

/// Parses a query. `filters_allowed` is false for queries over names
/// (users), where `key:value` is just text.
pub fn parse(raw: &str, filters_allowed: bool) -> Result<Parsed, QueryError> {
    let mut analyzer = query_analyzer();
    let mut parsed = Parsed::default();
    for piece in pieces(raw) {
        if piece.quoted {
            // "a phrase ending in a prefix*" is allowed too.
            if let Some(clause) = word(&mut analyzer, piece.text.trim_end()) {
                push(&mut parsed, clause, piece.negated);
            }
            continue;
        }
        if filters_allowed
            && !piece.negated
            && let Some((key, value)) = piece.text.split_once(':')
            && filter(&mut parsed.filters, &key.to_ascii_lowercase(), value)?
        {
            continue;
        }
        if let Some(clause) = word(&mut analyzer, &piece.text) {
            push(&mut parsed, clause, piece.negated);
        }
    }
    Ok(parsed)
}

fn push(parsed: &mut Parsed, clause: Clause, negated: bool) {
    let list = if negated { &mut parsed.must_not } else { &mut parsed.must };
    if !list.contains(&clause) {
        list.push(clause);
    }
}

/// Applies a `key:value` filter; false when `key` is not a filter's name
/// (the word is then searched as text, as in `http://example.com`).
fn filter(filters: &mut Filters, key: &str, value: &str) -> Result<bool, QueryError> {
    let missing = || QueryError(format!("{key}: needs a value"));
    match key {
        "from" => {
            let name = value.trim_start_matches('@');
            if name.is_empty() {
                return Err(missing());
            }
            filters.from_usernames.push(name.to_lowercase());
        }
        "in" => {
            let name = value.trim_start_matches('#');
            if name.is_empty() {
                return Err(missing());
            }
            filters.in_channels.push(name.to_lowercase());
        }
        "has" => match value.to_ascii_lowercase().as_str() {
            "file" | "files" | "attachment" => filters.has_file = true,
            "link" | "links" => filters.has_link = true,
            _ => return Err(QueryError(format!("has:{value} is not known; use has:file or has:link"))),
        },
        "is" => match value.to_ascii_lowercase().as_str() {
            "thread" => filters.is_thread = true,
            _ => return Err(QueryError(format!("is:{value} is not known; use is:thread"))),
        },
        "before" | "after" | "on" | "during" => {
            let day = day_start(value).ok_or_else(|| {
                QueryError(format!("{key}:{value} is not a date; write it as YYYY-MM-DD, such as 2026-11-30"))
            })?;
            match key {
                "before" => filters.before = Some(filters.before.map_or(day, |b| b.min(day))),
                "after" => filters.after = Some(filters.after.map_or(day + DAY_MICROS, |a| a.max(day + DAY_MICROS))),
                _ => {
                    filters.after = Some(filters.after.map_or(day, |a| a.max(day)));
                    filters.before = Some(filters.before.map_or(day + DAY_MICROS, |b| b.min(day + DAY_MICROS)));
                }
            }
        }
        _ => return Ok(false),
    }
    Ok(true)
}

/// The start of a day (`YYYY-MM-DD`, UTC) in microseconds since the epoch.
fn day_start(value: &str) -> Option<i64> {
    let mut parts = value.split('-');
    let year: i64 = parts.next()?.parse().ok()?;
    let month: i64 = parts.next()?.parse().ok()?;
    let day: i64 = parts.next()?.parse().ok()?;
    if parts.next().is_some() || !(1970..=9999).contains(&year) || !(1..=12).contains(&month) {
        return None;
    }
    let leap = (year % 4 == 0 && year % 100 != 0) || year % 400 == 0;
    let month_days = [31, if leap { 29 } else { 28 }, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31];
    let in_month = month_days[usize::try_from(month - 1).ok()?];
    if !(1..=in_month).contains(&day) {
        return None;
    }
    Some(days_from_civil(year, month, day) * DAY_MICROS)
}

/// Days since 1970-01-01 of a proleptic Gregorian date.
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

fn phrase(analyzer: &mut TextAnalyzer, text: &str) -> Option<Clause> {
    let terms: Vec<String> = analysis::terms(analyzer, text).into_iter().map(|t| t.text).collect();
    match terms.len() {
        0 => None,
        1 => terms.into_iter().next().map(Clause::Term),
        _ => Some(Clause::Phrase(terms)),
    }
}

fn word(analyzer: &mut TextAnalyzer, text: &str) -> Option<Clause> {
    let Some(stem) = text.strip_suffix('*') else { return phrase(analyzer, text) };
    let mut terms: Vec<String> = analysis::terms(analyzer, stem).into_iter().map(|t| t.text).collect();
    match terms.len() {
        0 => None,
        1 => terms.pop().map(Clause::Prefix),
        _ => Some(Clause::PhrasePrefix(terms)),
    }
}

/// A word or a quoted phrase of the raw query.
struct Piece {
    text: String,
    quoted: bool,
    negated: bool,
}

/// Splits on white space, keeping "quoted phrases" (an unclosed quote runs
/// to the end) together; a leading - negates.
fn pieces(raw: &str) -> Vec<Piece> {
    let mut out = Vec::new();
    let mut chars = raw.chars().peekable();
    loop {
        while chars.peek().is_some_and(|c| c.is_whitespace()) {
            chars.next();
        }
        let Some(&first) = chars.peek() else { break };
        let mut negated = false;
        if first == '-' {
            chars.next();
            negated = true;
        }
        if chars.peek() == Some(&'"') {
            chars.next();
            let text: String = chars.by_ref().take_while(|c| *c != '"').collect();
            out.push(Piece { text, quoted: true, negated });
            continue;
        }
        let mut text = String::new();
        while let Some(&c) = chars.peek() {
            if c.is_whitespace() {
                break;
            }
            text.push(c);
            chars.next();
        }
        if !text.is_empty() {
            out.push(Piece { text, quoted: false, negated });
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn term(t: &str) -> Clause {
        Clause::Term(t.into())
    }

    #[test]
    fn words_phrases_prefixes_and_negations() {
        let parsed = parse(r#"Deploy* "Release Notes" -draft café e-mail"#, true).expect("parses");
        assert_eq!(
            parsed.must,
            vec![
                Clause::Prefix("deploy".into()),
                Clause::Phrase(vec!["release".into(), "notes".into()]),
                term("cafe"),
                Clause::Phrase(vec!["e".into(), "mail".into()]),
            ]
        );
        assert_eq!(parsed.must_not, vec![term("draft")]);
    }

    #[test]
    fn filters_are_taken_out_of_the_text() {
        let parsed = parse("from:@Ann in:#General has:file has:link is:thread report", true).expect("parses");
        assert_eq!(parsed.must, vec![term("report")]);
        let f = parsed.filters;
        assert_eq!(f.from_usernames, vec!["ann".to_string()]);
        assert_eq!(f.in_channels, vec!["general".to_string()]);
        assert!(f.has_file && f.has_link && f.is_thread);
    }

    #[test]
    fn dates_are_whole_days_in_utc() {
        let parsed = parse("before:2026-11-30 after:2026-11-01", true).expect("parses");
        // 2026-11-30T00:00:00Z and 2026-11-02T00:00:00Z.
        assert_eq!(parsed.filters.before, Some(1_795_996_800_000_000));
        assert_eq!(parsed.filters.after, Some(1_795_996_800_000_000 - 28 * DAY_MICROS));
        let on = parse("on:1970-01-02", true).expect("parses").filters;
        assert_eq!((on.after, on.before), (Some(DAY_MICROS), Some(2 * DAY_MICROS)));
    }

    #[test]
    fn bad_filters_say_what_is_wrong() {
        for bad in ["before:yesterday", "after:2026-02-30", "has:cats", "is:open", "from:@", "in:#"] {
            let err = parse(bad, true).expect_err(bad);
            assert!(err.0.contains(bad.split(':').next().unwrap_or_default()), "{bad}: {}", err.0);
        }
    }

    #[test]
    fn unknown_keys_and_names_are_text() {
        let parsed = parse("http://example.com", true).expect("parses");
        assert_eq!(parsed.must, vec![Clause::Phrase(vec!["http".into(), "example".into(), "com".into()])]);
        let names = parse("from:ann", false).expect("parses");
        assert_eq!(names.must, vec![Clause::Phrase(vec!["from".into(), "ann".into()])]);
    }

    #[test]
    fn cjk_words_are_phrases_of_bigrams() {
        let parsed = parse("東京都 京", true).expect("parses");
        assert_eq!(parsed.must, vec![Clause::Phrase(vec!["東京".into(), "京都".into()]), term("京")]);
    }

    #[test]
    fn punctuation_alone_is_nothing_to_search() {
        assert!(parse("!!! --- \"\"", true).expect("parses").is_empty());
    }
}
