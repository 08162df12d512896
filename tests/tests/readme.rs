//! The README stays true: its operator table is what the code supports, and its test command is
//! what CI runs.

use incept_tests::repo_root;

fn readme() -> String {
    std::fs::read_to_string(repo_root().join("README.md")).expect("README.md")
}

#[test]
fn op_table_matches_the_code() {
    let text = readme();
    let start = text.find("<!-- ops:start -->\n").expect("ops:start marker") + "<!-- ops:start -->\n".len();
    let end = text.find("<!-- ops:end -->").expect("ops:end marker");
    assert_eq!(
        &text[start..end],
        incept_ir::ops::markdown_table(),
        "README's operator table is stale: regenerate it with `incept ops --markdown`"
    );
}

#[test]
fn ci_runs_the_readme_test_command() {
    let text = readme();
    let tests = text.find("## Tests").expect("a Tests section");
    let command =
        text[tests..].lines().find(|l| l.starts_with("    ")).expect("an indented command").trim().to_string();
    assert_eq!(command, "cargo test --workspace");
    let ci = std::fs::read_to_string(repo_root().join(".ci/run")).expect(".ci/run");
    // The command itself, its output perhaps piped into a log, but no other arguments.
    let runs =
        |l: &str| l.split('|').next().map(|c| c.trim().trim_end_matches("2>&1").trim()) == Some(command.as_str());
    assert!(ci.lines().any(runs), ".ci/run does not run `{command}`");
}

/// The zoo tests need 300 MB of generated models: they are `#[ignore]`d with a reason rather than
/// passing without running, and the README says how to run them.
#[test]
fn zoo_tests_are_ignored_and_documented() {
    let dir = repo_root().join("tests/tests");
    let mut zoo_tests = 0;
    for entry in std::fs::read_dir(&dir).expect("tests/tests") {
        let path = entry.expect("entry").path();
        // This file names the helpers it looks for.
        if path.ends_with("readme.rs") {
            continue;
        }
        let Ok(src) = std::fs::read_to_string(&path) else { continue };
        // Each piece after a `#[test]` holds one test's attributes and body.
        for test in src.split("#[test]\n").skip(1) {
            if test.contains("zoo_dir()") || test.contains("zoo_models()") {
                zoo_tests += 1;
                assert!(
                    test.starts_with("#[ignore = \"needs INCEPT_ZOO_DIR"),
                    "{}: a test that needs the zoo is not ignored:\n{}",
                    path.display(),
                    test.lines().take(3).collect::<Vec<_>>().join("\n")
                );
            }
        }
    }
    assert!(zoo_tests >= 5, "found only {zoo_tests} zoo tests");
    let text = readme();
    assert!(
        text.contains(
            "INCEPT_ZOO_DIR=DIR cargo test --release -p incept-tests --test zoo --test optimized -- --ignored"
        ),
        "README does not say how to run the ignored zoo tests"
    );
}
