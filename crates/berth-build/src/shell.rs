//! Variable expansion as Docker's `shell.Lex`: `$VAR`, `${VAR}`, `${VAR:-word}`,
//! `${VAR-word}`, `${VAR:+word}`, `${VAR+word}`, `${VAR:?msg}`, `${VAR?msg}`, single and
//! double quotes (removed), and the escape character.

use std::collections::BTreeMap;

/// Expansion errors (`${VAR:?msg}`, bad substitutions, unterminated quotes).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct ExpandError(pub String);

/// Variables visible to an expansion, looked up by name.
pub trait Vars {
    fn get(&self, name: &str) -> Option<String>;
}

impl Vars for BTreeMap<String, String> {
    fn get(&self, name: &str) -> Option<String> {
        BTreeMap::get(self, name).cloned()
    }
}

/// `KEY=value` lists (an image's `Env`): the last one wins.
impl Vars for [String] {
    fn get(&self, name: &str) -> Option<String> {
        self.iter().rev().find_map(|kv| {
            let (k, v) = kv.split_once('=').unwrap_or((kv.as_str(), ""));
            (k == name).then(|| v.to_string())
        })
    }
}

/// A character of output and whether it may split words (came from an unquoted expansion
/// or unquoted source white space).
struct Out {
    chars: Vec<(char, bool)>,
    /// Word boundaries forced by an empty quoted string (`""` is a word).
    forced: Vec<usize>,
}

struct Lexer<'a> {
    s: Vec<char>,
    i: usize,
    escape: char,
    vars: &'a dyn Vars,
    /// Names looked up (for ARG usage tracking).
    used: Vec<String>,
}

impl<'a> Lexer<'a> {
    fn peek(&self) -> Option<char> {
        self.s.get(self.i).copied()
    }

    fn next(&mut self) -> Option<char> {
        let c = self.peek();
        if c.is_some() {
            self.i += 1;
        }
        c
    }

    /// Processes until `stop` (not consumed) or the end.
    fn process(&mut self, out: &mut Out, stop: Option<char>) -> Result<(), ExpandError> {
        while let Some(c) = self.peek() {
            if Some(c) == stop {
                return Ok(());
            }
            self.i += 1;
            if c == self.escape {
                match self.next() {
                    Some(n) => out.chars.push((n, false)),
                    None => out.chars.push((c, false)),
                }
            } else if c == '\'' {
                let start = out.chars.len();
                loop {
                    match self.next() {
                        Some('\'') => break,
                        Some(n) => out.chars.push((n, false)),
                        None => return Err(ExpandError(
                            "unexpected end of statement while looking for matching single-quote"
                                .into(),
                        )),
                    }
                }
                if out.chars.len() == start {
                    out.forced.push(start);
                }
            } else if c == '"' {
                let start = out.chars.len();
                loop {
                    match self.next() {
                        Some('"') => break,
                        Some('$') => {
                            let v = self.dollar()?;
                            out.chars.extend(v.chars().map(|c| (c, false)));
                        }
                        Some(e) if e == self.escape => match self.next() {
                            Some(n) if n == '"' || n == '$' || n == self.escape => {
                                out.chars.push((n, false))
                            }
                            Some(n) => {
                                out.chars.push((e, false));
                                out.chars.push((n, false));
                            }
                            None => return Err(ExpandError("unexpected end of statement while looking for matching double-quote".into())),
                        },
                        Some(n) => out.chars.push((n, false)),
                        None => return Err(ExpandError("unexpected end of statement while looking for matching double-quote".into())),
                    }
                }
                if out.chars.len() == start {
                    out.forced.push(start);
                }
            } else if c == '$' {
                let v = self.dollar()?;
                out.chars.extend(v.chars().map(|c| (c, true)));
            } else {
                out.chars.push((c, c.is_whitespace()));
            }
        }
        Ok(())
    }

    fn name(&mut self) -> String {
        let mut n = String::new();
        while let Some(c) = self.peek() {
            if c.is_ascii_alphanumeric() || c == '_' {
                n.push(c);
                self.i += 1;
            } else {
                break;
            }
        }
        n
    }

    fn lookup(&mut self, name: &str) -> Option<String> {
        self.used.push(name.to_string());
        self.vars.get(name)
    }

