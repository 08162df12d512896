//! include/incept.h is what cbindgen generates from src/lib.rs today: a changed signature without
//! a regenerated header fails here (regenerate with INCEPT_BLESS=1).

#[test]
fn header_is_generated_from_the_source() {
    let dir = env!("CARGO_MANIFEST_DIR");
    let bindings = cbindgen::generate(dir).unwrap_or_else(|e| panic!("cbindgen: {e}"));
    let mut fresh = vec![];
    bindings.write(&mut fresh);
    let path = std::path::Path::new(dir).join("include/incept.h");
    if std::env::var_os("INCEPT_BLESS").is_some() {
        std::fs::write(&path, &fresh).expect("write the header");
    }
    let checked_in = std::fs::read(&path).unwrap_or_default();
    assert!(
        checked_in == fresh,
        "capi/include/incept.h is stale: regenerate it with `INCEPT_BLESS=1 cargo test -p incept-capi --test header`\n\
         generated:\n{}",
        String::from_utf8_lossy(&fresh)
    );
}
