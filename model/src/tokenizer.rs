//! Tokenizers: the builtin byte-level one and Hugging Face `tokenizer.json` files.

use crate::error::{ModelError, Result};
use std::path::Path;

/// Id of the builtin model's beginning-of-sequence token.
pub const BYTE_BOS: u32 = 256;
/// Id of the builtin model's end-of-sequence token.
pub const BYTE_EOS: u32 = 257;
/// Id of the builtin model's padding token (never produced on purpose).
pub const BYTE_PAD: u32 = 258;
/// Vocabulary size of the byte-level tokenizer: 256 bytes, BOS, EOS, PAD and one unused id.
pub const BYTE_VOCAB: usize = 260;

/// Text ↔ token ids.
#[derive(Clone)]
pub enum Tokenizer {
    /// Byte-level: byte `b` is id `b`; ids 256.. are special and decode to nothing.
    Bytes,
    /// A Hugging Face `tokenizers` tokenizer.
    Hf(Box<tokenizers::Tokenizer>),
}

impl std::fmt::Debug for Tokenizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Tokenizer::Bytes => f.write_str("Tokenizer::Bytes"),
            Tokenizer::Hf(_) => f.write_str("Tokenizer::Hf"),
        }
    }
}

impl Tokenizer {
    /// Loads a `tokenizer.json`.
    pub fn from_file(path: &Path) -> Result<Self> {
        let t = tokenizers::Tokenizer::from_file(path)
            .map_err(|e| ModelError::Tokenizer(format!("{}: {e}", path.display())))?;
        Ok(Tokenizer::Hf(Box::new(t)))
    }

    /// Token ids of `text` without special tokens.
    pub fn encode(&self, text: &str) -> Result<Vec<u32>> {
        match self {
            Tokenizer::Bytes => Ok(text.bytes().map(u32::from).collect()),
            Tokenizer::Hf(t) => Ok(t
                .encode(text, false)
                .map_err(|e| ModelError::Tokenizer(e.to_string()))?
                .get_ids()
                .to_vec()),
        }
    }

    /// Text of `ids`, special tokens skipped; invalid UTF-8 becomes U+FFFD.
    pub fn decode(&self, ids: &[u32]) -> Result<String> {
        match self {
            Tokenizer::Bytes => {
                let bytes: Vec<u8> = ids.iter().filter_map(|&i| u8::try_from(i).ok()).collect();
                Ok(String::from_utf8_lossy(&bytes).into_owned())
            }
            Tokenizer::Hf(t) => t
                .decode(ids, true)
                .map_err(|e| ModelError::Tokenizer(e.to_string())),
        }
    }
}
