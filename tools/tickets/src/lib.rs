//! `tickets`: a business example. Tickets live in the granted kv namespace; an
//! operator grants `read_ticket` and `draft_reply` to a support agent and keeps
//! `delete_record` (destructive) for someone else.

use warden_guest::prelude::*;
use warden_guest::{kv, log};

struct Tickets;

#[derive(Serialize, Deserialize, JsonSchema, Clone)]
struct Ticket {
    id: u64,
    subject: String,
    body: String,
    status: String,
    #[serde(default)]
    draft_reply: Option<String>,
}

fn key(id: u64) -> String {
    format!("ticket/{id:010}")
}

fn load(id: u64) -> Result<Ticket, ToolError> {
    kv::get_json::<Ticket>(&key(id))?
        .ok_or_else(|| ToolError::failed(format!("ticket {id} does not exist")))
}

#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
struct OpenInput {
    subject: String,
    body: String,
}

fn open_ticket(input: OpenInput) -> Result<Ticket, ToolError> {
    if input.subject.trim().is_empty() {
        return Err(ToolError::invalid_input("subject", "must not be empty"));
    }
    let id = kv::list("ticket/")?
        .last()
        .and_then(|k| k.trim_start_matches("ticket/").parse::<u64>().ok())
        .map_or(1, |n| n + 1);
    let t = Ticket {
        id,
        subject: input.subject,
        body: input.body,
        status: "open".into(),
        draft_reply: None,
    };
    kv::set_json(&key(id), &t)?;
    log::info(&format!("opened ticket {id}"));
    Ok(t)
}

#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
struct IdInput {
    /// Ticket number.
    id: u64,
}

fn read_ticket(input: IdInput) -> Result<Ticket, ToolError> {
    load(input.id)
}

#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
struct DraftInput {
    id: u64,
    /// The reply text; stored as a draft, never sent by this tool.
    message: String,
}

fn draft_reply(input: DraftInput) -> Result<Ticket, ToolError> {
    if input.message.len() > 10_000 {
        return Err(ToolError::invalid_input(
            "message",
            "longer than 10000 bytes",
        ));
    }
    let mut t = load(input.id)?;
    t.draft_reply = Some(input.message);
    kv::set_json(&key(t.id), &t)?;
    log::info(&format!("drafted a reply to ticket {}", t.id));
    Ok(t)
}

#[derive(Serialize, JsonSchema)]
struct Deleted {
    id: u64,
    deleted: bool,
}

fn delete_record(input: IdInput) -> Result<Deleted, ToolError> {
    let existed = kv::delete(&key(input.id))?;
    log::warn(&format!("deleted ticket {}", input.id));
    Ok(Deleted {
        id: input.id,
        deleted: existed,
    })
}

impl Tool for Tickets {
    const NAME: &'static str = "tickets";
    const VERSION: &'static str = "0.1.0";
    const DESCRIPTION: &'static str =
        "Support tickets: open, read, draft a reply, delete a record.";

    fn actions() -> Vec<Action> {
        vec![
            Action::new(
                "open_ticket",
                "Open a new ticket.",
                Effect::Write,
                open_ticket,
            ),
            Action::new(
                "read_ticket",
                "Read a ticket by number.",
                Effect::Read,
                read_ticket,
            ),
            Action::new(
                "draft_reply",
                "Store a draft reply on a ticket.",
                Effect::Write,
                draft_reply,
            ),
            Action::new(
                "delete_record",
                "Delete a ticket record permanently.",
                Effect::Destructive,
                delete_record,
            ),
        ]
    }
}

warden_guest::export_tool!(Tickets);
