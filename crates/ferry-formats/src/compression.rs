//! gzip and zstd around a format, with decompression bounded by a size limit.

use std::io::{Read, Write};

use crate::config::{ByteSize, Compression};
use crate::error::FormatError;

/// The default for `max_decompressed`: 256 MiB.
pub const DEFAULT_MAX_DECOMPRESSED: ByteSize = ByteSize(256 << 20);

/// zstd's default level: a good balance of speed and size.
const ZSTD_LEVEL: i32 = 3;

impl Compression {
    /// The name in error messages.
    pub(crate) fn label(self) -> &'static str {
        match self {
            Compression::Gzip => "gzip",
            Compression::Zstd => "zstd",
        }
    }

    /// The media type of compressed data.
    pub fn media_type(self) -> &'static str {
        match self {
            Compression::Gzip => "application/gzip",
            Compression::Zstd => "application/zstd",
        }
    }

    /// Decompresses `data`, refusing to produce more than `limit` bytes: a small input can
    /// inflate to gigabytes (a "zip bomb"), so the limit is checked while reading, not after.
    pub(crate) fn decompress(self, data: &[u8], limit: ByteSize) -> Result<Vec<u8>, FormatError> {
        let label = self.label();
        let read_error = |error: std::io::Error| FormatError::new(label, error.to_string());
        // One byte beyond the limit tells "exactly at the limit" from "over it".
        let bound = limit.0.saturating_add(1);
        let mut out = Vec::new();
        match self {
            Compression::Gzip => {
                let decoder = flate2::read::MultiGzDecoder::new(data);
                decoder
                    .take(bound)
                    .read_to_end(&mut out)
                    .map_err(read_error)?;
            }
            Compression::Zstd => {
                let decoder = zstd::stream::read::Decoder::with_buffer(data).map_err(read_error)?;
                decoder
                    .take(bound)
                    .read_to_end(&mut out)
                    .map_err(read_error)?;
            }
        }
        if out.len() as u64 > limit.0 {
            return Err(FormatError::new(
                label,
                format!(
                    "the data decompresses to more than {limit} (`max_decompressed`); \
                     refusing to inflate it further"
                ),
            ));
        }
        Ok(out)
    }

    /// Compresses `data` at the library's default level.
    pub(crate) fn compress(self, data: &[u8]) -> Result<Vec<u8>, FormatError> {
        let label = self.label();
        let write_error = |error: std::io::Error| FormatError::new(label, error.to_string());
        match self {
            Compression::Gzip => {
                let mut encoder = flate2::write::GzEncoder::new(
                    Vec::with_capacity(data.len() / 4),
                    flate2::Compression::default(),
                );
                encoder.write_all(data).map_err(write_error)?;
                encoder.finish().map_err(write_error)
            }
            Compression::Zstd => zstd::bulk::compress(data, ZSTD_LEVEL).map_err(write_error),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips() {
        let data = b"hello hello hello hello".repeat(100);
        for compression in [Compression::Gzip, Compression::Zstd] {
            let packed = compression.compress(&data).unwrap();
            assert!(packed.len() < data.len());
            let unpacked = compression
                .decompress(&packed, DEFAULT_MAX_DECOMPRESSED)
                .unwrap();
            assert_eq!(unpacked, data);
        }
    }

    #[test]
    fn a_bomb_stops_at_the_limit() {
        // 64 MiB of zeros compress to a few kilobytes.
        let zeros = vec![0u8; 64 << 20];
        for compression in [Compression::Gzip, Compression::Zstd] {
            let bomb = compression.compress(&zeros).unwrap();
            assert!(bomb.len() < 1 << 20, "{}", bomb.len());
            let error = compression
                .decompress(&bomb, ByteSize(1 << 20))
                .unwrap_err();
            assert_eq!(
                error.to_string(),
                format!(
                    "{}: the data decompresses to more than 1 MiB (`max_decompressed`); \
                     refusing to inflate it further",
                    compression.label()
                )
            );
            // Exactly at the limit is fine.
            let small = compression.compress(&zeros[..1 << 20]).unwrap();
            let unpacked = compression.decompress(&small, ByteSize(1 << 20)).unwrap();
            assert_eq!(unpacked.len(), 1 << 20);
        }
    }

    #[test]
    fn concatenated_gzip_members_are_one_stream() {
        let mut data = Compression::Gzip.compress(b"one,").unwrap();
        data.extend(Compression::Gzip.compress(b"two").unwrap());
        let unpacked = Compression::Gzip
            .decompress(&data, DEFAULT_MAX_DECOMPRESSED)
            .unwrap();
        assert_eq!(unpacked, b"one,two");
    }

    #[test]
    fn garbage_is_an_error() {
        for compression in [Compression::Gzip, Compression::Zstd] {
            let error = compression
                .decompress(b"this is not compressed", DEFAULT_MAX_DECOMPRESSED)
                .unwrap_err();
            assert_eq!(error.format, compression.label());
            let mut truncated = compression.compress(&b"abc".repeat(1000)).unwrap();
            truncated.truncate(truncated.len() / 2);
            let error = compression
                .decompress(&truncated, DEFAULT_MAX_DECOMPRESSED)
                .unwrap_err();
            assert_eq!(error.format, compression.label());
        }
    }
}
