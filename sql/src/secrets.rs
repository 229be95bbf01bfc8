//! Secrets in SQL text: option values whose keys name a password, a key or
//! a token are masked wherever Weir echoes SQL back (error snippets, logs,
//! `SHOW CREATE TABLE`, job listings).
//!
//! ```
//! let sql = "CREATE TABLE t WITH ('connector' = 'kafka', 'properties.sasl.password' = 'hunter2')";
//! let masked = weir_sql::mask_secrets(sql);
//! assert!(!masked.contains("hunter2"));
//! assert!(masked.contains("'properties.sasl.password' = '******'"));
//! ```

use sqlparser::tokenizer::{Token, Tokenizer};

use crate::dialect::FlinkDialect;

/// What a masked value is shown as.
pub const MASK: &str = "******";

/// Whether an option key names a secret: a password, secret, token, key or
/// credentials (`properties.sasl.password`, `s3.secret_access_key`,
/// `properties.sasl.jaas.config`, ...). Keys that only name where a key
/// lives or what it is called (`key.format`, `key.fields`) are not.
pub fn is_secret_key(key: &str) -> bool {
    let key = key.to_ascii_lowercase();
    const NOT_SECRETS: &[&str] = &[
        "key.format",
        "key.fields",
        "key.fields-prefix",
        "value.format",
    ];
    if NOT_SECRETS
        .iter()
        .any(|k| key == *k || key.starts_with(&format!("{k}.")))
    {
        return false;
    }
    key.contains("sasl.jaas")
        || key.split(['.', '_', '-']).any(|part| {
            matches!(
                part,
                "password" | "passwd" | "secret" | "token" | "key" | "credentials" | "credential"
            )
        })
}

/// Byte ranges of `text` holding a secret option's value, quotes included:
/// the string after `'key' =` where `key` names a secret. Text that does
/// not tokenize (an unterminated string) is masked from the first secret
/// key on.
pub fn secret_spans(text: &str) -> Vec<std::ops::Range<usize>> {
    let dialect = FlinkDialect::default();
    let tokens = match Tokenizer::new(&dialect, text).tokenize_with_location() {
        Ok(tokens) => tokens,
        Err(_) => return unterminated_secret(text).into_iter().collect(),
    };
    let offsets = LineOffsets::new(text);
    let significant: Vec<_> = tokens
        .iter()
        .filter(|t| !matches!(t.token, Token::Whitespace(_)))
        .collect();
    let mut spans = Vec::new();
    for window in significant.windows(3) {
        let (Token::SingleQuotedString(key), Token::Eq, value) =
            (&window[0].token, &window[1].token, &window[2].token)
        else {
            continue;
        };
        if !matches!(
            value,
            Token::SingleQuotedString(_) | Token::DoubleQuotedString(_)
        ) || !is_secret_key(key)
        {
            continue;
        }
        let span = window[2].span;
        if let (Some(start), Some(end)) = (
            offsets.offset(span.start.line, span.start.column),
            offsets.offset(span.end.line, span.end.column),
        ) {
            spans.push(start..end);
        }
    }
    spans
}

/// `text` with every secret option value replaced by `'******'`.
pub fn mask_secrets(text: &str) -> String {
    let spans = secret_spans(text);
    if spans.is_empty() {
        return text.to_string();
    }
    let mut out = String::with_capacity(text.len());
    let mut at = 0;
    for span in spans {
        out.push_str(&text[at..span.start]);
        out.push('\'');
        out.push_str(MASK);
        out.push('\'');
        at = span.end;
    }
    out.push_str(&text[at..]);
    out
}

/// Line `line` (from 1) of `text` with its secrets masked, and where
/// column `column` (from 1, in characters) of the original line is in it;
/// a column inside a masked value moves to the value's start.
pub(crate) fn masked_line(text: &str, line: u64, column: u64) -> Option<(String, u64)> {
    let offsets = LineOffsets::new(text);
    let start = offsets.offset(line, 1)?;
    let end = text[start..].find('\n').map_or(text.len(), |i| start + i);
    let caret = offsets.offset(line, column.max(1)).unwrap_or(end).min(end);
    let mut out = String::new();
    let mut new_caret = None;
    let mut at = start;
    for span in secret_spans(text) {
        if span.end <= start || span.start >= end {
            continue;
        }
        let (from, to) = (span.start.max(start), span.end.min(end));
        if new_caret.is_none() && caret < to {
            let before = caret.min(from);
            new_caret = Some(out.chars().count() + text[at..before].chars().count());
        }
        out.push_str(&text[at..from]);
        out.push('\'');
        out.push_str(MASK);
        out.push('\'');
        at = to;
    }
    let caret =
        new_caret.unwrap_or_else(|| out.chars().count() + text[at..caret.max(at)].chars().count());
    out.push_str(&text[at..end]);
    Some((out, caret as u64 + 1))
}

