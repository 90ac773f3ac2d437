//! Pushes verified by skopeo, and authentication (basic with htpasswd, bearer tokens through
//! a small token service in front of the registry).

mod common;

use std::sync::atomic::{AtomicU16, Ordering};
use std::sync::Arc;

use base64::Engine as _;
use berth_image::manifest::Platform;
use berth_image::Digest;
use berth_registry::{
    Client, CredentialStore, LayerEvent, NoProgress, PushOptions, RecordingProgress, RegistryError,
};
use berth_testkit::skopeo;
use common::*;

#[test]
fn push_verified_by_skopeo_then_skips_and_mounts() {
    require_root!(DOCKER_REGISTRY, SKOPEO);
    let reg = Registry::start(false);
    let (src, client) = local_client();
    let img = multilayer_image("amd64");
    img.write_store(&src.store);
    let rec = RecordingProgress::default();
    let pushed = src
        .push(
            &client,
            &reference(&reg.host(), "test/pushed:v1"),
            &img.manifest,
            &rec,
        )
        .unwrap();
    assert_eq!(pushed.digest, img.manifest_digest());
    assert_eq!(
        pushed.media_type,
        "application/vnd.oci.image.manifest.v1+json"
    );
    for l in &img.layers {
        let ev = rec.for_layer(&l.digest());
        assert!(ev.contains(&LayerEvent::Preparing), "{ev:?}");
        assert!(ev.contains(&LayerEvent::Pushed), "{ev:?}");
    }

    // An independent client sees exactly our manifest and can copy the image out.
    let raw = skopeo::inspect_raw(&format!("{}/test/pushed:v1", reg.host()))
        .ok()
        .stdout;
    assert_eq!(raw.as_bytes(), &img.manifest[..]);
    let out = src.dir.path().join("oci-out");
    skopeo::copy(
        &format!("docker://{}/test/pushed:v1", reg.host()),
        &format!("oci:{}:x", out.display()),
        &["--preserve-digests"],
    )
    .ok();
    for b in img.blobs() {
        let d = Digest::of_bytes(&b);
        assert_eq!(
            std::fs::read(out.join("blobs/sha256").join(d.hex())).unwrap(),
            b,
            "{d}"
        );
    }

    // Second push: every blob is already there, nothing is uploaded.
    let rec = RecordingProgress::default();
    let r = reference(&reg.host(), "test/pushed:v2");
    src.push(&client, &r, &img.manifest, &rec).unwrap();
    for l in &img.layers {
        let ev = rec.for_layer(&l.digest());
        assert!(ev.contains(&LayerEvent::LayerAlreadyExists), "{ev:?}");
        assert!(
            !ev.iter().any(|e| matches!(e, LayerEvent::Pushing { .. })),
            "{ev:?}"
        );
    }

    // Another repository on the same registry: blobs are mounted, not uploaded.
    let rec = RecordingProgress::default();
    client
        .push_with(
            &reference(&reg.host(), "test/other:v1"),
            &img.manifest,
            &src.store,
            &rec,
            &PushOptions {
                mount_from: vec!["test/pushed".into()],
            },
        )
        .unwrap();
    for l in &img.layers {
        let ev = rec.for_layer(&l.digest());
        assert!(
            ev.contains(&LayerEvent::MountedFrom {
                repository: "test/pushed".into()
            }),
            "{ev:?}"
        );
        assert!(
            !ev.iter().any(|e| matches!(e, LayerEvent::Pushing { .. })),
            "{ev:?}"
        );
    }
    let raw = skopeo::inspect_raw(&format!("{}/test/other:v1", reg.host()))
        .ok()
        .stdout;
    assert_eq!(raw.as_bytes(), &img.manifest[..]);

    // Pull it back into an empty store: identical blobs.
    let dst = local();
    let p = dst.pull_ref(&client, &reg.host(), "test/other:v1").unwrap();
    assert_eq!(p.manifest_digest, img.manifest_digest());
    for b in img.blobs() {
        assert_eq!(dst.store.read_verified(&Digest::of_bytes(&b)).unwrap(), b);
    }
}

