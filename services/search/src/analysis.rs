//! How text becomes searchable terms, the same for the index, the query and
//! the highlighting, so that what matches is what gets marked.
//!
//! Words are runs of letters and digits, compared without case and accents
//! (`Café` and `cafe` are one term). Chinese, Japanese and Korean text has
//! no spaces between words, so it is cut into overlapping pairs of
//! characters (bigrams): `東京都` is indexed as `東京`, `京都` and, so that
//! a one-character query finds it too, as `東`, `京` and `都`. A query
//! `京都` is the bigram `京都`; a longer one is a phrase of its bigrams.
//! Bigrams need no dictionary (nothing to download or keep up to date),
//! treat the three languages alike, and find every run of characters a
//! person types; the price is some false positives where a bigram spans two
//! words, which phrase matching keeps rare, and an index about twice the
//! size of the CJK text.

use tantivy::tokenizer::{AsciiFoldingFilter, LowerCaser, TextAnalyzer, Token, TokenStream, Tokenizer};

/// The name the index registers its analyzer under.
pub const ANALYZER: &str = "colink";

/// A term of a text, with where it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Term {
    pub text: String,
    /// Byte offsets in the text.
    pub start: usize,
    pub end: usize,
    /// Word position; a CJK character and the bigram it starts share one.
    pub position: usize,
}

/// The analyzer of indexed text: words, and CJK characters as unigrams and
/// bigrams.
pub fn index_analyzer() -> TextAnalyzer {
    analyzer(Mode::Index)
}

/// The analyzer of query words: words, and CJK runs as bigrams only (a lone
/// CJK character as itself).
pub fn query_analyzer() -> TextAnalyzer {
    analyzer(Mode::Query)
}

fn analyzer(mode: Mode) -> TextAnalyzer {
    TextAnalyzer::builder(Words { mode }).filter(LowerCaser).filter(AsciiFoldingFilter).build()
}

/// The terms of a text.
pub fn terms(analyzer: &mut TextAnalyzer, text: &str) -> Vec<Term> {
    let mut stream = analyzer.token_stream(text);
    let mut out = Vec::new();
    while stream.advance() {
        let token = stream.token();
        out.push(Term {
            text: token.text.clone(),
            start: token.offset_from,
            end: token.offset_to,
            position: token.position,
        });
    }
    out
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    Index,
    Query,
}

/// Splits text into words and CJK grams (see the module's comment).
#[derive(Debug, Clone)]
struct Words {
    mode: Mode,
}

impl Tokenizer for Words {
    type TokenStream<'a> = VecTokens;

    fn token_stream<'a>(&'a mut self, text: &'a str) -> VecTokens {
        VecTokens { tokens: split(text, self.mode), next: 0 }
    }
}

/// The tokens of one text, made at once: texts are short (messages, names).
struct VecTokens {
    tokens: Vec<Token>,
    next: usize,
}

impl TokenStream for VecTokens {
    fn advance(&mut self) -> bool {
        self.next += 1;
        self.next <= self.tokens.len()
    }

    fn token(&self) -> &Token {
        &self.tokens[self.next - 1]
    }

