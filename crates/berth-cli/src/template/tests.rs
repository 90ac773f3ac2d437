//! Tests of the template engine.

use super::*;

fn data() -> Value {
    let mut v = Value::from_json_str(
        r#"{"Id":"sha256:abc","RepoTags":["busybox:latest","busybox:1"],"Size":4261550,
            "Config":{"Cmd":["sh"],"Entrypoint":null,"Env":["PATH=/bin","A=b"],"Labels":{"z":"1","a":"2"},"Volumes":null,"OnBuild":null},
            "Os":"linux","Empty":"","Ratio":0.5,"Parent":""}"#,
    )
    .unwrap();
    v.mark_map("Config.Labels");
    v.mark_map("Config.Volumes");
    v.mark_list("Config.Entrypoint");
    v.mark_list("Config.OnBuild");
    v
}

fn run(t: &str) -> String {
    Template::parse(t).unwrap().execute(&data()).unwrap()
}

fn run_err(t: &str) -> String {
    match Template::parse(t) {
        Err(e) => e.0,
        Ok(tp) => tp.execute(&data()).unwrap_err().0,
    }
}

/// Each template fails (to parse or to run) with an error that contains the fragment.
#[track_caller]
fn assert_fails(cases: &[(&str, &str)]) {
    for (template, fragment) in cases {
        let e = run_err(template);
        assert!(e.contains(fragment), "{template}: {e}");
    }
}

/// Each template renders as expected.
#[track_caller]
fn assert_renders(cases: &[(&str, &str)]) {
    for (template, want) in cases {
        assert_eq!(run(template), *want, "{template}");
    }
}

#[test]
fn fields_and_printing() {
    assert_renders(&[
        ("{{.Id}}", "sha256:abc"),
        ("{{.Config.Cmd}}", "[sh]"),
        ("{{.Config.Entrypoint}}", "[]"),
        ("{{.Config.Volumes}}", "map[]"),
        ("{{.Config.Labels}}", "map[a:2 z:1]"),
        ("{{.Size}}", "4261550"),
        ("{{.Ratio}}", "0.5"),
        ("id={{ .Id }}!", "id=sha256:abc!"),
        ("{{.Config.Labels.a}}", "2"),
        ("{{.Config.Labels.nope}}", "<no value>"),
    ]);
    assert!(run("{{.}}").starts_with("{sha256:abc [busybox:latest busybox:1] 4261550 {[sh] [] "));
    assert_fails(&[("{{.Nope}}", "can't evaluate field Nope")]);
}

