//! Transactions: compares, then the success or failure ops in order, all writes at one revision.
//!
//! The steps follow etcd's `txn.Txn`: first every compare of the whole tree (nested txns too) is
//! evaluated against the state before the txn, fixing the path; then the ops on that path are
//! checked (range revisions, leases, `ignore_*` keys) still against that state; only then does
//! anything get written. A refused txn therefore changes nothing, and once writing starts
//! nothing can fail. Later ops see the writes of earlier ones, as in etcd.

use std::cmp::Ordering;

use cairn_proto::etcdserverpb::compare::{CompareResult, CompareTarget, TargetUnion};
use cairn_proto::etcdserverpb::request_op::Request;
use cairn_proto::etcdserverpb::response_op::Response;
use cairn_proto::etcdserverpb::{
    Compare, DeleteRangeRequest, DeleteRangeResponse, PutRequest, PutResponse, RangeRequest,
    RangeResponse, ResponseHeader, ResponseOp, TxnRequest, TxnResponse,
};

use super::keyspace::{KeyRange, TxnWriter, Version};
use super::range::sort_options;
use super::{Applied, KvError, KvState};

/// The branch taken by one txn of the tree, and the paths of the txns nested in that branch.
#[derive(Debug)]
struct Path {
    succeeded: bool,
    nested: Vec<Path>,
}

impl KvState {
    /// Applies a transaction (a plain put or delete is a one-op txn). The response's top-level
    /// header is left `None` for the server; nested range/put/delete responses carry a header
    /// with only the revision set, as etcd's do.
    pub fn apply_txn(&mut self, req: &TxnRequest) -> Result<Applied<TxnResponse>, KvError> {
        let path = self.choose_path(req);
        self.check_path(req, &path)?;
        let mut w = TxnWriter::new(self.revision);
        let mut response = self.execute(req, &path, &mut w);
        response.header = None;
        let events = self.finish(w);
        Ok(Applied {
            response,
            events,
            revision: self.revision,
        })
    }

    fn choose_path(&self, req: &TxnRequest) -> Path {
        let succeeded = req.compare.iter().all(|c| self.compare_holds(c));
        let ops = if succeeded {
            &req.success
        } else {
            &req.failure
        };
        let nested = ops
            .iter()
            .filter_map(|op| match &op.request {
                Some(Request::RequestTxn(t)) => Some(self.choose_path(t)),
                _ => None,
            })
            .collect();
        Path { succeeded, nested }
    }

    /// etcd's `applyCompare`: every existing key of the range must satisfy the compare; an empty
    /// range compares as one zero-valued key, except that a value compare then fails.
    fn compare_holds(&self, c: &Compare) -> bool {
        let mut any = false;
        for (_, history) in KeyRange::new(&c.key, &c.range_end).iter(&self.keys) {
            if let Some(version) = history.latest_live() {
                any = true;
                if !compare_version(c, Some(version)) {
                    return false;
                }
            }
        }
        if any {
            return true;
        }
        if c.target == CompareTarget::Value as i32 {
            return false;
        }
        compare_version(c, None)
    }

    /// The checks etcd runs before writing (`checkTxn`), along the chosen path only.
    fn check_path(&self, req: &TxnRequest, path: &Path) -> Result<(), KvError> {
        let ops = if path.succeeded {
            &req.success
        } else {
            &req.failure
        };
        let mut nested = path.nested.iter();
        for op in ops {
            match &op.request {
                Some(Request::RequestRange(r)) => {
                    sort_options(r)?;
                    if r.revision > 0 {
                        self.read_revision(r.revision)?;
                    }
                }
                Some(Request::RequestPut(p)) => self.check_put(p)?,
                Some(Request::RequestTxn(t)) => {
                    let p = nested.next().expect("a path for every nested txn");
                    self.check_path(t, p)?;
                }
                Some(Request::RequestDeleteRange(_)) | None => {}
            }
        }
        Ok(())
    }

    fn check_put(&self, p: &PutRequest) -> Result<(), KvError> {
        if (p.ignore_value || p.ignore_lease) && self.latest_live(&p.key).is_none() {
            return Err(KvError::KeyNotFound);
        }
        if p.lease != 0 && !self.leases.contains_key(&p.lease) {
            return Err(KvError::LeaseNotFound);
        }
        Ok(())
    }

    fn execute(&mut self, req: &TxnRequest, path: &Path, w: &mut TxnWriter) -> TxnResponse {
        let ops = if path.succeeded {
            &req.success
        } else {
            &req.failure
        };
        let mut nested = path.nested.iter();
        let mut responses = Vec::with_capacity(ops.len());
        for op in ops {
            let response = match &op.request {
                Some(Request::RequestRange(r)) => {
                    Some(Response::ResponseRange(self.exec_range(r, w)))
                }
                Some(Request::RequestPut(p)) => Some(Response::ResponsePut(self.exec_put(p, w))),
                Some(Request::RequestDeleteRange(d)) => {
                    Some(Response::ResponseDeleteRange(self.exec_delete(d, w)))
                }
                Some(Request::RequestTxn(t)) => {
                    let p = nested.next().expect("a path for every nested txn");
                    let mut inner = self.execute(t, p, w);
                    inner.header = Some(ResponseHeader::default());
                    Some(Response::ResponseTxn(inner))
                }
                None => None,
            };
            responses.push(ResponseOp { response });
        }
        TxnResponse {
            header: None,
            succeeded: path.succeeded,
            responses,
        }
    }

