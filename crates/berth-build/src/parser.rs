//! Dockerfile syntax: parser directives, comments, line continuations, heredocs, flags and
//! the exec/shell forms. Each [`Node`] becomes a typed instruction (flags parsed) in
//! `builder::instructions`; evaluation (variable expansion, stages) lives in `builder`.
//!
//! The rules follow moby/buildkit's `frontend/dockerfile/parser`:
//! - directives (`# syntax=`, `# escape=`, `# check=`) only before the first comment, blank
//!   line or instruction; `escape` is `\` or `` ` ``, the others are accepted and ignored;
//! - comment lines (`#` after leading white space) are dropped, also inside a continued
//!   instruction; blank lines inside a continuation are skipped;
//! - a line ending with the escape character (trailing white space ignored) continues;
//! - `RUN`, `COPY` and `ADD` may name heredocs (`<<EOF`, `<<-EOF`, `<<"EOF"`), whose bodies
//!   follow the instruction line up to a line equal to the terminator.

use std::fmt;

/// A syntax error, with the 1-based line it was found on.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("dockerfile parse error on line {line}: {message}")]
pub struct ParseError {
    pub line: usize,
    pub message: String,
    /// An instruction's error (unknown, without arguments, bad flags), which BuildKit's
    /// parser finds when it turns nodes into instructions, not a syntax error of the file.
    pub instruction: bool,
}

fn perr(line: usize, message: impl Into<String>) -> ParseError {
    ParseError {
        line,
        message: message.into(),
        instruction: false,
    }
}

/// An instruction's error (see [`ParseError::instruction`]).
fn ierr(line: usize, message: impl Into<String>) -> ParseError {
    ParseError {
        instruction: true,
        ..perr(line, message)
    }
}

/// A heredoc attached to an instruction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Heredoc {
    /// The terminator word.
    pub name: String,
    /// The body (with its final newline).
    pub content: String,
    /// Whether variables are expanded in the body (unquoted terminator).
    pub expand: bool,
    /// `<<-`: leading tabs were stripped.
    pub chomp: bool,
}

/// One instruction as written (moby's parser node).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Node {
    /// Upper-case keyword (`RUN`).
    pub keyword: String,
    /// `--name=value` flags (value empty for bare `--name`), in order.
    pub flags: Vec<(String, String)>,
    /// The rest of the line after the flags, continuations joined.
    pub args: String,
    /// The instruction's text as Docker prints it in `Step N/M : …` (continuations joined).
    pub original: String,
    /// First line (1-based).
    pub line: usize,
    /// Last line.
    pub end_line: usize,
    /// Heredocs named on the line, in order.
    pub heredocs: Vec<Heredoc>,
}

impl Node {
    /// The value of a flag (last one wins), if given.
    pub fn flag(&self, name: &str) -> Option<&str> {
        self.flags
            .iter()
            .rev()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    /// All values of a repeatable flag.
    pub fn flag_all(&self, name: &str) -> Vec<&str> {
        self.flags
            .iter()
            .filter(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
            .collect()
    }

    /// Refuses flags not in `allowed`.
    pub fn check_flags(&self, allowed: &[&str]) -> Result<(), ParseError> {
        for (n, _) in &self.flags {
            if !allowed.contains(&n.as_str()) {
                return Err(ierr(
                    self.line,
                    format!("unknown flag: --{n} for {}", self.keyword),
                ));
            }
        }
        Ok(())
    }
}

impl fmt::Display for Node {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.original)
    }
}

/// A parsed Dockerfile.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dockerfile {
    /// The escape character.
    pub escape: char,
    /// The instructions as written, in file order.
    pub nodes: Vec<Node>,
    /// Warnings (empty continuation lines, …).
    pub warnings: Vec<String>,
}

/// Every instruction keyword we know.
pub const KEYWORDS: &[&str] = &[
    "ADD",
    "ARG",
    "CMD",
    "COPY",
    "ENTRYPOINT",
    "ENV",
    "EXPOSE",
    "FROM",
    "HEALTHCHECK",
    "LABEL",
    "MAINTAINER",
    "ONBUILD",
    "RUN",
    "SHELL",
    "STOPSIGNAL",
    "USER",
    "VOLUME",
    "WORKDIR",
];