    /// After a `$`.
    fn dollar(&mut self) -> Result<String, ExpandError> {
        match self.peek() {
            Some('{') => {
                self.i += 1;
                let name = self.name();
                if name.is_empty() {
                    return Err(ExpandError("bad substitution".into()));
                }
                match self.next() {
                    Some('}') => Ok(self.lookup(&name).unwrap_or_default()),
                    Some(':') => {
                        let op = self
                            .next()
                            .ok_or_else(|| ExpandError("bad substitution".into()))?;
                        let word = self.word_to_brace()?;
                        let v = self.lookup(&name);
                        let set = v.as_deref().is_some_and(|s| !s.is_empty());
                        match op {
                            '-' => Ok(if set { v.unwrap_or_default() } else { word }),
                            '+' => Ok(if set { word } else { String::new() }),
                            '?' => {
                                if set {
                                    Ok(v.unwrap_or_default())
                                } else {
                                    Err(ExpandError(format!(
                                        "{name}: {}",
                                        if word.is_empty() {
                                            "is not allowed to be unset"
                                        } else {
                                            &word
                                        }
                                    )))
                                }
                            }
                            _ => Err(ExpandError(format!(
                                "unsupported modifier ({op}) in substitution"
                            ))),
                        }
                    }
                    Some(op @ ('-' | '+' | '?')) => {
                        let word = self.word_to_brace()?;
                        let v = self.lookup(&name);
                        match op {
                            '-' => Ok(v.unwrap_or(word)),
                            '+' => Ok(if v.is_some() { word } else { String::new() }),
                            _ => v.ok_or_else(|| {
                                ExpandError(format!(
                                    "{name}: {}",
                                    if word.is_empty() {
                                        "is not allowed to be unset"
                                    } else {
                                        &word
                                    }
                                ))
                            }),
                        }
                    }
                    Some(op @ ('#' | '%')) => {
                        let longest = self.peek() == Some(op);
                        if longest {
                            self.i += 1;
                        }
                        let pat = self.word_to_brace()?;
                        let v = self.lookup(&name).unwrap_or_default();
                        Ok(trim_pattern(&v, &pat, op == '#', longest))
                    }
                    _ => Err(ExpandError("bad substitution".into())),
                }
            }
            Some(c) if c.is_ascii_alphabetic() || c == '_' => {
                let name = self.name();
                Ok(self.lookup(&name).unwrap_or_default())
            }
            Some(c) if c.is_ascii_digit() || "@*#?$!-".contains(c) => {
                // Positional/special parameters are empty in a Dockerfile.
                self.i += 1;
                Ok(String::new())
            }
            _ => Ok("$".into()),
        }
    }

    /// The word of a `${VAR:-word}` up to the closing brace (consumed), itself expanded.
    fn word_to_brace(&mut self) -> Result<String, ExpandError> {
        let mut out = Out {
            chars: Vec::new(),
            forced: Vec::new(),
        };
        self.process(&mut out, Some('}'))?;
        if self.next() != Some('}') {
            return Err(ExpandError("syntax error: missing '}'".into()));
        }
        Ok(out.chars.into_iter().map(|(c, _)| c).collect())
    }
}

/// `${v#pat}`, `${v##pat}`, `${v%pat}`, `${v%%pat}` with `*` and `?` wildcards.
fn trim_pattern(v: &str, pat: &str, prefix: bool, longest: bool) -> String {
    let chars: Vec<char> = v.chars().collect();
    let n = chars.len();
    let cands: Vec<usize> = if prefix {
        let mut c: Vec<usize> = (0..=n).collect();
        if longest {
            c.reverse();
        }
        c
    } else {
        let mut c: Vec<usize> = (0..=n).collect();
        if !longest {
            c.reverse();
        }
        c
    };
    for k in cands {
        let (part, rest): (String, String) = if prefix {
            (chars[..k].iter().collect(), chars[k..].iter().collect())
        } else {
            (chars[k..].iter().collect(), chars[..k].iter().collect())
        };
        if crate::dockerignore::glob_match(pat, &part) {
            return rest;
        }
    }
    v.to_string()
}

/// Expands one word, removing quotes (`ProcessWord`).
pub fn expand_word(s: &str, escape: char, vars: &dyn Vars) -> Result<String, ExpandError> {
    Ok(expand_word_tracking(s, escape, vars)?.0)
}

/// Expands `s`: the characters (each with whether it may split words) and the variable
/// names referenced.
fn expand(s: &str, escape: char, vars: &dyn Vars) -> Result<(Out, Vec<String>), ExpandError> {
    let mut lx = Lexer {
        s: s.chars().collect(),
        i: 0,
        escape,
        vars,
        used: Vec::new(),
    };
    let mut out = Out {
        chars: Vec::new(),
        forced: Vec::new(),
    };
    lx.process(&mut out, None)?;
    Ok((out, lx.used))
}

/// Like [`expand_word`], also returning the variable names referenced.
pub fn expand_word_tracking(
    s: &str,
    escape: char,
    vars: &dyn Vars,
) -> Result<(String, Vec<String>), ExpandError> {
    let (out, used) = expand(s, escape, vars)?;
    Ok((out.chars.into_iter().map(|(c, _)| c).collect(), used))
}

