//! Sizes as people write them in definitions: `512`, `64KiB`, `10MB`, `25MiB`.

use serde::Deserialize;

/// A size: a number of bytes, or text with a unit (`10MB`, `512KiB`).
#[derive(Clone, Debug, Deserialize)]
#[serde(
    untagged,
    expecting = "a number of bytes, or a size such as `10MB` or `512KiB`"
)]
pub enum Size {
    Bytes(u64),
    Text(String),
}

impl Size {
    /// The size in bytes.
    pub fn bytes(&self) -> Result<u64, String> {
        let text = match self {
            Size::Bytes(bytes) => return Ok(*bytes),
            Size::Text(text) => text.trim(),
        };
        let digits = text
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(text.len());
        let number: u64 = text[..digits]
            .parse()
            .map_err(|_| format!("invalid size `{text}`; write e.g. `10MB` or `512KiB`"))?;
        let factor: u64 = match text[digits..].trim() {
            "" | "B" => 1,
            "KB" | "kB" => 1_000,
            "MB" => 1_000_000,
            "GB" => 1_000_000_000,
            "KiB" => 1 << 10,
            "MiB" => 1 << 20,
            "GiB" => 1 << 30,
            unit => {
                return Err(format!(
                    "unknown unit `{unit}` in `{text}`; write B, KB, MB, GB, KiB, MiB or GiB"
                ));
            }
        };
        number
            .checked_mul(factor)
            .ok_or_else(|| format!("size `{text}` is too large"))
    }
}

#[cfg(test)]
mod tests {
    use super::Size;

    #[test]
    fn sizes_take_units() {
        assert_eq!(Size::Bytes(512).bytes(), Ok(512));
        assert_eq!(Size::Text("10MB".into()).bytes(), Ok(10_000_000));
        assert_eq!(Size::Text("10MiB".into()).bytes(), Ok(10 << 20));
        assert_eq!(Size::Text("64 KiB".into()).bytes(), Ok(64 << 10));
        assert!(Size::Text("MB".into()).bytes().is_err());
        assert!(Size::Text("lots".into()).bytes().is_err());
        assert!(Size::Text("99999999999GB".into()).bytes().is_err());
    }
}
