//! `cairn ctl member`: list, add, remove and promote members through the etcd Cluster service.

use cairn_client::proto::etcdserverpb::Member;
use cairn_client::EtcdClient;
use clap::Subcommand;
use serde::Serialize;

use super::output::{self, member_table, print_json, HeaderJson, MemberJson, OutputFormat};
use super::CtlError;

/// `cairn ctl member` verbs.
#[derive(Debug, Subcommand)]
pub enum MemberCommand {
    /// List the members.
    List,
    /// Add a member by its peer address; the cluster assigns and returns its id.
    Add {
        /// Raft peer address of the new member: HOST:PORT or http://HOST:PORT (sent as a URL,
        /// which Cairn and etcd both accept).
        #[arg(long)]
        peer_url: String,
        /// Add it as a non-voting learner.
        #[arg(long)]
        learner: bool,
    },
    /// Remove a member.
    Remove {
        /// Member id (decimal, or hex with 0x).
        #[arg(value_parser = output::parse_id)]
        id: u64,
    },
    /// Promote a learner to voter.
    Promote {
        /// Member id (decimal, or hex with 0x).
        #[arg(value_parser = output::parse_id)]
        id: u64,
    },
}

#[derive(Serialize)]
struct MembersJson {
    header: HeaderJson,
    members: Vec<MemberJson>,
}

#[derive(Serialize)]
struct MemberAddJson {
    header: HeaderJson,
    member: Option<MemberJson>,
    members: Vec<MemberJson>,
}

/// etcd requires a scheme in peer URLs; operators type Cairn's `HOST:PORT`.
fn peer_url_of(raw: &str) -> String {
    if raw.contains("://") {
        raw.to_string()
    } else {
        format!("http://{raw}")
    }
}

fn members_json(members: &[Member]) -> Vec<MemberJson> {
    members.iter().map(MemberJson::new).collect()
}

pub async fn run(
    client: &EtcdClient,
    out: OutputFormat,
    command: MemberCommand,
) -> Result<(), CtlError> {
    match command {
        MemberCommand::List => {
            let response = client
                .member_list()
                .await
                .map_err(CtlError::call("member list"))?;
            print_members(out, response.header.as_ref(), &response.members, None)
        }
        MemberCommand::Add { peer_url, learner } => {
            let what = format!("member add --peer-url {peer_url}");
            let response = client
                .member_add(vec![peer_url_of(&peer_url)], learner)
                .await
                .map_err(CtlError::call(what))?;
            match out {
                OutputFormat::Json => print_json(&MemberAddJson {
                    header: HeaderJson::new(response.header.as_ref()),
                    member: response.member.as_ref().map(MemberJson::new),
                    members: members_json(&response.members),
                }),
                OutputFormat::Table => {
                    match &response.member {
                        Some(m) => println!(
                            "added member {} ({}) with peer URLs {}",
                            m.id,
                            if m.is_learner { "learner" } else { "voter" },
                            m.peer_ur_ls.join(", ")
                        ),
                        None => println!("added member (the server did not return it)"),
                    }
                    println!("{}", member_table(&response.members));
                    Ok(())
                }
            }
        }
        MemberCommand::Remove { id } => {
            let response = client
                .member_remove(id)
                .await
                .map_err(CtlError::call(format!("member remove {id}")))?;
            let note = format!("removed member {id}");
            print_members(
                out,
                response.header.as_ref(),
                &response.members,
                Some(&note),
            )
        }
        MemberCommand::Promote { id } => {
            let response = client
                .member_promote(id)
                .await
                .map_err(CtlError::call(format!("member promote {id}")))?;
            let note = format!("promoted member {id} to voter");
            print_members(
                out,
                response.header.as_ref(),
                &response.members,
                Some(&note),
            )
        }
    }
}

fn print_members(
    out: OutputFormat,
    header: Option<&cairn_client::proto::etcdserverpb::ResponseHeader>,
    members: &[Member],
    note: Option<&str>,
) -> Result<(), CtlError> {
    match out {
        OutputFormat::Json => print_json(&MembersJson {
            header: HeaderJson::new(header),
            members: members_json(members),
        }),
        OutputFormat::Table => {
            if let Some(note) = note {
                println!("{note}");
            }
            println!("{}", member_table(members));
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn peer_url_gets_a_scheme_when_missing() {
        assert_eq!(peer_url_of("10.0.0.1:4380"), "http://10.0.0.1:4380");
        assert_eq!(peer_url_of("http://10.0.0.1:4380"), "http://10.0.0.1:4380");
    }
}
