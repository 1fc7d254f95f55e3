//! Protobuf, dynamically, from a descriptor set: one message per input.
//!
//! The JSON form is protobuf's canonical JSON mapping (well-known types included) with three
//! choices made for data integration: keys are the field names of the `.proto` file (`order_id`,
//! not `orderId`), 64-bit integers are JSON numbers (ferry's JSON keeps them exact), and fields
//! at their default value are left out, as the mapping says. Encoding accepts both spellings of
//! a key and 64-bit integers as numbers or strings; unknown keys are refused.

use prost::Message as _;
use prost_reflect::{DeserializeOptions, DynamicMessage, MessageDescriptor, SerializeOptions};
use serde_json::Value;

use crate::error::{FormatError, Position, within_depth};

const PROTOBUF: &str = "Protobuf";

/// What [`DecodeError`](prost::DecodeError) puts before its own message.
const DECODE_PREFIX: &str = "failed to decode Protobuf message: ";

/// A validated Protobuf configuration.
#[derive(Clone, Debug)]
pub(crate) struct ProtobufFormat {
    pub(crate) message: MessageDescriptor,
}

impl ProtobufFormat {
    pub(crate) fn decode(&self, bytes: &[u8]) -> Result<Value, FormatError> {
        let message = DynamicMessage::decode(self.message.clone(), bytes).map_err(|error| {
            let text = error.to_string();
            let text = text.strip_prefix(DECODE_PREFIX).unwrap_or(&text);
            match self.locate(bytes) {
                Some((offset, field)) => {
                    FormatError::at(PROTOBUF, Position::Byte(offset), format!("{field}: {text}"))
                }
                None => FormatError::new(PROTOBUF, text),
            }
        })?;
        let options = SerializeOptions::new()
            .use_proto_field_name(true)
            .stringify_64_bit_integers(false);
        let value = message
            .serialize_with_options(serde_json::value::Serializer, &options)
            .map_err(|error| FormatError::new(PROTOBUF, error.to_string()))?;
        within_depth(PROTOBUF, value)
    }

    /// The offset and name of the top-level field that fails to decode: prost tells neither.
    /// Each field is framed by its key, skipped, then decoded alone.
    fn locate(&self, bytes: &[u8]) -> Option<(u64, String)> {
        let mut rest = bytes;
        while !rest.is_empty() {
            let start = bytes.len() - rest.len();
            let Ok((tag, wire_type)) = prost::encoding::decode_key(&mut rest) else {
                return Some((start as u64, "a field key".into()));
            };
            let field = match self.message.get_field(tag) {
                Some(field) => format!("field `{}` ({tag})", field.name()),
                None => format!("field {tag}"),
            };
            let context = prost::encoding::DecodeContext::default();
            if prost::encoding::skip_field(wire_type, tag, &mut rest, context).is_err() {
                return Some((start as u64, field));
            }
            let end = bytes.len() - rest.len();
            if DynamicMessage::decode(self.message.clone(), &bytes[start..end]).is_err() {
                return Some((start as u64, field));
            }
        }
        None
    }

    pub(crate) fn encode(&self, value: &Value) -> Result<Vec<u8>, FormatError> {
        let mut track = serde_path_to_error::Track::new();
        let deserializer = serde_path_to_error::Deserializer::new(value, &mut track);
        let options = DeserializeOptions::new().deny_unknown_fields(true);
        let message =
            DynamicMessage::deserialize_with_options(self.message.clone(), deserializer, &options)
                .map_err(|error| {
                    FormatError::at_path(PROTOBUF, pointer(&track.path()), error.to_string())
                })?;
        Ok(message.encode_to_vec())
    }
}

/// serde_path_to_error's path as a JSON pointer.
fn pointer(path: &serde_path_to_error::Path) -> String {
    let mut pointer = String::new();
    for segment in path.iter() {
        match segment {
            serde_path_to_error::Segment::Seq { index } => {
                pointer = crate::error::pointer_push(&pointer, &index.to_string());
            }
            serde_path_to_error::Segment::Map { key } => {
                pointer = crate::error::pointer_push(&pointer, key);
            }
            serde_path_to_error::Segment::Enum { variant } => {
                pointer = crate::error::pointer_push(&pointer, variant);
            }
            serde_path_to_error::Segment::Unknown => {}
        }
    }
    pointer
}
