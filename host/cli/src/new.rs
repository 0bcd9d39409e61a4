//! `grove new NAME --lang rust|python|js`: a new actor project, ready to
//! build.
//!
//! The project holds its WIT (the actor interface, and Grove's own
//! `grove:actor` package in `wit/deps/`, so it builds anywhere), code with one
//! function that keeps state and a timer, a `build.sh` that installs what
//! it needs and writes `NAME.wasm`, and a README. The templates are in
//! `host/cli/templates/`, compiled into the binary.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use grove_host::proxy_wit::KEYWORDS;

/// A language `grove new` writes projects in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Lang {
    /// Rust, with Grove's guest SDK (`grove-guest`) and wit-bindgen.
    Rust,
    /// Python, built with componentize-py.
    Python,
    /// JavaScript, built with componentize-js.
    Js,
}

/// Grove's own WIT package, which every actor's world includes.
const GROVE_WIT: [(&str, &str); 5] = [
    ("host.wit", include_str!("../../../wit/actor/host.wit")),
    (
        "lifecycle.wit",
        include_str!("../../../wit/actor/lifecycle.wit"),
    ),
    (
        "migrate.wit",
        include_str!("../../../wit/actor/migrate.wit"),
    ),
    ("types.wit", include_str!("../../../wit/actor/types.wit")),
    ("worlds.wit", include_str!("../../../wit/actor/worlds.wit")),
];

const ACTOR_WIT: &str = include_str!("../templates/actor.wit");

/// Each language's files: path in the project, text, executable.
const RUST: [(&str, &str, bool); 3] = [
    (
        "Cargo.toml",
        include_str!("../templates/rust/Cargo.toml"),
        false,
    ),
    (
        "src/lib.rs",
        include_str!("../templates/rust/src/lib.rs"),
        false,
    ),
    ("build.sh", include_str!("../templates/rust/build.sh"), true),
];
const PYTHON: [(&str, &str, bool); 2] = [
    ("app.py", include_str!("../templates/python/app.py"), false),
    (
        "build.sh",
        include_str!("../templates/python/build.sh"),
        true,
    ),
];
const JS: [(&str, &str, bool); 3] = [
    ("app.js", include_str!("../templates/js/app.js"), false),
    (
        "package.json",
        include_str!("../templates/js/package.json"),
        false,
    ),
    ("build.sh", include_str!("../templates/js/build.sh"), true),
];

/// Where the Rust guest SDK is: the checkout this `grove` was built from,
/// if it is still there, else the project's repository.
fn sdk_dependency() -> String {
    let local = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../guest-sdk");
    match local.canonicalize() {
        Ok(path) if path.join("Cargo.toml").exists() => {
            format!("{{ path = {:?} }}", path.display().to_string())
        }
        _ => r#"{ git = "https://github.com/grove-actors/grove" }"#.to_owned(),
    }
}

/// Names that would be a keyword in Rust, Python or JavaScript once the
/// project is generated, or that Cargo refuses as a package (WIT's own
/// keywords are [`KEYWORDS`]).
const RESERVED: &[&str] = &[
    // Rust
    "abstract", "await", "become", "box", "break", "const", "continue", "crate", "do", "dyn",
    "else", "extern", "false", "final", "fn", "for", "gen", "if", "impl", "in", "let", "loop",
    "macro", "match", "mod", "move", "mut", "override", "priv", "pub", "ref", "return", "self",
    "struct", "super", "trait", "true", "try", "typeof", "unsafe", "unsized", "virtual", "where",
    "while", "yield", // Python and JavaScript
    "and", "assert", "case", "catch", "class", "def", "default", "del", "delete", "elif", "except",
    "finally", "function", "global", "is", "lambda", "new", "nonlocal", "not", "null", "or",
    "pass", "raise", "switch", "this", "throw", "var", "void", // Cargo
    "test",
];

/// Whether `name` is a WIT identifier an actor type can have: lowercase
/// words of letters and digits, each starting with a letter, joined by `-`,
/// and no keyword of the languages the project is written in.
fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && !RESERVED.contains(&name)
        && !KEYWORDS.contains(&name)
        && name.split('-').all(|word| {
            word.chars().next().is_some_and(|c| c.is_ascii_lowercase())
                && word
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit())
        })
}

/// `game-lobby` as `gameLobby`.
fn lower_camel(name: &str) -> String {
    let upper = camel(name);
    let mut chars = upper.chars();
    chars.next().map_or_else(String::new, |first| {
        first.to_ascii_lowercase().to_string() + chars.as_str()
    })
}

