//! The C example (examples/c/classify.c) compiled with the system C compiler against
//! include/incept.h and libincept.a, run on a stored artifact: its top-5 must be ONNX Runtime's.
//! Also the API's refusals, called through C: a missing file, a damaged file, wrong buffer sizes.

use std::path::{Path, PathBuf};
use std::process::Command;

/// The start of the C programs that check calls: the headers and `EXPECT(call, status, text)`,
/// which fails the program unless the call returns `status` with `text` in its message.
const C_PRELUDE: &str = r#"#include <stdio.h>
#include <string.h>
#include "incept.h"
#define EXPECT(call, status, text) do { \
    incept_status s_ = (call); \
    if (s_ != (status) || strstr(incept_last_error(), (text)) == NULL) { \
        printf("FAIL line %d: status %d, message '%s'\n", __LINE__, (int)s_, incept_last_error()); return 1; } \
    } while (0)
"#;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// libincept.a, built for this test's profile: `cargo test` builds the library as an rlib only,
/// so the C-facing archive is built here once (the build directory is unlocked while tests run).
fn static_lib() -> PathBuf {
    static BUILT: std::sync::OnceLock<Result<PathBuf, String>> = std::sync::OnceLock::new();
    BUILT
        .get_or_init(|| {
            let exe = std::env::current_exe().map_err(|e| e.to_string())?;
            // The test binary lives in <target>/<profile>/deps.
            let profile_dir = exe.parent().and_then(Path::parent).ok_or("no target dir")?;
            let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
            let mut cmd = Command::new(cargo);
            cmd.args(["build", "-p", "incept-capi", "--lib"]).current_dir(repo());
            if profile_dir.file_name().is_some_and(|n| n == "release") {
                cmd.arg("--release");
            }
            let o = cmd.output().map_err(|e| e.to_string())?;
            if !o.status.success() {
                return Err(format!("cargo build failed:\n{}", String::from_utf8_lossy(&o.stderr)));
            }
            let lib = profile_dir.join("libincept.a");
            lib.exists().then_some(lib.clone()).ok_or(format!("{} was not built", lib.display()))
        })
        .clone()
        .unwrap_or_else(|e| panic!("{e}"))
}

fn compile_c(source: &Path, out: &Path) {
    let cc = std::env::var("CC").unwrap_or_else(|_| "cc".into());
    let o = Command::new(&cc)
        .args(["-std=c99", "-Wall", "-Wextra", "-Werror", "-O1", "-I"])
        .arg(repo().join("capi/include"))
        .arg(source)
        .arg(static_lib())
        .args(["-lpthread", "-ldl", "-lm", "-o"])
        .arg(out)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cc}: {e}"));
    assert!(o.status.success(), "{cc} failed:\n{}", String::from_utf8_lossy(&o.stderr));
}

fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("incept-capi-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    dir
}

/// Reads a little-endian f32 .npy (format 1.0) with Rust, independently of the C code.
fn read_f32_npy(path: &Path) -> Vec<f32> {
    let b = std::fs::read(path).expect("npy");
    let header = u16::from_le_bytes([b[8], b[9]]) as usize;
    b[10 + header..].chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect()
}