/// Expands and splits into words on unquoted white space (`ProcessWords`).
pub fn expand_words(s: &str, escape: char, vars: &dyn Vars) -> Result<Vec<String>, ExpandError> {
    let (out, _) = expand(s, escape, vars)?;
    let mut words = Vec::new();
    let mut cur = String::new();
    let mut has = false;
    for (idx, (c, split)) in out.chars.iter().enumerate() {
        if out.forced.contains(&idx) {
            has = true;
        }
        if *split && c.is_whitespace() {
            if has {
                words.push(std::mem::take(&mut cur));
                has = false;
            }
        } else {
            cur.push(*c);
            has = true;
        }
    }
    if out.forced.contains(&out.chars.len()) {
        has = true;
    }
    if has {
        words.push(cur);
    }
    Ok(words)
}

/// Splits `KEY=value` pairs as ENV/LABEL do (quotes kept for later expansion).
/// Returns raw (unexpanded) tokens split on unquoted white space.
pub fn split_raw(s: &str, escape: char) -> Result<Vec<String>, ExpandError> {
    let mut words = Vec::new();
    let mut cur = String::new();
    let mut has = false;
    let mut it = s.chars().peekable();
    let mut quote: Option<char> = None;
    while let Some(c) = it.next() {
        match quote {
            Some(q) => {
                cur.push(c);
                if c == escape && q == '"' {
                    if let Some(n) = it.next() {
                        cur.push(n);
                    }
                } else if c == q {
                    quote = None;
                }
            }
            None => {
                if c.is_whitespace() {
                    if has {
                        words.push(std::mem::take(&mut cur));
                        has = false;
                    }
                    continue;
                }
                has = true;
                cur.push(c);
                if c == escape {
                    if let Some(n) = it.next() {
                        cur.push(n);
                    }
                } else if c == '"' || c == '\'' {
                    quote = Some(c);
                }
            }
        }
    }
    if quote.is_some() {
        return Err(ExpandError(
            "unexpected end of statement while looking for matching quote".into(),
        ));
    }
    if has {
        words.push(cur);
    }
    Ok(words)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars() -> BTreeMap<String, String> {
        [("A", "a"), ("E", ""), ("S", "x y")]
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn word() {
        let v = vars();
        let w = |s: &str| expand_word(s, '\\', &v).unwrap();
        assert_eq!(w("$A"), "a");
        assert_eq!(w("${A}b"), "ab");
        assert_eq!(w("${U:-def}"), "def");
        assert_eq!(w("${E:-def}"), "def");
        assert_eq!(w("${E-def}"), "");
        assert_eq!(w("${A:+yes}"), "yes");
        assert_eq!(w("${U:+yes}"), "");
        assert_eq!(w("'$A'"), "$A");
        assert_eq!(w("\"$A\""), "a");
        assert_eq!(w("\\$A"), "$A");
        assert_eq!(w("a\\ b"), "a b");
        assert_eq!(w("\"a\\\"b\""), "a\"b");
        assert_eq!(w("\"a\\nb\""), "a\\nb");
        assert_eq!(w("$"), "$");
        assert_eq!(w("${U:-${A}x}"), "ax");
        assert!(expand_word("${U:?need U}", '\\', &v)
            .unwrap_err()
            .0
            .contains("need U"));
        assert!(expand_word("${", '\\', &v).is_err());
        assert!(expand_word("\"abc", '\\', &v).is_err());
        assert_eq!(expand_word("`$A", '`', &v).unwrap(), "$A");
    }

    #[test]
    fn patterns() {
        let mut v = vars();
        v.insert("P".into(), "a/b/c.tar.gz".into());
        let w = |s: &str| expand_word(s, '\\', &v).unwrap();
        assert_eq!(w("${P#*/}"), "b/c.tar.gz");
        assert_eq!(w("${P##*/}"), "c.tar.gz");
        assert_eq!(w("${P%.*}"), "a/b/c.tar");
        assert_eq!(w("${P%%.*}"), "a/b/c");
    }

    #[test]
    fn words() {
        let v = vars();
        let w = |s: &str| expand_words(s, '\\', &v).unwrap();
        assert_eq!(w("a  b"), vec!["a", "b"]);
        assert_eq!(w("$S z"), vec!["x", "y", "z"]);
        assert_eq!(w("\"$S\" z"), vec!["x y", "z"]);
        assert_eq!(w("'' b"), vec!["", "b"]);
        assert_eq!(w("$E"), Vec::<String>::new());
        assert_eq!(w("\"a b\"c"), vec!["a bc"]);
    }

    #[test]
    fn raw_split() {
        assert_eq!(
            split_raw("A=\"x y\" B=z\\ w", '\\').unwrap(),
            vec!["A=\"x y\"", "B=z\\ w"]
        );
    }

    proptest::proptest! {
        #[test]
        fn never_panics(s in "[a-z$\\{\\}:\\-+?#%'\"\\\\ ]{0,40}") {
            let v = vars();
            let _ = expand_word(&s, '\\', &v);
            let _ = expand_words(&s, '\\', &v);
            let _ = split_raw(&s, '\\');
        }
    }
}
