//! The shapes and checks that changed between Engine API 1.45 and 1.51, through raw HTTP
//! with versioned paths (each decided in `berth_api::version`): the version bounds, create's
//! checks and warnings, the container list's annotations, image list/inspect/history/save/
//! delete with their `platform` parameters, info's fields and network create's `EnableIPv4`.

mod common;
use common::*;

use serde_json::{json, Value};

/// `POST path` with a JSON body: the status and the JSON answer.
#[track_caller]
fn post_json(d: &Daemon, path: &str, v: &Value) -> (u16, Value) {
    let r = d.post(path, &v.to_string());
    let status = r
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let v = serde_json::from_str(body(&r).trim()).unwrap_or(Value::Null);
    (status, v)
}

/// A JSON platform as a query value.
fn platform(os: &str, arch: &str) -> String {
    let raw = json!({"os": os, "architecture": arch}).to_string();
    raw.bytes()
        .map(|b| match b {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

#[test]
fn the_daemon_speaks_1_24_to_1_51() {
    let d = root_daemon!();
    let r = d.http("GET", "/_ping", None).unwrap();
    assert!(r.to_ascii_lowercase().contains("api-version: 1.51"), "{r}");
    let v = get_json(&d, "/version");
    assert_eq!(
        (v["ApiVersion"].as_str(), v["MinAPIVersion"].as_str()),
        (Some("1.51"), Some("1.24"))
    );
    get_json(&d, "/v1.51/version");
    let too_new = d.http("GET", "/v1.52/version", None).unwrap();
    assert_eq!(
        api_error(&too_new, 400),
        "client version 1.52 is too new. Maximum supported API version is 1.51"
    );
    // Older than 1.24: plain text (those clients predate JSON errors), as dockerd.
    let too_old = d.http("GET", "/v1.23/version", None).unwrap();
    assert!(too_old.starts_with("HTTP/1.1 400 "), "{too_old}");
    assert!(
        too_old
            .to_ascii_lowercase()
            .contains("content-type: text/plain; charset=utf-8"),
        "{too_old}"
    );
    assert_eq!(
        body(&too_old),
        "client version 1.23 is too old. Minimum supported API version is 1.24, please upgrade your client to a newer version\n"
    );
    // The docker CLI (28.2, API 1.50 at most) negotiates and shows the server's range.
    let v = d.docker(&["version"]).ok().stdout;
    assert!(
        v.contains("API version:      1.51 (minimum version 1.24)"),
        "{v}"
    );
    d.finish();
}

/// dockerd's version middleware names the server, its API version and OS on every answer
/// (`docker_api_exec_test.go`'s `TestExecAPIStartEnsureHeaders`), and `OPTIONS` of any path
/// is a 200 (`TestAPIOptionsRoute`); a version too old still fails it.
#[test]
fn every_answer_has_the_server_headers_and_options_is_ok() {
    let d = root_daemon!();
    for (method, path) in [
        ("GET", "/version"),
        ("GET", "/v1.44/containers/json"),
        ("GET", "/containers/nope/json"),
        ("POST", "/exec/nope/start"),
    ] {
        let r = d
            .http(method, path, Some("{}"))
            .unwrap()
            .to_ascii_lowercase();
        let head = r.split_once("\r\n\r\n").map_or("", |(h, _)| h);
        assert!(head.contains("\r\nserver: berth/"), "{path}: {r}");
        assert!(head.contains("\r\napi-version: 1.51\r\n"), "{path}: {r}");
        assert!(head.contains("\r\nostype: linux\r\n"), "{path}: {r}");
    }
    for path in ["/", "/containers/json", "/v1.44/images/x/json", "/nope"] {
        let r = d.http("OPTIONS", path, None).unwrap();
        assert!(r.starts_with("HTTP/1.1 200 "), "{path}: {r}");
        assert_eq!(body(&r), "", "{path}");
    }
    let r = d.http("OPTIONS", "/v1.99/version", None).unwrap();
    assert!(api_error(&r, 400).contains("too new"), "{r}");
    d.finish();
}

/// Create: `VolumeOptions.Subpath` needs 1.45, an `image` mount 1.48; from 1.48 a
/// container-wide `VolumeDriver` with volume mounts warns; the container list shows
/// `HostConfig.Annotations` from 1.46.
#[test]
fn create_checks_warnings_and_list_annotations() {
    let d = root_daemon!();
    let subpath = json!({"Image": "busybox", "Cmd": ["true"], "HostConfig": {"Mounts": [
        {"Type": "volume", "Source": "apiv-sub", "Target": "/v", "VolumeOptions": {"Subpath": "a"}}]}});
    let (st, v) = post_json(&d, "/v1.44/containers/create?name=apiv-sub44", &subpath);
    assert_eq!(
        (st, v["message"].as_str()),
        (400, Some("VolumeOptions.Subpath needs API v1.45 or newer"))
    );
    let (st, v) = post_json(&d, "/v1.45/containers/create?name=apiv-sub45", &subpath);
    assert_eq!(st, 201, "{v}");

    let image = json!({"Image": "busybox", "HostConfig": {"Mounts": [
        {"Type": "image", "Source": "busybox", "Target": "/i"}]}});
    let (st, v) = post_json(&d, "/v1.47/containers/create?name=apiv-img", &image);
    assert_eq!(
        (st, v["message"].as_str()),
        (400, Some(r#"Mount type "Image" needs API v1.48 or newer"#))
    );

    let driver = json!({"Image": "busybox", "Cmd": ["true"], "HostConfig": {"VolumeDriver": "local",
        "Mounts": [{"Type": "volume", "Source": "apiv-drv", "Target": "/v"}]},
        "Annotations": {"ignored": "here"}});
    let (st, v) = post_json(&d, "/v1.47/containers/create?name=apiv-drv47", &driver);
    assert_eq!((st, &v["Warnings"]), (201, &json!([])), "{v}");
    let (st, v) = post_json(&d, "/v1.48/containers/create?name=apiv-drv48", &driver);
    assert_eq!(st, 201, "{v}");
    let w = v["Warnings"][0].as_str().unwrap_or_default();
    assert!(w.starts_with("WARNING: the container-wide volume-driver configuration is ignored for volumes specified via 'mount'"), "{v}");

    let annotated = json!({"Image": "busybox", "Cmd": ["true"],
        "HostConfig": {"Annotations": {"org.example/k": "v"}}});
    let (st, v) = post_json(&d, "/v1.46/containers/create?name=apiv-ann", &annotated);
    assert_eq!(st, 201, "{v}");
    let listed = |ver: &str| {
        let l = get_json(&d, &format!("/v{ver}/containers/json?all=1"));
        let c = l
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["Names"][0] == "/apiv-ann")
            .cloned();
        c.unwrap()["HostConfig"].clone()
    };
    assert_eq!(listed("1.45").get("Annotations"), None);
    assert_eq!(listed("1.46")["Annotations"], json!({"org.example/k": "v"}));
    // Without annotations the field is absent at every version (omitempty).
    let l = get_json(&d, "/v1.51/containers/json?all=1");
    let plain = l
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["Names"][0] == "/apiv-sub45")
        .unwrap();
    assert_eq!(plain["HostConfig"].get("Annotations"), None);
    d.finish();
}

/// Image list counts containers from 1.51; image inspect's `Config` loses the container-only
/// fields at 1.50; `platform` of inspect (1.49), history and save (1.48), `platforms` of
/// delete (1.50): an image of another platform is not found.
#[test]
fn image_shapes_and_platform_parameters() {
    let d = root_daemon!();
    d.docker(&["create", "--name", "apiv-user", "busybox", "true"])
        .ok();
    let busybox = |l: Value| {
        let found = l.as_array().unwrap().iter().find(|i| {
            i["RepoTags"]
                .as_array()
                .unwrap()
                .iter()
                .any(|t| t == "busybox:latest")
        });
        found.cloned().unwrap()
    };
    assert_eq!(
        busybox(get_json(&d, "/v1.50/images/json"))["Containers"],
        -1
    );
    assert_eq!(busybox(get_json(&d, "/v1.51/images/json"))["Containers"], 1);

    let old = get_json(&d, "/v1.49/images/busybox/json");
    let new = get_json(&d, "/v1.50/images/busybox/json");
    for k in [
        "Hostname",
        "Domainname",
        "AttachStdin",
        "AttachStdout",
        "AttachStderr",
        "Tty",
        "OpenStdin",
        "StdinOnce",
        "Image",
    ] {
        assert!(old["Config"].get(k).is_some(), "1.49 {k}: {old}");
        assert!(new["Config"].get(k).is_none(), "1.50 {k}: {new}");
    }
    for k in [
        "Cmd",
        "Entrypoint",
        "Env",
        "Labels",
        "OnBuild",
        "User",
        "Volumes",
        "WorkingDir",
    ] {
        assert!(new["Config"].get(k).is_some(), "1.50 {k}: {new}");
    }
    // ContainerConfig stays at every version (compose 1.29 reads it; dockerd drops it).
    assert!(old.get("ContainerConfig").is_some() && new.get("ContainerConfig").is_some());
    assert!(new.get("Descriptor").is_none());

    let (os, arch) = (
        old["Os"].as_str().unwrap(),
        old["Architecture"].as_str().unwrap(),
    );
    let mine = platform(os, arch);
    let other = platform("linux", if arch == "s390x" { "amd64" } else { "s390x" });
    get_json(&d, &format!("/v1.49/images/busybox/json?platform={mine}"));
    // Below 1.49 the parameter is not read.
    get_json(&d, &format!("/v1.48/images/busybox/json?platform={other}"));
    let r = d
        .http(
            "GET",
            &format!("/v1.49/images/busybox/json?platform={other}"),
            None,
        )
        .unwrap();
    let want = format!("image with reference busybox was found but its platform ({os}/{arch}) does not match the specified platform (linux/");
    assert!(api_error(&r, 404).starts_with(&want), "{r}");
    let r = d
        .http(
            "GET",
            &format!("/v1.49/images/busybox/json?manifests=1&platform={mine}"),
            None,
        )
        .unwrap();
    assert_eq!(
        api_error(&r, 400),
        "conflicting options: manifests and platform options cannot both be set"
    );
    let r = d
        .http(
            "GET",
            "/v1.49/images/busybox/json?platform=%7B%22os%22%3A%22linux%22%7D",
            None,
        )
        .unwrap();
    assert_eq!(
        api_error(&r, 400),
        "both OS and Architecture must be provided"
    );

    get_json(
        &d,
        &format!("/v1.47/images/busybox/history?platform={other}"),
    );
    let r = d
        .http(
            "GET",
            &format!("/v1.48/images/busybox/history?platform={other}"),
            None,
        )
        .unwrap();
    assert!(api_error(&r, 404).starts_with(&want), "{r}");

    let r = d
        .http(
            "GET",
            &format!("/v1.48/images/busybox/get?platform={other}"),
            None,
        )
        .unwrap();
    assert!(
        api_error(&r, 500).starts_with("no suitable export target found for platform linux/"),
        "{r}"
    );
    let r = d
        .http(
            "GET",
            &format!("/v1.48/images/get?names=busybox&platform={mine}&platform={other}"),
            None,
        )
        .unwrap();
    assert_eq!(
        api_error(&r, 400),
        "multiple platform parameters not supported"
    );

    d.docker(&["tag", "busybox", "apiv-del:1"]).ok();
    let r = d
        .http(
            "DELETE",
            &format!("/v1.50/images/apiv-del:1?platforms={other}"),
            None,
        )
        .unwrap();
    assert!(
        api_error(&r, 404).starts_with("image with reference apiv-del:1 was found"),
        "{r}"
    );
    let r = d
        .http("DELETE", "/v1.50/images/apiv-del:1?platforms=nope", None)
        .unwrap();
    assert!(
        api_error(&r, 400).starts_with("failed to parse platform"),
        "{r}"
    );
    let r = d
        .http(
            "DELETE",
            &format!("/v1.50/images/apiv-del:1?platforms={mine}"),
            None,
        )
        .unwrap();
    assert!(
        r.starts_with("HTTP/1.1 200") && body(&r).contains("Untagged"),
        "{r}"
    );
    d.finish();
}

/// Info: `AllowNondistributableArtifacts…` (null) below 1.47, `BridgeNfIp(6)tables` (false)
/// below 1.50, `FirewallBackend` from 1.49. Network create reads `EnableIPv4` from 1.48.
#[test]
fn info_fields_and_network_enable_ipv4() {
    let d = root_daemon!();
    let i46 = get_json(&d, "/v1.46/info");
    assert_eq!(
        i46["RegistryConfig"]["AllowNondistributableArtifactsCIDRs"],
        Value::Null
    );
    assert!(i46["RegistryConfig"]
        .get("AllowNondistributableArtifactsHostnames")
        .is_some());
    let i48 = get_json(&d, "/v1.48/info");
    assert!(i48["RegistryConfig"]
        .get("AllowNondistributableArtifactsCIDRs")
        .is_none());
    assert_eq!(
        (&i48["BridgeNfIptables"], &i48["BridgeNfIp6tables"]),
        (&json!(false), &json!(false))
    );
    assert!(i48.get("FirewallBackend").is_none(), "{i48}");
    let i49 = get_json(&d, "/v1.49/info");
    let fw = i49["FirewallBackend"]["Driver"]
        .as_str()
        .unwrap_or_default();
    assert!(["nftables", "iptables"].contains(&fw), "{i49}");
    let i50 = get_json(&d, "/v1.50/info");
    assert!(i50.get("BridgeNfIptables").is_none() && i50.get("BridgeNfIp6tables").is_none());
    assert!(i50.get("DiscoveredDevices").is_none() && i50.get("Containerd").is_none());

    let no_v4 = json!({"Name": "apiv-net", "EnableIPv4": false});
    let (st, v) = post_json(&d, "/v1.48/networks/create", &no_v4);
    assert_eq!(
        (st, v["message"].as_str()),
        (400, Some("IPv4 or IPv6 must be enabled"))
    );
    // Below 1.48 the field is not read: an IPv4 network.
    let (st, v) = post_json(&d, "/v1.47/networks/create", &no_v4);
    assert_eq!(st, 201, "{v}");
    assert_eq!(get_json(&d, "/v1.47/networks/apiv-net")["EnableIPv4"], true);
    d.docker(&["network", "rm", "apiv-net"]).ok();
    d.finish();
}

/// moby integration-cli TestUserDefinedNetworkAlias (its CLI speaks API 1.38): below 1.45 a
/// user-defined network's endpoint lists the container's short ID and host name among its
/// aliases (dockerd's inspect route); from 1.45 only the given aliases; a built-in network's
/// never.
#[test]
fn inspect_aliases_list_the_short_id_before_1_45() {
    let d = root_daemon!("docker");
    let net = berth_testkit::names::unique_name("alnet");
    d.docker_out("network create", &[&net]);
    let id = d.docker_out(
        "run -d --name al1 --network-alias foo1",
        &["--network", &net, "busybox", "sleep", "60"],
    );
    let id = id.trim();
    let aliases = |version: &str| {
        let v = get_json(&d, &format!("/{version}/containers/al1/json"));
        v["NetworkSettings"]["Networks"][&net]["Aliases"].clone()
    };
    assert_eq!(aliases("v1.44"), json!(["foo1", &id[..12]]));
    assert_eq!(aliases("v1.51"), json!(["foo1"]));
    d.docker_out("run -d --name al2 busybox sleep 60", &[]);
    let v = get_json(&d, "/v1.44/containers/al2/json");
    assert_eq!(
        v["NetworkSettings"]["Networks"]["bridge"]["Aliases"],
        Value::Null
    );
    d.docker_out("rm -f al1 al2", &[]);
    d.docker_out("network rm", &[&net]);
    d.finish();
}