#[test]
fn functions() {
    assert_renders(&[
        ("{{json .Config.Cmd}}", r#"["sh"]"#),
        ("{{json .Config.Entrypoint}}", "null"),
        ("{{json .Config.Labels}}", r#"{"a":"2","z":"1"}"#),
        (
            "{{json .Config}}",
            r#"{"Cmd":["sh"],"Entrypoint":null,"Env":["PATH=/bin","A=b"],"Labels":{"a":"2","z":"1"},"Volumes":null,"OnBuild":null}"#,
        ),
        ("{{index .RepoTags 0}}", "busybox:latest"),
        ("{{index .Config.Labels \"z\"}}", "1"),
        ("{{join .RepoTags \", \"}}", "busybox:latest, busybox:1"),
        ("{{len .RepoTags}}", "2"),
        ("{{len .Config.Entrypoint}}", "0"),
        ("{{upper .Os}} {{lower \"ABC\"}}", "LINUX abc"),
        ("{{.Os | upper}}", "LINUX"),
        (r#"{{printf "%s-%d" .Os .Size}}"#, "linux-4261550"),
        (
            r#"{{printf "%-8s|%5d|%05d|%q" .Os 42 42 .Os}}"#,
            "linux   |   42|00042|\"linux\"",
        ),
        (r#"{{printf "%.3s" .Id}}"#, "sha"),
        (r#"{{.Id | printf "%.9s"}}"#, "sha256:ab"),
        ("{{title \"hello world\"}}", "Hello World"),
        ("{{truncate .Id 6}}", "sha256"),
        ("{{split \"a:b\" \":\"}}", "[a b]"),
        ("{{(index .RepoTags 1)}}", "busybox:1"),
        (
            "{{eq .Os \"linux\"}} {{ne .Os \"linux\"}} {{lt 1 2}}",
            "true false true",
        ),
        (
            "{{and .Os .Empty}}|{{or .Empty .Os}}|{{not .Empty}}",
            "|linux|true",
        ),
    ]);
    assert_fails(&[
        ("{{index .RepoTags 5}}", "index out of range: 5"),
        ("{{nosuch .Id}}", "function \"nosuch\" not defined"),
    ]);
}

#[test]
fn control_flow() {
    assert_renders(&[
        (
            "{{range .RepoTags}}[{{.}}]{{end}}",
            "[busybox:latest][busybox:1]",
        ),
        (
            "{{range $i, $t := .RepoTags}}{{$i}}={{$t}} {{end}}",
            "0=busybox:latest 1=busybox:1 ",
        ),
        (
            "{{range $k, $v := .Config.Labels}}{{$k}}={{$v}};{{end}}",
            "a=2;z=1;",
        ),
        ("{{range .Config.Entrypoint}}x{{else}}none{{end}}", "none"),
        ("{{if .Parent}}p{{else}}no parent{{end}}", "no parent"),
        ("{{if .Empty}}a{{else if .Os}}b{{else}}c{{end}}", "b"),
        ("{{with .Config}}{{.Cmd}}{{end}}", "[sh]"),
        ("{{$x := .Os}}{{$x}}-{{$.Id}}", "linux-sha256:abc"),
        ("{{range .RepoTags}}{{$.Os}} {{end}}", "linux linux "),
        ("a {{- \"b\" -}} c", "abc"),
        ("a{{/* comment */}}b", "ab"),
        ("{{if and .Os (eq (len .RepoTags) 2)}}yes{{end}}", "yes"),
    ]);
    assert_fails(&[
        ("{{if .Os}}", "unexpected EOF"),
        ("{{end}}", "unexpected {{end}}"),
        ("{{.Os", "unclosed action"),
    ]);
}

#[test]
fn header_mode() {
    let h = Value::from_json_str(r#"{"ID":"IMAGE ID","Repository":"REPOSITORY"}"#).unwrap();
    let t = Template::parse("{{.Repository}}\t{{.ID | lower}}\t{{json .}}").unwrap();
    assert_eq!(t.execute_header(&h), "REPOSITORY\tIMAGE ID\t");
}

#[test]
fn go_floats() {
    crate::assert_cases(
        go_float_v,
        &[
            (1e6, "1e+06"),
            (123456.0, "123456"),
            (0.5, "0.5"),
            (1e21, "1e+21"),
            (1e20, "1e+20"),
            (1234567.0, "1.234567e+06"),
        ],
    );
    crate::assert_cases(
        |(f, precision)| go_float_g(f, precision),
        &[
            ((4.26155, 3), "4.26"),
            ((999.9, 3), "1e+03"),
            ((100.0, 3), "100"),
            ((1.0, 4), "1"),
            ((12.5, 3), "12.5"),
        ],
    );
    crate::assert_cases(go_float_json, &[(1e21, "1e+21"), (0.000001, "0.000001")]);
}

fn row_with_labels() -> Value {
    let labels: std::collections::BTreeMap<String, String> =
        [("com.x".to_string(), "1".to_string())].into();
    Value::Map(vec![
        ("Names".into(), Value::Str("web".into())),
        ("Labels".into(), Value::Str("com.x=1".into())),
        ("Label".into(), Value::Method(Method::Label(labels))),
    ])
}

#[test]
fn label_method() {
    let r = row_with_labels();
    let run = |t: &str| Template::parse(t).unwrap().execute(&r);
    assert_eq!(run(r#"{{.Label "com.x"}}"#).unwrap(), "1");
    assert_eq!(run(r#"{{.Label "nope"}}|"#).unwrap(), "|");
    assert_eq!(run(r#"{{"com.x" | .Label}}"#).unwrap(), "1");
    assert_eq!(run(r#"{{$.Label "com.x"}}"#).unwrap(), "1");
    assert_eq!(
        run(r#"{{if eq (.Label "com.x") "1"}}yes{{end}}"#).unwrap(),
        "yes"
    );
    assert!(run("{{.Label}}")
        .unwrap_err()
        .0
        .contains("wrong number of args for Label"));
    assert!(run(r#"{{.Names "x"}}"#)
        .unwrap_err()
        .0
        .contains("non-function"));
    // Methods are not fields: json and printing leave them out (Docker's MarshalJSON).
    assert_eq!(
        run("{{json .}}").unwrap(),
        r#"{"Labels":"com.x=1","Names":"web"}"#
    );
    assert_eq!(run("{{.}}").unwrap(), "map[Labels:com.x=1 Names:web]");
    // An error in a header ends it where it happened, as Docker's does.
    let h = crate::format::row(&[("Names", "NAMES".into())]);
    let t = Template::parse("{{.Names}}\t{{.Label \"com.x\"}}\tmore").unwrap();
    assert_eq!(t.execute_header(&h), "NAMES\t");
}

#[test]
fn go_builtins_and_docker_functions() {
    assert_renders(&[
        ("{{slice .Id 0 6}}", "sha256"),
        ("{{slice .Id 7}}", "abc"),
        ("{{slice .RepoTags 1}}", "[busybox:1]"),
        ("{{slice .RepoTags 0 1}}", "[busybox:latest]"),
    ]);
    assert_fails(&[
        ("{{slice .Id 3 1}}", "invalid slice index"),
        ("{{slice .Id 0 99}}", "index out of range"),
        ("{{slice .Id 0 1 2}}", "3-index slice a string"),
    ]);
    assert_renders(&[
        (
            r#"{{html "<b>&'\"</b>"}}"#,
            "&lt;b&gt;&amp;&#39;&#34;&lt;/b&gt;",
        ),
        (r#"{{js "it's <x>"}}"#, "it\\'s \\u003Cx\\u003E"),
        (r#"{{urlquery "a b&c"}}"#, "a+b%26c"),
        (r#"{{print "a" 1 2 "b"}}"#, "a1 2b"),
        (r#"{{println "a" 1}}"#, "a 1\n"),
    ]);
    assert_fails(&[("{{call .Id}}", "non-function of type string")]);
    assert_renders(&[
        (r#"{{pad "x" 1 2}}|{{pad .Empty 3 3}}|"#, " x  ||"),
        (r#"{{truncate "abc" 5}}{{truncate "abcdef" 2}}"#, "abcab"),
        (r#"{{title "don't stop_me now"}}"#, "Don'T Stop_me Now"),
        (r#"{{join (split "a,b" ",") "+"}}"#, "a+b"),
    ]);
    assert_fails(&[("{{upper .Size}}", "expected string; got int")]);
}

#[test]
fn header_functions_pass_the_column_name() {
    let h = crate::format::row(&[("Names", "NAMES".into()), ("ID", "CONTAINER ID".into())]);
    let t = Template::parse(
        "{{json .Names}}|{{lower .ID}}|{{truncate .ID 3}}|{{split .ID \" \"}}|{{pad .Names 1 1}}|",
    )
    .unwrap();
    assert_eq!(
        t.execute_header(&h),
        "NAMES|CONTAINER ID|CONTAINER ID|CONTAINER ID| NAMES |"
    );
}

#[test]
fn string_literals() {
    assert_renders(&[
        (r#"{{"a\tb\x41\u00e9\"\\"}}"#, "a\tbAé\"\\"),
        ("{{`a\\n\"b`}}", "a\\n\"b"),
        (r#"{{printf "%s-%s" "x" `y`}}"#, "x-y"),
    ]);
    assert_fails(&[
        (r#"{{"\q"}}"#, "unknown escape sequence \\q"),
        (r#"{{"\xZZ"}}"#, "invalid escape"),
    ]);
}
