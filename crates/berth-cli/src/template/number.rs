//! Go's number formatting (`strconv`'s shortest floats, `%g`, JSON floats) and a subset of
//! `fmt.Sprintf` for `printf`.

use super::value::write_json_string;
use super::Value;

/// Splits Rust's shortest `{:e}` output into (digits, exponent).
fn shortest_digits(f: f64) -> (String, i32) {
    let s = format!("{:e}", f.abs());
    let (m, e) = s.split_once('e').unwrap_or((&s, "0"));
    (m.replace('.', ""), e.parse().unwrap_or(0))
}

fn go_exp(e: i32) -> String {
    format!("e{}{:02}", if e < 0 { '-' } else { '+' }, e.abs())
}

/// Go's `%v` for a float64 (`strconv.FormatFloat(f, 'g', -1, 64)`).
pub fn go_float_v(f: f64) -> String {
    if f.is_nan() {
        return "NaN".into();
    }
    if f.is_infinite() {
        return if f > 0.0 { "+Inf" } else { "-Inf" }.into();
    }
    if f == 0.0 {
        return "0".into();
    }
    let sign = if f < 0.0 { "-" } else { "" };
    let (digits, exp) = shortest_digits(f);
    // strconv's shortest 'g' switches to an exponent at 6 digits.
    let eprec = 6;
    if exp < -4 || exp >= eprec {
        return exponent_form(sign, &digits, exp);
    }
    format!("{sign}{}", place_point(&digits, exp))
}

/// `d.ddde±XX`: the shortest digits with the point after the first one, and Go's exponent.
fn exponent_form(sign: &str, digits: &str, exp: i32) -> String {
    let mut m = digits[..1].to_string();
    if digits.len() > 1 {
        m.push('.');
        m.push_str(&digits[1..]);
    }
    format!("{sign}{m}{}", go_exp(exp))
}

fn place_point(digits: &str, exp: i32) -> String {
    if exp < 0 {
        format!("0.{}{}", "0".repeat((-exp - 1) as usize), digits)
    } else if (exp as usize) + 1 >= digits.len() {
        format!("{}{}", digits, "0".repeat(exp as usize + 1 - digits.len()))
    } else {
        format!(
            "{}.{}",
            &digits[..exp as usize + 1],
            &digits[exp as usize + 1..]
        )
    }
}

/// Go's JSON encoding of a float64.
pub fn go_float_json(f: f64) -> String {
    if !f.is_finite() {
        return "null".into();
    }
    if f == 0.0 {
        return "0".into();
    }
    let sign = if f < 0.0 { "-" } else { "" };
    let (digits, exp) = shortest_digits(f);
    let abs = f.abs();
    if !(1e-6..1e21).contains(&abs) {
        return exponent_form(sign, &digits, exp);
    }
    format!("{sign}{}", place_point(&digits, exp))
}

/// Go's `%.<prec>g`.
pub fn go_float_g(f: f64, prec: usize) -> String {
    let prec = prec.max(1);
    if f == 0.0 {
        return "0".into();
    }
    if !f.is_finite() {
        return go_float_v(f);
    }
    let s = format!("{:.*e}", prec - 1, f);
    let (m, e) = s.split_once('e').unwrap_or((&s, "0"));
    let exp: i32 = e.parse().unwrap_or(0);
    if exp < -4 || exp >= prec as i32 {
        let m = if m.contains('.') {
            m.trim_end_matches('0').trim_end_matches('.')
        } else {
            m
        };
        return format!("{m}{}", go_exp(exp));
    }
    let decimals = (prec as i32 - 1 - exp).max(0) as usize;
    let s = format!("{:.*}", decimals, f);
    if s.contains('.') {
        s.trim_end_matches('0').trim_end_matches('.').to_string()
    } else {
        s
    }
}

