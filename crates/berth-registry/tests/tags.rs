//! Tag listing (with pagination) and `pull --all-tags` through the image service, against a
//! real `docker-registry`.

mod common;

use berth_image::image_store::ListOptions;
use berth_image::manifest::Platform;
use berth_image::Reference;
use berth_registry::images::{ImageBackend, LocalBackend};
use berth_registry::{Client, CredentialStore, Credentials, ImageEvent, RecordingProgress};
use common::*;
use std::sync::Arc;

#[test]
fn list_tags_paginates_and_pull_all_tags_pulls_each() {
    require_root!(DOCKER_REGISTRY, SKOPEO);
    let reg = Registry::start(false);
    let host = reg.host();
    // Three tags: two of one image, one of another; and a second repository that must not
    // be listed.
    let a = random_image(1, 4);
    let b = random_image(2, 4);
    a.seed(&host, "test/multi:one", None);
    a.seed(&host, "test/multi:two", None);
    b.seed(&host, "test/multi:three", None);
    b.seed(&host, "test/other:x", None);
    let dir = tempfile::tempdir().unwrap();
    let client = Client::new(config(dir.path())).unwrap();
    let repo = Reference::parse(&format!("{host}/test/multi")).unwrap();
    let mut all = client.list_tags(&repo).unwrap();
    all.sort();
    assert_eq!(all, ["one", "three", "two"]);
    // Debian's distribution 2.8 sends the whole list at once; a proxy that pages it the
    // way distribution 3 does (`n`, `last`, `Link: <…>; rel="next"`) checks that every page
    // is followed, without duplicates.
    let backend_host = host.clone();
    let proxy = TestServer::start(Arc::new(move |req: &Req| {
        let Some(q) = req.path.strip_prefix("/v2/test/multi/tags/list?") else {
            return forward(&backend_host);
        };
        let mut n = usize::MAX;
        let mut last = String::new();
        for kv in q.split('&') {
            match kv.split_once('=') {
                Some(("n", v)) => n = v.parse().unwrap(),
                Some(("last", v)) => last = v.to_string(),
                _ => {}
            }
        }
        let tags = ["one", "three", "two"];
        let page: Vec<&str> = tags
            .iter()
            .copied()
            .filter(|t| *t > last.as_str())
            .take(n)
            .collect();
        let mut headers = vec![("Content-Type".to_string(), "application/json".to_string())];
        if let Some(l) = page.last().filter(|l| **l != "two") {
            headers.push((
                "Link".into(),
                format!("</v2/test/multi/tags/list?last={l}&n={n}>; rel=\"next\""),
            ));
        }
        Action::Respond {
            status: 200,
            headers,
            body: serde_json::to_vec(&serde_json::json!({"name": "test/multi", "tags": page}))
                .unwrap(),
        }
    }));
    let paged = Reference::parse(&format!("{}/test/multi", proxy.host())).unwrap();
    for page in [1, 2] {
        let tags = client.list_tags_paged(&paged, page).unwrap();
        assert_eq!(tags, all, "page size {page}");
    }
    let pages = proxy
        .requests()
        .iter()
        .filter(|r| r.path.contains("/tags/list") && r.path.contains("last="))
        .count();
    assert_eq!(pages, 2 + 1, "follow-up pages requested");
    // The tag of a reference is ignored.
    let tagged = Reference::parse(&format!("{host}/test/multi:one")).unwrap();
    assert_eq!(client.list_tags(&tagged).unwrap().len(), 3);
    // An unknown repository is an error naming it.
    let missing = Reference::parse(&format!("{host}/test/nothing")).unwrap();
    let e = client.list_tags(&missing).unwrap_err().to_string();
    assert!(e.contains("test/nothing"), "{e}");

    // The image service pulls every tag, with a "Pulling from" block per tag.
    let root = tempfile::tempdir().unwrap();
    let repo = paged;
    let host = proxy.host();
    let backend = LocalBackend::open(root.path().join("data"))
        .unwrap()
        .with_registry_config(config(dir.path()));
    let rec = RecordingProgress::default();
    assert!(backend
        .pull_all_tags(&repo, &Platform::host(), &rec)
        .unwrap());
    let mut pulled_tags: Vec<String> = rec
        .images
        .lock()
        .unwrap()
        .clone()
        .into_iter()
        .filter_map(|e| match e {
            ImageEvent::PullingFrom { tag, repository } => {
                assert_eq!(repository, "test/multi");
                Some(tag)
            }
            _ => None,
        })
        .collect();
    pulled_tags.sort();
    assert_eq!(pulled_tags, all);
    let mut local: Vec<String> = backend
        .list(&ListOptions::default())
        .unwrap()
        .into_iter()
        .flat_map(|s| s.repo_tags)
        .collect();
    local.sort();
    assert_eq!(
        local,
        [
            format!("{host}/test/multi:one"),
            format!("{host}/test/multi:three"),
            format!("{host}/test/multi:two"),
        ]
    );
    let id = |tag: &str| {
        let name = format!("{host}/test/multi:{tag}");
        backend.store().resolve(&name).unwrap().image.id
    };
    let (id_one, id_two, id_three) = (id("one"), id("two"), id("three"));
    assert_eq!(id_one, id_two);
    assert_ne!(id_one, id_three);
    // Again: nothing new.
    assert!(!backend
        .pull_all_tags(&repo, &Platform::host(), &RecordingProgress::default())
        .unwrap());
}

#[test]
fn list_tags_with_basic_auth() {
    require_programs!(DOCKER_REGISTRY, SKOPEO);
    let reg = Registry::start(true);
    let host = reg.host();
    random_image(3, 2).seed(&host, "priv/app:v1", Some(&format!("{USER}:{PASS}")));
    let dir = tempfile::tempdir().unwrap();
    let repo = Reference::parse(&format!("{host}/priv/app")).unwrap();
    // Without credentials: refused clearly.
    let anon = Client::new(config(dir.path())).unwrap();
    let e = anon.list_tags(&repo).unwrap_err().to_string();
    assert!(
        e.contains("unauthorized") || e.contains("authentication"),
        "{e}"
    );
    CredentialStore::at(dir.path().join("config.json"))
        .set(&host, &Credentials::new(USER, PASS))
        .unwrap();
    let client = Client::new(config(dir.path())).unwrap();
    assert_eq!(client.list_tags(&repo).unwrap(), ["v1"]);
}
