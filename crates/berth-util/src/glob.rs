//! Pieces of Go's `path.Match` that several pattern matchers share.

/// Matches `c` against the character class at the start of `p`, just after its `[`, as Go's
/// `path.Match` reads one: ranges (`a-z`), `\` escapes, negated by a leading `^` (or also by
/// `!` when `bang`, as `.dockerignore` patterns are). Whether `c` is in the class, and the
/// length of the class up to and including its `]`; `None` when the class is malformed
/// (unterminated, or an escape at the end of the pattern).
pub fn match_class(p: &[char], c: char, bang: bool) -> Option<(bool, usize)> {
    let mut i = 0;
    let negate = p.first() == Some(&'^') || (bang && p.first() == Some(&'!'));
    if negate {
        i += 1;
    }
    let mut matched = false;
    let mut first = true;
    loop {
        let ch = *p.get(i)?;
        if ch == ']' && !first {
            i += 1;
            break;
        }
        first = false;
        let lo = if ch == '\\' {
            i += 1;
            *p.get(i)?
        } else {
            ch
        };
        i += 1;
        let hi = if p.get(i) == Some(&'-') && p.get(i + 1) != Some(&']') {
            i += 1;
            if p.get(i)? == &'\\' {
                i += 1;
            }
            let h = *p.get(i)?;
            i += 1;
            h
        } else {
            lo
        };
        if lo <= c && c <= hi {
            matched = true;
        }
    }
    Some((matched != negate, i))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn class(p: &str, c: char, bang: bool) -> Option<(bool, usize)> {
        match_class(&p.chars().collect::<Vec<_>>(), c, bang)
    }

    #[test]
    fn classes() {
        assert_eq!(class("a-c]x", 'b', false), Some((true, 4)));
        assert_eq!(class("a-c]x", 'd', false), Some((false, 4)));
        assert_eq!(class("^a-c]", 'd', false), Some((true, 5)));
        assert_eq!(class("!a]", '!', false), Some((true, 3)));
        assert_eq!(class("!a]", 'b', true), Some((true, 3)));
        assert_eq!(class("]]", ']', false), Some((true, 2)));
        assert_eq!(class("\\]-\\a]", '^', false), Some((true, 6)));
        assert_eq!(class("a-]", '-', false), Some((true, 3)));
        assert_eq!(class("ab", 'a', false), None);
        assert_eq!(class("a\\", 'a', false), None);
        assert_eq!(class("a-", 'a', false), None);
    }
}
