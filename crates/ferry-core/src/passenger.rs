//! The passenger: one item that travels through a pipeline.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::Timestamp;

/// A passenger's id: a UUIDv7, so ids sort by creation time.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct PassengerId(pub Uuid);

impl PassengerId {
    /// A fresh, time-ordered id.
    pub fn new() -> Self {
        PassengerId(Uuid::now_v7())
    }
}

impl Default for PassengerId {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Display for PassengerId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl FromStr for PassengerId {
    type Err = uuid::Error;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Uuid::parse_str(s).map(PassengerId)
    }
}

/// String metadata of a passenger, sorted by key so it prints and hashes stably.
pub type Metadata = BTreeMap<String, String>;

/// The body of a passenger: bytes with a media type (`application/json` for JSON documents).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Body {
    /// IANA media type, e.g. `application/json` or `application/octet-stream`.
    pub media_type: String,
    /// The content.
    pub data: Bytes,
}

impl Body {
    /// An empty body.
    pub fn empty() -> Self {
        Body {
            media_type: "application/octet-stream".into(),
            data: Bytes::new(),
        }
    }

    /// A JSON body.
    pub fn json(value: &serde_json::Value) -> Self {
        Body {
            media_type: "application/json".into(),
            data: Bytes::from(value.to_string()),
        }
    }

    /// The body parsed as JSON, when its media type says it is JSON.
    pub fn as_json(&self) -> Option<serde_json::Value> {
        if !self.media_type.contains("json") {
            return None;
        }
        serde_json::from_slice(&self.data).ok()
    }
}

/// The media type a file name's extension suggests; `application/octet-stream` when it
/// suggests none.
pub fn media_type_of(name: &str) -> &'static str {
    let extension = match name.rsplit_once('.') {
        Some((_, extension)) => extension.to_ascii_lowercase(),
        None => return "application/octet-stream",
    };
    match extension.as_str() {
        "json" => "application/json",
        "ndjson" | "jsonl" => "application/x-ndjson",
        "xml" => "application/xml",
        "csv" => "text/csv",
        "txt" => "text/plain",
        "zip" => "application/zip",
        "pdf" => "application/pdf",
        "xlsx" => "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
        "xls" => "application/vnd.ms-excel",
        "eml" => "message/rfc822",
        _ => "application/octet-stream",
    }
}

/// A named file travelling with a passenger.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Attachment {
    /// File name as received; never trusted as a path.
    pub name: String,
    /// IANA media type.
    pub media_type: String,
    /// The content.
    pub content: Bytes,
}

/// One item that travels: a document (an e-mail, a file, a message) or a batch of records.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Passenger {
    pub id: PassengerId,
    /// The tenant that owns it.
    pub client: String,
    /// The pipeline it travels on.
    pub pipeline: String,
    /// Where it came from; with `external_id` the de-duplication key.
    pub source_system: String,
    /// Its id in the source system.
    pub external_id: String,
    pub metadata: Metadata,
    pub body: Body,
    pub attachments: Vec<Attachment>,
    /// When it was seated in the queue.
    pub created_at: Timestamp,
    /// The passenger a `split` made this one from.
    pub parent: Option<PassengerId>,
}

impl Passenger {
    /// A passenger as a puller makes it: client and pipeline are filled in when it is seated.
    pub fn pulled(source_system: impl Into<String>, external_id: impl Into<String>) -> Self {
        Passenger {
            id: PassengerId::new(),
            client: String::new(),
            pipeline: String::new(),
            source_system: source_system.into(),
            external_id: external_id.into(),
            metadata: Metadata::new(),
            body: Body::empty(),
            attachments: Vec::new(),
            created_at: chrono::Utc::now(),
            parent: None,
        }
    }

    /// A child of this passenger, as a processor that splits makes it: a fresh id, the same
    /// client, pipeline and source system, the parent's metadata, the given external id and
    /// body, no attachments.
    pub fn child(&self, external_id: impl Into<String>, body: Body) -> Self {
        Passenger {
            id: PassengerId::new(),
            client: self.client.clone(),
            pipeline: self.pipeline.clone(),
            source_system: self.source_system.clone(),
            external_id: external_id.into(),
            metadata: self.metadata.clone(),
            body,
            attachments: Vec::new(),
            created_at: chrono::Utc::now(),
            parent: Some(self.id),
        }
    }

    /// The passenger with this body.
    pub fn with_body(mut self, body: Body) -> Self {
        self.body = body;
        self
    }
}
