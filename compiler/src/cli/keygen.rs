//! `incept keygen`: a key pair for signing artifacts.

use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use clap::Args;
use incept_runtime::signature::SecretKey;

/// Make an Ed25519 key pair for signed artifacts: FILE gets the secret key (readable by its
/// owner only; `incept compile --sign FILE` signs with it) and FILE.pub the public key (what
/// `run`/`bench --trust`, `incept_runtime::artifact::LoadOptions`, the C API's
/// `incept_model_load_trusted` and Python's `incept.load(..., trusted_key=...)` check against).
/// Existing files are never overwritten.
#[derive(Args)]
pub struct KeygenArgs {
    /// Where to write the secret key (the public key goes to FILE.pub).
    #[arg(value_name = "FILE")]
    key: PathBuf,
}

pub fn run(a: KeygenArgs) -> Result<()> {
    let public = PathBuf::from(format!("{}.pub", a.key.display()));
    for p in [&a.key, &public] {
        if p.exists() {
            bail!("'{}' exists already: incept keygen never overwrites a key", p.display());
        }
    }
    let mut seed = [0u8; 32];
    getrandom::fill(&mut seed).map_err(|e| anyhow::anyhow!("no randomness for the key: {e}"))?;
    let key = SecretKey::from_seed(seed);
    write_new(&a.key, key.to_text().as_bytes(), true)?;
    write_new(&public, key.public().to_text().as_bytes(), false)?;
    crate::cli::out(&format!(
        "wrote the secret key to {} and the public key {} to {}\n",
        a.key.display(),
        key.public(),
        public.display()
    ))
}

/// Creates `path`, which must not exist (owner-only when `private`).
fn write_new(path: &std::path::Path, bytes: &[u8], private: bool) -> Result<()> {
    use std::io::Write;
    let mut o = std::fs::OpenOptions::new();
    o.write(true).create_new(true);
    #[cfg(unix)]
    if private {
        use std::os::unix::fs::OpenOptionsExt;
        o.mode(0o600);
    }
    let _ = private;
    let mut f = o.open(path).with_context(|| format!("cannot create '{}'", path.display()))?;
    f.write_all(bytes).and_then(|_| f.sync_all()).with_context(|| format!("cannot write '{}'", path.display()))
}