/// and precision.
pub fn sprintf(fmt: &str, args: &[Value]) -> String {
    let mut out = String::new();
    let chars: Vec<char> = fmt.chars().collect();
    let mut i = 0;
    let mut argi = 0;
    while i < chars.len() {
        let c = chars[i];
        if c != '%' {
            out.push(c);
            i += 1;
            continue;
        }
        i += 1;
        let mut minus = false;
        let mut zero = false;
        let mut plus = false;
        while i < chars.len() && matches!(chars[i], '-' | '+' | ' ' | '0' | '#') {
            match chars[i] {
                '-' => minus = true,
                '0' => zero = true,
                '+' => plus = true,
                _ => {}
            }
            i += 1;
        }
        let mut width = None;
        let start = i;
        while i < chars.len() && chars[i].is_ascii_digit() {
            i += 1;
        }
        if i > start {
            width = chars[start..i]
                .iter()
                .collect::<String>()
                .parse::<usize>()
                .ok();
        }
        let mut prec = None;
        if i < chars.len() && chars[i] == '.' {
            i += 1;
            let start = i;
            while i < chars.len() && chars[i].is_ascii_digit() {
                i += 1;
            }
            prec = Some(
                chars[start..i]
                    .iter()
                    .collect::<String>()
                    .parse::<usize>()
                    .unwrap_or(0),
            );
        }
        let Some(&verb) = chars.get(i) else {
            out.push_str("%!(NOVERB)");
            break;
        };
        i += 1;
        if verb == '%' {
            out.push('%');
            continue;
        }
        let Some(arg) = args.get(argi) else {
            out.push_str(&format!("%!{verb}(MISSING)"));
            continue;
        };
        argi += 1;
        let mut s = match (verb, arg) {
            ('d', Value::Int(n)) => {
                if plus && *n >= 0 {
                    format!("+{n}")
                } else {
                    n.to_string()
                }
            }
            ('x', Value::Int(n)) => format!("{n:x}"),
            ('X', Value::Int(n)) => format!("{n:X}"),
            ('x', Value::Str(st)) => st.bytes().map(|b| format!("{b:02x}")).collect(),
            ('f', Value::Float(f)) => format!("{:.*}", prec.unwrap_or(6), f),
            ('f', Value::Int(n)) => format!("%!f(int={n})"),
            ('e', Value::Float(f)) => {
                let s = format!("{:.*e}", prec.unwrap_or(6), f);
                let (m, e) = s.split_once('e').unwrap_or((&s, "0"));
                format!("{m}{}", go_exp(e.parse().unwrap_or(0)))
            }
            ('g', Value::Float(f)) => match prec {
                Some(p) => go_float_g(*f, p),
                None => go_float_v(*f),
            },
            ('q', v) => {
                let mut q = String::new();
                write_json_string(&mut q, &v.to_go_string());
                q
            }
            ('t', Value::Bool(b)) => b.to_string(),
            ('s' | 'v', v) => {
                let st = v.to_go_string();
                match prec {
                    Some(p) if verb == 's' => st.chars().take(p).collect(),
                    _ => st,
                }
            }
            (verb, v) => format!("%!{verb}({}={})", v.type_name(), v.to_go_string()),
        };
        if let Some(w) = width {
            let len = s.chars().count();
            if len < w {
                let pad = w - len;
                if minus {
                    s.push_str(&" ".repeat(pad));
                } else if zero && matches!(verb, 'd' | 'f' | 'x' | 'X') {
                    let (sign, digits) = if s.starts_with('-') || s.starts_with('+') {
                        s.split_at(1)
                    } else {
                        ("", s.as_str())
                    };
                    s = format!("{sign}{}{digits}", "0".repeat(pad));
                } else {
                    s = format!("{}{s}", " ".repeat(pad));
                }
            }
        }
        out.push_str(&s);
    }
    if argi < args.len() {
        out.push_str("%!(EXTRA ");
        let extra: Vec<String> = args[argi..]
            .iter()
            .map(|a| format!("{}={}", a.type_name(), a.to_go_string()))
            .collect();
        out.push_str(&extra.join(", "));
        out.push(')');
    }
    out
}
