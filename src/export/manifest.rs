//! `manifest.json` in an export directory: each sealed file's seq range, row count, SHA-256 of
//! its bytes and the chain hashes at its ends, in seq order.
//!
//! Invariant: the manifest only grows by appending entries for files already renamed into
//! place, and is itself replaced atomically (temp name, fsync, rename, fsync of the directory),
//! so a reader sees the old or the new manifest, never a torn one. A crash between a file's
//! rename and the manifest's leaves a file the manifest does not list yet; the next export run
//! adds it ([`super::writer`]).

use std::path::Path;

use serde::{Deserialize, Serialize};

use super::plan::Range;
use super::ExportError;

pub const FILE_NAME: &str = "manifest.json";
/// The version of this layout (the files' columns and the manifest's fields).
pub const FORMAT: u32 = 1;

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    pub format: u32,
    pub files: Vec<Entry>,
}

impl Default for Manifest {
    fn default() -> Self {
        Self {
            format: FORMAT,
            files: Vec::new(),
        }
    }
}

/// One sealed file.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    pub name: String,
    pub first_seq: u64,
    pub last_seq: u64,
    pub rows: u64,
    /// Hex SHA-256 of the file's bytes.
    pub sha256: String,
    /// Hex chain hash the file's first batch chains to (the previous file's `chain_hash`).
    pub prev_chain_hash: String,
    /// Hex chain hash of the link ending at `last_seq`.
    pub chain_hash: String,
}

impl Entry {
    pub fn range(&self) -> Range {
        Range {
            first: self.first_seq,
            last: self.last_seq,
        }
    }
}

impl Manifest {
    /// The last seq the listed files cover (0: none).
    pub fn last_seq(&self) -> u64 {
        self.files.last().map_or(0, |e| e.last_seq)
    }

    /// Parses a manifest's text.
    pub fn parse(text: &str) -> Result<Self, ExportError> {
        let m: Self = serde_json::from_str(text)
            .map_err(|e| ExportError::Manifest(format!("{FILE_NAME} is not readable: {e}")))?;
        if m.format != FORMAT {
            return Err(ExportError::Manifest(format!(
                "{FILE_NAME} has format {}, this hookledger reads {FORMAT}",
                m.format
            )));
        }
        Ok(m)
    }

    /// The manifest in `dir` (an empty one if there is none yet).
    pub fn load(dir: &Path) -> Result<Self, ExportError> {
        match std::fs::read_to_string(dir.join(FILE_NAME)) {
            Ok(text) => Self::parse(&text),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Self::default()),
            Err(e) => Err(ExportError::io(dir.join(FILE_NAME), e)),
        }
    }

    /// Writes the manifest into `dir` atomically.
    pub fn save(&self, dir: &Path) -> Result<(), ExportError> {
        let text = serde_json::to_vec_pretty(self)
            .map_err(|e| ExportError::Manifest(format!("cannot encode {FILE_NAME}: {e}")))?;
        super::writer::write_atomically(dir, FILE_NAME, &text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(first: u64, last: u64) -> Entry {
        Entry {
            name: Range { first, last }.file_name(),
            first_seq: first,
            last_seq: last,
            rows: last - first + 1,
            sha256: "ab".repeat(32),
            prev_chain_hash: "00".repeat(32),
            chain_hash: "cd".repeat(32),
        }
    }

    #[test]
    fn a_manifest_round_trips_through_a_directory() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(Manifest::load(dir.path()).unwrap(), Manifest::default());
        let m = Manifest {
            format: FORMAT,
            files: vec![entry(1, 10), entry(11, 12)],
        };
        m.save(dir.path()).unwrap();
        let back = Manifest::load(dir.path()).unwrap();
        assert_eq!(back, m);
        assert_eq!(back.last_seq(), 12);
        assert_eq!(
            back.files[1].range(),
            Range {
                first: 11,
                last: 12
            }
        );
        let names: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        assert_eq!(names, [FILE_NAME], "no temp file is left");
    }

    #[test]
    fn a_bad_or_newer_manifest_is_refused() {
        assert!(Manifest::parse("{").is_err());
        let newer = r#"{"format": 2, "files": []}"#;
        let err = Manifest::parse(newer).unwrap_err().to_string();
        assert!(err.contains("format 2"), "{err}");
    }
}
