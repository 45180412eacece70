//! The `Sec-WebSocket-Extensions` header grammar (RFC 6455 §9.1), independent of any one
//! extension: a list of offers, each a token and `;`-separated parameters with an optional
//! token or quoted-string value.
//!
//! ```text
//! extension-list  = 1#extension
//! extension       = extension-token *( ";" extension-param )
//! extension-param = token [ "=" (token | quoted-string) ]
//! ```
//!
//! A quoted value must unescape to a token (§9.1). Optional whitespace is allowed around the
//! separators and empty list elements are skipped (the `#` rule of RFC 7230 §7). Several header
//! lines form one list, in order. Anything else is a [`ExtensionsError`]: the handshake answers
//! 400, because a header that does not parse cannot be declined offer by offer.

use std::fmt;

/// One extension offer (or, on the client side, the server's answer): its name and its
/// parameters in the order given, values unescaped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExtensionOffer {
    pub name: String,
    pub params: Vec<ExtensionParam>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExtensionParam {
    pub name: String,
    /// `None` for a parameter without `=`.
    pub value: Option<String>,
}

/// Why a `Sec-WebSocket-Extensions` header does not follow the RFC 6455 grammar.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("malformed Sec-WebSocket-Extensions header at byte {position} of {header:?}: {what}")]
pub struct ExtensionsError {
    /// The header line (or the joined lines) that failed.
    pub header: String,
    pub position: usize,
    pub what: ExtensionsErrorKind,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExtensionsErrorKind {
    ExpectedToken,
    ExpectedSeparator,
    UnterminatedQuotedString,
    /// A quoted-string value that is not a token once unescaped.
    QuotedValueNotToken,
    /// Bytes that cannot appear in a header (controls other than HTAB, or non-ASCII).
    InvalidCharacter,
}

impl fmt::Display for ExtensionsErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::ExpectedToken => "expected a token",
            Self::ExpectedSeparator => "expected ',', ';' or '='",
            Self::UnterminatedQuotedString => "unterminated quoted-string",
            Self::QuotedValueNotToken => "quoted value is not a token",
            Self::InvalidCharacter => "invalid character",
        })
    }
}

/// `tchar` of RFC 7230 §3.2.6.
fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

fn is_token(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(is_tchar)
}

/// Parses every header line in order into one list of offers.
pub fn parse_extensions(lines: &[&str]) -> Result<Vec<ExtensionOffer>, ExtensionsError> {
    let mut offers = Vec::new();
    for line in lines {
        Parser {
            s: line.as_bytes(),
            line,
            pos: 0,
        }
        .list(&mut offers)?;
    }
    Ok(offers)
}

struct Parser<'a> {
    s: &'a [u8],
    line: &'a str,
    pos: usize,
}

