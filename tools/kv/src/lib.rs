//! `kv`: text values in the key-value namespace the grant names.

use warden_guest::kv;
use warden_guest::prelude::*;

struct Kv;

#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
struct KeyInput {
    key: String,
}

#[derive(Serialize, JsonSchema)]
struct GetOutput {
    found: bool,
    value: Option<String>,
}

fn get(input: KeyInput) -> Result<GetOutput, ToolError> {
    let v = kv::get(&input.key)?;
    Ok(GetOutput {
        found: v.is_some(),
        value: v.map(|b| String::from_utf8_lossy(&b).into_owned()),
    })
}

#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
struct PutInput {
    key: String,
    value: String,
}

#[derive(Serialize, JsonSchema)]
struct PutOutput {
    stored: bool,
}

fn put(input: PutInput) -> Result<PutOutput, ToolError> {
    kv::set(&input.key, input.value.as_bytes())?;
    Ok(PutOutput { stored: true })
}

#[derive(Serialize, JsonSchema)]
struct DeleteOutput {
    existed: bool,
}

fn delete(input: KeyInput) -> Result<DeleteOutput, ToolError> {
    Ok(DeleteOutput {
        existed: kv::delete(&input.key)?,
    })
}

#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
struct ListInput {
    #[serde(default)]
    prefix: String,
}

#[derive(Serialize, JsonSchema)]
struct ListOutput {
    keys: Vec<String>,
}

fn list(input: ListInput) -> Result<ListOutput, ToolError> {
    Ok(ListOutput {
        keys: kv::list(&input.prefix)?,
    })
}

impl Tool for Kv {
    const NAME: &'static str = "kv";
    const VERSION: &'static str = "0.1.0";
    const DESCRIPTION: &'static str =
        "Get, put, delete and list text values in the granted key-value namespace.";

    fn actions() -> Vec<Action> {
        vec![
            Action::new("get", "Get the value of a key.", Effect::Read, get),
            Action::new("put", "Store a value under a key.", Effect::Write, put),
            Action::new("delete", "Delete a key.", Effect::Destructive, delete),
            Action::new("list", "List keys with a prefix.", Effect::Read, list),
        ]
    }
}

warden_guest::export_tool!(Kv);
