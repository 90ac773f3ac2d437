//! Tests of the daemon's configuration.

use super::*;

fn flags(args: &[&str]) -> Flags {
    let mut v = vec!["berthd"];
    v.extend_from_slice(args);
    Flags::try_parse_from(v).unwrap()
}

/// The configuration of these flags and no file.
fn from_flags(args: &[&str]) -> Result<DaemonConfig, MergeError> {
    merge(&flags(args), &FileConfig::default())
}

#[test]
fn every_option_is_a_flag_and_a_settable_key() {
    let cmd = <Flags as clap::CommandFactory>::command();
    for o in OPTIONS {
        assert!(
            cmd.get_arguments().any(|a| a.get_long() == Some(o.flag)),
            "no flag --{} for {}",
            o.flag,
            o.key
        );
        // Every key is accepted by `set` (a value of the wrong type is an error, not
        // "unknown").
        let raw = RawValue::from_string("null".into()).unwrap();
        let mut f = FileConfig::default();
        let r = f.set(o.key, &raw);
        assert!(!matches!(r, Ok(false)), "{} not settable", o.key);
        assert!(!DOCKERD_ONLY.contains(&o.key));
    }
}

#[test]
fn defaults() {
    let c = from_flags(&[]).unwrap();
    assert_eq!(c.hosts, vec![DEFAULT_HOST]);
    assert_eq!(c.data_root, PathBuf::from("/var/lib/berth"));
    assert_eq!(c.pidfile, PathBuf::from("/run/berth/berthd.pid"));
    assert_eq!(c.group, "berth");
    assert_eq!(c.log_driver, "json-file");
    assert!(c.live_restore && !c.docker_compat && !c.init);
    assert!(c.cri);
    assert_eq!(c.cri_socket, PathBuf::from("/run/berth/cri.sock"));
    assert_eq!(c.cni_conf_dir, PathBuf::from("/etc/cni/net.d"));
    assert_eq!(c.cni_bin_dir, PathBuf::from("/usr/lib/cni"));
    assert_eq!(
        (c.cri_stream_address.to_string(), c.cri_stream_port),
        ("127.0.0.1".to_string(), 0)
    );
    // containerd's `stream_idle_timeout`.
    assert_eq!(
        c.cri_stream_idle_timeout,
        Some(std::time::Duration::from_secs(4 * 3600))
    );
    assert_eq!(c.level(), tracing::Level::INFO);
    assert_eq!(c.subnet_candidates(), None);
}

#[test]
fn file_values_and_flags_merge() {
    let text = r#"{
        "data-root": "/srv/berth",
        "exec-root": "/run/b2",
        "registry-mirrors": ["https://mirror.example:5000/"],
        "insecure-registries": ["reg.local:5000"],
        "log-opts": {"max-size": "5m", "max-file": "2"},
        "default-ulimits": {"nofile": {"Name": "nofile", "Soft": 1024, "Hard": 2048}},
        "default-address-pools": [{"base": "10.123.0.0/16", "size": 24}],
        "labels": ["env=test"],
        "debug": true,
        "live-restore": true,
        "docker-compat": true,
        "init": true,
        "bip": "172.29.0.1/16",
        "max-concurrent-downloads": 2
    }"#;
    let file = FileConfig::parse(text).unwrap();
    let c = merge(
        &flags(&["--bridge", "br-x", "-H", "unix:///tmp/x.sock"]),
        &file,
    )
    .unwrap();
    assert_eq!(c.data_root, PathBuf::from("/srv/berth"));
    assert_eq!(c.pidfile, PathBuf::from("/run/b2/berthd.pid"));
    assert_eq!(c.registry_mirrors, vec!["https://mirror.example:5000"]);
    assert_eq!(c.log_opts.get("max-size").unwrap(), "5m");
    let nofile = Ulimit {
        name: "nofile".into(),
        soft: 1024,
        hard: 2048,
    };
    assert_eq!(
        c.default_ulimits,
        BTreeMap::from([("nofile".into(), nofile)])
    );
    assert_eq!(c.bridge, "br-x");
    assert_eq!(c.hosts, vec!["unix:///tmp/x.sock"]);
    assert!(c.debug && c.docker_compat && c.init);
    assert_eq!(c.level(), tracing::Level::DEBUG);
    assert_eq!(c.max_concurrent_downloads, 2);
    let cands = c.subnet_candidates().unwrap();
    assert_eq!(cands.len(), 256);
    assert_eq!(cands[0].to_string(), "10.123.0.0/24");
    assert_eq!(cands[255].to_string(), "10.123.255.0/24");
}