/// For text that does not tokenize: from the first quoted secret key to the
/// end, nothing is shown.
fn unterminated_secret(text: &str) -> Option<std::ops::Range<usize>> {
    let lower = text.to_ascii_lowercase();
    let mut first: Option<usize> = None;
    for (i, _) in lower.match_indices('\'') {
        let rest = &lower[i + 1..];
        let Some(end) = rest.find('\'') else { break };
        if is_secret_key(&rest[..end]) {
            first = Some(i + end + 2);
            break;
        }
    }
    first.map(|start| start..text.len())
}

/// Byte offsets of line starts, to turn a tokenizer location into an offset.
struct LineOffsets<'a> {
    text: &'a str,
    starts: Vec<usize>,
}

impl<'a> LineOffsets<'a> {
    fn new(text: &'a str) -> Self {
        let mut starts = vec![0];
        starts.extend(text.match_indices('\n').map(|(i, _)| i + 1));
        LineOffsets { text, starts }
    }

    /// The byte offset of a 1-based line and (character) column.
    fn offset(&self, line: u64, column: u64) -> Option<usize> {
        let start = *self.starts.get((line as usize).checked_sub(1)?)?;
        let rest = &self.text[start..];
        let column = (column as usize).checked_sub(1)?;
        Some(
            start
                + rest
                    .char_indices()
                    .nth(column)
                    .map_or(rest.len(), |(i, _)| i),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secret_keys() {
        for key in [
            "properties.sasl.password",
            "properties.ssl.key.password",
            "properties.sasl.jaas.config",
            "s3.secret_access_key",
            "s3.access_key_id",
            "s3.session_token",
            "avro-confluent.basic-auth.credentials-source",
            "properties.ssl.keystore.key",
            "token",
        ] {
            assert!(is_secret_key(key), "{key}");
        }
        for key in [
            "connector",
            "key.format",
            "key.fields",
            "properties.bootstrap.servers",
            "topic",
            "path",
            "properties.sasl.mechanism",
        ] {
            assert!(!is_secret_key(key), "{key}");
        }
    }

    #[test]
    fn values_of_secret_keys_are_masked_and_the_rest_kept() {
        let sql = "CREATE TABLE t (a INT) WITH (\n  'connector' = 'kafka',\n  'properties.sasl.jaas.config' = 'org.apache.kafka.common.security.plain.PlainLoginModule required username=\"u\" password=\"p4ss\";',\n  's3.secret_access_key'='AKIA/xyz', 'topic' = 'bids')";
        let masked = mask_secrets(sql);
        assert!(
            !masked.contains("p4ss") && !masked.contains("AKIA"),
            "{masked}"
        );
        assert!(masked.contains("'properties.sasl.jaas.config' = '******'"));
        assert!(masked.contains("'s3.secret_access_key'='******'"));
        assert!(masked.contains("'topic' = 'bids'"));
        assert!(masked.contains("'connector' = 'kafka'"));
    }

    #[test]
    fn values_after_non_ascii_text_are_found() {
        let sql = "-- préférences\nCREATE TABLE t WITH ('password' = 'é-secret')";
        assert_eq!(
            mask_secrets(sql),
            "-- préférences\nCREATE TABLE t WITH ('password' = '******')"
        );
    }

    #[test]
    fn a_masked_line_keeps_the_caret_on_its_character() {
        let sql = "WITH ('password' = 'a-long-secret', 'x' = oops)";
        let column = sql.find("oops").unwrap() as u64 + 1;
        let (line, at) = masked_line(sql, 1, column).unwrap();
        assert_eq!(line, "WITH ('password' = '******', 'x' = oops)");
        assert_eq!(&line[at as usize - 1..at as usize + 3], "oops");
        let (_, inside) = masked_line(sql, 1, 23).unwrap();
        assert_eq!(inside, 20, "a caret in the secret points at its start");
    }

    #[test]
    fn an_unterminated_text_hides_everything_after_a_secret_key() {
        let masked = mask_secrets("WITH ('connector' = 'x', 'password' = 'abc");
        assert!(!masked.contains("abc"), "{masked}");
    }
}