#[test]
fn chunked_upload() {
    require_programs!(DOCKER_REGISTRY, SKOPEO);
    let reg = Registry::start(false);
    let src = local();
    let img = random_image(61, 700);
    img.write_store(&src.store);
    let mut cfg = config(src.dir.path());
    cfg.monolithic_upload_limit = 64 * 1024;
    cfg.upload_chunk_size = 100 * 1024;
    let client = Client::new(cfg).unwrap();
    let rec = RecordingProgress::default();
    let r = reference(&reg.host(), "test/chunked:1");
    src.push(&client, &r, &img.manifest, &rec).unwrap();
    let pushes = rec
        .for_layer(&img.layers[0].digest())
        .into_iter()
        .filter(|e| matches!(e, LayerEvent::Pushing { .. }))
        .count();
    assert!(pushes >= 7, "one event per chunk, got {pushes}");
    let raw = skopeo::inspect_raw(&format!("{}/test/chunked:1", reg.host()))
        .ok()
        .stdout;
    assert_eq!(raw.as_bytes(), &img.manifest[..]);
    let data = std::fs::read(reg.blob_data(&img.layers[0].digest())).unwrap();
    assert_eq!(data, img.layers[0].blob);
}

#[test]
fn basic_auth_login_logout() {
    require_root!(DOCKER_REGISTRY, SKOPEO);
    let reg = Registry::start(true);
    let img = random_image(71, 16);
    img.seed(
        &reg.host(),
        "test/private:1",
        Some(&format!("{USER}:{PASS}")),
    );
    let dst = local();
    let cfg = config(dst.dir.path());
    let creds_path = cfg.credentials.path().to_path_buf();
    let client = Client::new(cfg.clone()).unwrap();
    let r = reference(&reg.host(), "test/private:1");

    let err = dst.pull(&client, &r, &Platform::host()).unwrap_err();
    assert!(matches!(err, RegistryError::Unauthorized { .. }), "{err:?}");
    assert_eq!(err.to_string(), "unauthorized: authentication required");

    let err = client.login(&reg.host(), USER, "wrong").unwrap_err();
    assert_eq!(err.to_string(), "unauthorized: authentication required");
    assert!(!creds_path.exists());

    client.login(&reg.host(), USER, PASS).unwrap();
    let stored: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&creds_path).unwrap()).unwrap();
    assert_eq!(
        stored["auths"][reg.host()]["auth"],
        base64::engine::general_purpose::STANDARD.encode(format!("{USER}:{PASS}"))
    );
    client.ping(&reg.host()).unwrap();

    // A fresh client (fresh caches) uses the stored credentials.
    let client = Client::new(cfg.clone()).unwrap();
    let p = dst.pull(&client, &r, &Platform::host()).unwrap();
    assert_eq!(p.manifest_digest, img.manifest_digest());
    let other = random_image(72, 16);
    let src = local();
    other.write_store(&src.store);
    let r2 = reference(&reg.host(), "test/private2:1");
    src.push(&client, &r2, &other.manifest, &NoProgress)
        .unwrap();

    assert!(client.logout(&reg.host()).unwrap());
    assert!(!client.logout(&reg.host()).unwrap());
    assert_eq!(
        CredentialStore::at(&creds_path).get(&reg.host()).unwrap(),
        None
    );
    let client = Client::new(cfg).unwrap();
    let r3 = reference(&reg.host(), "test/private3:1");
    let err = src
        .push(&client, &r3, &other.manifest, &NoProgress)
        .unwrap_err();
    assert!(matches!(err, RegistryError::Unauthorized { .. }), "{err:?}");
}

