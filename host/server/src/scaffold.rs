//! `wasmpbx script new NAME --lang LANG [--world WORLD]`: a minimal script project that
//! builds on its own, from the templates in `host/server/templates/` (embedded here).
//! The JavaScript, Python and C projects get a copy of the WIT package; the Rust one
//! depends on the `wasmpbx-guest` SDK, which carries its own.

use std::path::{Path, PathBuf};

use anyhow::{Context as _, bail};

/// The languages there are templates for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Language {
    Rust,
    JavaScript,
    Python,
    C,
}

/// What the script exports.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum World {
    /// Routes calls (`routing-script`).
    Router,
    /// Decides flips (`flip-policy-script`).
    FlipPolicy,
}

impl World {
    fn wit_name(self) -> &'static str {
        match self {
            World::Router => "routing-script",
            World::FlipPolicy => "flip-policy-script",
        }
    }
}

/// Where the Rust SDK comes from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Sdk {
    /// A checkout's `guest-sdk` folder.
    Path(PathBuf),
    /// The published crate of this version.
    Version(String),
}

impl Sdk {
    /// The SDK of the checkout this binary was built from, if it is still there (a
    /// developer's build); otherwise the published crate of this binary's version.
    pub fn default_for_this_build() -> Sdk {
        let checkout = Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../../guest-sdk"));
        match checkout.join("Cargo.toml").is_file() {
            true => Sdk::Path(checkout.canonicalize().unwrap_or(checkout.to_path_buf())),
            false => Sdk::Version(env!("CARGO_PKG_VERSION").to_owned()),
        }
    }

    fn dependency(&self) -> String {
        match self {
            // TOML basic strings take JSON's escapes for quotes and backslashes.
            Sdk::Path(path) => format!(
                "{{ path = {} }}",
                serde_json::Value::from(path.display().to_string())
            ),
            Sdk::Version(version) => format!("\"{version}\""),
        }
    }
}

/// What `script new` is asked for.
pub struct NewScript {
    pub name: String,
    pub language: Language,
    pub world: World,
    /// The project folder; default: `./NAME`.
    pub dir: Option<PathBuf>,
    pub sdk: Sdk,
}

/// One file of a template: its path in the project and its text with placeholders.
struct TemplateFile {
    path: &'static str,
    text: &'static str,
    executable: bool,
}

const fn file(path: &'static str, text: &'static str) -> TemplateFile {
    TemplateFile {
        path,
        text,
        executable: false,
    }
}

const fn script(path: &'static str, text: &'static str) -> TemplateFile {
    TemplateFile {
        path,
        text,
        executable: true,
    }
}

macro_rules! template {
    ($path:literal) => {
        include_str!(concat!(env!("CARGO_MANIFEST_DIR"), "/templates/", $path))
    };
}

const WIT: &str = include_str!(concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../wit/wasmpbx.wit"
));

/// The files of a (language, world) project, paths with placeholders too.
fn template(language: Language, world: World) -> Vec<TemplateFile> {
    let router = world == World::Router;
    let mut files = match language {
        Language::Rust => vec![
            file("Cargo.toml", template!("rust/Cargo.toml")),
            file(
                "src/lib.rs",
                match router {
                    true => template!("rust/router.rs"),
                    false => template!("rust/flip-policy.rs"),
                },
            ),
            script("build.sh", template!("rust/build.sh")),
            file("README.md", template!("rust/README.md")),
            file(".gitignore", template!("rust/gitignore")),
        ],
        Language::JavaScript => vec![
            file("package.json", template!("javascript/package.json")),
            file(
                "src/{{name}}.js",
                match router {
                    true => template!("javascript/router.js"),
                    false => template!("javascript/flip-policy.js"),
                },
            ),
            script("build.sh", template!("javascript/build.sh")),
            file("README.md", template!("javascript/README.md")),
            file(".gitignore", template!("javascript/gitignore")),
        ],
        Language::Python => vec![
            file("requirements.txt", template!("python/requirements.txt")),
            file(
                "src/{{ident}}.py",
                match router {
                    true => template!("python/router.py"),
                    false => template!("python/flip-policy.py"),
                },
            ),
            script("build.sh", template!("python/build.sh")),
            file("README.md", template!("python/README.md")),
            file(".gitignore", template!("python/gitignore")),
        ],
        Language::C => vec![
            file(
                "src/{{ident}}.c",
                match router {
                    true => template!("c/router.c"),
                    false => template!("c/flip-policy.c"),
                },
            ),
            script("build.sh", template!("c/build.sh")),
            file("README.md", template!("c/README.md")),
            file(".gitignore", template!("c/gitignore")),
        ],
    };
    if language != Language::Rust {
        files.push(file("wit/wasmpbx.wit", WIT));
    }
    files
}