#[test]
fn the_c_example_classifies_like_onnx_runtime() {
    let dir = temp_dir("example");
    let exe = dir.join("classify");
    compile_c(&repo().join("examples/c/classify.c"), &exe);
    let fixtures = repo().join("tests/fixtures");
    let o = Command::new(&exe)
        .arg(fixtures.join("mini_resnet.baseline.incept"))
        .arg(fixtures.join("mini_resnet.input.npy"))
        .output()
        .expect("run the example");
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success(), "classify failed: {}{}", stdout, String::from_utf8_lossy(&o.stderr));
    let mut lines = stdout.lines();
    assert_eq!(lines.next(), Some("input 'input' [1,3,64,64], output 'output'"), "{stdout}");
    let got: Vec<(usize, f32)> = lines
        .map(|l| {
            let (i, v) = l.split_once(' ').expect("index score");
            (i.parse().expect("index"), v.parse().expect("score"))
        })
        .collect();
    let want = read_f32_npy(&fixtures.join("mini_resnet.ort_output.npy"));
    let mut order: Vec<usize> = (0..want.len()).collect();
    order.sort_by(|&a, &b| want[b].total_cmp(&want[a]));
    assert_eq!(got.len(), 5, "{stdout}");
    for ((i, v), &w) in got.iter().zip(&order) {
        assert_eq!(*i, w, "top-5 order differs from ONNX Runtime's:\n{stdout}");
        assert!((v - want[w]).abs() <= 1e-4 * want[w].abs().max(1.0), "class {i}: {v} vs ORT {}", want[w]);
    }
    // A damaged file is refused with the runtime's message.
    let bad = dir.join("bad.incept");
    let mut bytes = std::fs::read(fixtures.join("mini_resnet.baseline.incept")).expect("artifact");
    let mid = bytes.len() / 2;
    bytes[mid] ^= 1;
    std::fs::write(&bad, &bytes).expect("write");
    let o = Command::new(&exe).arg(&bad).arg(fixtures.join("mini_resnet.input.npy")).output().expect("run");
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success() && err.contains("corrupted"), "{err}");
    std::fs::remove_dir_all(&dir).ok();
}

/// Every refusal of the API, exercised from C: status codes and messages.
#[test]
fn the_c_api_refuses_bad_calls_with_status_and_message() {
    let dir = temp_dir("refusals");
    let src = dir.join("refusals.c");
    let artifact = repo().join("tests/fixtures/mini_resnet.baseline.incept");
    std::fs::write(
        &src,
        format!(
            r#"{prelude}int main(void) {{
    incept_model *m = (incept_model *)1;
    EXPECT(incept_model_load("/nonexistent.incept", 1, &m), INCEPT_STATUS_IO, "nonexistent");
    if (m != NULL) {{ printf("FAIL: out not cleared\n"); return 1; }}
    EXPECT(incept_model_load(NULL, 1, &m), INCEPT_STATUS_INVALID_ARGUMENT, "path is null");
    EXPECT(incept_model_load("{readme}", 1, &m), INCEPT_STATUS_ARTIFACT, "not an incept artifact");
    /* Thread counts past four per logical CPU are refused at once, not started. */
    EXPECT(incept_model_load("{artifact}", (size_t)-1, &m), INCEPT_STATUS_INVALID_ARGUMENT, "worker threads asked for");
    EXPECT(incept_model_load("{artifact}", 100000, &m), INCEPT_STATUS_INVALID_ARGUMENT, "at most");
    if (m != NULL) {{ printf("FAIL: out not cleared after a refused thread count\n"); return 1; }}
    EXPECT(incept_model_load("{artifact}", 1, &m), INCEPT_STATUS_OK, "");
    if (incept_model_input_count(m) != 1 || incept_model_output_count(m) != 1) {{ printf("FAIL counts\n"); return 1; }}
    incept_tensor_info info;
    EXPECT(incept_model_input_info(m, 1, &info), INCEPT_STATUS_INVALID_ARGUMENT, "input 1 of 1");
    EXPECT(incept_model_output_info(m, 0, NULL), INCEPT_STATUS_INVALID_ARGUMENT, "out is null");
    size_t k = 9;
    EXPECT(incept_model_find_output(m, "output", &k), INCEPT_STATUS_OK, "");
    if (k != 0) {{ printf("FAIL find\n"); return 1; }}
    EXPECT(incept_model_find_input(m, "image", &k), INCEPT_STATUS_INVALID_ARGUMENT, "no input named 'image' (inputs: input)");
    static float x[3 * 64 * 64], y[10];
    const void *in[1] = {{x}};
    void *out[1] = {{y}};
    size_t in_bytes[1] = {{sizeof x}}, out_bytes[1] = {{sizeof y}}, short_bytes[1] = {{sizeof y - 4}};
    EXPECT(incept_model_run(m, in, in_bytes, 1, out, short_bytes, 1), INCEPT_STATUS_INPUT, "holds 36 bytes, the tensor 40");
    EXPECT(incept_model_run(m, in, in_bytes, 0, out, out_bytes, 1), INCEPT_STATUS_INPUT, "takes 1 input(s) (input)");
    EXPECT(incept_model_run(m, NULL, in_bytes, 1, out, out_bytes, 1), INCEPT_STATUS_INVALID_ARGUMENT, "null");
    EXPECT(incept_model_run(NULL, in, in_bytes, 1, out, out_bytes, 1), INCEPT_STATUS_INVALID_ARGUMENT, "model is null");
    EXPECT(incept_model_run(m, in, in_bytes, 1, out, out_bytes, 1), INCEPT_STATUS_OK, "");
    /* A pointer that is not a live model is refused on every call, never followed. */
    incept_model *foreign = (incept_model *)x;
    EXPECT(incept_model_run(foreign, in, in_bytes, 1, out, out_bytes, 1), INCEPT_STATUS_INVALID_ARGUMENT, "not a live handle");
    if (incept_model_input_count(foreign) != 0) {{ printf("FAIL foreign count\n"); return 1; }}
    EXPECT(incept_model_free(foreign), INCEPT_STATUS_INVALID_ARGUMENT, "not a live handle");
    EXPECT(incept_model_free(m), INCEPT_STATUS_OK, "");
    /* Freed: every call on it, and a second free, is refused. */
    EXPECT(incept_model_run(m, in, in_bytes, 1, out, out_bytes, 1), INCEPT_STATUS_INVALID_ARGUMENT, "not a live handle");
    EXPECT(incept_model_input_info(m, 0, &info), INCEPT_STATUS_INVALID_ARGUMENT, "not a live handle");
    EXPECT(incept_model_find_output(m, "output", &k), INCEPT_STATUS_INVALID_ARGUMENT, "not a live handle");
    if (incept_model_output_count(m) != 0) {{ printf("FAIL freed count\n"); return 1; }}
    EXPECT(incept_model_free(m), INCEPT_STATUS_INVALID_ARGUMENT, "freed twice");
    EXPECT(incept_model_free(NULL), INCEPT_STATUS_OK, "");
    printf("ok %s\n", incept_version());
    return 0;
}}
"#,
            prelude = C_PRELUDE,
            readme = repo().join("README.md").display(),
            artifact = artifact.display()
        ),
    )
    .expect("write C source");
    let exe = dir.join("refusals");
    compile_c(&src, &exe);
    let o = Command::new(&exe).output().expect("run");
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success() && stdout.starts_with("ok 0."), "{stdout}{}", String::from_utf8_lossy(&o.stderr));
    std::fs::remove_dir_all(&dir).ok();
}

