//! `cairn ctl table`: create (from flags or a JSON file), describe, list, alter, truncate and drop
//! tables through `cairn.v1.Meta`. The DDL verbs are here; `describe` and `list` in `show`,
//! parsing of the flags in `spec`, the definition file in `file`, the JSON shapes in `json`.

pub mod file;
pub mod json;
mod show;
pub mod spec;

use cairn_client::meta::{display_table_name, MetaClient};
use cairn_client::proto::cairnpb::alter_table_request::Kind;
use cairn_client::proto::cairnpb::{
    AddColumns, AlterTableRequest, CreateTableRequest, DropColumns, DropTableRequest, RenameColumn,
    RenameTable, SemanticType, SetOptions, TableOptions, TruncateTableRequest,
};
use cairn_client::ClientError;
use clap::Subcommand;

use super::database::print_ddl;
use super::output::OutputFormat;
use super::CtlError;
use spec::{parse_column, parse_options, parse_seconds, parse_table_name, split_names};

/// `cairn ctl table` verbs.
#[derive(Debug, Subcommand)]
pub enum TableCommand {
    /// Create a table from flags or from a JSON definition (--from-file).
    Create(Box<CreateArgs>),
    /// A table's definition and the placement of its regions.
    Describe {
        /// SCHEMA.NAME or CATALOG.SCHEMA.NAME.
        name: String,
        /// Serve from the answering node's state without a read barrier.
        #[arg(long)]
        serializable: bool,
    },
    /// The tables of a database, one page (or --all).
    List {
        /// SCHEMA or CATALOG.SCHEMA.
        schema: String,
        /// Tables per page (server default 100, at most 1000).
        #[arg(long, default_value_t = 0)]
        page_size: u32,
        /// Continue after this table (the next page token a previous listing printed).
        #[arg(long, default_value = "", conflicts_with = "all")]
        page_token: String,
        /// Follow every page.
        #[arg(long)]
        all: bool,
        /// Serve from the answering node's state without a read barrier.
        #[arg(long)]
        serializable: bool,
    },
    /// Drop a table; its regions are closed on their datanodes.
    Drop {
        /// SCHEMA.NAME or CATALOG.SCHEMA.NAME.
        name: String,
        /// Succeed without change when it does not exist.
        #[arg(long)]
        if_exists: bool,
    },
    /// Change columns, options or the name (one kind of change per command).
    Alter(Box<AlterArgs>),
    /// Drop every row, keeping the table and its regions.
    Truncate {
        /// SCHEMA.NAME or CATALOG.SCHEMA.NAME.
        name: String,
    },
}

/// `table create` flags.
#[derive(Debug, clap::Args)]
pub struct CreateArgs {
    /// SCHEMA.NAME or CATALOG.SCHEMA.NAME (with --from-file: overrides the file's name).
    #[arg(required_unless_present = "from_file")]
    name: Option<String>,
    /// A column NAME:TYPE[:tag|field|timestamp][:null][:default=SQL]; repeatable, in order.
    /// Without a semantic type: timestamp for --time-index, tag for --primary-key, else field.
    #[arg(long = "column", value_name = "SPEC")]
    columns: Vec<String>,
    /// Primary-key (tag) columns, comma separated.
    #[arg(long, value_name = "A,B")]
    primary_key: Option<String>,
    /// The time index column [default: the one column marked :timestamp].
    #[arg(long, value_name = "COLUMN")]
    time_index: Option<String>,
    /// Hash partitions: COLUMN[,COLUMN...]:N.
    #[arg(long, value_name = "COLS:N", group = "partition")]
    partition_hash: Option<String>,
    /// Range partitions: COLUMN:START..END[,START..END...]; an empty bound is unbounded.
    #[arg(long, value_name = "COL:RANGES", group = "partition")]
    partition_range: Option<String>,
    /// List partitions: COLUMN:V1|V2,V3 (lists by `,`, values of one list by `|`).
    #[arg(long, value_name = "COL:LISTS", group = "partition")]
    partition_list: Option<String>,
    /// Row time to live: seconds, or with a unit s, m, h, d (`7d`) [default: forever].
    #[arg(long, value_name = "DURATION")]
    ttl: Option<String>,
    /// A table option KEY=VALUE; repeatable.
    #[arg(long = "option", value_name = "KEY=VALUE")]
    options: Vec<String>,
    /// Succeed without change when the table exists.
    #[arg(long)]
    if_not_exists: bool,
    /// Read the definition from a JSON file (see docs/ctl.md).
    #[arg(long, value_name = "FILE", conflicts_with_all = [
        "columns", "primary_key", "time_index", "partition", "ttl", "options",
    ])]
    from_file: Option<String>,
}

