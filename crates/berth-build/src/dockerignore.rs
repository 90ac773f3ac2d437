//! `.dockerignore` with Docker's semantics (moby/patternmatcher): patterns are cleaned
//! paths relative to the context root; `*` and `?` do not cross `/`, `**` matches any number
//! of directories (including none), `[...]` classes and `\` escapes work as in Go's
//! `filepath.Match`; a pattern that matches a parent directory matches everything below it;
//! `!pattern` re-includes; the last matching pattern wins.

use std::path::Path;

/// One pattern.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pattern {
    pub text: String,
    pub exclusion: bool,
}

/// A `.dockerignore` file.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct IgnoreFile {
    pub patterns: Vec<Pattern>,
}

/// Cleans a path as Go's `filepath.Clean` (lexically), without leading `/`.
pub fn clean(p: &str) -> String {
    let mut parts: Vec<&str> = Vec::new();
    for c in p.split('/') {
        match c {
            "" | "." => {}
            ".." => {
                if parts.last().is_some_and(|l| *l != "..") {
                    parts.pop();
                } else if !p.starts_with('/') {
                    parts.push("..");
                }
            }
            c => parts.push(c),
        }
    }
    if parts.is_empty() {
        ".".into()
    } else {
        parts.join("/")
    }
}

impl IgnoreFile {
    /// Parses the file's text.
    pub fn parse(text: &str) -> IgnoreFile {
        let mut patterns = Vec::new();
        // A UTF-8 byte order mark is no part of the first pattern (moby's `ReadAll`).
        let text = text.strip_prefix('\u{feff}').unwrap_or(text);
        for line in text.lines() {
            if line.starts_with('#') {
                continue;
            }
            let mut l = line.trim();
            if l.is_empty() {
                continue;
            }
            let exclusion = if let Some(r) = l.strip_prefix('!') {
                l = r.trim();
                true
            } else {
                false
            };
            if l.is_empty() {
                continue;
            }
            let text = clean(l);
            if text == "." && !exclusion {
                // `.` would exclude the whole context; Docker drops it too.
                continue;
            }
            patterns.push(Pattern { text, exclusion });
        }
        IgnoreFile { patterns }
    }