#[test]
fn conflicts_name_both_values() {
    let file = FileConfig::parse(r#"{"hosts": ["tcp://127.0.0.1:2376"], "debug": false}"#).unwrap();
    let e = merge(&flags(&["-H", "fd://", "-D"]), &file).unwrap_err();
    assert_eq!(
        e.to_string(),
        "the following directives are specified both as a flag and in the configuration file: \
         debug: (from flag: true, from file: false), \
         hosts: (from flag: [fd://], from file: [\"tcp://127.0.0.1:2376\"])"
    );
}

#[test]
fn unknown_and_unsupported_keys() {
    let e =
        FileConfig::parse(r#"{"tls-verify": true, "data-root": "/x", "bogus": 1}"#).unwrap_err();
    assert!(
        matches!(&e, FileProblem::Unknown(keys) if keys == &["bogus", "tls-verify"]),
        "{e:?}"
    );
    let e = FileConfig::parse(r#"{"storage-driver": "overlay2"}"#).unwrap_err();
    assert_eq!(
        e.to_string(),
        "the following directives are dockerd options that berthd does not support: storage-driver"
    );
}

#[test]
fn bad_json_and_bad_values_name_the_line() {
    let e = FileConfig::parse("{\n  \"debug\": true,\n  \"bip\": \"172.30.0.1/16\"\n  \"x\": 1\n}")
        .unwrap_err();
    match e {
        FileProblem::Syntax { line, .. } => assert_eq!(line, 4),
        other => panic!("{other:?}"),
    }
    let e = FileConfig::parse("{\n  \"debug\": true,\n  \"data-root\": 5\n}").unwrap_err();
    assert_eq!(
        e.to_string(),
        "invalid value for \"data-root\" (line 3): invalid type: integer `5`, expected path string"
    );
    let e = FileConfig::parse("{\"bip\": \"300.1.1.1/16\"}").unwrap_err();
    assert!(
        matches!(e, FileProblem::Value { ref key, line: 1, .. } if key == "bip"),
        "{e}"
    );
    let e = FileConfig::parse(
        "{\"default-address-pools\": [{\"base\": \"10.0.0.0/16\", \"size\": 8}]}",
    )
    .unwrap_err();
    assert!(e.to_string().contains("size 8 must be between"), "{e}");
    let e =
        FileConfig::parse("{\"default-ulimits\": {\"nofile\": {\"Soft\": \"x\"}}}").unwrap_err();
    assert!(e.to_string().contains("nofile: "), "{e}");
}

#[test]
fn container_defaults() {
    use berth_api::container::{HostConfig, LogConfig};
    let c = from_flags(&[
        "--log-opt",
        "max-size=2m",
        "--log-opt",
        "max-file=4",
        "--default-ulimit",
        "nofile=100:200",
        "--init",
    ])
    .unwrap();
    let d = c.live().defaults;
    // No driver named: the default one with its options.
    let mut lc = LogConfig::default();
    d.merge_log_config(&mut lc).unwrap();
    assert_eq!(lc.kind, "json-file");
    let opts = |kv: [(&str, &str); 2]| Some(kv.map(|(k, v)| (k.to_string(), v.to_string())).into());
    assert_eq!(lc.config, opts([("max-size", "2m"), ("max-file", "4")]));
    // The container's own options win; the missing ones are the defaults.
    let mut lc = LogConfig {
        kind: "json-file".into(),
        config: Some([("max-file".to_string(), "9".to_string())].into()),
    };
    d.merge_log_config(&mut lc).unwrap();
    assert_eq!(lc.config, opts([("max-size", "2m"), ("max-file", "9")]));
    let mut lc = LogConfig {
        kind: String::new(),
        config: Some([("max-file".to_string(), "0".to_string())].into()),
    };
    assert!(d
        .merge_log_config(&mut lc)
        .unwrap_err()
        .to_string()
        .contains("max-file"));
    // Ulimits the container does not set, and the init unless it chose.
    let hc: HostConfig = berth_api::from_str(
        r#"{"Ulimits": [{"Name": "nproc", "Soft": 5, "Hard": 6}], "Init": false}"#,
    )
    .unwrap();
    let s = d.for_start(&hc);
    assert_eq!(s.ulimits.as_ref().unwrap().len(), 2);
    assert_eq!(s.init, Some(false));
    let s = d.for_start(&HostConfig::default());
    assert_eq!(s.init, Some(true));
    assert_eq!(s.ulimits.unwrap()[0].soft, 100);
    // Registry settings.
    let mut rc = berth_registry::RegistryConfig::default();
    let mut live = c.live();
    live.registry_mirrors = vec!["http://127.0.0.1:5001".into()];
    live.apply_registry(&mut rc);
    assert_eq!(rc.mirrors["docker.io"], vec!["http://127.0.0.1:5001"]);
    live.registry_mirrors.clear();
    live.apply_registry(&mut rc);
    assert!(rc.mirrors.is_empty());
}

#[test]
fn empty_files_and_byte_order_marks() {
    assert_eq!(FileConfig::parse("").unwrap(), FileConfig::default());
    assert_eq!(FileConfig::parse(" \n").unwrap(), FileConfig::default());
    let f = FileConfig::parse("\u{feff}{\"debug\": true}").unwrap();
    assert_eq!(f.debug, Some(true));
}

#[test]
fn values_are_checked() {
    let bad = |text: &str| {
        merge(&flags(&[]), &FileConfig::parse(text).unwrap())
            .unwrap_err()
            .to_string()
    };
    assert!(bad(r#"{"log-opts": {"max-file": "0"}}"#).contains("max-file cannot be less than 1"));
    assert!(bad(r#"{"log-opts": {"colour": "red"}}"#)
        .contains("unknown log opt 'colour' for json-file log driver"));
    assert!(bad(r#"{"log-driver": "syslog"}"#)
        .contains("logger: no log driver named 'syslog' is registered"));
    assert!(bad(r#"{"registry-mirrors": ["mirror.example"]}"#).contains("not a URL"));
    assert!(bad(r#"{"registry-mirrors": ["https://m.example/v2/x"]}"#).contains("without a path"));
    assert!(bad(r#"{"log-level": "loud"}"#).contains("log-level"));
    assert!(bad(r#"{"firewall-backend": "pf"}"#).contains("firewall-backend"));
    assert!(
        bad(r#"{"default-ulimits": {"nofile": {"Name": "nofile", "Soft": 10, "Hard": 5}}}"#)
            .contains("soft limit")
    );
    assert!(
        bad(r#"{"default-ulimits": {"files": {"Name": "files", "Soft": 1, "Hard": 1}}}"#)
            .contains("invalid ulimit type: files")
    );
    assert!(bad(r#"{"labels": ["nolabel"]}"#).contains("KEY=VALUE"));
    assert!(bad(r#"{"max-concurrent-uploads": 0}"#).contains("at least 1"));
    let e = from_flags(&["--default-ulimit", "nofile=x"]).unwrap_err();
    assert!(e.to_string().contains("invalid ulimit value"), "{e}");
    let e = from_flags(&["--default-address-pool", "base=10.0.0.0/8"]).unwrap_err();
    assert!(e.to_string().contains("both base and size"), "{e}");
}

#[test]
fn flag_forms() {
    let c = from_flags(&[
        "--default-ulimit",
        "nproc=100",
        "--default-ulimit",
        "nofile=10:20",
        "--log-opt",
        "max-size=1m",
        "--default-address-pool",
        "base=10.9.0.0/16,size=20",
        "--registry-mirror",
        "http://127.0.0.1:5001",
        "--tls=false",
    ])
    .unwrap();
    let nproc = Ulimit {
        name: "nproc".into(),
        soft: 100,
        hard: 100,
    };
    let nofile = Ulimit {
        name: "nofile".into(),
        soft: 10,
        hard: 20,
    };
    assert_eq!(
        c.default_ulimits,
        BTreeMap::from([("nproc".into(), nproc), ("nofile".into(), nofile)])
    );
    assert_eq!(c.default_address_pools[0].size, 20);
    assert_eq!(c.tls, Some(false));
    assert_eq!(c.subnet_candidates().unwrap().len(), 16);
}

#[test]
fn changes_list_what_differs() {
    let a = from_flags(&[]).unwrap();
    let b = merge(
        &flags(&[]),
        &FileConfig::parse(r#"{"debug": true, "bip": "172.29.0.1/16"}"#).unwrap(),
    )
    .unwrap();
    let ch = a.changes(&b);
    assert_eq!(ch.len(), 2, "{ch:?}");
    assert_eq!(ch[0].to_string(), "bip: null -> \"172.29.0.1/16\"");
    assert!(!ch[0].reloadable);
    assert_eq!(ch[1].key, "debug");
    assert!(ch[1].reloadable);
    assert!(a.changes(&a).is_empty());
}

#[test]
fn a_reload_takes_exactly_the_reloadable_options() {
    let a = from_flags(&[]).unwrap();
    // Every option different.
    let text = r#"{
        "hosts": ["unix:///tmp/b.sock"], "group": "g", "tls": true, "tlsverify": true,
        "tlscacert": "/ca", "tlscert": "/c", "tlskey": "/k", "data-root": "/d",
        "exec-root": "/e", "pidfile": "/p", "cgroup-parent": "/cg",
        "insecure-registries": ["r:5000"], "registry-mirrors": ["https://m"],
        "max-concurrent-downloads": 9, "max-concurrent-uploads": 9, "shim": "/s",
        "init-path": "/i", "init": true, "runtime": "/r", "log-level": "warn",
        "debug": true, "labels": ["a=b"], "bridge": "b1", "bip": "10.1.0.1/16",
        "fixed-cidr": "10.1.0.0/24",
        "default-address-pools": [{"base": "10.2.0.0/16", "size": 24}],
        "firewall-backend": "none", "log-driver": "json-file",
        "log-opts": {"max-size": "1m"},
        "default-ulimits": {"nproc": {"Name": "nproc", "Soft": 1, "Hard": 1}},
        "live-restore": false, "docker-compat": true, "cri": false,
        "cri-socket": "/c.sock", "cni-conf-dir": "/cc", "cni-bin-dir": "/cb",
        "cri-stream-address": "127.0.0.2", "cri-stream-port": 10010,
        "cri-stream-idle-timeout": "30m"
    }"#;
    let file = FileConfig::parse(text).unwrap();
    assert_eq!(
        file.present.len(),
        OPTIONS.len(),
        "the sample sets every option"
    );
    let b = merge(&flags(&[]), &file).unwrap();
    let all = a.changes(&b);
    // log-driver is the default already.
    assert_eq!(all.len(), OPTIONS.len() - 1, "{all:?}");
    let after = a.with_reloadable_from(&b);
    let left: Vec<String> = after.changes(&b).into_iter().map(|c| c.key).collect();
    let expected: Vec<String> = all
        .iter()
        .filter(|c| !c.reloadable)
        .map(|c| c.key.clone())
        .collect();
    assert_eq!(left, expected);
    assert!(expected.contains(&"data-root".to_string()));
    assert!(!expected.contains(&"registry-mirrors".to_string()));
}

#[test]
fn cri_socket_and_cni_dirs_are_absolute() {
    let c = from_flags(&["--exec-root", "/e", "--cri=false"]).unwrap();
    assert_eq!(c.cri_socket, PathBuf::from("/e/cri.sock"));
    assert!(!c.cri);
    for args in [
        ["--cri-socket", "cri.sock"],
        ["--cni-conf-dir", "net.d"],
        ["--cni-bin-dir", "bin"],
    ] {
        let e = from_flags(&args).unwrap_err();
        assert!(e.to_string().contains("not an absolute path"), "{e}");
    }
    let file = FileConfig::parse(r#"{"cri": "yes"}"#);
    assert!(file.is_err(), "a string is no bool");
}

#[test]
fn cri_stream_idle_timeout_is_a_go_duration() {
    let idle = |args: &[&str], file: &str| {
        merge(&flags(args), &FileConfig::parse(file).unwrap()).map(|c| c.cri_stream_idle_timeout)
    };
    assert_eq!(
        idle(&["--cri-stream-idle-timeout", "1m30s"], "{}").unwrap(),
        Some(std::time::Duration::from_secs(90))
    );
    assert_eq!(
        idle(&[], r#"{"cri-stream-idle-timeout": "250ms"}"#).unwrap(),
        Some(std::time::Duration::from_millis(250))
    );
    // 0: no limit.
    assert_eq!(
        idle(&["--cri-stream-idle-timeout", "0"], "{}").unwrap(),
        None
    );
    for bad in ["-1s", "4 hours", ""] {
        let arg = format!("--cri-stream-idle-timeout={bad}");
        let e = idle(&[&arg], "{}").unwrap_err();
        assert!(e.to_string().contains("cri-stream-idle-timeout"), "{e}");
    }
}
