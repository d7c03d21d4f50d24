//! Tokens of Kamailio's script syntax as rules use it: operators, string and integer
//! literals (with `\"`, `\\`, `\r`, `\n`, `\t` escapes), pseudo-variables and names.

use super::RuleErrorKind;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Token {
    LParen,
    RParen,
    Comma,
    And,
    Or,
    Not,
    Eq,
    Ne,
    Match,
    /// `=`: an assignment (`$uac_req(method) = "MESSAGE"` in a `do` entry).
    Assign,
    Str(String),
    Int(i64),
    /// A pseudo-variable: name and, for `$hdr(Name)`, its argument.
    Pvar(String, Option<String>),
    Ident(String),
}

pub fn tokenize(text: &str) -> Result<Vec<Token>, RuleErrorKind> {
    let bytes = text.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        let two = bytes.get(i..i + 2);
        match b {
            b' ' | b'\t' | b'\r' | b'\n' | b';' => i += 1,
            b'(' => {
                out.push(Token::LParen);
                i += 1;
            }
            b')' => {
                out.push(Token::RParen);
                i += 1;
            }
            b',' => {
                out.push(Token::Comma);
                i += 1;
            }
            _ if two == Some(b"&&") => {
                out.push(Token::And);
                i += 2;
            }
            _ if two == Some(b"||") => {
                out.push(Token::Or);
                i += 2;
            }
            _ if two == Some(b"==") => {
                out.push(Token::Eq);
                i += 2;
            }
            _ if two == Some(b"!=") => {
                out.push(Token::Ne);
                i += 2;
            }
            _ if two == Some(b"=~") => {
                out.push(Token::Match);
                i += 2;
            }
            b'!' => {
                out.push(Token::Not);
                i += 1;
            }
            b'=' => {
                out.push(Token::Assign);
                i += 1;
            }
            b'"' | b'\'' => {
                let (s, next) = string(text, i)?;
                out.push(Token::Str(s));
                i = next;
            }
            b'-' | b'0'..=b'9' => {
                let end = bytes[i + 1..]
                    .iter()
                    .position(|b| !b.is_ascii_digit())
                    .map_or(bytes.len(), |p| p + i + 1);
                let n = text[i..end].parse().map_err(|_| {
                    RuleErrorKind::Syntax(format!("bad number {:?}", &text[i..end]))
                })?;
                out.push(Token::Int(n));
                i = end;
            }
            b'$' => {
                let (name, arg, next) = pvar(text, i)?;
                out.push(Token::Pvar(name, arg));
                i = next;
            }
            _ if b.is_ascii_alphabetic() || b == b'_' => {
                let end = ident_end(bytes, i);
                out.push(Token::Ident(text[i..end].to_owned()));
                i = end;
            }
            _ => {
                return Err(RuleErrorKind::Syntax(format!(
                    "unexpected {:?} at byte {i}",
                    &text[i..].chars().next().unwrap_or(' ')
                )));
            }
        }
    }
    Ok(out)
}

fn ident_end(bytes: &[u8], from: usize) -> usize {
    bytes[from..]
        .iter()
        .position(|b| !(b.is_ascii_alphanumeric() || *b == b'_'))
        .map_or(bytes.len(), |p| p + from)
}

/// A pseudo-variable starting at `$`: (name, argument, next offset).
pub fn pvar(text: &str, at: usize) -> Result<(String, Option<String>, usize), RuleErrorKind> {
    let bytes = text.as_bytes();
    let start = at + 1;
    let end = ident_end(bytes, start);
    if end == start {
        return Err(RuleErrorKind::Syntax(format!(
            "`$` without a name at byte {at}"
        )));
    }
    let name = text[start..end].to_owned();
    if bytes.get(end) == Some(&b'(') {
        let close = text[end..]
            .find(')')
            .ok_or_else(|| RuleErrorKind::Syntax(format!("unclosed `${name}(`")))?
            + end;
        let arg = text[end + 1..close].trim().to_owned();
        return Ok((name, Some(arg), close + 1));
    }
    Ok((name, None, end))
}

fn string(text: &str, at: usize) -> Result<(String, usize), RuleErrorKind> {
    let quote = text.as_bytes()[at] as char;
    let mut out = String::new();
    let mut chars = text[at + 1..].char_indices();
    while let Some((off, c)) = chars.next() {
        match c {
            '\\' => match chars.next() {
                Some((_, 'r')) => out.push('\r'),
                Some((_, 'n')) => out.push('\n'),
                Some((_, 't')) => out.push('\t'),
                Some((_, c)) => out.push(c),
                None => break,
            },
            c if c == quote => return Ok((out, at + 1 + off + 1)),
            c => out.push(c),
        }
    }
    Err(RuleErrorKind::Syntax(format!(
        "unterminated string starting at byte {at}"
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn operators_strings_and_pvars() {
        let t = tokenize(r#"!has_totag() && $hdr(X-A) != $null || $rs=~'^4' "a\"b\r\n""#).unwrap();
        assert_eq!(
            t,
            vec![
                Token::Not,
                Token::Ident("has_totag".into()),
                Token::LParen,
                Token::RParen,
                Token::And,
                Token::Pvar("hdr".into(), Some("X-A".into())),
                Token::Ne,
                Token::Pvar("null".into(), None),
                Token::Or,
                Token::Pvar("rs".into(), None),
                Token::Match,
                Token::Str("^4".into()),
                Token::Str("a\"b\r\n".into()),
            ]
        );
    }

    #[test]
    fn errors_say_where() {
        assert!(
            matches!(tokenize("\"open"), Err(RuleErrorKind::Syntax(m)) if m.contains("unterminated"))
        );
        assert!(matches!(tokenize("a # b"), Err(RuleErrorKind::Syntax(m)) if m.contains("'#'")));
        assert_eq!(
            tokenize("$uac_req(method) = 'MESSAGE'").unwrap(),
            vec![
                Token::Pvar("uac_req".into(), Some("method".into())),
                Token::Assign,
                Token::Str("MESSAGE".into()),
            ]
        );
        assert!(
            matches!(tokenize("$hdr(X"), Err(RuleErrorKind::Syntax(m)) if m.contains("unclosed"))
        );
    }
}
