//! Lexing and parsing: actions are cut out of the text, lexed, and parsed into pipelines and
//! the block structure (`if`, `range`, `with`, `else`, `end`).

use super::{err, TemplateError, Value};

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    Field(Vec<String>),
    Dot,
    Var(String, Vec<String>),
    Str(String),
    Int(i64),
    Float(f64),
    Ident(String),
    LParen,
    RParen,
    Pipe,
    Declare,
    Assign,
    Comma,
}

#[derive(Debug, Clone)]
pub(super) enum Arg {
    Field(Vec<String>),
    Var(String, Vec<String>),
    Lit(Value),
    Ident(String),
    Sub(Box<Pipeline>, Vec<String>),
}

#[derive(Debug, Clone)]
pub(super) struct Command {
    pub(super) args: Vec<Arg>,
}

#[derive(Debug, Clone)]
pub(super) struct Pipeline {
    pub(super) decl: Vec<String>,
    pub(super) cmds: Vec<Command>,
}

#[derive(Debug, Clone)]
pub(super) enum Node {
    Text(String),
    Action(Pipeline),
    If(Pipeline, Vec<Node>, Vec<Node>),
    Range(Pipeline, Vec<Node>, Vec<Node>),
    With(Pipeline, Vec<Node>, Vec<Node>),
}

enum Piece {
    Text(String),
    Action(String),
}

fn split_pieces(src: &str) -> Result<Vec<Piece>, TemplateError> {
    let mut pieces = Vec::new();
    let mut rest = src;
    let mut trim_next_text = false;
    while let Some(start) = rest.find("{{") {
        let mut text = rest[..start].to_string();
        if trim_next_text {
            text = text.trim_start().to_string();
        }
        let after = &rest[start + 2..];
        let trim_left =
            after.starts_with("- ") || after.starts_with("-\t") || after.starts_with("-\n");
        if trim_left {
            text = text.trim_end().to_string();
        }
        pieces.push(Piece::Text(text));
        let body_start = if trim_left { 1 } else { 0 };
        let body = &after[body_start..];
        // Find the closing braces outside string literals.
        let bytes = body.as_bytes();
        let mut i = 0;
        let mut close = None;
        while i < bytes.len() {
            match bytes[i] {
                b'"' => {
                    i += 1;
                    while i < bytes.len() && bytes[i] != b'"' {
                        if bytes[i] == b'\\' {
                            i += 1;
                        }
                        i += 1;
                    }
                }
                b'`' => {
                    i += 1;
                    while i < bytes.len() && bytes[i] != b'`' {
                        i += 1;
                    }
                }
                b'}' if bytes.get(i + 1) == Some(&b'}') => {
                    close = Some(i);
                    break;
                }
                _ => {}
            }
            i += 1;
        }
        let Some(close) = close else {
            return err(":1: unclosed action");
        };
        let mut action = &body[..close];
        trim_next_text = false;
        if action.ends_with(" -") || action.ends_with("\t-") || action.ends_with("\n-") {
            action = &action[..action.len() - 1];
            trim_next_text = true;
        }
        let a = action.trim();
        if !(a.starts_with("/*") && a.ends_with("*/")) {
            pieces.push(Piece::Action(a.to_string()));
        }
        rest = &body[close + 2..];
    }
    let mut text = rest.to_string();
    if trim_next_text {
        text = text.trim_start().to_string();
    }
    pieces.push(Piece::Text(text));
    Ok(pieces)
}

/// The punctuation token at `c` (followed by `next`) and its length in characters.
fn punctuation(c: char, next: Option<char>) -> Option<(Tok, usize)> {
    Some(match (c, next) {
        ('(', _) => (Tok::LParen, 1),
        (')', _) => (Tok::RParen, 1),
        ('|', _) => (Tok::Pipe, 1),
        (',', _) => (Tok::Comma, 1),
        (':', Some('=')) => (Tok::Declare, 2),
        ('=', _) => (Tok::Assign, 1),
        _ => return None,
    })
}

