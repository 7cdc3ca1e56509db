//! Credentials at rest: the job URLs (passwords in them) are stored sealed with
//! AES-256-GCM (aws-lc-rs, the crypto rustls already runs on) under the key in
//! `state.key_file`, bound to the job's id so a sealed blob copied onto another row does
//! not open. The key file holds 32 random bytes in hex; it is made with mode 0600 on the
//! first start when missing, and must be the same on every instance of a fleet.

use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::Path;

use aws_lc_rs::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use aws_lc_rs::rand::{SecureRandom, SystemRandom};

/// The first byte of a sealed blob: the format, so a later one can be told apart.
const FORMAT: u8 = 1;
const KEY_LEN: usize = 32;

#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("state.key_file {path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error(
        "state.key_file {path}: not a key (64 hex digits, as fxprelay writes when the file is missing)"
    )]
    Malformed { path: String },
    #[error(
        "state.key_file {path}: readable by others (mode {mode:o}); it decrypts the passwords of stored jobs: chmod 600 it"
    )]
    Open { path: String, mode: u32 },
    #[error("no random bytes for a key")]
    Random,
}

/// A blob that does not open under this key (another fleet's key, a changed file).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "the stored credentials do not open with this state.key_file (was it replaced, or is this instance's key not the fleet's?)"
)]
pub struct Unseal;

/// The key and what seals with it.
pub struct Sealer {
    key: LessSafeKey,
    rng: SystemRandom,
}

impl std::fmt::Debug for Sealer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Sealer(..)")
    }
}

impl Sealer {
    fn from_bytes(bytes: &[u8; KEY_LEN]) -> Sealer {
        let key = UnboundKey::new(&AES_256_GCM, bytes).expect("32 bytes is an AES-256 key");
        Sealer {
            key: LessSafeKey::new(key),
            rng: SystemRandom::new(),
        }
    }

    /// A key of its own, for a store in memory (nothing it seals outlives it).
    pub fn ephemeral() -> Result<Sealer, KeyError> {
        let mut bytes = [0u8; KEY_LEN];
        SystemRandom::new()
            .fill(&mut bytes)
            .map_err(|_| KeyError::Random)?;
        Ok(Sealer::from_bytes(&bytes))
    }

    /// The key in `path`, made there (mode 0600) when the file does not exist.
    pub fn from_file(path: &Path) -> Result<Sealer, KeyError> {
        let shown = path.display().to_string();
        let io = |source| KeyError::Io {
            path: shown.clone(),
            source,
        };
        let text = match std::fs::read_to_string(path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let mut bytes = [0u8; KEY_LEN];
                SystemRandom::new()
                    .fill(&mut bytes)
                    .map_err(|_| KeyError::Random)?;
                let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
                // create_new: two instances starting at once on a shared directory
                // cannot both write a key; the loser reads the winner's.
                match std::fs::OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .mode(0o600)
                    .open(path)
                {
                    Ok(mut f) => {
                        f.write_all(format!("{hex}\n").as_bytes()).map_err(io)?;
                        f.sync_all().map_err(io)?;
                        tracing::info!(key_file = %shown, "made a new state key (mode 0600); give every instance of a fleet this same file");
                        return Ok(Sealer::from_bytes(&bytes));
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                        std::fs::read_to_string(path).map_err(io)?
                    }
                    Err(e) => return Err(io(e)),
                }
            }
            Err(e) => return Err(io(e)),
        };
        let mode = std::fs::metadata(path).map_err(io)?.permissions().mode();
        if mode & 0o077 != 0 {
            return Err(KeyError::Open {
                path: shown,
                mode: mode & 0o777,
            });
        }
        let bytes = parse_hex(text.trim()).ok_or(KeyError::Malformed { path: shown })?;
        Ok(Sealer::from_bytes(&bytes))
    }

    /// `plain` sealed for the row `id`.
    pub fn seal(&self, id: &str, plain: &[u8]) -> Vec<u8> {
        let mut nonce = [0u8; NONCE_LEN];
        // The system's generator does not fail on Linux (getrandom); a nonce of zeros
        // would still be unique per key only by chance, so fail loudly instead.
        self.rng
            .fill(&mut nonce)
            .expect("the system's random generator works");
        let mut out = Vec::with_capacity(1 + NONCE_LEN + plain.len() + 16);
        out.push(FORMAT);
        out.extend_from_slice(&nonce);
        let mut body = plain.to_vec();
        self.key
            .seal_in_place_append_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(id.as_bytes()),
                &mut body,
            )
            .expect("AES-GCM seals any length a job URL has");
        out.extend_from_slice(&body);
        out
    }

    /// What [`Sealer::seal`] sealed for `id`.
    pub fn open(&self, id: &str, sealed: &[u8]) -> Result<Vec<u8>, Unseal> {
        let (&format, rest) = sealed.split_first().ok_or(Unseal)?;
        if format != FORMAT || rest.len() < NONCE_LEN {
            return Err(Unseal);
        }
        let (nonce, body) = rest.split_at(NONCE_LEN);
        let nonce = Nonce::try_assume_unique_for_key(nonce).map_err(|_| Unseal)?;
        let mut body = body.to_vec();
        let plain = self
            .key
            .open_in_place(nonce, Aad::from(id.as_bytes()), &mut body)
            .map_err(|_| Unseal)?;
        Ok(plain.to_vec())
    }
}

fn parse_hex(s: &str) -> Option<[u8; KEY_LEN]> {
    if s.len() != KEY_LEN * 2 || !s.is_ascii() {
        return None;
    }
    let mut out = [0u8; KEY_LEN];
    for (i, b) in out.iter_mut().enumerate() {
        *b = u8::from_str_radix(&s[2 * i..2 * i + 2], 16).ok()?;
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sealed_url_opens_only_for_its_row_and_key() {
        let s = Sealer::ephemeral().unwrap();
        let blob = s.seal("job-1", b"ftp://u:hunter2@a/x");
        assert!(!blob.windows(7).any(|w| w == b"hunter2"));
        assert_eq!(s.open("job-1", &blob).unwrap(), b"ftp://u:hunter2@a/x");
        assert_eq!(s.open("job-2", &blob), Err(Unseal));
        assert_eq!(
            Sealer::ephemeral().unwrap().open("job-1", &blob),
            Err(Unseal)
        );
        let mut bad = blob.clone();
        *bad.last_mut().unwrap() ^= 1;
        assert_eq!(s.open("job-1", &bad), Err(Unseal));
        assert_eq!(s.open("job-1", &[]), Err(Unseal));
        assert_eq!(s.open("job-1", &[FORMAT, 1, 2]), Err(Unseal));
    }

    #[test]
    fn the_key_file_is_made_0600_then_read_back() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.key");
        let a = Sealer::from_file(&path).unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let b = Sealer::from_file(&path).unwrap();
        assert_eq!(b.open("x", &a.seal("x", b"secret")).unwrap(), b"secret");
    }

    #[test]
    fn a_key_file_others_can_read_or_not_hex_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("k");
        std::fs::write(&path, "zz\n").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert!(matches!(
            Sealer::from_file(&path),
            Err(KeyError::Malformed { .. })
        ));
        std::fs::write(&path, format!("{}\n", "ab".repeat(32))).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        assert!(matches!(
            Sealer::from_file(&path),
            Err(KeyError::Open { .. })
        ));
    }
}