    /// The revision reads inside the txn see: the txn's own once it has written something.
    fn txn_read_revision(&self, w: &TxnWriter) -> i64 {
        if w.wrote() {
            w.revision
        } else {
            self.revision
        }
    }

    fn exec_range(&self, r: &RangeRequest, w: &TxnWriter) -> RangeResponse {
        let current = self.txn_read_revision(w);
        let at = if r.revision > 0 { r.revision } else { current };
        let mut response = match self.range_at(r, at) {
            Ok(response) => response,
            Err(e) => unreachable!("range checked before the txn started: {e}"),
        };
        response.header = Some(header(current));
        response
    }

    fn exec_put(&mut self, p: &PutRequest, w: &mut TxnWriter) -> PutResponse {
        // A plain put needs nothing of the key's past here: write_put finds the key once.
        let latest = if p.prev_kv || p.ignore_value || p.ignore_lease {
            self.latest_live(&p.key)
        } else {
            None
        };
        let prev_kv = if p.prev_kv {
            latest.map(|v| v.to_kv(&p.key, true))
        } else {
            None
        };
        // check_put saw the key; it can only be gone if the txn itself deleted it first,
        // which validate_txn refuses as a duplicate key. Empty value and no lease keep us total.
        let value = if p.ignore_value {
            latest
                .and_then(|v| v.value.as_ref())
                .map(|v| v.to_vec())
                .unwrap_or_default()
        } else {
            p.value.clone()
        };
        let lease = if p.ignore_lease {
            latest.map_or(0, |v| v.lease)
        } else {
            p.lease
        };
        self.write_put(w, &p.key, value, lease);
        PutResponse {
            header: Some(header(w.revision)),
            prev_kv,
        }
    }

    fn exec_delete(&mut self, d: &DeleteRangeRequest, w: &mut TxnWriter) -> DeleteRangeResponse {
        let keys = self.live_keys_in(KeyRange::new(&d.key, &d.range_end));
        let prev_kvs = if d.prev_kv {
            keys.iter()
                .filter_map(|k| self.latest_live(k).map(|v| v.to_kv(k, true)))
                .collect()
        } else {
            Vec::new()
        };
        for key in &keys {
            self.write_delete(w, key);
        }
        DeleteRangeResponse {
            header: Some(header(self.txn_read_revision(w))),
            deleted: keys.len() as i64,
            prev_kvs,
        }
    }

    fn latest_live(&self, key: &[u8]) -> Option<&Version> {
        self.keys.get(key).and_then(|h| h.latest_live())
    }
}

fn header(revision: i64) -> ResponseHeader {
    ResponseHeader {
        revision,
        ..ResponseHeader::default()
    }
}

/// etcd's `compareKV`. A union that does not match the target compares against zero (or the
/// empty value); an unknown target compares equal and an unknown result holds, as in etcd.
fn compare_version(c: &Compare, version: Option<&Version>) -> bool {
    let number = |pick: fn(&Version) -> i64, want: Option<i64>| {
        version.map_or(0, pick).cmp(&want.unwrap_or(0))
    };
    let union = c.target_union.as_ref();
    let ordering = match CompareTarget::try_from(c.target) {
        Ok(CompareTarget::Value) => {
            let have = version.and_then(|v| v.value.as_ref()).map(|v| v.bytes());
            let want: &[u8] = match union {
                Some(TargetUnion::Value(v)) => v,
                _ => &[],
            };
            have.as_deref().unwrap_or(&[]).cmp(want)
        }
        Ok(CompareTarget::Version) => number(
            |v| v.version,
            match union {
                Some(TargetUnion::Version(n)) => Some(*n),
                _ => None,
            },
        ),
        Ok(CompareTarget::Create) => number(
            |v| v.create_revision,
            match union {
                Some(TargetUnion::CreateRevision(n)) => Some(*n),
                _ => None,
            },
        ),
        Ok(CompareTarget::Mod) => number(
            |v| v.mod_revision,
            match union {
                Some(TargetUnion::ModRevision(n)) => Some(*n),
                _ => None,
            },
        ),
        Ok(CompareTarget::Lease) => number(
            |v| v.lease,
            match union {
                Some(TargetUnion::Lease(n)) => Some(*n),
                _ => None,
            },
        ),
        Err(_) => Ordering::Equal,
    };
    match CompareResult::try_from(c.result) {
        Ok(CompareResult::Equal) => ordering == Ordering::Equal,
        Ok(CompareResult::NotEqual) => ordering != Ordering::Equal,
        Ok(CompareResult::Greater) => ordering == Ordering::Greater,
        Ok(CompareResult::Less) => ordering == Ordering::Less,
        Err(_) => true,
    }
}

#[cfg(test)]
#[path = "txn_tests.rs"]
mod tests;