/// A quoted string (`"…"` with Go's escapes) or a raw one (`` `…` ``) starting at `chars[*i]`;
/// `*i` ends after the closing quote.
fn lex_string(chars: &[char], i: &mut usize) -> Result<String, TemplateError> {
    let quote = chars[*i];
    let raw = quote == '`';
    let unterminated = if raw {
        ":1: unterminated raw quoted string"
    } else {
        ":1: unterminated quoted string"
    };
    let next = |i: &mut usize| {
        let c = chars.get(*i).copied();
        *i += 1;
        c
    };
    *i += 1;
    let mut s = String::new();
    loop {
        let Some(c) = next(i) else {
            return err(unterminated);
        };
        if c == quote {
            return Ok(s);
        }
        if raw || c != '\\' {
            s.push(c);
            continue;
        }
        let Some(e) = next(i) else {
            return err(unterminated);
        };
        match e {
            'n' => s.push('\n'),
            't' => s.push('\t'),
            'r' => s.push('\r'),
            '\\' => s.push('\\'),
            '"' => s.push('"'),
            '\'' => s.push('\''),
            '0' => s.push('\0'),
            'x' | 'u' => {
                let n = if e == 'x' { 2 } else { 4 };
                let h: String = chars.iter().skip(*i).take(n).collect();
                *i += n;
                let v = u32::from_str_radix(&h, 16)
                    .ok()
                    .and_then(char::from_u32)
                    .ok_or_else(|| TemplateError("template: :1: invalid escape".into()))?;
                s.push(v);
            }
            other => return err(format!(":1: unknown escape sequence \\{other}")),
        }
    }
}

fn lex(action: &str) -> Result<Vec<Tok>, TemplateError> {
    let mut toks = Vec::new();
    let chars: Vec<char> = action.chars().collect();
    let mut i = 0;
    let ident_char = |c: char| c.is_alphanumeric() || c == '_';
    let read_fields = |i: &mut usize| -> Vec<String> {
        let mut fields = Vec::new();
        while *i < chars.len() && chars[*i] == '.' {
            let start = *i + 1;
            let mut j = start;
            while j < chars.len() && ident_char(chars[j]) {
                j += 1;
            }
            if j == start {
                break;
            }
            fields.push(chars[start..j].iter().collect());
            *i = j;
        }
        fields
    };
    while i < chars.len() {
        let c = chars[i];
        if let Some((tok, len)) = punctuation(c, chars.get(i + 1).copied()) {
            let rparen = matches!(tok, Tok::RParen);
            toks.push(tok);
            i += len;
            // Field access on a parenthesised value: (x).Field
            if rparen && chars.get(i) == Some(&'.') {
                toks.push(Tok::Field(read_fields(&mut i)));
            }
            continue;
        }
        match c {
            c if c.is_whitespace() => i += 1,
            '"' | '`' => toks.push(Tok::Str(lex_string(&chars, &mut i)?)),
            '.' => {
                if chars
                    .get(i + 1)
                    .is_some_and(|c| ident_char(*c) && !c.is_ascii_digit())
                {
                    let f = read_fields(&mut i);
                    toks.push(Tok::Field(f));
                } else if chars.get(i + 1).is_some_and(|c| c.is_ascii_digit()) {
                    let start = i;
                    i += 1;
                    while i < chars.len() && chars[i].is_ascii_digit() {
                        i += 1;
                    }
                    let s: String = chars[start..i].iter().collect();
                    toks.push(Tok::Float(s.parse().unwrap_or(0.0)));
                } else {
                    toks.push(Tok::Dot);
                    i += 1;
                }
            }
            '$' => {
                let start = i + 1;
                let mut j = start;
                while j < chars.len() && ident_char(chars[j]) {
                    j += 1;
                }
                let name: String = chars[start..j].iter().collect();
                i = j;
                let f = read_fields(&mut i);
                toks.push(Tok::Var(format!("${name}"), f));
            }
            c if c.is_ascii_digit()
                || ((c == '-' || c == '+')
                    && chars.get(i + 1).is_some_and(|d| d.is_ascii_digit())) =>
            {
                let start = i;
                i += 1;
                while i < chars.len()
                    && (chars[i].is_ascii_alphanumeric() || chars[i] == '.' || chars[i] == '_')
                {
                    i += 1;
                }
                let s: String = chars[start..i].iter().filter(|c| **c != '_').collect();
                if let Ok(n) = s.parse::<i64>() {
                    toks.push(Tok::Int(n));
                } else if let Some(h) = s.strip_prefix("0x") {
                    toks.push(Tok::Int(i64::from_str_radix(h, 16).map_err(|_| {
                        TemplateError(format!("template: :1: bad number syntax: {s:?}"))
                    })?));
                } else if let Ok(f) = s.parse::<f64>() {
                    toks.push(Tok::Float(f));
                } else {
                    return err(format!(":1: bad number syntax: {s:?}"));
                }
            }
            c if ident_char(c) => {
                let start = i;
                while i < chars.len() && ident_char(chars[i]) {
                    i += 1;
                }
                toks.push(Tok::Ident(chars[start..i].iter().collect()));
            }
            other => return err(format!(":1: unexpected {other:?} in command")),
        }
    }
    Ok(toks)
}