impl Parser<'_> {
    fn error(&self, what: ExtensionsErrorKind) -> ExtensionsError {
        ExtensionsError {
            header: self.line.to_string(),
            position: self.pos,
            what,
        }
    }

    fn peek(&self) -> Option<u8> {
        self.s.get(self.pos).copied()
    }

    fn skip_ows(&mut self) {
        while matches!(self.peek(), Some(b' ' | b'\t')) {
            self.pos += 1;
        }
    }

    fn token(&mut self) -> Result<String, ExtensionsError> {
        let start = self.pos;
        while self.peek().is_some_and(is_tchar) {
            self.pos += 1;
        }
        if start == self.pos {
            return Err(self.unexpected(ExtensionsErrorKind::ExpectedToken));
        }
        Ok(self.line[start..self.pos].to_string())
    }

    /// The error for the byte at `pos`: a character that is never valid in a header says so.
    fn unexpected(&self, expected: ExtensionsErrorKind) -> ExtensionsError {
        match self.peek() {
            Some(b) if (b < 0x20 && b != b'\t') || b >= 0x7f => {
                self.error(ExtensionsErrorKind::InvalidCharacter)
            }
            _ => self.error(expected),
        }
    }

    /// `quoted-string` (RFC 7230 §3.2.6), unescaped; `pos` is at the opening quote.
    fn quoted_string(&mut self) -> Result<String, ExtensionsError> {
        let start = self.pos;
        self.pos += 1;
        let mut value = Vec::new();
        loop {
            match self.peek() {
                None => {
                    self.pos = start;
                    return Err(self.error(ExtensionsErrorKind::UnterminatedQuotedString));
                }
                Some(b'"') => {
                    self.pos += 1;
                    break;
                }
                Some(b'\\') => {
                    self.pos += 1;
                    match self.peek() {
                        Some(b) if b == b'\t' || (0x20..0x7f).contains(&b) => value.push(b),
                        Some(_) => return Err(self.error(ExtensionsErrorKind::InvalidCharacter)),
                        None => {
                            self.pos = start;
                            return Err(self.error(ExtensionsErrorKind::UnterminatedQuotedString));
                        }
                    }
                    self.pos += 1;
                }
                Some(b) if b == b'\t' || (0x20..0x7f).contains(&b) => {
                    value.push(b);
                    self.pos += 1;
                }
                Some(_) => return Err(self.error(ExtensionsErrorKind::InvalidCharacter)),
            }
        }
        // Every byte pushed is printable ASCII or HTAB, so this cannot fail; a token check
        // follows anyway.
        let value = String::from_utf8(value).unwrap_or_default();
        if !is_token(&value) {
            self.pos = start;
            return Err(self.error(ExtensionsErrorKind::QuotedValueNotToken));
        }
        Ok(value)
    }

    fn list(&mut self, offers: &mut Vec<ExtensionOffer>) -> Result<(), ExtensionsError> {
        loop {
            self.skip_ows();
            match self.peek() {
                None => return Ok(()),
                // Empty list element.
                Some(b',') => {
                    self.pos += 1;
                    continue;
                }
                Some(_) => {}
            }
            offers.push(self.extension()?);
            self.skip_ows();
            match self.peek() {
                None => return Ok(()),
                Some(b',') => self.pos += 1,
                Some(_) => return Err(self.unexpected(ExtensionsErrorKind::ExpectedSeparator)),
            }
        }
    }

    fn extension(&mut self) -> Result<ExtensionOffer, ExtensionsError> {
        let name = self.token()?;
        let mut params = Vec::new();
        loop {
            self.skip_ows();
            if self.peek() != Some(b';') {
                return Ok(ExtensionOffer { name, params });
            }
            self.pos += 1;
            self.skip_ows();
            let param = self.token()?;
            self.skip_ows();
            let value = if self.peek() == Some(b'=') {
                self.pos += 1;
                self.skip_ows();
                Some(if self.peek() == Some(b'"') {
                    self.quoted_string()?
                } else {
                    self.token()?
                })
            } else {
                None
            };
            params.push(ExtensionParam { name: param, value });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn param(name: &str, value: Option<&str>) -> ExtensionParam {
        ExtensionParam {
            name: name.into(),
            value: value.map(Into::into),
        }
    }

    #[test]
    fn several_offers_with_params_on_several_lines_keep_their_order() {
        let offers = parse_extensions(&[
            "permessage-deflate; client_max_window_bits, permessage-deflate;server_max_window_bits=10",
            "x-webkit-deflate-frame , foo; bar=\"baz\"",
        ])
        .unwrap();
        assert_eq!(
            offers,
            vec![
                ExtensionOffer {
                    name: "permessage-deflate".into(),
                    params: vec![param("client_max_window_bits", None)]
                },
                ExtensionOffer {
                    name: "permessage-deflate".into(),
                    params: vec![param("server_max_window_bits", Some("10"))]
                },
                ExtensionOffer {
                    name: "x-webkit-deflate-frame".into(),
                    params: vec![]
                },
                ExtensionOffer {
                    name: "foo".into(),
                    params: vec![param("bar", Some("baz"))]
                },
            ]
        );
    }

    #[test]
    fn whitespace_around_separators_and_empty_elements_are_accepted() {
        let offers =
            parse_extensions(&[" ,permessage-deflate ;\tserver_max_window_bits = \"1\\2\" ,, "])
                .unwrap();
        assert_eq!(
            offers,
            vec![ExtensionOffer {
                name: "permessage-deflate".into(),
                params: vec![param("server_max_window_bits", Some("12"))]
            }]
        );
    }

    #[test]
    fn empty_header_is_an_empty_list() {
        assert_eq!(parse_extensions(&[""]).unwrap(), vec![]);
        assert_eq!(parse_extensions(&[]).unwrap(), vec![]);
    }

    fn kind(line: &str) -> ExtensionsErrorKind {
        parse_extensions(&[line]).unwrap_err().what
    }

    #[test]
    fn grammar_errors_are_reported_with_their_kind() {
        assert_eq!(
            kind("permessage-deflate;"),
            ExtensionsErrorKind::ExpectedToken
        );
        assert_eq!(
            kind("permessage-deflate; a="),
            ExtensionsErrorKind::ExpectedToken
        );
        assert_eq!(kind(";a"), ExtensionsErrorKind::ExpectedToken);
        assert_eq!(
            kind("permessage-deflate a"),
            ExtensionsErrorKind::ExpectedSeparator
        );
        assert_eq!(
            kind("permessage-deflate; a=b c"),
            ExtensionsErrorKind::ExpectedSeparator
        );
        assert_eq!(
            kind("permessage-deflate; a=\"10"),
            ExtensionsErrorKind::UnterminatedQuotedString
        );
        assert_eq!(
            kind("permessage-deflate; a=\"1 0\""),
            ExtensionsErrorKind::QuotedValueNotToken
        );
        assert_eq!(
            kind("permessage-deflate; a=\"\""),
            ExtensionsErrorKind::QuotedValueNotToken
        );
        assert_eq!(
            kind("permessage-deflate; a=(10)"),
            ExtensionsErrorKind::ExpectedToken
        );
        assert_eq!(
            kind("permessage-deflate\u{1}"),
            ExtensionsErrorKind::InvalidCharacter
        );
        assert_eq!(
            kind("permessage-deflaté"),
            ExtensionsErrorKind::InvalidCharacter
        );
    }

    #[test]
    fn error_names_the_line_and_position() {
        let err = parse_extensions(&["permessage-deflate", "foo;;"]).unwrap_err();
        assert_eq!(err.header, "foo;;");
        assert_eq!(err.position, 4);
        assert!(err.to_string().contains("byte 4"), "{err}");
    }
}
