//! Tidy: security habits held mechanically.

use std::path::Path;

use warden_tests::root;

fn rust_files(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
    for e in std::fs::read_dir(dir).expect("read dir").flatten() {
        let p = e.path();
        if p.is_dir() {
            rust_files(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

/// Host code never inherits anything from the host process into a guest.
#[test]
fn no_inherit_in_host_code() {
    let mut files = Vec::new();
    rust_files(&root().join("host"), &mut files);
    assert!(!files.is_empty());
    let needle = [".inherit", "_"].concat();
    for f in files {
        let text = std::fs::read_to_string(&f).expect("read");
        assert!(
            !text.contains(&needle),
            "{} calls an inherit function",
            f.display()
        );
    }
}

/// Every fixture under tools/fixtures is exercised by a test.
#[test]
fn every_fixture_has_a_test() {
    let tests: String = ["hostile.rs", "capabilities.rs", "governance.rs"]
        .iter()
        .map(|f| std::fs::read_to_string(root().join("tests").join(f)).expect("test file"))
        .collect();
    for e in std::fs::read_dir(root().join("tools/fixtures"))
        .expect("fixtures")
        .flatten()
    {
        let name = e.file_name().to_string_lossy().into_owned();
        if name == "README.md" {
            continue;
        }
        let referenced = name.strip_suffix(".wasm").map_or_else(
            || format!("fixture_{}", name.replace('-', "_")),
            |_| name.clone(),
        );
        assert!(
            tests.contains(&referenced),
            "fixture `{name}` has no test (looked for `{referenced}`)"
        );
    }
}

/// Every example grant file parses.
#[test]
fn example_grants_parse() {
    let dir = root().join("examples/grants");
    let mut n = 0;
    for e in std::fs::read_dir(&dir).expect("examples/grants").flatten() {
        let text = std::fs::read_to_string(e.path()).expect("read");
        if let Err(err) = warden_policy::Grant::from_toml(&text) {
            panic!("{}: {err}", e.path().display());
        }
        n += 1;
    }
    assert!(n >= 2);
}

/// Every capability is described in ARCHITECTURE.md and the README's grant
/// reference.
#[test]
fn every_capability_is_documented() {
    let arch = std::fs::read_to_string(root().join("ARCHITECTURE.md")).expect("ARCHITECTURE.md");
    let readme = std::fs::read_to_string(root().join("README.md")).expect("README.md");
    for cap in warden_policy::Capability::ALL {
        assert!(
            arch.contains(&format!("`{cap}`")),
            "ARCHITECTURE.md does not mention `{cap}`"
        );
        assert!(
            readme.contains(&format!("[{cap}]")),
            "README.md has no grant example `[{cap}]`"
        );
    }
}

/// Every ```toml grant example in the README parses as a valid grant.
#[test]
fn readme_grant_examples_parse() {
    let readme = std::fs::read_to_string(root().join("README.md")).expect("README.md");
    let mut n = 0;
    for block in readme.split("```toml").skip(1) {
        let body = block.split("```").next().unwrap_or_default();
        if body.contains("[package]") {
            continue; // a Cargo.toml
        }
        if body.starts_with("\n# ~/.config/warden/config.toml") {
            continue; // the CLI config file
        }
        if body.contains("[[actions]]") {
            if let Err(e) = warden_policy::Manifest::from_toml(body) {
                panic!("README manifest example does not parse: {e}\n{body}");
            }
            continue;
        }
        if let Err(e) = warden_policy::Grant::from_toml(body) {
            panic!("README grant example does not parse: {e}\n{body}");
        }
        n += 1;
    }
    assert!(n >= 5, "expected grant examples in the README, found {n}");
}