struct TokStream {
    toks: Vec<Tok>,
    pos: usize,
}

impl TokStream {
    fn peek(&self) -> Option<&Tok> {
        self.toks.get(self.pos)
    }
    fn next(&mut self) -> Option<Tok> {
        let t = self.toks.get(self.pos).cloned();
        self.pos += 1;
        t
    }
}

fn parse_pipeline(ts: &mut TokStream, in_paren: bool) -> Result<Pipeline, TemplateError> {
    let mut decl = Vec::new();
    // Variable declarations: $x := / $i, $v :=
    let save = ts.pos;
    let mut vars = Vec::new();
    loop {
        match ts.peek() {
            Some(Tok::Var(v, f)) if f.is_empty() => {
                vars.push(v.clone());
                ts.next();
                match ts.peek() {
                    Some(Tok::Comma) => {
                        ts.next();
                        continue;
                    }
                    Some(Tok::Declare) | Some(Tok::Assign) => {
                        ts.next();
                        decl = vars;
                        break;
                    }
                    _ => {
                        ts.pos = save;
                        break;
                    }
                }
            }
            _ => {
                ts.pos = save;
                break;
            }
        }
    }
    let mut cmds = Vec::new();
    let mut args = Vec::new();
    while let Some(t) = ts.peek().cloned() {
        match t {
            Tok::RParen if in_paren => break,
            Tok::RParen => return err(":1: unexpected right paren"),
            Tok::Pipe => {
                ts.next();
                if args.is_empty() {
                    return err(":1: missing command");
                }
                cmds.push(Command {
                    args: std::mem::take(&mut args),
                });
            }
            Tok::LParen => {
                ts.next();
                let inner = parse_pipeline(ts, true)?;
                if ts.next() != Some(Tok::RParen) {
                    return err(":1: unclosed left paren");
                }
                let fields = match ts.peek() {
                    Some(Tok::Field(f)) => {
                        let f = f.clone();
                        ts.next();
                        f
                    }
                    _ => Vec::new(),
                };
                args.push(Arg::Sub(Box::new(inner), fields));
            }
            _ => {
                ts.next();
                args.push(match t {
                    Tok::Field(f) => Arg::Field(f),
                    Tok::Dot => Arg::Field(Vec::new()),
                    Tok::Var(v, f) => Arg::Var(v, f),
                    Tok::Str(s) => Arg::Lit(Value::Str(s)),
                    Tok::Int(n) => Arg::Lit(Value::Int(n)),
                    Tok::Float(n) => Arg::Lit(Value::Float(n)),
                    Tok::Ident(id) => match id.as_str() {
                        "true" => Arg::Lit(Value::Bool(true)),
                        "false" => Arg::Lit(Value::Bool(false)),
                        "nil" => Arg::Lit(Value::Nil),
                        _ => Arg::Ident(id),
                    },
                    other => return err(format!(":1: unexpected {other:?} in operand")),
                });
            }
        }
    }
    if !args.is_empty() {
        cmds.push(Command { args });
    }
    if cmds.is_empty() {
        return err(":1: missing value for command");
    }
    Ok(Pipeline { decl, cmds })
}