/// `table alter` flags.
#[derive(Debug, clap::Args)]
pub struct AlterArgs {
    /// SCHEMA.NAME or CATALOG.SCHEMA.NAME.
    name: String,
    /// Add a column NAME:TYPE[:tag|field][:null][:default=SQL]; repeatable.
    #[arg(long = "add-column", value_name = "SPEC")]
    add_columns: Vec<String>,
    /// Drop columns (comma separated or repeated).
    #[arg(long = "drop-column", value_name = "COLUMN", value_delimiter = ',')]
    drop_columns: Vec<String>,
    /// Rename a column: OLD:NEW.
    #[arg(long, value_name = "OLD:NEW")]
    rename_column: Option<String>,
    /// Set the time to live (seconds or s/m/h/d), or `forever` to clear it.
    #[arg(long, value_name = "DURATION")]
    ttl: Option<String>,
    /// Set an option KEY=VALUE; repeatable.
    #[arg(long = "set", value_name = "KEY=VALUE")]
    set: Vec<String>,
    /// Remove an option; repeatable.
    #[arg(long = "unset", value_name = "KEY")]
    unset: Vec<String>,
    /// Rename the table (same database).
    #[arg(long, value_name = "NEW_NAME")]
    rename_to: Option<String>,
    /// Fail unless the table is at this version (0: any).
    #[arg(long, default_value_t = 0)]
    expected_version: u64,
}

pub async fn run(
    meta: &MetaClient,
    out: OutputFormat,
    command: TableCommand,
) -> Result<(), CtlError> {
    match command {
        TableCommand::Create(args) => create(meta, out, &args).await,
        TableCommand::Describe { name, serializable } => {
            show::describe(meta, out, &name, serializable).await
        }
        TableCommand::List {
            schema,
            page_size,
            page_token,
            all,
            serializable,
        } => show::list(meta, out, &schema, page_size, page_token, all, serializable).await,
        TableCommand::Drop { name, if_exists } => {
            let name = parse_table_name(&name).map_err(CtlError::Usage)?;
            let shown = display_table_name(&name);
            let response = meta
                .drop_table(DropTableRequest {
                    name: Some(name),
                    if_exists,
                })
                .await
                .map_err(CtlError::call(format!("table drop {shown}")))?;
            let line = match (&response.table, response.unchanged) {
                (_, true) => format!("table {shown} does not exist; nothing dropped"),
                (Some(t), false) => format!(
                    "dropped table {shown} (id {}, {} regions closed; procedure {})",
                    t.id,
                    t.region_numbers.len(),
                    response.procedure_id
                ),
                (None, false) => format!(
                    "dropped table {shown} (procedure {})",
                    response.procedure_id
                ),
            };
            print_ddl(out, &response, &line)
        }
        TableCommand::Alter(args) => alter(meta, out, &args).await,
        TableCommand::Truncate { name } => {
            let name = parse_table_name(&name).map_err(CtlError::Usage)?;
            let shown = display_table_name(&name);
            let response = meta
                .truncate_table(TruncateTableRequest { name: Some(name) })
                .await
                .map_err(CtlError::call(format!("table truncate {shown}")))?;
            let version = response.table.as_ref().map_or(0, |t| t.version);
            let line = format!(
                "truncated table {shown}: now at version {version} (procedure {})",
                response.procedure_id
            );
            print_ddl(out, &response, &line)
        }
    }
}

/// The request `table create` sends, from its flags or its file.
fn create_request(args: &CreateArgs) -> Result<CreateTableRequest, String> {
    let name = args.name.as_deref().map(parse_table_name).transpose()?;
    if let Some(path) = &args.from_file {
        let mut request = file::read_table_file(path)?;
        if name.is_some() {
            request.name = name;
        }
        if request.name.is_none() {
            return Err(format!(
                "--from-file {path}: the file has no \"name\"; give NAME on the command line"
            ));
        }
        request.if_not_exists |= args.if_not_exists;
        return Ok(request);
    }
    if args.columns.is_empty() {
        return Err(format!(
            "--column: a table needs columns; give --column {} for each",
            spec::COLUMN_SYNTAX
        ));
    }
    let columns = args
        .columns
        .iter()
        .map(|raw| parse_column("--column", raw))
        .collect::<Result<Vec<_>, _>>()?;
    let time_index = match &args.time_index {
        Some(column) => column.trim().to_string(),
        None => {
            let marked: Vec<&str> = columns
                .iter()
                .filter(|c| c.semantic_type == SemanticType::Timestamp as i32)
                .map(|c| c.name.as_str())
                .collect();
            match marked.as_slice() {
                [one] => one.to_string(),
                [] => return Err("--time-index: missing; name the timestamp column (or mark one --column NAME:timestamp(P):timestamp)".to_string()),
                _ => return Err(format!("--time-index: missing, and several columns are marked timestamp ({}); name one", marked.join(", "))),
            }
        }
    };
    let partition = if let Some(raw) = &args.partition_hash {
        Some(spec::parse_hash_partition(raw)?)
    } else if let Some(raw) = &args.partition_range {
        Some(spec::parse_range_partition(raw)?)
    } else if let Some(raw) = &args.partition_list {
        Some(spec::parse_list_partition(raw)?)
    } else {
        None
    };
    let ttl_seconds = args
        .ttl
        .as_deref()
        .map(|raw| parse_seconds("--ttl", raw))
        .transpose()?;
    Ok(CreateTableRequest {
        name,
        columns,
        primary_key: args
            .primary_key
            .as_deref()
            .map(split_names)
            .unwrap_or_default(),
        time_index,
        options: Some(TableOptions {
            ttl_seconds,
            extra: parse_options("--option", &args.options)?,
        }),
        partition,
        if_not_exists: args.if_not_exists,
    })
}