fn takes_heredoc(kw: &str) -> bool {
    matches!(kw, "RUN" | "COPY" | "ADD")
}

fn takes_flags(kw: &str) -> bool {
    matches!(kw, "FROM" | "RUN" | "COPY" | "ADD" | "HEALTHCHECK")
}

fn parse_directive(line: &str) -> Option<(String, String)> {
    let rest = line.trim_start().strip_prefix('#')?;
    let (k, v) = rest.split_once('=')?;
    let k = k.trim();
    if k.is_empty() || !k.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
        return None;
    }
    Some((k.to_ascii_lowercase(), v.trim().to_string()))
}

/// Whether `line` (trailing white space removed) ends with an unescaped-by-itself escape char.
fn continues(line: &str, escape: char) -> Option<&str> {
    let t = line.trim_end();
    t.strip_suffix(escape)
}

/// Parses a Dockerfile.
pub fn parse(src: &str) -> Result<Dockerfile, ParseError> {
    let src = src.strip_prefix('\u{feff}').unwrap_or(src);
    let lines: Vec<&str> = src
        .split('\n')
        .map(|l| l.strip_suffix('\r').unwrap_or(l))
        .collect();
    let mut escape = '\\';
    let mut i = 0;
    // Directives.
    let mut seen = std::collections::HashSet::new();
    while i < lines.len() {
        match parse_directive(lines[i]) {
            Some((k, v)) if matches!(k.as_str(), "escape" | "syntax" | "check") => {
                if !seen.insert(k.clone()) {
                    return Err(perr(
                        i + 1,
                        format!("only one {k} parser directive can be used"),
                    ));
                }
                if k == "escape" {
                    escape = match v.as_str() {
                        "\\" => '\\',
                        "`" => '`',
                        _ => {
                            return Err(perr(
                                i + 1,
                                format!("invalid escape token '{v}' does not match ` or \\"),
                            ))
                        }
                    };
                }
                i += 1;
            }
            // Unknown directives are comments, and end the directive section.
            _ => break,
        }
    }
    let mut out = Dockerfile {
        escape,
        nodes: Vec::new(),
        warnings: Vec::new(),
    };
    while i < lines.len() {
        let raw = lines[i];
        let t = raw.trim_start();
        if t.is_empty() || t.starts_with('#') {
            i += 1;
            continue;
        }
        let start = i;
        // Join continuation lines.
        let mut text = String::new();
        let mut cur = t.to_string();
        let mut end = i;
        while let Some(body) = continues(&cur, escape) {
            {
                {
                    text.push_str(body);
                    // Next non-comment line.
                    let mut j = end + 1;
                    let mut blank_seen = false;
                    loop {
                        if j >= lines.len() {
                            break;
                        }
                        let lt = lines[j].trim_start();
                        if lt.starts_with('#') {
                            j += 1;
                            continue;
                        }
                        if lt.trim().is_empty() {
                            blank_seen = true;
                            j += 1;
                            continue;
                        }
                        break;
                    }
                    if blank_seen {
                        out.warnings.push(format!(
                            "[WARNING]: Empty continuation line found in instruction on line {}",
                            start + 1
                        ));
                    }
                    if j >= lines.len() {
                        end = lines.len() - 1;
                        cur = String::new();
                        break;
                    }
                    end = j;
                    cur = lines[j].to_string();
                }
            }
        }
        text.push_str(&cur);
        i = end + 1;
        let text = text.trim().to_string();
        let (kw_raw, rest) = match text.find(|c: char| c.is_whitespace()) {
            Some(p) => (&text[..p], text[p..].trim_start()),
            None => (text.as_str(), ""),
        };
        let keyword = kw_raw.to_ascii_uppercase();
        if !KEYWORDS.contains(&keyword.as_str()) {
            return Err(ierr(start + 1, format!("unknown instruction: {kw_raw}")));
        }
        let (flags, args) = if takes_flags(&keyword) {
            split_flags(rest, start + 1)?
        } else {
            (Vec::new(), rest.to_string())
        };
        let mut heredocs = Vec::new();
        if takes_heredoc(&keyword) {
            for (name, expand, chomp) in heredoc_names(&args) {
                let mut content = String::new();
                let mut found = false;
                while i < lines.len() {
                    let l = lines[i];
                    i += 1;
                    let cmp = if chomp { l.trim_start_matches('\t') } else { l };
                    if cmp == name {
                        found = true;
                        break;
                    }
                    content.push_str(cmp);
                    content.push('\n');
                }
                if !found {
                    return Err(perr(
                        start + 1,
                        format!("unterminated heredoc {name}: no line \"{name}\" found"),
                    ));
                }
                heredocs.push(Heredoc {
                    name,
                    content,
                    expand,
                    chomp,
                });
            }
        }
        if args.trim().is_empty() {
            return Err(ierr(
                start + 1,
                format!("{keyword} requires at least one argument"),
            ));
        }
        let end_line = if heredocs.is_empty() { end + 1 } else { i };
        out.nodes.push(Node {
            original: format!("{kw_raw} {rest}").trim_end().to_string(),
            keyword,
            flags,
            args,
            line: start + 1,
            end_line,
            heredocs,
        });
    }
    Ok(out)
}

