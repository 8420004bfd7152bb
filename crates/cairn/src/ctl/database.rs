//! `cairn ctl database`: create, drop and list the databases (schemas) of a catalog.

use cairn_client::meta::MetaClient;
use cairn_client::proto::cairnpb::{
    CreateDatabaseRequest, DdlResponse, DropDatabaseRequest, ListDatabasesRequest,
};
use clap::Subcommand;
use serde::Serialize;

use super::output::{new_table, print_json, OutputFormat};
use super::table::json::{utc_time, DatabaseJson, DdlJson};
use super::table::spec::parse_options;
use super::CtlError;

/// Most pages `database list` follows: a server that keeps answering with a next page token
/// must not make the command loop forever.
const LIST_PAGES_MAX: u32 = 10_000;

/// `cairn ctl database` verbs.
#[derive(Debug, Subcommand)]
pub enum DatabaseCommand {
    /// Create a database.
    Create {
        /// Database name.
        name: String,
        /// Catalog [default: default].
        #[arg(long, default_value = "")]
        catalog: String,
        /// Succeed without change when it exists.
        #[arg(long)]
        if_not_exists: bool,
        /// A database option KEY=VALUE; repeatable.
        #[arg(long = "option")]
        options: Vec<String>,
    },
    /// Drop a database and every table in it.
    Drop {
        /// Database name.
        name: String,
        /// Catalog [default: default].
        #[arg(long, default_value = "")]
        catalog: String,
        /// Succeed without change when it does not exist.
        #[arg(long)]
        if_exists: bool,
    },
    /// Every database of a catalog (all pages).
    List {
        /// Catalog [default: default].
        #[arg(long, default_value = "")]
        catalog: String,
        /// Databases asked for per call (server default 100, at most 1000).
        #[arg(long, default_value_t = 0)]
        page_size: u32,
    },
}

#[derive(Serialize)]
struct DatabaseListJson {
    catalog: String,
    databases: Vec<DatabaseJson>,
    revision: i64,
}

fn full_name(catalog: &str, name: &str) -> String {
    let catalog = if catalog.is_empty() {
        "default"
    } else {
        catalog
    };
    format!("{catalog}.{name}")
}

pub async fn run(
    meta: &MetaClient,
    out: OutputFormat,
    command: DatabaseCommand,
) -> Result<(), CtlError> {
    match command {
        DatabaseCommand::Create {
            name,
            catalog,
            if_not_exists,
            options,
        } => {
            let options = parse_options("--option", &options).map_err(CtlError::Usage)?;
            let shown = full_name(&catalog, &name);
            let response = meta
                .create_database(CreateDatabaseRequest {
                    catalog,
                    name,
                    if_not_exists,
                    options,
                })
                .await
                .map_err(CtlError::call(format!("database create {shown}")))?;
            let line = if response.unchanged {
                format!("database {shown} already exists; nothing changed")
            } else {
                format!(
                    "created database {shown} (procedure {}, revision {})",
                    response.procedure_id, response.revision
                )
            };
            print_ddl(out, &response, &line)
        }
        DatabaseCommand::Drop {
            name,
            catalog,
            if_exists,
        } => {
            let shown = full_name(&catalog, &name);
            let response = meta
                .drop_database(DropDatabaseRequest {
                    catalog,
                    name,
                    if_exists,
                })
                .await
                .map_err(CtlError::call(format!("database drop {shown}")))?;
            let line = if response.unchanged {
                format!("database {shown} does not exist; nothing dropped")
            } else {
                format!(
                    "dropped database {shown} and its {} tables (procedure {}, revision {})",
                    response.dropped_tables, response.procedure_id, response.revision
                )
            };
            print_ddl(out, &response, &line)
        }
        DatabaseCommand::List { catalog, page_size } => {
            let catalog_shown = if catalog.is_empty() {
                "default"
            } else {
                &catalog
            }
            .to_string();
            let what = format!("database list --catalog {catalog_shown}");
            let mut databases = Vec::new();
            let mut page_token = String::new();
            let mut revision = 0;
            for _ in 0..LIST_PAGES_MAX {
                let page = meta
                    .list_databases(ListDatabasesRequest {
                        catalog: catalog.clone(),
                        page_size,
                        page_token,
                        serializable: false,
                    })
                    .await
                    .map_err(CtlError::call(&what))?;
                // Each page is its own read; report the first one's revision, which every
                // listed database is at least as new as.
                if revision == 0 {
                    revision = page.revision;
                }
                databases.extend(page.databases.iter().map(DatabaseJson::new));
                if page.next_page_token.is_empty() {
                    return print_list(
                        out,
                        DatabaseListJson {
                            catalog: catalog_shown,
                            databases,
                            revision,
                        },
                    );
                }
                page_token = page.next_page_token;
            }
            Err(CtlError::Unexpected(format!(
                "{what}: still more pages after {LIST_PAGES_MAX}; stopped"
            )))
        }
    }
}

/// Prints a DDL answer: its JSON, or `line`.
pub fn print_ddl(out: OutputFormat, response: &DdlResponse, line: &str) -> Result<(), CtlError> {
    match out {
        OutputFormat::Json => print_json(&DdlJson::new(response)),
        OutputFormat::Table => {
            println!("{line}");
            Ok(())
        }
    }
}

fn print_list(out: OutputFormat, list: DatabaseListJson) -> Result<(), CtlError> {
    match out {
        OutputFormat::Json => print_json(&list),
        OutputFormat::Table => {
            let mut table = new_table(["CATALOG", "NAME", "OPTIONS", "CREATED (UTC)"]);
            for d in &list.databases {
                let options: Vec<String> =
                    d.options.iter().map(|(k, v)| format!("{k}={v}")).collect();
                table.add_row(vec![
                    d.catalog.clone(),
                    d.name.clone(),
                    options.join(","),
                    utc_time(d.created_ms),
                ]);
            }
            println!("{table}");
            Ok(())
        }
    }
}