/// Four C threads run one model at once (threads = 2 inside), each many times: every result has
/// the bits of a single-threaded call, as the header promises.
#[test]
fn the_c_api_runs_one_model_from_several_threads() {
    let dir = temp_dir("threads");
    let src = dir.join("threads.c");
    let artifact = repo().join("tests/fixtures/mini_resnet.baseline.incept");
    std::fs::write(
        &src,
        format!(
            r#"#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include "incept.h"
static incept_model *model;
static float x[4][3 * 64 * 64], want[10];
static int bad[4];
static void *work(void *arg) {{
    int t = (int)(size_t)arg;
    for (int i = 0; i < 50; i++) {{
        float y[10];
        const void *in[1] = {{x[t]}};
        void *out[1] = {{y}};
        size_t ib[1] = {{sizeof x[t]}}, ob[1] = {{sizeof y}};
        if (incept_model_run(model, in, ib, 1, out, ob, 1) != INCEPT_STATUS_OK || memcmp(y, want, sizeof y) != 0)
            bad[t]++;
    }}
    return NULL;
}}
int main(void) {{
    if (incept_model_load("{artifact}", 2, &model) != INCEPT_STATUS_OK) {{ printf("load: %s\n", incept_last_error()); return 1; }}
    for (int t = 0; t < 4; t++)
        for (int i = 0; i < 3 * 64 * 64; i++) x[t][i] = (float)((i * 7919) % 1000) / 500.0f - 1.0f;
    const void *in[1] = {{x[0]}};
    void *out[1] = {{want}};
    size_t ib[1] = {{sizeof x[0]}}, ob[1] = {{sizeof want}};
    if (incept_model_run(model, in, ib, 1, out, ob, 1) != INCEPT_STATUS_OK) {{ printf("run: %s\n", incept_last_error()); return 1; }}
    pthread_t th[4];
    for (int t = 0; t < 4; t++) pthread_create(&th[t], NULL, work, (void *)(size_t)t);
    for (int t = 0; t < 4; t++) pthread_join(th[t], NULL);
    incept_model_free(model);
    for (int t = 0; t < 4; t++) if (bad[t]) {{ printf("thread %d: %d bad runs\n", t, bad[t]); return 1; }}
    printf("ok\n");
    return 0;
}}
"#,
            artifact = artifact.display()
        ),
    )
    .expect("write C source");
    let exe = dir.join("threads");
    compile_c(&src, &exe);
    let o = Command::new(&exe).output().expect("run");
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success() && stdout == "ok\n", "{stdout}{}", String::from_utf8_lossy(&o.stderr));
    std::fs::remove_dir_all(&dir).ok();
}