fn parse_action_pipeline(src: &str) -> Result<Pipeline, TemplateError> {
    let mut ts = TokStream {
        toks: lex(src)?,
        pos: 0,
    };
    let p = parse_pipeline(&mut ts, false)?;
    if ts.pos < ts.toks.len() {
        return err(":1: unexpected token in pipeline");
    }
    Ok(p)
}

enum Stop {
    End,
    Else(Option<String>),
    Eof,
}

fn keyword(action: &str) -> (&str, &str) {
    let a = action.trim();
    let kw_end = a.find(|c: char| c.is_whitespace()).unwrap_or(a.len());
    (&a[..kw_end], a[kw_end..].trim())
}

fn parse_nodes(
    pieces: &mut std::iter::Peekable<std::vec::IntoIter<Piece>>,
) -> Result<(Vec<Node>, Stop), TemplateError> {
    let mut nodes = Vec::new();
    while let Some(p) = pieces.next() {
        match p {
            Piece::Text(t) => {
                if !t.is_empty() {
                    nodes.push(Node::Text(t));
                }
            }
            Piece::Action(a) => {
                let (kw, rest) = keyword(&a);
                match kw {
                    "end" => return Ok((nodes, Stop::End)),
                    "else" => {
                        return Ok((
                            nodes,
                            Stop::Else(if rest.is_empty() {
                                None
                            } else {
                                Some(rest.to_string())
                            }),
                        ));
                    }
                    "if" | "range" | "with" => nodes.push(parse_block(kw, rest, pieces)?),
                    "define" | "template" | "block" | "break" | "continue" => {
                        return err(format!(":1: {kw:?} is not supported"));
                    }
                    _ => nodes.push(Node::Action(parse_action_pipeline(&a)?)),
                }
            }
        }
    }
    Ok((nodes, Stop::Eof))
}

fn parse_block(
    kw: &str,
    rest: &str,
    pieces: &mut std::iter::Peekable<std::vec::IntoIter<Piece>>,
) -> Result<Node, TemplateError> {
    if rest.is_empty() {
        return err(format!(":1: missing value for {kw}"));
    }
    let pipe = parse_action_pipeline(rest)?;
    let (body, stop) = parse_nodes(pieces)?;
    let else_body = match stop {
        Stop::End => Vec::new(),
        Stop::Eof => return err(format!(":1: unexpected EOF in {kw}")),
        Stop::Else(None) => {
            let (e, stop) = parse_nodes(pieces)?;
            if !matches!(stop, Stop::End) {
                return err(":1: expected end after else");
            }
            e
        }
        Stop::Else(Some(chain)) => {
            // {{else if …}} / {{else with …}}: a nested block sharing our {{end}}.
            let (ckw, crest) = keyword(&chain);
            if ckw != "if" && ckw != "with" {
                return err(format!(":1: unexpected {chain:?} after else"));
            }
            vec![parse_block(ckw, crest, pieces)?]
        }
    };
    Ok(match kw {
        "if" => Node::If(pipe, body, else_body),
        "range" => Node::Range(pipe, body, else_body),
        _ => Node::With(pipe, body, else_body),
    })
}

/// Parses a template's source into its nodes.
pub(super) fn parse(src: &str) -> Result<Vec<Node>, TemplateError> {
    let pieces = split_pieces(src)?;
    let mut it = pieces.into_iter().peekable();
    let (nodes, stop) = parse_nodes(&mut it)?;
    match stop {
        Stop::Eof => Ok(nodes),
        Stop::End => err(":1: unexpected {{end}}"),
        Stop::Else(_) => err(":1: unexpected {{else}}"),
    }
}
