//! GETs of the URLs a request names (`POST /images/create?fromSrc=<url>`), with dockerd's
//! `remotecontext.GetWithStatusError` answers: a name that does not resolve is a 404, another
//! failure to connect a 500, a status of 400 or more the status's class with the body; the
//! messages in the words of Go's `net/http` (`Get "<url>": dial tcp: lookup <host>: no such
//! host`), which clients match.

use axum::http::StatusCode;

use super::ApiError;

/// The response to `GET url`, once its status is below 400.
pub async fn get(url: &str) -> Result<reqwest::Response, ApiError> {
    let parsed =
        reqwest::Url::parse(url).map_err(|e| ApiError::bad(format!("parse \"{url}\": {e}")))?;
    let resp = match reqwest::get(parsed.clone()).await {
        Ok(r) => r,
        Err(e) => return Err(request_error(url, &parsed, &e)),
    };
    let status = resp.status();
    if status.as_u16() < 400 {
        return Ok(resp);
    }
    // Go's `Status`: the code and the server's own reason phrase.
    let reason = resp
        .extensions()
        .get::<hyper::ext::ReasonPhrase>()
        .and_then(|r| std::str::from_utf8(r.as_bytes()).ok())
        .map(str::to_string)
        .unwrap_or_else(|| status.canonical_reason().unwrap_or_default().to_string());
    let msg = format!(
        "failed to GET {url} with status {} {reason}",
        status.as_u16()
    );
    let msg = match resp.text().await {
        Ok(body) => format!("{msg}: {}", body.trim()),
        Err(_) => format!("{msg}: error reading body"),
    };
    let code = match status {
        StatusCode::NOT_FOUND
        | StatusCode::BAD_REQUEST
        | StatusCode::UNAUTHORIZED
        | StatusCode::FORBIDDEN => status,
        _ => StatusCode::INTERNAL_SERVER_ERROR,
    };
    Err(ApiError::new(code, msg))
}

/// A failed request as Go words it (`Get "<url>": …`), a name that does not resolve a 404.
fn request_error(url: &str, parsed: &reqwest::Url, e: &reqwest::Error) -> ApiError {
    let host = parsed.host_str().unwrap_or_default();
    let chain = std::iter::successors(Some(e as &dyn std::error::Error), |e| e.source());
    let mut dns = false;
    let mut os = None;
    for c in chain {
        dns |= c.to_string().starts_with("dns error");
        if let Some(io) = c.downcast_ref::<std::io::Error>() {
            os = os.or(io.raw_os_error());
        }
    }
    if dns {
        return ApiError::not_found(format!(
            "Get \"{url}\": dial tcp: lookup {host}: no such host"
        ));
    }
    let detail = match (e.is_connect(), os) {
        (true, Some(n)) => {
            let port = parsed.port_or_known_default().unwrap_or(80);
            format!(
                "dial tcp {host}:{port}: connect: {}",
                berth_util::errno::go_text(&std::io::Error::from_raw_os_error(n))
            )
        }
        _ => e.to_string(),
    };
    ApiError::new(
        StatusCode::INTERNAL_SERVER_ERROR,
        format!("Get \"{url}\": {detail}"),
    )
}