/// A failed call, with a server message about `columns[i]` pointed at the flag that gave it.
fn ddl_error(what: String, flag: &str, specs: &[String], e: ClientError) -> CtlError {
    let message = e.to_string();
    let hinted = spec::with_column_hint(&message, flag, specs);
    if hinted == message {
        CtlError::Call { what, source: e }
    } else {
        CtlError::Unexpected(format!("{what} failed: {hinted}"))
    }
}

async fn create(meta: &MetaClient, out: OutputFormat, args: &CreateArgs) -> Result<(), CtlError> {
    let request = create_request(args).map_err(CtlError::Usage)?;
    let shown = request
        .name
        .as_ref()
        .map(display_table_name)
        .unwrap_or_default();
    let response = meta.create_table(request).await.map_err(|e| {
        ddl_error(
            format!("table create {shown}"),
            "--column",
            &args.columns,
            e,
        )
    })?;
    let table = response.table.as_ref();
    let id = table.map_or(0, |t| t.id);
    let regions = table.map_or(0, |t| t.region_numbers.len());
    let line = if response.unchanged {
        format!("table {shown} already exists (id {id}, {regions} regions); nothing changed")
    } else {
        format!(
            "created table {shown}: id {id}, {regions} regions (procedure {}, revision {})",
            response.procedure_id, response.revision
        )
    };
    print_ddl(out, &response, &line)
}

/// The change `table alter` asks for: exactly one kind.
fn alter_kind(args: &AlterArgs) -> Result<Kind, String> {
    let mut kinds: Vec<Kind> = Vec::new();
    if !args.add_columns.is_empty() {
        let columns = args
            .add_columns
            .iter()
            .map(|raw| parse_column("--add-column", raw))
            .collect::<Result<Vec<_>, _>>()?;
        kinds.push(Kind::AddColumns(AddColumns { columns }));
    }
    if !args.drop_columns.is_empty() {
        let names = args
            .drop_columns
            .iter()
            .map(|c| c.trim().to_string())
            .collect();
        kinds.push(Kind::DropColumns(DropColumns { names }));
    }
    if let Some(raw) = &args.rename_column {
        let (from, to) = raw
            .split_once(':')
            .filter(|(f, t)| !f.trim().is_empty() && !t.trim().is_empty())
            .ok_or_else(|| format!("--rename-column {raw:?}: expected OLD:NEW"))?;
        kinds.push(Kind::RenameColumn(RenameColumn {
            from: from.trim().to_string(),
            to: to.trim().to_string(),
        }));
    }
    if args.ttl.is_some() || !args.set.is_empty() || !args.unset.is_empty() {
        let (ttl_seconds, clear_ttl) = match args.ttl.as_deref().map(str::trim) {
            None => (None, false),
            Some("forever" | "none") => (None, true),
            Some(raw) => (Some(parse_seconds("--ttl", raw)?), false),
        };
        kinds.push(Kind::SetOptions(SetOptions {
            ttl_seconds,
            clear_ttl,
            set_extra: parse_options("--set", &args.set)?,
            unset_extra: args.unset.clone(),
        }));
    }
    if let Some(to) = &args.rename_to {
        kinds.push(Kind::RenameTable(RenameTable {
            to: to.trim().to_string(),
        }));
    }
    match kinds.len() {
        1 => Ok(kinds.remove(0)),
        0 => Err("table alter: say what to change: --add-column, --drop-column, --rename-column, --rename-to, or options (--ttl, --set, --unset)".to_string()),
        _ => Err("table alter: one kind of change per command: --add-column, --drop-column, --rename-column, --rename-to, or options (--ttl, --set, --unset)".to_string()),
    }
}

async fn alter(meta: &MetaClient, out: OutputFormat, args: &AlterArgs) -> Result<(), CtlError> {
    let name = parse_table_name(&args.name).map_err(CtlError::Usage)?;
    let kind = alter_kind(args).map_err(CtlError::Usage)?;
    let shown = display_table_name(&name);
    let response = meta
        .alter_table(AlterTableRequest {
            name: Some(name),
            expected_version: args.expected_version,
            kind: Some(kind),
        })
        .await
        .map_err(|e| {
            ddl_error(
                format!("table alter {shown}"),
                "--add-column",
                &args.add_columns,
                e,
            )
        })?;
    let line = match &response.table {
        Some(t) => format!(
            "altered table {}: now at version {} (procedure {})",
            json::TableNameJson::new(t.name.as_ref()).full(),
            t.version,
            response.procedure_id
        ),
        None => format!(
            "altered table {shown} (procedure {})",
            response.procedure_id
        ),
    };
    print_ddl(out, &response, &line)
}