    /// Reads `<dir>/.dockerignore` (missing: no patterns).
    pub fn load(dir: &Path) -> std::io::Result<IgnoreFile> {
        match std::fs::read_to_string(dir.join(".dockerignore")) {
            Ok(s) => Ok(Self::parse(&s)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(IgnoreFile::default()),
            Err(e) => Err(e),
        }
    }

    /// Whether any pattern re-includes.
    pub fn has_exclusions(&self) -> bool {
        self.patterns.iter().any(|p| p.exclusion)
    }

    /// Whether a context path (relative, `/`-separated) is ignored.
    pub fn ignored(&self, path: &str) -> bool {
        let path = clean(path);
        let parents: Vec<&str> = path
            .char_indices()
            .filter(|(_, c)| *c == '/')
            .map(|(i, _)| &path[..i])
            .collect();
        let mut matched = false;
        for p in &self.patterns {
            // Only a change of state matters.
            if p.exclusion != matched {
                continue;
            }
            let m =
                path_match(&p.text, &path) || parents.iter().any(|par| path_match(&p.text, par));
            if m {
                matched = !p.exclusion;
            }
        }
        matched
    }

    /// Whether a directory's subtree can be skipped entirely (ignored, and no `!` pattern
    /// could re-include something below it).
    pub fn skip_dir(&self, path: &str) -> bool {
        if !self.ignored(path) {
            return false;
        }
        if !self.has_exclusions() {
            return true;
        }
        let dir = clean(path);
        !self.patterns.iter().any(|p| {
            p.exclusion
                && (p.text.starts_with(&format!("{dir}/"))
                    || p.text.contains('*')
                    || p.text.contains('?')
                    || p.text.contains('['))
        })
    }
}

/// Path matching: `*`, `?` and classes do not match `/`; `**` does.
pub fn path_match(pattern: &str, name: &str) -> bool {
    let p: Vec<char> = pattern.chars().collect();
    let s: Vec<char> = name.chars().collect();
    let mut budget = 100_000u32;
    m(&p, &s, true, &mut budget)
}

/// Shell-style glob where `*` matches anything (for `${v#pat}`).
pub fn glob_match(pattern: &str, name: &str) -> bool {
    let p: Vec<char> = pattern.chars().collect();
    let s: Vec<char> = name.chars().collect();
    let mut budget = 100_000u32;
    m(&p, &s, false, &mut budget)
}

fn m(p: &[char], s: &[char], paths: bool, budget: &mut u32) -> bool {
    if *budget == 0 {
        return false;
    }
    *budget -= 1;
    let Some(&c) = p.first() else {
        return s.is_empty();
    };
    match c {
        '*' if paths && p.get(1) == Some(&'*') => {
            if p.get(2) == Some(&'/') {
                let rest = &p[3..];
                if m(rest, s, paths, budget) {
                    return true;
                }
                for i in 0..s.len() {
                    if s[i] == '/' && m(rest, &s[i + 1..], paths, budget) {
                        return true;
                    }
                }
                false
            } else {
                let rest = &p[2..];
                (0..=s.len()).any(|i| m(rest, &s[i..], paths, budget))
            }
        }
        '*' => {
            let rest = &p[1..];
            for i in 0..=s.len() {
                if i > 0 && paths && s[i - 1] == '/' {
                    break;
                }
                if m(rest, &s[i..], paths, budget) {
                    return true;
                }
            }
            false
        }
        '?' => match s.first() {
            Some(&ch) if !(paths && ch == '/') => m(&p[1..], &s[1..], paths, budget),
            _ => false,
        },
        '[' => {
            let Some(&ch) = s.first() else { return false };
            if paths && ch == '/' {
                return false;
            }
            match berth_util::glob::match_class(&p[1..], ch, true) {
                Some((hit, len)) => hit && m(&p[1 + len..], &s[1..], paths, budget),
                None => false,
            }
        }
        '\\' if p.len() > 1 => s.first() == Some(&p[1]) && m(&p[2..], &s[1..], paths, budget),
        _ => s.first() == Some(&c) && m(&p[1..], &s[1..], paths, budget),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matching() {
        assert!(path_match("*.go", "a.go"));
        assert!(!path_match("*.go", "d/a.go"));
        assert!(path_match("**/*.go", "d/e/a.go"));
        assert!(path_match("**/*.go", "a.go"));
        assert!(path_match("d/**", "d/e/f"));
        assert!(path_match("a?c", "abc"));
        assert!(!path_match("a?c", "a/c"));
        assert!(path_match("[a-c]x", "bx"));
        assert!(!path_match("[!a-c]x", "bx"));
        assert!(path_match("a\\*", "a*"));
        assert!(!path_match("a\\*", "ab"));
        assert!(path_match("**", "x/y"));
    }

    #[test]
    fn ignore_rules() {
        let f =
            IgnoreFile::parse("# comment\n*.md\n!README.md\nbuild\n/tmp/**\n**/*.o\n!keep/*.o\n");
        assert!(f.ignored("a.md"));
        assert!(!f.ignored("README.md"));
        assert!(!f.ignored("sub/a.md"));
        assert!(f.ignored("build"));
        assert!(f.ignored("build/x/y"));
        assert!(f.ignored("tmp/a"));
        assert!(f.ignored("x/y/z.o"));
        assert!(!f.ignored("keep/z.o"));
        assert!(!f.ignored("src/main.rs"));
        // Order matters: a later pattern overrides an earlier exception.
        let f = IgnoreFile::parse("!a.txt\n*.txt\n");
        assert!(f.ignored("a.txt"));
        let f = IgnoreFile::parse("dir\n!dir/keep\n");
        assert!(f.ignored("dir/x"));
        assert!(!f.ignored("dir/keep"));
        assert!(!f.skip_dir("dir"));
        assert!(IgnoreFile::parse("dir\n").skip_dir("dir"));
    }

    #[test]
    fn cleaning() {
        assert_eq!(clean("/a/./b/../c/"), "a/c");
        assert_eq!(clean("./"), ".");
    }

    proptest::proptest! {
        #[test]
        fn never_panics(p in "[a-z*?\\[\\]!\\\\/^-]{0,20}", s in "[a-z/]{0,20}") {
            let _ = path_match(&p, &s);
            let _ = glob_match(&p, &s);
            let _ = IgnoreFile::parse(&p).ignored(&s);
        }
    }
}
