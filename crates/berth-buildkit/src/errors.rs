//! Solve errors as BuildKit clients show them: the gRPC status message is the error's text,
//! and typed details (JSON in `google.rpc.Status.details`, as BuildKit's grpcerrors encodes
//! them) let buildx print the Dockerfile lines where a step failed.

use base64::Engine as _;
use prost::Message as _;
use serde::Serialize;

use crate::proto::google::rpc;

const SOURCE_TYPE: &str = "github.com/moby/buildkit/errdefs.Source+json";
const VERTEX_TYPE: &str = "github.com/moby/buildkit/errdefs.Vertex+json";

#[derive(Serialize)]
struct JsonPosition {
    line: i32,
}

#[derive(Serialize)]
struct JsonRange {
    start: JsonPosition,
    end: JsonPosition,
}

#[derive(Serialize)]
struct JsonSourceInfo {
    filename: String,
    /// Go's []byte: base64.
    data: String,
    language: String,
}

#[derive(Serialize)]
struct JsonSource {
    info: JsonSourceInfo,
    ranges: Vec<JsonRange>,
}

#[derive(Serialize)]
struct JsonVertex {
    digest: String,
}

/// Where in the Dockerfile an error is (for the client's source snippet).
#[derive(Debug, Clone)]
pub struct SourceLocation {
    pub filename: String,
    pub data: Vec<u8>,
    /// 1-based line.
    pub line: usize,
}

/// A solve error with what BuildKit clients render of it.
#[derive(Debug, Clone)]
pub struct SolveError {
    pub code: tonic::Code,
    pub message: String,
    pub source: Option<Box<SourceLocation>>,
    pub vertex: Option<String>,
    /// Details passed through as they came (a client's `Return` error).
    pub raw_details: Vec<prost_types::Any>,
}

impl SolveError {
    pub fn new(code: tonic::Code, message: impl Into<String>) -> Self {
        SolveError {
            code,
            message: message.into(),
            source: None,
            vertex: None,
            raw_details: Vec::new(),
        }
    }

    pub fn unknown(message: impl Into<String>) -> Self {
        Self::new(tonic::Code::Unknown, message)
    }

    /// The gRPC status, with the typed details.
    pub fn to_status(&self) -> tonic::Status {
        let mut details = self.raw_details.clone();
        if let Some(s) = &self.source {
            let line = s.line as i32;
            let src = JsonSource {
                info: JsonSourceInfo {
                    filename: s.filename.clone(),
                    data: base64::engine::general_purpose::STANDARD.encode(&s.data),
                    language: "Dockerfile".into(),
                },
                ranges: vec![JsonRange {
                    start: JsonPosition { line },
                    end: JsonPosition { line },
                }],
            };
            if let Ok(v) = serde_json::to_vec(&src) {
                details.push(prost_types::Any {
                    type_url: SOURCE_TYPE.into(),
                    value: v,
                });
            }
        }
        if let Some(d) = &self.vertex {
            if let Ok(v) = serde_json::to_vec(&JsonVertex { digest: d.clone() }) {
                details.push(prost_types::Any {
                    type_url: VERTEX_TYPE.into(),
                    value: v,
                });
            }
        }
        if details.is_empty() {
            return tonic::Status::new(self.code, self.message.clone());
        }
        let st = rpc::Status {
            code: self.code as i32,
            message: self.message.clone(),
            details,
        };
        tonic::Status::with_details(self.code, self.message.clone(), st.encode_to_vec().into())
    }

    /// The message as the proto status a gateway `Return` carries.
    /// From the status of a gateway `Return` (the client's build function failed, often
    /// with the error of a gateway solve, whose details come back with it).
    pub fn from_rpc(s: &rpc::Status) -> Self {
        let mut e = SolveError::new(tonic::Code::from_i32(s.code), s.message.clone());
        e.raw_details = s.details.clone();
        e
    }
}

impl From<tonic::Status> for SolveError {
    fn from(s: tonic::Status) -> Self {
        SolveError::new(s.code(), s.message().to_string())
    }
}

/// BuildKit's wording of a failing RUN.
pub fn run_failure_message(command: &str, code: i32) -> String {
    format!("process \"{command}\" did not complete successfully: exit code: {code}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn run_failure_wording() {
        assert_eq!(
            run_failure_message("/bin/sh -c exit 3", 3),
            "process \"/bin/sh -c exit 3\" did not complete successfully: exit code: 3"
        );
    }

    #[test]
    fn details_carry_the_source_as_json() {
        let e = SolveError {
            code: tonic::Code::Unknown,
            message: "boom".into(),
            source: Some(Box::new(SourceLocation {
                filename: "Dockerfile".into(),
                data: b"FROM x\nRUN false\n".to_vec(),
                line: 2,
            })),
            vertex: None,
            raw_details: vec![],
        };
        let st = e.to_status();
        let rpc = rpc::Status::decode(st.details()).unwrap();
        assert_eq!(rpc.message, "boom");
        assert_eq!(rpc.details[0].type_url, SOURCE_TYPE);
        let v: serde_json::Value = serde_json::from_slice(&rpc.details[0].value).unwrap();
        assert_eq!(v["ranges"][0]["start"]["line"], 2);
        assert_eq!(v["info"]["filename"], "Dockerfile");
        assert_eq!(
            base64::engine::general_purpose::STANDARD
                .decode(v["info"]["data"].as_str().unwrap())
                .unwrap(),
            b"FROM x\nRUN false\n"
        );
    }
}
