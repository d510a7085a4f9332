//! Whether a text matches a parsed query, and where: the check of each hit
//! against the text as it is now (the index may lag behind an edit), and
//! the highlights, made here for every index alike.

use colink_proto::search::v1::{Excerpt, Highlight, TextRange};
use tantivy::tokenizer::TextAnalyzer;

use crate::analysis::{self, Term, index_analyzer};
use crate::query::{Clause, Parsed};

/// The longest excerpt, in characters.
const EXCERPT_CHARS: usize = 200;
/// Context kept before the first match of an excerpt, in characters.
const LEAD_CHARS: usize = 60;
/// Excerpts per field.
const MAX_EXCERPTS: usize = 3;

/// A text's terms, ready to be matched against queries.
pub struct Analyzed<'t> {
    text: &'t str,
    terms: Vec<Term>,
}

impl<'t> Analyzed<'t> {
    pub fn new(analyzer: &mut TextAnalyzer, text: &'t str) -> Self {
        Self { text, terms: analysis::terms(analyzer, text) }
    }

    /// The byte ranges where a clause matches; empty when it does not.
    fn matches(&self, clause: &Clause) -> Vec<(usize, usize)> {
        let (wanted, last_is_prefix) = clause.terms();
        let Some((last, init)) = wanted.split_last() else { return Vec::new() };
        let fits = |term: &Term, i: usize| {
            if i == init.len() {
                if last_is_prefix { term.text.starts_with(last.as_str()) } else { term.text == *last }
            } else {
                term.text == init[i]
            }
        };
        let mut found = Vec::new();
        for first in self.terms.iter().filter(|t| fits(t, 0)) {
            // Each following term at the next position.
            let mut end = first.end;
            let mut whole = true;
            for i in 1..wanted.len() {
                match self.terms.iter().find(|t| t.position == first.position + i && fits(t, i)) {
                    Some(next) => end = end.max(next.end),
                    None => {
                        whole = false;
                        break;
                    }
                }
            }
            if whole {
                found.push((first.start, end));
            }
        }
        found
    }

    /// Whether the text satisfies every clause of the query (filters are
    /// checked elsewhere).
    pub fn satisfies(&self, query: &Parsed) -> bool {
        query.must.iter().all(|c| !self.matches(c).is_empty())
            && query.must_not.iter().all(|c| self.matches(c).is_empty())
    }

    /// The highlights of the query's clauses in this text, as `field`.
    pub fn highlight(&self, field: &str, query: &Parsed) -> Option<Highlight> {
        let mut ranges: Vec<(usize, usize)> = query.must.iter().flat_map(|c| self.matches(c)).collect();
        if ranges.is_empty() {
            return None;
        }
        ranges.sort_unstable();
        let mut merged: Vec<(usize, usize)> = Vec::with_capacity(ranges.len());
        for (start, end) in ranges {
            match merged.last_mut() {
                Some(last) if start <= last.1 => last.1 = last.1.max(end),
                _ => merged.push((start, end)),
            }
        }
        let excerpts = excerpts(self.text, &merged);
        let fragments = excerpts.iter().map(html).collect();
        Some(Highlight { field: field.to_string(), fragments, excerpts })
    }
}

/// Whether `text` matches the query, and its highlight as `field` if so.
pub fn check(text: &str, field: &str, query: &Parsed) -> Option<Option<Highlight>> {
    let mut analyzer = index_analyzer();
    let analyzed = Analyzed::new(&mut analyzer, text);
    analyzed.satisfies(query).then(|| analyzed.highlight(field, query))
}

/// Whether every clause of `query` matches in one of `fields` (name, text)
/// and no negated one in any, and the highlights of each field that has a
/// match if so.
pub fn check_fields(fields: &[(&str, &str)], query: &Parsed) -> Option<Vec<Highlight>> {
    let mut analyzer = index_analyzer();
    let analyzed: Vec<(&str, Analyzed)> =
        fields.iter().map(|(name, text)| (*name, Analyzed::new(&mut analyzer, text))).collect();
    let anywhere = |clause: &Clause| {
        let one = Parsed { must: vec![clause.clone()], ..Parsed::default() };
        analyzed.iter().any(|(_, a)| a.satisfies(&one))
    };
    if !query.must.iter().all(anywhere) || query.must_not.iter().any(anywhere) {
        return None;
    }
    Some(analyzed.iter().filter_map(|(name, a)| a.highlight(name, query)).collect())
}

/// Excerpts around the matches (byte ranges, sorted and disjoint).
fn excerpts(text: &str, matches: &[(usize, usize)]) -> Vec<Excerpt> {
    let mut out = Vec::new();
    let mut next = 0;
    while next < matches.len() && out.len() < MAX_EXCERPTS {
        let start = word_start(text, back_chars(text, matches[next].0, LEAD_CHARS));
        let limit = forward_chars(text, start, EXCERPT_CHARS);
        // The excerpt takes every match that fits whole, and at least one.
        let mut taken = vec![matches[next]];
        next += 1;
        while next < matches.len() && matches[next].1 <= limit {
            taken.push(matches[next]);
            next += 1;
        }
        let last_end = taken.last().map_or(start, |m| m.1);
        let end = if limit >= text.len() { text.len() } else { word_end(text, limit).max(last_end) };
        let piece = &text[start..end];
        let mut ranges = Vec::with_capacity(taken.len());
        for (s, e) in taken {
            let (s, e) = (s.clamp(start, end), e.clamp(start, end));
            ranges.push(TextRange { start: utf16_len(&text[start..s]), end: utf16_len(&text[start..e]) });
        }
        // Later matches inside this excerpt's tail are skipped, not split.
        while next < matches.len() && matches[next].0 < end {
            next += 1;
        }
        out.push(Excerpt {
            text: piece.to_string(),
            matches: ranges,
            truncated_start: !text[..start].trim().is_empty(),
            truncated_end: !text[end..].trim().is_empty(),
        });
    }
    out
}

