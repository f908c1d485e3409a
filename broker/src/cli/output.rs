//! How operator commands print results: a human-readable table by default,
//! or JSON with stable field names (`--format json`) for scripts. Commands
//! build one `serde_json::Value` and one `Table` from the same data, so the
//! two views cannot drift apart.

use comfy_table::presets::UTF8_BORDERS_ONLY;
use comfy_table::{ContentArrangement, Table};
use serde_json::Value;

/// `--format`: what the result of a command looks like on stdout.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Format {
    /// Tables and sentences for people.
    #[default]
    Table,
    /// One JSON document (JSON lines for `consume`), field names stable.
    Json,
}

/// A table with a header row, drawn without inner lines so that it stays
/// readable when wide and greppable when piped.
pub fn table<I, S>(header: I) -> Table
where
    I: IntoIterator<Item = S>,
    S: Into<comfy_table::Cell>,
{
    let mut t = Table::new();
    t.load_preset(UTF8_BORDERS_ONLY)
        .set_content_arrangement(ContentArrangement::Dynamic)
        .set_header(header);
    t
}

/// Prints a JSON document on one line (scripts read it with one parse).
pub fn print_json(value: &Value) {
    println!("{value}");
}

/// Prints either the JSON document or the tables (with a title line above
/// each one when there is more than one).
pub fn emit(format: Format, json: &Value, tables: &[(&str, Table)]) {
    match format {
        Format::Json => print_json(json),
        Format::Table => {
            for (i, (title, t)) in tables.iter().enumerate() {
                if i > 0 {
                    println!();
                }
                if !title.is_empty() {
                    println!("{title}");
                }
                println!("{t}");
            }
        }
    }
}

/// A message for people (table format) or a JSON document (json format).
pub fn emit_message(format: Format, json: &Value, message: &str) {
    match format {
        Format::Json => print_json(json),
        Format::Table => println!("{message}"),
    }
}

/// Bytes as text for display: UTF-8 as is, anything else lossily (a
/// console tool prints what it can; exact bytes are the client's job).
pub fn text(bytes: Option<&[u8]>) -> Option<String> {
    bytes.map(|b| String::from_utf8_lossy(b).into_owned())
}
