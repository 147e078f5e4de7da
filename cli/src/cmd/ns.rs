//! `tally ns`: list or describe namespaces (any node), create or alter one
//! (through the metadata leader).

use tally_client::admin::AdminRequest;
use tally_client::NamespaceKind;

use crate::args::{Cli, NsAction};
use crate::cmd::topology;
use crate::output::print_json;
use crate::timespec;

/// Runs `action` (list when none).
pub async fn run(cli: &Cli, action: Option<&NsAction>) -> Result<(), String> {
    match action {
        Some(NsAction::Create { name, spec }) => {
            let request = AdminRequest::CreateNamespace {
                name: name.clone(),
                spec: spec.clone(),
            };
            topology::request(cli, request, "namespace creation").await
        }
        Some(NsAction::Alter { name, spec }) => {
            let request = AdminRequest::AlterNamespace {
                name: name.clone(),
                spec: spec.clone(),
            };
            topology::request(cli, request, "namespace change").await
        }
        Some(NsAction::Describe { name }) => show(cli, Some(name)).await,
        Some(NsAction::List) | None => show(cli, None).await,
    }
}

/// One namespace (`name`) or all of them, as a table or JSON.
async fn show(cli: &Cli, name: Option<&String>) -> Result<(), String> {
    let client = cli.connect().await?;
    let list = match name {
        Some(n) => vec![client
            .describe_namespace(n)
            .await
            .map_err(|e| e.to_string())?],
        None => client.namespaces().await.map_err(|e| e.to_string())?,
    };
    if cli.json {
        print_json(&list);
    } else {
        println!("{:<20} {:<14} resolutions (retention)", "namespace", "kind");
        for ns in list {
            let res: Vec<String> = ns
                .resolutions
                .iter()
                .map(|(r, t)| match t {
                    Some(ms) => format!("{r}:{}", timespec::retention(*ms)),
                    None => format!("{r}:forever"),
                })
                .collect();
            let kind = match ns.kind {
                NamespaceKind::Counter => "counter".to_owned(),
                NamespaceKind::Distinct { precision } => format!("distinct (p{precision})"),
            };
            println!("{:<20} {kind:<14} {}", ns.name, res.join(", "));
        }
    }
    Ok(())
}