/// The excerpt as HTML: escaped, with each match in <em>.
fn html(excerpt: &Excerpt) -> String {
    let units: Vec<u16> = excerpt.text.encode_utf16().collect();
    let slice = |from: i32, to: i32| {
        let from = usize::try_from(from).unwrap_or(0).min(units.len());
        let to = usize::try_from(to).unwrap_or(0).clamp(from, units.len());
        escape(&String::from_utf16_lossy(&units[from..to]))
    };
    let mut out = String::new();
    let mut at = 0;
    for m in &excerpt.matches {
        out.push_str(&slice(at, m.start));
        out.push_str("<em>");
        out.push_str(&slice(m.start, m.end));
        out.push_str("</em>");
        at = m.end;
    }
    out.push_str(&slice(at, i32::try_from(units.len()).unwrap_or(i32::MAX)));
    out
}

fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

fn utf16_len(text: &str) -> i32 {
    i32::try_from(text.encode_utf16().count()).unwrap_or(i32::MAX)
}

/// The byte offset `n` characters before `at` (or 0).
fn back_chars(text: &str, at: usize, n: usize) -> usize {
    text[..at].char_indices().rev().nth(n.saturating_sub(1)).map_or(0, |(i, _)| i)
}

/// The byte offset `n` characters after `at` (or the end).
fn forward_chars(text: &str, at: usize, n: usize) -> usize {
    text[at..].char_indices().nth(n).map_or(text.len(), |(i, _)| at + i)
}

/// Moves a start forward past a partly cut word, unless that would pass
/// `at`'s word entirely (a long word is cut instead).
fn word_start(text: &str, at: usize) -> usize {
    if at == 0 || text[..at].ends_with(char::is_whitespace) {
        return at;
    }
    match text[at..].find(char::is_whitespace) {
        Some(space) if space < 20 => {
            let after = at + space;
            after + text[after..].len() - text[after..].trim_start().len()
        }
        _ => at,
    }
}

/// Moves an end back to the end of the last whole word before it.
fn word_end(text: &str, at: usize) -> usize {
    if at >= text.len() || text[at..].starts_with(char::is_whitespace) {
        return at;
    }
    match text[..at].rfind(char::is_whitespace) {
        Some(space) if at - space < 20 => text[..space].trim_end().len(),
        _ => at,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::query::parse;

    fn highlight(text: &str, query: &str) -> Option<Highlight> {
        check(text, "text", &parse(query, true).expect("parses")).expect("matches")
    }

    #[test]
    fn words_prefixes_phrases_and_negations_match_as_indexed() {
        let text = "Deploying the Café release to production";
        let yes = |q: &str| check(text, "text", &parse(q, true).expect("parses")).is_some();
        assert!(yes("cafe"));
        assert!(yes("deploy*"));
        assert!(yes("\"cafe release\""));
        assert!(yes("\"the cafe rel*\""));
        assert!(!yes("\"release cafe\""));
        assert!(!yes("deploy"), "a word matches whole");
        assert!(yes("release -staging"));
        assert!(!yes("release -production"));
    }

    #[test]
    fn cjk_matches_by_what_is_typed() {
        let text = "明日は東京都庁で会議です";
        let yes = |q: &str| check(text, "text", &parse(q, true).expect("parses")).is_some();
        assert!(yes("東京"));
        assert!(yes("東京都庁"));
        assert!(yes("会議"));
        assert!(yes("庁"));
        assert!(!yes("京都庁舎"));
        let h = highlight(text, "東京都");
        assert_eq!(h.expect("highlight").fragments, ["明日は<em>東京都</em>庁で会議です"]);
    }

    #[test]
    fn highlights_escape_html_and_count_utf16() {
        let h = highlight("<b>naïve</b> 🎉 Naive & naive", "naive").expect("highlight");
        assert_eq!(h.fragments, ["&lt;b&gt;<em>naïve</em>&lt;/b&gt; 🎉 <em>Naive</em> &amp; <em>naive</em>"]);
        let excerpt = &h.excerpts[0];
        let units: Vec<u16> = excerpt.text.encode_utf16().collect();
        let marked: Vec<String> = excerpt
            .matches
            .iter()
            .map(|r| String::from_utf16_lossy(&units[r.start as usize..r.end as usize]))
            .collect();
        assert_eq!(marked, ["naïve", "Naive", "naive"], "ranges slice the text as JavaScript would");
    }

    #[test]
    fn long_texts_give_excerpts_around_the_matches() {
        let filler = "lorem ipsum dolor sit amet ".repeat(40);
        let text = format!("{filler}needle one {filler}needle two {filler}");
        let h = highlight(&text, "needle").expect("highlight");
        assert_eq!(h.excerpts.len(), 2);
        for e in &h.excerpts {
            assert!(e.text.chars().count() <= 200, "{}", e.text);
            assert!(e.text.contains("needle"));
            assert!(e.truncated_start && e.truncated_end);
            assert!(!e.text.starts_with(' ') && !e.text.ends_with(' '));
        }
    }

    #[test]
    fn a_filter_only_query_matches_without_highlights() {
        let parsed = parse("has:file", true).expect("parses");
        assert_eq!(check("anything", "text", &parsed), Some(None));
    }
}
