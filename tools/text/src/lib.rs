//! `text`: pure text and JSON utilities. Requests no capability at all.

use warden_guest::prelude::*;

struct Text;

#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
struct CountInput {
    /// The text to count.
    text: String,
}

#[derive(Serialize, JsonSchema)]
struct CountOutput {
    words: u64,
    lines: u64,
    chars: u64,
}

fn word_count(input: CountInput) -> Result<CountOutput, ToolError> {
    Ok(CountOutput {
        words: input.text.split_whitespace().count() as u64,
        lines: input.text.lines().count() as u64,
        chars: input.text.chars().count() as u64,
    })
}

#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
struct ExtractInput {
    /// The text to search.
    text: String,
    /// A regular expression (Rust `regex` syntax, linear time).
    pattern: String,
    /// Largest number of matches returned.
    #[serde(default = "default_limit")]
    limit: u32,
}

fn default_limit() -> u32 {
    100
}

#[derive(Serialize, JsonSchema)]
struct ExtractOutput {
    matches: Vec<String>,
}

fn regex_extract(input: ExtractInput) -> Result<ExtractOutput, ToolError> {
    let re = regex::RegexBuilder::new(&input.pattern)
        .size_limit(1 << 20)
        .build()
        .map_err(|e| ToolError::invalid_input("pattern", e.to_string()))?;
    let matches = re
        .find_iter(&input.text)
        .take(input.limit as usize)
        .map(|m| m.as_str().to_owned())
        .collect();
    Ok(ExtractOutput { matches })
}

#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
struct SelectInput {
    /// Any JSON document.
    document: serde_json::Value,
    /// An RFC 6901 JSON pointer, e.g. `/items/0/name`.
    pointer: String,
}

#[derive(Serialize, JsonSchema)]
struct SelectOutput {
    found: bool,
    value: serde_json::Value,
}

fn json_select(input: SelectInput) -> Result<SelectOutput, ToolError> {
    if !input.pointer.is_empty() && !input.pointer.starts_with('/') {
        return Err(ToolError::invalid_input(
            "pointer",
            "must be empty or start with `/`",
        ));
    }
    Ok(match input.document.pointer(&input.pointer) {
        Some(v) => SelectOutput {
            found: true,
            value: v.clone(),
        },
        None => SelectOutput {
            found: false,
            value: serde_json::Value::Null,
        },
    })
}

impl Tool for Text {
    const NAME: &'static str = "text";
    const VERSION: &'static str = "0.1.0";
    const DESCRIPTION: &'static str =
        "Pure text and JSON utilities: word count, regex extract, JSON pointer select.";

    fn actions() -> Vec<Action> {
        vec![
            Action::new(
                "word_count",
                "Count words, lines and characters of a text.",
                Effect::Read,
                word_count,
            ),
            Action::new(
                "regex_extract",
                "Extract the matches of a regular expression.",
                Effect::Read,
                regex_extract,
            ),
            Action::new(
                "json_select",
                "Select a value from a JSON document by JSON pointer.",
                Effect::Read,
                json_select,
            ),
        ]
    }
}

warden_guest::export_tool!(Text);
