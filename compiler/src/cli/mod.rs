//! Subcommands of the `incept` tool and the options they share.

pub mod bench;
pub mod check;
pub mod compile;
pub mod inspect;
pub mod keygen;
pub mod ops;
pub mod optimize;
pub mod passes;
pub mod peak;
pub mod progress;
pub mod run;
pub mod shapes;

use std::io::{Read, Write};
use std::path::Path;

use anyhow::Context;

/// Whether `path` is an `.incept` artifact (by its first bytes, not its name).
pub fn is_artifact(path: &Path) -> bool {
    let mut magic = [0u8; 8];
    std::fs::File::open(path).and_then(|mut f| f.read_exact(&mut magic)).is_ok()
        && magic == incept_runtime::artifact::MAGIC
}

/// Loads an `.incept` artifact to run with `threads` workers (0: physical cores), under the
/// loader's demands (a required signature).
pub fn load_artifact(
    path: &Path,
    threads: usize,
    load: &incept_runtime::artifact::LoadOptions,
) -> anyhow::Result<incept_runtime::Model> {
    incept_runtime::Model::load_with(path, &incept_runtime::RunOptions { threads }, load)
        .with_context(|| format!("cannot load the artifact '{}'", path.display()))
}

/// Which artifact signers a command trusts.
#[derive(clap::Args, Default)]
pub struct TrustArgs {
    /// Load the artifact only if it is signed by this public key (a FILE.pub from `incept
    /// keygen`; repeatable: any of them). Without it, a signature is checked if present but
    /// not required.
    #[arg(long = "trust", value_name = "KEY.pub")]
    pub trust: Vec<std::path::PathBuf>,
}

impl TrustArgs {
    /// The loader's demands for `model`; a key given for an ONNX model is an error.
    pub fn load_options(&self, model: &Path) -> anyhow::Result<incept_runtime::artifact::LoadOptions> {
        if !self.trust.is_empty() && !is_artifact(model) {
            anyhow::bail!("--trust applies to `.incept` artifacts; '{}' is not one", model.display());
        }
        let trusted_keys = self
            .trust
            .iter()
            .map(|p| {
                let text =
                    std::fs::read_to_string(p).with_context(|| format!("cannot read the key '{}'", p.display()))?;
                incept_runtime::signature::PublicKey::from_text(&text).with_context(|| format!("'{}'", p.display()))
            })
            .collect::<anyhow::Result<_>>()?;
        Ok(incept_runtime::artifact::LoadOptions { trusted_keys })
    }
}

/// Fails now if `path` cannot be written later (a missing folder, no permission, a folder by
/// that name), or if it is one of the files the command reads (`reads`: (what it is, path)),
/// so that nothing runs that would end in that error or write over its own input. Touches
/// nothing: outputs are written whole or not at all (`incept_runtime::file`).
pub fn check_output(path: &Path, reads: &[(&str, &Path)]) -> anyhow::Result<()> {
    if let Some((what, read)) = reads.iter().find(|(_, r)| incept_runtime::file::same_file(path, r)) {
        anyhow::bail!(
            "the output '{}' is {what} '{}' of this command: write it elsewhere, or the input would be lost",
            path.display(),
            read.display()
        );
    }
    incept_runtime::file::check_writable(path).with_context(|| format!("cannot write '{}'", path.display()))
}

/// Writes `bytes` to `path` whole, or leaves what was there.
pub fn write_file(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    incept_runtime::file::write_atomic(path, bytes).with_context(|| format!("cannot write '{}'", path.display()))
}

/// Checks a tensor read from `source` against the compiled model's input `spec`, so that a
/// wrong shape or dtype is blamed on the file, with what the model expects (and a layout hint).
pub fn check_input_file(
    source: &str,
    t: &incept_ir::Tensor,
    spec: &incept_runtime::IoSpec,
    model: &Path,
) -> anyhow::Result<()> {
    let want: Vec<shapes::DeclaredDim> = spec.shape.iter().map(|&d| shapes::DeclaredDim::Known(d)).collect();
    let dims: Vec<String> = spec.shape.iter().map(|d| d.to_string()).collect();
    let ty = format!("{}[{}]", spec.dtype.name(), dims.join(","));
    shapes::check_data_shape(source, t.shape(), &spec.name, model, &ty, &want, &Default::default())?;
    if t.dtype().name() != spec.dtype.name() {
        anyhow::bail!(
            "input file '{source}' holds {} data, but input '{}' of '{}' is {ty}",
            t.dtype(),
            spec.name,
            model.display()
        );
    }
    Ok(())
}

/// Writes text to stdout. A closed pipe (`incept inspect m.onnx | head`) ends the program quietly
/// instead of failing, as other command-line tools do.
pub fn out(text: &str) -> anyhow::Result<()> {
    let mut stdout = std::io::stdout().lock();
    match stdout.write_all(text.as_bytes()).and_then(|_| stdout.flush()) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => std::process::exit(0),
        Err(e) => Err(anyhow::Error::new(e).context("cannot write to stdout")),
    }
}