/// Splits leading `--flag[=value]` words.
fn split_flags(rest: &str, line: usize) -> Result<(Vec<(String, String)>, String), ParseError> {
    let mut flags = Vec::new();
    let mut s = rest;
    loop {
        let t = s.trim_start();
        let Some(f) = t.strip_prefix("--") else {
            return Ok((flags, t.to_string()));
        };
        // A flag word ends at unquoted white space.
        let mut end = f.len();
        let mut quote: Option<char> = None;
        for (idx, c) in f.char_indices() {
            match quote {
                Some(q) if c == q => quote = None,
                Some(_) => {}
                None if c == '"' || c == '\'' => quote = Some(c),
                None if c.is_whitespace() => {
                    end = idx;
                    break;
                }
                None => {}
            }
        }
        if quote.is_some() {
            return Err(ierr(line, "unterminated quote in flag"));
        }
        let word = &f[..end];
        if word.is_empty() {
            // `--` alone ends the flags.
            return Ok((flags, f[end..].trim_start().to_string()));
        }
        let (n, v) = match word.split_once('=') {
            Some((n, v)) => (n.to_string(), unquote(v)),
            None => (word.to_string(), String::new()),
        };
        if n.is_empty()
            || !n
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        {
            return Err(ierr(line, format!("invalid flag --{word}")));
        }
        flags.push((n, v));
        s = &f[end..];
    }
}

fn unquote(v: &str) -> String {
    if v.len() >= 2
        && ((v.starts_with('"') && v.ends_with('"')) || (v.starts_with('\'') && v.ends_with('\'')))
    {
        v[1..v.len() - 1].to_string()
    } else {
        v.to_string()
    }
}

/// Heredoc terminators named in `args`: (name, expand, chomp).
pub fn heredoc_names(args: &str) -> Vec<(String, bool, bool)> {
    let mut out = Vec::new();
    let b = args.as_bytes();
    let mut i = 0;
    let mut quote: Option<u8> = None;
    while i < b.len() {
        let c = b[i];
        if let Some(q) = quote {
            if c == q {
                quote = None;
            } else if c == b'\\' && q == b'"' {
                i += 1;
            }
            i += 1;
            continue;
        }
        if c == b'\'' || c == b'"' {
            quote = Some(c);
            i += 1;
            continue;
        }
        if c == b'\\' {
            i += 2;
            continue;
        }
        if c == b'<' && b.get(i + 1) == Some(&b'<') && b.get(i + 2) != Some(&b'<') {
            // `<<<` is a here-string, not a heredoc.
            if i > 0 && b[i - 1] == b'<' {
                i += 1;
                continue;
            }
            let mut j = i + 2;
            let chomp = b.get(j) == Some(&b'-');
            if chomp {
                j += 1;
            }
            let (name, expand, next) = match b.get(j) {
                Some(&q @ (b'"' | b'\'')) => {
                    let st = j + 1;
                    let mut k = st;
                    while k < b.len() && b[k] != q {
                        k += 1;
                    }
                    if k >= b.len() {
                        break;
                    }
                    (args[st..k].to_string(), false, k + 1)
                }
                _ => {
                    let st = j;
                    let mut k = st;
                    while k < b.len() && (b[k].is_ascii_alphanumeric() || b[k] == b'_') {
                        k += 1;
                    }
                    (args[st..k].to_string(), true, k)
                }
            };
            if !name.is_empty() {
                out.push((name, expand, chomp));
            }
            i = next;
            continue;
        }
        i += 1;
    }
    out
}