/// `incept_model_load_trusted` loads an artifact signed by the given key and refuses an unsigned
/// one, one signed by another key and a wrong key with `INCEPT_STATUS_SIGNATURE`.
#[test]
fn the_c_api_loads_only_artifacts_signed_by_the_trusted_key() {
    use incept_runtime::artifact;
    use incept_runtime::signature::SecretKey;
    let dir = temp_dir("signed");
    let stored = repo().join("tests/fixtures/mini_resnet.baseline.incept");
    let (plan, info) = artifact::decode(&std::fs::read(&stored).expect("artifact")).expect("decode");
    let key = SecretKey::from_seed([5; 32]);
    let signed = dir.join("signed.incept");
    artifact::save_signed(&plan, &info, &signed, Some(&key)).expect("save");
    let c_bytes = |k: [u8; 32]| k.iter().map(|b| format!("{b}")).collect::<Vec<_>>().join(", ");
    let src = dir.join("signed.c");
    std::fs::write(
        &src,
        format!(
            r#"{prelude}int main(void) {{
    const uint8_t trusted[32] = {{{trusted}}}, other[32] = {{{other}}};
    incept_model *m = NULL;
    EXPECT(incept_model_load_trusted("{signed}", 1, trusted, &m), INCEPT_STATUS_OK, "");
    if (incept_model_input_count(m) != 1) {{ printf("FAIL count\n"); return 1; }}
    EXPECT(incept_model_free(m), INCEPT_STATUS_OK, "");
    EXPECT(incept_model_load_trusted("{signed}", 1, other, &m), INCEPT_STATUS_SIGNATURE, "does not trust");
    EXPECT(incept_model_load_trusted("{unsigned}", 1, trusted, &m), INCEPT_STATUS_SIGNATURE, "not signed");
    EXPECT(incept_model_load_trusted("{signed}", 1, NULL, &m), INCEPT_STATUS_INVALID_ARGUMENT, "public_key is null");
    if (m != NULL) {{ printf("FAIL: out not cleared\n"); return 1; }}
    /* Without a demand, a signed artifact loads like any other. */
    EXPECT(incept_model_load("{signed}", 1, &m), INCEPT_STATUS_OK, "");
    incept_model_free(m);
    printf("ok\n");
    return 0;
}}
"#,
            prelude = C_PRELUDE,
            trusted = c_bytes(key.public().0),
            other = c_bytes(SecretKey::from_seed([6; 32]).public().0),
            signed = signed.display(),
            unsigned = stored.display(),
        ),
    )
    .expect("write C source");
    let exe = dir.join("signed");
    compile_c(&src, &exe);
    let o = Command::new(&exe).output().expect("run");
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success() && stdout.starts_with("ok"), "{stdout}{}", String::from_utf8_lossy(&o.stderr));
    std::fs::remove_dir_all(&dir).ok();
}