    fn token_mut(&mut self) -> &mut Token {
        &mut self.tokens[self.next - 1]
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Class {
    Word,
    Cjk,
    Other,
}

fn class(c: char) -> Class {
    if is_cjk(c) {
        Class::Cjk
    } else if c.is_alphanumeric() || is_combining_mark(c) {
        Class::Word
    } else {
        Class::Other
    }
}

/// Han ideographs, kana and hangul: the scripts written without spaces
/// between words (hangul is, between phrases, but its words carry endings).
pub fn is_cjk(c: char) -> bool {
    matches!(u32::from(c),
        0x3040..=0x30FF      // hiragana, katakana
        | 0x31F0..=0x31FF    // katakana extensions
        | 0x3400..=0x4DBF    // CJK extension A
        | 0x4E00..=0x9FFF    // CJK unified ideographs
        | 0xAC00..=0xD7AF    // hangul syllables
        | 0x1100..=0x11FF    // hangul jamo
        | 0x3130..=0x318F    // hangul compatibility jamo
        | 0xF900..=0xFAFF    // CJK compatibility ideographs
        | 0xFF66..=0xFF9F    // half-width katakana
        | 0x20000..=0x3FFFF) // CJK extensions B and later
}

/// Combining accents, which belong to the letter before them (text typed on
/// some systems spells `é` as `e` and an accent).
fn is_combining_mark(c: char) -> bool {
    matches!(u32::from(c), 0x0300..=0x036F | 0x1AB0..=0x1AFF | 0x1DC0..=0x1DFF | 0x20D0..=0x20FF | 0xFE20..=0xFE2F)
}

fn token(text: &str, start: usize, end: usize, position: usize) -> Token {
    Token {
        offset_from: start,
        offset_to: end,
        position,
        // Accents written as combining marks go; precomposed ones are folded
        // later, with the rest.
        text: text[start..end].chars().filter(|c| !is_combining_mark(*c)).collect(),
        ..Token::default()
    }
}

fn split(text: &str, mode: Mode) -> Vec<Token> {
    let mut tokens = Vec::new();
    let mut position = 0;
    let mut chars = text.char_indices().peekable();
    while let Some(&(start, c)) = chars.peek() {
        match class(c) {
            Class::Other => {
                chars.next();
            }
            Class::Word => {
                let mut end = start;
                while let Some(&(i, c)) = chars.peek() {
                    if class(c) != Class::Word {
                        break;
                    }
                    end = i + c.len_utf8();
                    chars.next();
                }
                tokens.push(token(text, start, end, position));
                position += 1;
            }
            Class::Cjk => {
                let mut run = Vec::new();
                while let Some(&(i, c)) = chars.peek() {
                    if class(c) != Class::Cjk {
                        break;
                    }
                    run.push((i, i + c.len_utf8()));
                    chars.next();
                }
                cjk_grams(text, &run, mode, position, &mut tokens);
                position += run.len();
            }
        }
    }
    tokens
}

/// The grams of a run of CJK characters, given as byte ranges.
fn cjk_grams(text: &str, run: &[(usize, usize)], mode: Mode, first: usize, tokens: &mut Vec<Token>) {
    if run.len() == 1 || mode == Mode::Index {
        for (i, &(start, end)) in run.iter().enumerate() {
            tokens.push(token(text, start, end, first + i));
            if mode == Mode::Index
                && let Some(&(_, next_end)) = run.get(i + 1)
            {
                tokens.push(token(text, start, next_end, first + i));
            }
        }
        return;
    }
    for (i, pair) in run.windows(2).enumerate() {
        tokens.push(token(text, pair[0].0, pair[1].1, first + i));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn texts(analyzer: &mut TextAnalyzer, text: &str) -> Vec<(String, usize)> {
        terms(analyzer, text).into_iter().map(|t| (t.text, t.position)).collect()
    }

    fn pairs(list: &[(&str, usize)]) -> Vec<(String, usize)> {
        list.iter().map(|(t, p)| (t.to_string(), *p)).collect()
    }

    #[test]
    fn words_fold_case_and_accents() {
        let mut a = index_analyzer();
        assert_eq!(
            texts(&mut a, "Ünïcode CAFÉ, naïve—re-deploy v2.1"),
            pairs(&[("unicode", 0), ("cafe", 1), ("naive", 2), ("re", 3), ("deploy", 4), ("v2", 5), ("1", 6)])
        );
        // The accent as a combining mark after the letter.
        assert_eq!(texts(&mut a, "cafe\u{301}"), pairs(&[("cafe", 0)]));
    }

    #[test]
    fn cjk_is_indexed_as_unigrams_and_bigrams_and_queried_as_bigrams() {
        let mut index = index_analyzer();
        assert_eq!(
            texts(&mut index, "在東京都 ok"),
            pairs(&[("在", 0), ("在東", 0), ("東", 1), ("東京", 1), ("京", 2), ("京都", 2), ("都", 3), ("ok", 4)])
        );
        let mut query = query_analyzer();
        assert_eq!(texts(&mut query, "東京都"), pairs(&[("東京", 0), ("京都", 1)]));
        assert_eq!(texts(&mut query, "京"), pairs(&[("京", 0)]));
        assert_eq!(texts(&mut query, "デプロイ"), pairs(&[("デプ", 0), ("プロ", 1), ("ロイ", 2)]));
    }

    #[test]
    fn offsets_point_into_the_original_text() {
        let mut a = index_analyzer();
        let text = "Déjà vu 東京";
        let found = terms(&mut a, text);
        assert_eq!(&text[found[0].start..found[0].end], "Déjà");
        assert_eq!(&text[found[3].start..found[3].end], "東京");
    }
}