/// A token service and a gate in front of an auth-less registry: requests to `/v2/` need
/// `Bearer tok:<scopes>`; the token service wants basic credentials.
#[test]
fn bearer_token_flow() {
    require_root!(DOCKER_REGISTRY, SKOPEO);
    let reg = Registry::start(false);
    let img = random_image(81, 16);
    img.seed(&reg.host(), "test/tok:1", None);
    let port = Arc::new(AtomicU16::new(0));
    let backend = reg.host();
    let p2 = port.clone();
    let good = format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{USER}:{PASS}"))
    );
    let gate = TestServer::start(Arc::new(move |req: &Req| {
        let realm = format!("http://127.0.0.1:{}/token", p2.load(Ordering::SeqCst));
        if req.path.starts_with("/token") {
            if req.header("authorization") != Some(good.as_str()) {
                return Action::Respond {
                    status: 401,
                    headers: vec![],
                    body: br#"{"errors":[{"code":"UNAUTHORIZED","message":"authentication required"}]}"#.to_vec(),
                };
            }
            let u = url::Url::parse(&format!("http://x{}", req.path)).unwrap();
            let scopes: Vec<String> = u
                .query_pairs()
                .filter(|(k, _)| k == "scope")
                .map(|(_, v)| v.to_string())
                .collect();
            let service = u
                .query_pairs()
                .find(|(k, _)| k == "service")
                .map(|(_, v)| v.to_string());
            assert_eq!(service.as_deref(), Some("test-registry"));
            let body = serde_json::json!({"access_token": format!("tok:{}", scopes.join(" ")), "expires_in": 300});
            return Action::Respond {
                status: 200,
                headers: vec![("Content-Type".into(), "application/json".into())],
                body: serde_json::to_vec(&body).unwrap(),
            };
        }
        let auth = req.header("authorization").unwrap_or("");
        let repo = req
            .path
            .strip_prefix("/v2/")
            .and_then(|p| p.split("/manifests/").next())
            .and_then(|p| p.split("/blobs/").next())
            .unwrap_or("");
        let need = if matches!(req.method.as_str(), "GET" | "HEAD") {
            "pull"
        } else {
            "push"
        };
        let ok = req.path == "/v2/" && auth.starts_with("Bearer tok:")
            || auth
                .strip_prefix("Bearer tok:")
                .map(|s| {
                    s.split(' ').any(|sc| {
                        sc.strip_prefix(&format!("repository:{repo}:"))
                            .is_some_and(|acts| acts.split(',').any(|a| a == need))
                    })
                })
                .unwrap_or(false);
        if !ok {
            let scope = if req.path == "/v2/" {
                String::new()
            } else {
                format!(",scope=\"repository:{repo}:{need}\"")
            };
            return Action::Respond {
                status: 401,
                headers: vec![(
                    "WWW-Authenticate".into(),
                    format!("Bearer realm=\"{realm}\",service=\"test-registry\"{scope}"),
                )],
                body:
                    br#"{"errors":[{"code":"UNAUTHORIZED","message":"authentication required"}]}"#
                        .to_vec(),
            };
        }
        forward(&backend)
    }));
    port.store(gate.port, Ordering::SeqCst);
    let dst = local();
    let cfg = config(dst.dir.path());
    let client = Client::new(cfg.clone()).unwrap();
    let r = reference(&gate.host(), "test/tok:1");

    let err = dst.pull(&client, &r, &Platform::host()).unwrap_err();
    assert!(matches!(err, RegistryError::Unauthorized { .. }), "{err:?}");
    let err = client.login(&gate.host(), USER, "wrong").unwrap_err();
    assert_eq!(err.to_string(), "unauthorized: authentication required");
    client.login(&gate.host(), USER, PASS).unwrap();

    let token_reqs = |g: &TestServer| {
        g.requests()
            .into_iter()
            .filter(|r| r.path.starts_with("/token"))
            .map(|r| r.path)
            .collect::<Vec<_>>()
    };
    let n0 = token_reqs(&gate).len();
    let client = Client::new(cfg).unwrap();
    let p = dst.pull(&client, &r, &Platform::host()).unwrap();
    assert_eq!(p.manifest_digest, img.manifest_digest());
    let before = token_reqs(&gate);
    // One token for the pull scope (with the stored credentials), reused for the manifest,
    // the config and the layer.
    let pull_tokens: Vec<&String> = before[n0..]
        .iter()
        .filter(|p| p.contains("account=alice"))
        .filter(|p| p.contains("scope=repository%3Atest%2Ftok%3Apull"))
        .collect();
    assert_eq!(pull_tokens.len(), 1, "{before:?}");

    let src = local();
    let other = random_image(82, 16);
    other.write_store(&src.store);
    let r2 = reference(&gate.host(), "test/tok2:1");
    src.push(&client, &r2, &other.manifest, &NoProgress)
        .unwrap();
    let after = token_reqs(&gate);
    let push_tokens: Vec<&String> = after[before.len()..]
        .iter()
        .filter(|p| p.contains("scope=repository%3Atest%2Ftok2%3Apull%2Cpush"))
        .collect();
    assert_eq!(push_tokens.len(), 1, "{after:?}");
    let raw = skopeo::inspect_raw(&format!("{}/test/tok2:1", reg.host()))
        .ok()
        .stdout;
    assert_eq!(raw.as_bytes(), &other.manifest[..]);
}