/// Parses the JSON exec form (`["a", "b"]`); `None` for the shell form.
pub fn json_array(args: &str) -> Option<Vec<String>> {
    let t = args.trim();
    if !t.starts_with('[') {
        return None;
    }
    serde_json::from_str::<Vec<String>>(t).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn basics() {
        let df = parse("# syntax=docker/dockerfile:1\n# escape=`\nFROM busybox AS b\nRUN echo a `\n  # comment\n  b\n\nrun [\"ls\"]\n").unwrap();
        assert_eq!(df.escape, '`');
        assert_eq!(df.nodes.len(), 3);
        assert_eq!(df.nodes[1].args, "echo a   b");
        assert_eq!(df.nodes[1].line, 4);
        assert_eq!(df.nodes[2].keyword, "RUN");
        assert_eq!(json_array(&df.nodes[2].args), Some(vec!["ls".into()]));
    }

    #[test]
    fn directives_only_at_top() {
        let df = parse("FROM x\n# escape=`\nRUN a \\\n b\n").unwrap();
        assert_eq!(df.escape, '\\');
        assert_eq!(df.nodes[1].args, "a  b");
        assert!(parse("# escape=x\nFROM a").is_err());
    }

    #[test]
    fn flags() {
        let df =
            parse("COPY --from=build --chown=1:2 a b\nRUN --mount=type=cache,target=/x echo\n")
                .unwrap();
        assert_eq!(df.nodes[0].flag("from"), Some("build"));
        assert_eq!(df.nodes[0].flag("chown"), Some("1:2"));
        assert_eq!(df.nodes[0].args, "a b");
        assert_eq!(df.nodes[1].flag("mount"), Some("type=cache,target=/x"));
    }

    #[test]
    fn heredocs() {
        let df = parse("FROM a\nRUN <<EOF\necho hi\necho there\nEOF\nCOPY <<-\"X\" /f\n\tline $A\n\tX\nRUN cat <<A <<B\n1\nA\n2\nB\n").unwrap();
        let r = &df.nodes[1];
        assert_eq!(r.heredocs[0].content, "echo hi\necho there\n");
        assert!(r.heredocs[0].expand);
        let c = &df.nodes[2];
        assert_eq!(c.heredocs[0].content, "line $A\n");
        assert!(!c.heredocs[0].expand);
        assert_eq!(df.nodes[3].heredocs.len(), 2);
        assert_eq!(df.nodes[3].heredocs[1].content, "2\n");
        let e = parse("FROM a\nRUN <<EOF\necho\n").unwrap_err();
        assert_eq!(e.line, 2);
    }

    #[test]
    fn errors_have_lines() {
        let e = parse("FROM a\n\nFOO bar\n").unwrap_err();
        assert_eq!(e.line, 3);
        assert!(e.message.contains("unknown instruction"));
        assert_eq!(parse("FROM a\nCOPY\n").unwrap_err().line, 2);
    }

    proptest::proptest! {
        #[test]
        fn never_panics(s in "\\PC{0,200}") {
            let _ = parse(&s);
        }
        #[test]
        fn never_panics_structured(s in "(FROM|RUN|COPY|ENV|#|<<|\\\\|\\n| |-|=|\"|'|EOF|a|\\$|\\{|\\}|\\[|\\]){0,60}") {
            let _ = parse(&s);
        }
    }
}
