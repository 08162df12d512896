//! Signed artifacts: a deployment's build signs what it compiles (Ed25519, over the artifact's
//! BLAKE3 digest), and its services load only artifacts signed by a key they trust. The digest
//! covers every byte of the file but the signature itself, so a signature vouches for the code,
//! the tables and the weights at once.
//!
//! Keys are small text files: `incept-ed25519-secret-key <64 hex digits>` (the 32-byte seed;
//! keep it private) and `incept-ed25519-public-key <64 hex digits>`.

use ed25519_dalek::{Signature, Signer, SigningKey, VerifyingKey};

/// What is signed: a domain tag and the artifact's digest.
fn message(digest: &[u8; 32]) -> Vec<u8> {
    let mut m = b"incept artifact signature, format 2\0".to_vec();
    m.extend_from_slice(digest);
    m
}

/// Bytes of a signature section: the signer's public key, then the signature.
pub const SECTION_BYTES: usize = 32 + 64;

const SECRET_TAG: &str = "incept-ed25519-secret-key";
const PUBLIC_TAG: &str = "incept-ed25519-public-key";

/// A key that signs artifacts.
#[derive(Clone)]
pub struct SecretKey(SigningKey);

/// A key whose signatures a loader trusts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PublicKey(pub [u8; 32]);

/// Why a key file was refused.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum KeyError {
    #[error("not an incept {0} key file (it should hold '{1} ' and 64 hex digits)")]
    Format(&'static str, &'static str),
    #[error("the public key is not a valid Ed25519 point")]
    Invalid,
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex32(text: &str) -> Option<[u8; 32]> {
    let text = text.trim();
    if text.len() != 64 || !text.is_ascii() {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, o) in out.iter_mut().enumerate() {
        *o = u8::from_str_radix(&text[2 * i..2 * i + 2], 16).ok()?;
    }
    Some(out)
}

fn parse(text: &str, tag: &str) -> Option<[u8; 32]> {
    let rest = text.trim().strip_prefix(tag)?;
    if !rest.starts_with(char::is_whitespace) {
        return None;
    }
    unhex32(rest)
}

impl SecretKey {
    /// A key from 32 random bytes (the caller's CSPRNG).
    pub fn from_seed(seed: [u8; 32]) -> SecretKey {
        SecretKey(SigningKey::from_bytes(&seed))
    }

    /// The key file's text.
    pub fn to_text(&self) -> String {
        format!("{SECRET_TAG} {}\n", hex(&self.0.to_bytes()))
    }

    pub fn from_text(text: &str) -> Result<SecretKey, KeyError> {
        parse(text, SECRET_TAG).map(SecretKey::from_seed).ok_or(KeyError::Format("secret", SECRET_TAG))
    }

    pub fn public(&self) -> PublicKey {
        PublicKey(self.0.verifying_key().to_bytes())
    }

    /// The signature section for an artifact of this digest.
    pub fn sign(&self, digest: &[u8; 32]) -> [u8; SECTION_BYTES] {
        let mut out = [0u8; SECTION_BYTES];
        out[..32].copy_from_slice(&self.public().0);
        out[32..].copy_from_slice(&self.0.sign(&message(digest)).to_bytes());
        out
    }
}

impl std::fmt::Debug for SecretKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SecretKey(public {})", self.public())
    }
}

impl PublicKey {
    pub fn to_text(&self) -> String {
        format!("{PUBLIC_TAG} {}\n", hex(&self.0))
    }

    pub fn from_text(text: &str) -> Result<PublicKey, KeyError> {
        let bytes = parse(text, PUBLIC_TAG).ok_or(KeyError::Format("public", PUBLIC_TAG))?;
        VerifyingKey::from_bytes(&bytes).map_err(|_| KeyError::Invalid)?;
        Ok(PublicKey(bytes))
    }
}

impl std::fmt::Display for PublicKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&hex(&self.0))
    }
}

/// The signer of a signature section, if the signature over `digest` is valid.
pub fn verify(section: &[u8], digest: &[u8; 32]) -> Option<PublicKey> {
    let (key, sig) = section.split_at_checked(32)?;
    let key: [u8; 32] = key.try_into().ok()?;
    let sig = Signature::from_slice(sig).ok()?;
    let vk = VerifyingKey::from_bytes(&key).ok()?;
    vk.verify_strict(&message(digest), &sig).ok()?;
    Some(PublicKey(key))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_round_trip_and_signatures_verify_for_their_digest_only() {
        let key = SecretKey::from_seed([9; 32]);
        assert_eq!(SecretKey::from_text(&key.to_text()).unwrap().public(), key.public());
        assert_eq!(PublicKey::from_text(&key.public().to_text()).unwrap(), key.public());
        let section = key.sign(&[1; 32]);
        assert_eq!(verify(&section, &[1; 32]), Some(key.public()));
        assert_eq!(verify(&section, &[2; 32]), None);
        let mut other = section;
        other[40] ^= 1;
        assert_eq!(verify(&other, &[1; 32]), None);
        assert_eq!(verify(&section[..95], &[1; 32]), None);
        for bad in ["", "incept-ed25519-public-key", "incept-ed25519-public-key 12", &key.to_text()] {
            assert!(PublicKey::from_text(bad).is_err(), "{bad:?}");
        }
        assert!(SecretKey::from_text(&key.public().to_text()).is_err(), "a public key is not a secret key");
    }
}