/// Write the project; returns its folder. Refuses a name that is not a script name and a
/// folder that exists and is not empty.
pub fn create(request: &NewScript) -> anyhow::Result<PathBuf> {
    let name = &request.name;
    let valid = name.starts_with(|c: char| c.is_ascii_alphabetic())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
    if !valid {
        bail!("{name:?} is not a script name: a letter, then letters, digits, '-' and '_'");
    }
    let dir = request.dir.clone().unwrap_or_else(|| PathBuf::from(name));
    if std::fs::read_dir(&dir).is_ok_and(|mut entries| entries.next().is_some()) {
        bail!(
            "{} exists and is not empty: choose another --dir",
            dir.display()
        );
    }
    let ident = name.replace('-', "_");
    let fill = |text: &str| {
        text.replace("{{name}}", name)
            .replace("{{ident}}", &ident)
            .replace("{{world}}", request.world.wit_name())
            .replace("{{sdk}}", &request.sdk.dependency())
    };
    for template in template(request.language, request.world) {
        let path = dir.join(fill(template.path));
        let parent = path.parent().unwrap_or(&dir);
        std::fs::create_dir_all(parent)
            .with_context(|| format!("cannot create {}", parent.display()))?;
        std::fs::write(&path, fill(template.text))
            .with_context(|| format!("cannot write {}", path.display()))?;
        if template.executable {
            use std::os::unix::fs::PermissionsExt as _;
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755))
                .with_context(|| format!("cannot make {} executable", path.display()))?;
        }
    }
    Ok(dir)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn new(name: &str, language: Language, world: World, dir: &Path) -> NewScript {
        NewScript {
            name: name.into(),
            language,
            world,
            dir: Some(dir.to_path_buf()),
            sdk: Sdk::Version("0.1.0".into()),
        }
    }

    #[test]
    fn every_placeholder_is_filled() {
        let tmp = tempfile::tempdir().unwrap();
        for language in [
            Language::Rust,
            Language::JavaScript,
            Language::Python,
            Language::C,
        ] {
            for world in [World::Router, World::FlipPolicy] {
                let dir = tmp.path().join(format!("{language:?}-{world:?}"));
                create(&new("opening-hours", language, world, &dir)).unwrap();
                for entry in walk(&dir) {
                    let text = std::fs::read_to_string(&entry).unwrap();
                    assert!(
                        !text.contains("{{"),
                        "{} keeps a placeholder",
                        entry.display()
                    );
                }
            }
        }
        let python = tmp.path().join("Python-Router/src/opening_hours.py");
        assert!(
            python.is_file(),
            "the Python module is named as an identifier"
        );
        let cargo = std::fs::read_to_string(tmp.path().join("Rust-FlipPolicy/Cargo.toml")).unwrap();
        assert!(cargo.contains("wasmpbx-guest = \"0.1.0\""), "{cargo}");
    }

    #[test]
    fn a_bad_name_or_a_used_folder_is_refused() {
        let tmp = tempfile::tempdir().unwrap();
        for bad in ["../escape", "has space", "1st", "", "dot.ted"] {
            let error = create(&new(bad, Language::Rust, World::Router, tmp.path()))
                .unwrap_err()
                .to_string();
            assert!(error.contains("is not a script name"), "{bad:?}: {error}");
        }
        std::fs::write(tmp.path().join("keep.txt"), "mine").unwrap();
        let error = create(&new("ok", Language::C, World::Router, tmp.path()))
            .unwrap_err()
            .to_string();
        assert!(error.contains("is not empty"), "{error}");
        assert_eq!(
            std::fs::read_to_string(tmp.path().join("keep.txt")).unwrap(),
            "mine"
        );
    }

    #[test]
    fn a_path_sdk_is_a_toml_string() {
        let sdk = Sdk::Path(PathBuf::from(r#"/tmp/a "quoted" \dir"#));
        let toml: toml::Table = format!("dep = {}", sdk.dependency()).parse().unwrap();
        assert_eq!(
            toml["dep"]["path"].as_str(),
            Some(r#"/tmp/a "quoted" \dir"#)
        );
    }

    fn walk(dir: &Path) -> Vec<PathBuf> {
        let mut files = Vec::new();
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            match path.is_dir() {
                true => files.extend(walk(&path)),
                false => files.push(path),
            }
        }
        files
    }
}
