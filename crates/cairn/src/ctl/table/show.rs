//! The read verbs of `cairn ctl table`: `describe` (definition, columns and route with the
//! datanodes' addresses) and `list` (one page, or every page).

use cairn_client::meta::{display_table_name, MetaClient};
use cairn_client::proto::cairnpb::{DescribeTableRequest, ListTablesRequest, TableName};
use serde::Serialize;

use super::json::{utc_time, PartitionJson, TableJson};
use super::spec::{parse_schema_name, parse_table_name};
use crate::ctl::output::{new_table, print_json, OutputFormat};
use crate::ctl::route::{addresses_of, routes_table, RouteJson};
use crate::ctl::CtlError;

/// Most pages `table list --all` follows.
const LIST_PAGES_MAX: u32 = 10_000;

#[derive(Serialize)]
struct DescribeJson {
    table: TableJson,
    route: Option<RouteJson>,
    revision: i64,
}

pub async fn describe(
    meta: &MetaClient,
    out: OutputFormat,
    raw: &str,
    serializable: bool,
) -> Result<(), CtlError> {
    let name = parse_table_name(raw).map_err(CtlError::Usage)?;
    let shown = display_table_name(&name);
    let what = format!("table describe {shown}");
    let answer = meta
        .describe_table(DescribeTableRequest {
            name: Some(name),
            serializable,
        })
        .await
        .map_err(CtlError::call(&what))?;
    let table = answer
        .table
        .as_ref()
        .map(TableJson::new)
        .ok_or_else(|| CtlError::Unexpected(format!("{what}: the answer holds no table")))?;
    // GetRoutes adds the datanodes' addresses to the route the describe returned.
    let routes = meta
        .get_routes(&[table.id])
        .await
        .map_err(CtlError::call(&what))?;
    let addresses = addresses_of(&routes);
    let route = routes
        .routes
        .iter()
        .find(|r| r.table_id == table.id)
        .or(answer.route.as_ref())
        .map(|r| RouteJson::new(r, Some(shown.clone()), &addresses));
    match out {
        OutputFormat::Json => print_json(&DescribeJson {
            table,
            route,
            revision: answer.revision,
        }),
        OutputFormat::Table => {
            println!("{}", describe_table(&table));
            println!("{}", columns_table(&table));
            if let Some(route) = route {
                println!("{}", routes_table(&[route]));
            }
            Ok(())
        }
    }
}

fn ttl_cell(ttl_seconds: Option<u64>) -> String {
    ttl_seconds.map_or_else(|| "forever".to_string(), |s| format!("{s}s"))
}

fn describe_table(t: &TableJson) -> comfy_table::Table {
    let mut table = new_table(["FIELD", "VALUE"]);
    let mut row = |k: &str, v: String| {
        table.add_row(vec![k.to_string(), v]);
    };
    row("id", t.id.to_string());
    row("name", t.full_name.clone());
    row("version", t.version.to_string());
    row("time index", t.time_index.clone());
    row("primary key", t.primary_key.join(", "));
    row("ttl", ttl_cell(t.options.ttl_seconds));
    let extra: Vec<String> = t
        .options
        .extra
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect();
    row("options", extra.join(","));
    row("partition", PartitionJson::summary(t.partition.as_ref()));
    row("regions", t.region_numbers.len().to_string());
    row("created (UTC)", utc_time(t.created_ms));
    row("updated (UTC)", utc_time(t.updated_ms));
    table
}

fn columns_table(t: &TableJson) -> comfy_table::Table {
    let mut table = new_table([
        "COLUMN", "TYPE", "SEMANTIC", "NULLABLE", "DEFAULT", "COMMENT",
    ]);
    for c in &t.columns {
        table.add_row(vec![
            c.name.clone(),
            c.data_type.clone(),
            c.semantic_type.name().to_string(),
            c.nullable.to_string(),
            c.default_value.clone().unwrap_or_else(|| "-".to_string()),
            c.comment.clone(),
        ]);
    }
    table
}

#[derive(Serialize)]
struct TableListJson {
    catalog: String,
    schema: String,
    tables: Vec<TableJson>,
    next_page_token: Option<String>,
    revision: i64,
}

pub async fn list(
    meta: &MetaClient,
    out: OutputFormat,
    raw: &str,
    page_size: u32,
    mut page_token: String,
    all: bool,
    serializable: bool,
) -> Result<(), CtlError> {
    let (catalog, schema) = parse_schema_name(raw).map_err(CtlError::Usage)?;
    let shown = display_table_name(&TableName {
        catalog: catalog.clone(),
        schema: schema.clone(),
        name: String::new(),
    });
    let what = format!("table list {}", shown.trim_end_matches('.'));
    let mut tables = Vec::new();
    let mut revision = 0;
    let mut next = None;
    for _ in 0..LIST_PAGES_MAX {
        let page = meta
            .list_tables(ListTablesRequest {
                catalog: catalog.clone(),
                schema: schema.clone(),
                page_size,
                page_token,
                serializable,
            })
            .await
            .map_err(CtlError::call(&what))?;
        if revision == 0 {
            revision = page.revision;
        }
        tables.extend(page.tables.iter().map(TableJson::new));
        next = (!page.next_page_token.is_empty()).then_some(page.next_page_token);
        match (&next, all) {
            (Some(token), true) => page_token = token.clone(),
            _ => break,
        }
    }
    if all && next.is_some() {
        return Err(CtlError::Unexpected(format!(
            "{what}: still more pages after {LIST_PAGES_MAX}; stopped"
        )));
    }
    let catalog = if catalog.is_empty() {
        "default".to_string()
    } else {
        catalog
    };
    match out {
        OutputFormat::Json => print_json(&TableListJson {
            catalog,
            schema,
            tables,
            next_page_token: next,
            revision,
        }),
        OutputFormat::Table => {
            let mut table = new_table([
                "ID",
                "NAME",
                "COLUMNS",
                "PARTITION",
                "REGIONS",
                "VERSION",
                "TTL",
                "UPDATED (UTC)",
            ]);
            for t in &tables {
                table.add_row(vec![
                    t.id.to_string(),
                    t.name.name.clone(),
                    t.columns.len().to_string(),
                    PartitionJson::summary(t.partition.as_ref()),
                    t.region_numbers.len().to_string(),
                    t.version.to_string(),
                    ttl_cell(t.options.ttl_seconds),
                    utc_time(t.updated_ms),
                ]);
            }
            println!("{table}");
            if let Some(token) = next {
                eprintln!("more tables follow: add --page-token {token} (or --all)");
            }
            Ok(())
        }
    }
}
