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
    assert!(ci.lines().any(|l| l.trim() == command), ".ci/run does not run `{command}`");
}