/// `game-lobby` as `GameLobby`.
fn camel(name: &str) -> String {
    name.split('-')
        .map(|word| {
            let mut chars = word.chars();
            chars.next().map_or_else(String::new, |first| {
                first.to_ascii_uppercase().to_string() + chars.as_str()
            })
        })
        .collect()
}

fn fill(template: &str, name: &str) -> String {
    template
        .replace("__NAME__", name)
        .replace("__SNAKE__", &name.replace('-', "_"))
        .replace("__CAMEL__", &camel(name))
        .replace("__LOWER_CAMEL__", &lower_camel(name))
        .replace("__SDK__", &sdk_dependency())
}

fn write(path: &Path, text: &str, executable: bool) -> anyhow::Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    }
    std::fs::write(path, text).with_context(|| format!("cannot write {}", path.display()))?;
    if executable {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755))?;
    }
    Ok(())
}

/// Writes a new project for actor type `name` in `dir` (default `./name`);
/// returns where.
pub fn create(name: &str, lang: Lang, dir: Option<PathBuf>) -> anyhow::Result<PathBuf> {
    if !valid_name(name) {
        bail!(
            "`{name}` cannot be an actor type: use lowercase words of letters and digits, \
             each starting with a letter, joined by `-` (e.g. `lobby`, `guild-bank`)"
        );
    }
    let dir = dir.unwrap_or_else(|| PathBuf::from(name));
    if dir.exists() && std::fs::read_dir(&dir)?.next().is_some() {
        bail!("{} exists and is not empty", dir.display());
    }
    for (file, text) in GROVE_WIT {
        write(&dir.join("wit/deps/grove-actor").join(file), text, false)?;
    }
    write(
        &dir.join(format!("wit/{name}.wit")),
        &fill(ACTOR_WIT, name),
        false,
    )?;
    let files: &[(&str, &str, bool)] = match lang {
        Lang::Rust => &RUST,
        Lang::Python => &PYTHON,
        Lang::Js => &JS,
    };
    for (file, text, executable) in files {
        write(&dir.join(file), &fill(text, name), *executable)?;
    }
    let readme = format!(
        "# {name}\n\nA Grove actor. Build it, serve it, call it:\n\n```sh\n./build.sh\n\
         grove run --plugins .\ngrove call {name}/1 hello '\"Ayla\"'\n```\n\n\
         Its interface is `wit/{name}.wit`; add functions there and implement them in {}.\n\
         How to write actors: Grove's `docs/writing-actors.md`.\n",
        match lang {
            Lang::Rust => "`src/lib.rs`",
            Lang::Python => "`app.py`",
            Lang::Js => "`app.js`",
        }
    );
    write(&dir.join("README.md"), &readme, false)?;
    Ok(dir)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_must_be_wit_identifiers() {
        for good in ["lobby", "guild-bank", "room2", "a-b2-c"] {
            assert!(valid_name(good), "{good}");
        }
        for bad in [
            "",
            "Lobby",
            "2room",
            "guild_bank",
            "guild--bank",
            "-x",
            "x-",
            "a b",
            "record",
            "match",
            "class",
            "test",
        ] {
            assert!(!valid_name(bad), "{bad}");
        }
        assert_eq!(camel("guild-bank"), "GuildBank");
        assert_eq!(lower_camel("guild-bank"), "guildBank");
    }

    /// A file added to Grove's WIT package must reach new projects too.
    #[test]
    fn every_file_of_grove_s_wit_package_is_written() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../wit/actor");
        let mut on_disk: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        on_disk.sort();
        let written: Vec<&str> = GROVE_WIT.iter().map(|(file, _)| *file).collect();
        assert_eq!(on_disk, written);
    }

    #[test]
    fn a_project_is_written_once() {
        let dir = tempfile::tempdir().unwrap();
        let project = dir.path().join("bank");
        create("guild-bank", Lang::Python, Some(project.clone())).unwrap();
        let app = std::fs::read_to_string(project.join("app.py")).unwrap();
        assert!(app.contains("class GuildBank(exports.GuildBank):"), "{app}");
        assert!(project.join("wit/deps/grove-actor/host.wit").exists());
        let wit = std::fs::read_to_string(project.join("wit/guild-bank.wit")).unwrap();
        assert!(wit.starts_with("package actors:guild-bank;"));
        let again = create("guild-bank", Lang::Rust, Some(project.clone()));
        assert!(again.unwrap_err().to_string().contains("not empty"));
    }
}
