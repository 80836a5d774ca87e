//! `files`: file operations under `/workspace`, the guest path a grant maps to
//! a host directory. Paths are joined to `/workspace` as given, without
//! sanitizing: confinement is the host's job, and the tests send this tool
//! `..`, absolute and symlink paths to prove it.

use warden_guest::prelude::*;

struct Files;

/// Where the grant mounts the directory this tool works in.
const ROOT: &str = "/workspace";

/// Largest file `read` returns: 1 MiB.
const MAX_READ: u64 = 1 << 20;

fn resolve(path: &str) -> String {
    if path.starts_with('/') {
        path.to_owned()
    } else {
        format!("{ROOT}/{path}")
    }
}

fn io_error(path: &str, e: std::io::Error) -> ToolError {
    match e.kind() {
        std::io::ErrorKind::PermissionDenied => ToolError::denied(format!("`{path}`: {e}")),
        _ => ToolError::failed(format!("`{path}`: {e}")),
    }
}

#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
struct PathInput {
    /// Path relative to /workspace.
    path: String,
}

#[derive(Serialize, JsonSchema)]
struct ReadOutput {
    content: String,
    bytes: u64,
}

fn read(input: PathInput) -> Result<ReadOutput, ToolError> {
    let p = resolve(&input.path);
    let meta = std::fs::metadata(&p).map_err(|e| io_error(&input.path, e))?;
    if meta.len() > MAX_READ {
        return Err(ToolError::failed(format!(
            "`{}` is larger than {MAX_READ} bytes",
            input.path
        )));
    }
    let bytes = std::fs::read(&p).map_err(|e| io_error(&input.path, e))?;
    Ok(ReadOutput {
        bytes: bytes.len() as u64,
        content: String::from_utf8_lossy(&bytes).into_owned(),
    })
}

#[derive(Serialize, JsonSchema)]
struct Entry {
    name: String,
    dir: bool,
}

#[derive(Serialize, JsonSchema)]
struct ListOutput {
    entries: Vec<Entry>,
}

fn list(input: PathInput) -> Result<ListOutput, ToolError> {
    let p = resolve(&input.path);
    let mut entries = Vec::new();
    for e in std::fs::read_dir(&p).map_err(|e| io_error(&input.path, e))? {
        let e = e.map_err(|e| io_error(&input.path, e))?;
        entries.push(Entry {
            name: e.file_name().to_string_lossy().into_owned(),
            dir: e.file_type().map(|t| t.is_dir()).unwrap_or(false),
        });
    }
    entries.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(ListOutput { entries })
}

#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
struct WriteInput {
    /// Path relative to /workspace.
    path: String,
    /// Text to write; replaces the file.
    content: String,
}

#[derive(Serialize, JsonSchema)]
struct WriteOutput {
    bytes: u64,
}

fn write(input: WriteInput) -> Result<WriteOutput, ToolError> {
    std::fs::write(resolve(&input.path), input.content.as_bytes())
        .map_err(|e| io_error(&input.path, e))?;
    Ok(WriteOutput {
        bytes: input.content.len() as u64,
    })
}

#[derive(Serialize, JsonSchema)]
struct DeleteOutput {
    deleted: bool,
}

fn delete(input: PathInput) -> Result<DeleteOutput, ToolError> {
    std::fs::remove_file(resolve(&input.path)).map_err(|e| io_error(&input.path, e))?;
    Ok(DeleteOutput { deleted: true })
}

impl Tool for Files {
    const NAME: &'static str = "files";
    const VERSION: &'static str = "0.1.0";
    const DESCRIPTION: &'static str =
        "Read, list, write and delete files under the granted /workspace directory.";

    fn actions() -> Vec<Action> {
        vec![
            Action::new("read", "Read a text file.", Effect::Read, read),
            Action::new("list", "List a directory.", Effect::Read, list),
            Action::new(
                "write",
                "Write (replace) a text file.",
                Effect::Write,
                write,
            ),
            Action::new("delete", "Delete a file.", Effect::Destructive, delete),
        ]
    }
}

warden_guest::export_tool!(Files);
