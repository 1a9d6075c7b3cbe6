//! The payloads walmdb-raft writes into walmdb's log records (`docs/replication.md`):
//! one version byte, then the value in postcard. The record's frame carries the CRC.

use serde::de::DeserializeOwned;
use serde::Serialize;

/// The version of every payload this build writes and reads.
pub(crate) const PAYLOAD_VERSION: u8 = 1;

pub(crate) fn encode<T: Serialize>(value: &T) -> std::io::Result<Vec<u8>> {
    let mut out = vec![PAYLOAD_VERSION];
    postcard::to_io(value, &mut out).map_err(|e| std::io::Error::other(format!("encode: {e}")))?;
    Ok(out)
}

pub(crate) fn decode<T: DeserializeOwned>(what: &str, bytes: &[u8]) -> std::io::Result<T> {
    let invalid = |why: String| std::io::Error::new(std::io::ErrorKind::InvalidData, why);
    match bytes.split_first() {
        Some((&PAYLOAD_VERSION, body)) => {
            postcard::from_bytes(body).map_err(|e| invalid(format!("a damaged {what}: {e}")))
        }
        Some((v, _)) => Err(invalid(format!(
            "a {what} of payload version {v}; this build reads {PAYLOAD_VERSION}"
        ))),
        None => Err(invalid(format!("an empty {what}"))),
    }
}
